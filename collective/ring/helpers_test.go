package ring

import (
	"context"
	"math"
	"math/rand/v2"
	"runtime"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/peertune/peertune/kernels"
)

// hostBuf is a minimal kernels.HostBuffer, so these tests need no backend.
type hostBuf []float32

func (h hostBuf) Len() int                        { return len(h) }
func (h hostBuf) DType() kernels.DType            { return kernels.F32 }
func (h hostBuf) Slice(off, n int) kernels.Buffer { return h[off : off+n] }
func (h hostBuf) Host() []float32                 { return h }

// deviceBuf is a Buffer that is not host memory.
type deviceBuf struct{ n int }

func (d deviceBuf) Len() int                        { return d.n }
func (d deviceBuf) DType() kernels.DType            { return kernels.F32 }
func (d deviceBuf) Slice(off, n int) kernels.Buffer { return deviceBuf{n} }

// checkLeaks fails the test if goroutines started during it are still
// running once its cleanups (registered later, so run earlier) are done.
func checkLeaks(t *testing.T) {
	t.Helper()
	before := runtime.NumGoroutine()
	t.Cleanup(func() {
		deadline := time.Now().Add(5 * time.Second)
		for runtime.NumGoroutine() > before {
			if time.Now().After(deadline) {
				buf := make([]byte, 1<<20)
				n := runtime.Stack(buf, true)
				t.Errorf("goroutine leak: %d before, %d after:\n%s", before, runtime.NumGoroutine(), buf[:n])
				return
			}
			time.Sleep(5 * time.Millisecond)
		}
	})
}

func testConfig() Config {
	cfg := DefaultConfig()
	cfg.ConnectTimeout = 10 * time.Second
	cfg.HandshakeTimeout = 2 * time.Second
	cfg.RetryInterval = 10 * time.Millisecond
	cfg.Secret = []byte("0123456789abcdef0123456789abcdef")
	cfg.Epoch = 7
	return cfg
}

func testLogger(t *testing.T) *zap.Logger {
	return zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
}

// newWorld forms an in-process ring of n ranks and closes it when the test ends.
func newWorld(t *testing.T, n int, cfg Config) []*Comm {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	comms, err := NewLoopback(ctx, n, cfg, testLogger(t))
	if err != nil {
		t.Fatalf("form ring of %d: %v", n, err)
	}
	t.Cleanup(func() {
		for _, c := range comms {
			c.Close()
		}
	})
	return comms
}

// onAll runs f for every rank concurrently and returns each rank's error.
func onAll(comms []*Comm, f func(r int, c *Comm) error) []error {
	errs := make([]error, len(comms))
	var wg sync.WaitGroup
	for r, c := range comms {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[r] = f(r, c)
		}()
	}
	wg.Wait()
	return errs
}

// randomInputs returns n ranks' buffers of length l with values of mixed
// signs and magnitudes, so that summation order would show.
func randomInputs(seed uint64, ranks, l int) [][]float32 {
	rng := rand.New(rand.NewPCG(seed, 42))
	in := make([][]float32, ranks)
	for r := range in {
		in[r] = make([]float32, l)
		for i := range in[r] {
			in[r][i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(7)-3)))
		}
	}
	return in
}
