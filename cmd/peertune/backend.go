package main

import (
	"fmt"

	"go.uber.org/zap"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cpu"
	"github.com/peertune/peertune/kernels/cuda"
)

// newCPUBackend makes the CPU backend with the process logger, so that the
// choice of BLAS is logged once.
func newCPUBackend(g *globalOptions) (*cpu.Backend, error) {
	opts := cpu.DefaultOptions()
	opts.Logger = g.log
	return cpu.New(opts)
}

// newBackend picks the compute backend for --device: cpu, cuda, or auto
// (CUDA when a GPU, its driver, NVRTC and cuBLAS are all there; the log says
// what was chosen and why).
func newBackend(g *globalOptions, device string) (kernels.Backend, error) {
	switch device {
	case "cpu":
		return newCPUBackend(g)
	case "cuda":
		opts := cuda.DefaultOptions()
		opts.Logger = g.log
		be, err := cuda.New(opts)
		if err != nil {
			return nil, fmt.Errorf("--device cuda: %w", err)
		}
		return be, nil
	case "auto", "":
		p := cuda.Probe()
		if p.Usable {
			opts := cuda.DefaultOptions()
			opts.Logger = g.log
			be, err := cuda.New(opts)
			if err == nil {
				g.log.Info("device: CUDA", zap.String("why", p.Reason))
				return be, nil
			}
			if !cuda.IsNotAvailable(err) {
				return nil, fmt.Errorf("--device auto: a GPU is present but CUDA failed: %w", err)
			}
			g.log.Info("device: CPU", zap.String("why", err.Error()))
		} else {
			g.log.Info("device: CPU (CUDA not usable)", zap.String("why", p.Reason))
		}
		return newCPUBackend(g)
	}
	return nil, fmt.Errorf("--device %q: want auto, cpu or cuda", device)
}

// backendThreads is the backend's host thread count (0 for a GPU backend).
func backendThreads(be kernels.Backend) int {
	if c, ok := be.(*cpu.Backend); ok {
		return c.Threads()
	}
	return 0
}
