package cpu

import (
	"os"
	"testing"

	"github.com/peertune/peertune/internal/dl"
)

// requireOpenBLAS skips the test when libopenblas cannot be loaded here.
func requireOpenBLAS(t *testing.T) {
	t.Helper()
	if os.Getenv(EnvBLAS) == BLASGonum {
		t.Skipf("%s=%s forces the gonum fallback", EnvBLAS, BLASGonum)
	}
	lib, err := dl.Open(defaultOpenBLASNames...)
	if err != nil {
		t.Skipf("OpenBLAS not available (apt-get install libopenblas0-pthread): %v", err)
	}
	// Not closed: OpenBLAS must stay mapped while its threads live (see loadOpenBLAS).
	_ = lib
}

func newTestBackend(t *testing.T, opts Options) *Backend {
	t.Helper()
	be, err := New(opts)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	if opts.ForceGonum && be.BLAS() != BLASGonum {
		t.Fatalf("ForceGonum: BLAS() = %q", be.BLAS())
	}
	return be
}
