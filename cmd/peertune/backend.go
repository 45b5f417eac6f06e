package main

import (
	"github.com/peertune/peertune/kernels/cpu"
)

// newCPUBackend makes the CPU backend with the process logger, so that the
// choice of BLAS is logged once.
func newCPUBackend(g *globalOptions) (*cpu.Backend, error) {
	opts := cpu.DefaultOptions()
	opts.Logger = g.log
	return cpu.New(opts)
}
