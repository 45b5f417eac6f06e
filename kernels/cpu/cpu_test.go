package cpu

import (
	"testing"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/kerneltest"
)

func TestKernelsOpenBLAS(t *testing.T) {
	requireOpenBLAS(t)
	kerneltest.Run(t, func(t *testing.T) kernels.Backend {
		be := newTestBackend(t, DefaultOptions())
		if be.BLAS() != BLASOpenBLAS {
			t.Fatalf("OpenBLAS loads here but the backend uses %q", be.BLAS())
		}
		return be
	})
}

func TestKernelsGonum(t *testing.T) {
	kerneltest.Run(t, func(t *testing.T) kernels.Backend {
		return newTestBackend(t, Options{ForceGonum: true})
	})
}
