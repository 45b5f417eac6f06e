package cuda

import (
	"fmt"
	"math/rand/v2"
	"time"

	"github.com/peertune/peertune/kernels"
)

// GemmTFLOPS measures the GEMM out[m,n] = in[m,k]·w[n,k]ᵀ (a linear layer's
// forward, Matmul's layout) on be, and returns TFLOP/s (2·m·n·k per GEMM)
// over iters timed calls after 3 untimed ones.
//
// dt F32 runs Matmul's path (IEEE float32, or TF32 when be.TF32()); BF16
// runs cublasGemmEx with bf16 inputs and output and float32 accumulation
// (CUBLAS_COMPUTE_32F), the precision of bf16 training. The clock is the
// host's, around a Sync, so iters should make the run last 100 ms or more.
func GemmTFLOPS(be *Backend, m, n, k int, dt kernels.DType, iters int) (float64, error) {
	if m <= 0 || n <= 0 || k <= 0 || iters <= 0 {
		return 0, fmt.Errorf("cuda: GemmTFLOPS: m=%d n=%d k=%d iters=%d must be positive", m, n, k, iters)
	}
	if err := checkGemmShape("GemmTFLOPS", m, k, n); err != nil {
		return 0, err
	}
	if dt != kernels.F32 && dt != kernels.BF16 {
		return 0, fmt.Errorf("cuda: GemmTFLOPS: dtype %v", dt)
	}
	alloc := func(n int) (*Buffer, error) {
		b, err := be.Alloc(n, dt)
		if err != nil {
			return nil, err
		}
		return b.(*Buffer), nil
	}
	r := rand.New(rand.NewPCG(1, 2))
	fill := func(b *Buffer) error {
		h := make([]float32, b.n)
		for i := range h {
			h[i] = float32(r.Float64()*2 - 1)
		}
		return be.CopyIn(b, h)
	}
	in, err := alloc(m * k)
	if err != nil {
		return 0, err
	}
	defer be.Free(in)
	w, err := alloc(n * k)
	if err != nil {
		return 0, err
	}
	defer be.Free(w)
	out, err := alloc(m * n)
	if err != nil {
		return 0, err
	}
	defer be.Free(out)
	if err := fill(in); err != nil {
		return 0, err
	}
	if err := fill(w); err != nil {
		return 0, err
	}
	bf16 := dt == kernels.BF16
	call := func() error {
		if !bf16 {
			return be.Matmul(out, in, w, nil, m, k, n, 1, false)
		}
		// sgemmRowMajor's mapping with bf16 operands: out = in·wᵀ is the
		// column-major cublas(T, N, n, m, k, w, k, in, k, out, n).
		if err := be.g.gemm(gemmCall{transA: true, transB: false, m: n, n: m, k: k, alpha: 1, beta: 0,
			a: w.ptr(), lda: k, b: in.ptr(), ldb: k, c: out.ptr(), ldc: n, abBF16: true, cBF16: true}); err != nil {
			return fmt.Errorf("cuda: GemmTFLOPS: %w", err)
		}
		return nil
	}
	for i := 0; i < 3; i++ {
		if err := call(); err != nil {
			return 0, err
		}
	}
	if err := be.Sync(); err != nil {
		return 0, err
	}
	start := time.Now()
	for i := 0; i < iters; i++ {
		if err := call(); err != nil {
			return 0, err
		}
	}
	if err := be.Sync(); err != nil {
		return 0, err
	}
	sec := time.Since(start).Seconds()
	return 2 * float64(m) * float64(n) * float64(k) * float64(iters) / sec / 1e12, nil
}
