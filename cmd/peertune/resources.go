package main

import (
	"context"
	"fmt"

	"go.uber.org/zap"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cuda"
	"github.com/peertune/peertune/node/gpu"
	"github.com/peertune/peertune/trainer"
)

// nodeResources resolves --mem-budget for this process and fills the job's
// memory settings: the budget in bytes, a sampler of the memory in use, and
// the device summary nodes gossip. An empty spec or "off" disables planning.
func nodeResources(ctx context.Context, log *zap.Logger, spec string, be kernels.Backend, jio *trainer.JobIO) (summary string, budget uint64, err error) {
	device := -1
	if c, ok := be.(*cuda.Backend); ok {
		device = c.Device().Ordinal
		jio.CUDABF16 = c.HasBF16()
	}
	jio.CUDA = device >= 0 // decides --precision auto, budget or not
	if spec == "" || spec == "off" {
		return be.Name(), 0, nil
	}
	b, err := gpu.ParseBudget(spec)
	if err != nil {
		return "", 0, fmt.Errorf("--mem-budget: %w", err)
	}
	res, err := gpu.Detect(ctx, nil, device, b)
	if err != nil {
		return "", 0, err
	}
	sampler, err := gpu.NewSampler(res, nil)
	if err != nil {
		return "", 0, err
	}
	// Without a Go memory limit, garbage may grow towards twice the live
	// heap between collections and the plan would not bound RSS.
	if device < 0 {
		gpu.LimitGoHeap(res.Budget)
	}
	jio.MemBudget, jio.MemoryUsed, jio.Threads, jio.CUDA = int64(res.Budget), sampler.Used, backendThreads(be), device >= 0
	log.Info("memory budget", zap.String("device", res.Summary()), zap.String("budget", gpu.FormatBytes(res.Budget)),
		zap.String("of", gpu.FormatBytes(res.Total)))
	return res.Summary(), res.Budget, nil
}
