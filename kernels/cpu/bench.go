package cpu

import (
	"fmt"
	"time"

	"github.com/peertune/peertune/kernels"
)

// GemmGFLOPS times iters calls of be.Matmul(out[m,n] = in[m,k]·w[n,k]ᵀ) —
// the layout every linear layer uses, through the same binding the model
// uses — after one untimed warm-up call, and returns GFLOP/s (2·m·n·k per
// call). It is what `peertune bench gemm` reports.
func GemmGFLOPS(be *Backend, m, n, k, iters int) (float64, error) {
	if be == nil {
		return 0, fmt.Errorf("cpu: GemmGFLOPS: nil backend")
	}
	if m <= 0 || n <= 0 || k <= 0 || iters <= 0 {
		return 0, fmt.Errorf("cpu: GemmGFLOPS: m=%d n=%d k=%d iters=%d: want all > 0", m, n, k, iters)
	}
	var bufs [3]kernels.Buffer
	for i, size := range []int{m * k, n * k, m * n} {
		b, err := be.Alloc(size, kernels.F32)
		if err != nil {
			return 0, fmt.Errorf("cpu: GemmGFLOPS: %w", err)
		}
		bufs[i] = b
		defer be.Free(b)
	}
	in, w, out := bufs[0], bufs[1], bufs[2]
	// Small, varied values: denormals or all-zero inputs would time a
	// different code path than real weights.
	for _, b := range []kernels.Buffer{in, w} {
		h := b.(*Buffer).Host()
		for i := range h {
			h[i] = float32((i*7919)%201-100) / 1000
		}
	}
	if err := be.Matmul(out, in, w, nil, m, k, n, 1, false); err != nil {
		return 0, fmt.Errorf("cpu: GemmGFLOPS: warm-up: %w", err)
	}
	start := time.Now()
	for i := 0; i < iters; i++ {
		if err := be.Matmul(out, in, w, nil, m, k, n, 1, false); err != nil {
			return 0, fmt.Errorf("cpu: GemmGFLOPS: %w", err)
		}
	}
	sec := time.Since(start).Seconds()
	return 2 * float64(m) * float64(n) * float64(k) * float64(iters) / sec / 1e9, nil
}
