// Package cpu is the float32 CPU implementation of kernels.Backend.
//
// GEMMs (Matmul, MatmulBackward and the tiles of Attention) go through
// OpenBLAS's cblas_sgemm, loaded at run time with dlopen (libopenblas.so.0,
// then libopenblas.so) and called through a small C trampoline; nothing is
// linked at build time, so `go build` works without OpenBLAS. When it is
// absent, or PEERTUNE_BLAS=gonum / Options.ForceGonum asks for it, gonum's
// pure-Go Sgemm is used instead (about 10x slower). PEERTUNE_OPENBLAS_LIB
// names another OpenBLAS. The choice is logged once per process at Info.
//
// Every other op is Go (exponentials and row maxima in AVX2 assembly,
// kernels/cpu/internal/vmath), split by rows (or columns, for gradient
// reductions) across Options.Threads goroutines. Reductions accumulate in
// float64 and sum in an order that does not depend on the thread count, so
// results are bit-identical however many cores a node has (GEMMs aside,
// which are OpenBLAS's business).
//
// Attention is flash-attention style: per (batch, head, 64-row block) it
// keeps one 64×seq score tile, never a seq×seq matrix per head, and the
// backward recomputes the probabilities from the forward's log-sum-exp.
//
// Buffers are *Buffer, a []float32 that also satisfies kernels.HostBuffer;
// every op runs to completion before it returns (Sync is a no-op).
//
//	be, err := cpu.New(cpu.DefaultOptions())
//	if err != nil {
//		return err
//	}
//	x, _ := be.Alloc(rows*dim, kernels.F32)
//	be.CopyIn(x, hostData)
//	be.Matmul(y, x, w, nil, rows, dim, out, 1, false)
//	gflops, _ := cpu.GemmGFLOPS(be, 1024, 1024, 1024, 10) // `peertune bench gemm`
//
// A Backend is not safe for concurrent use. OpenBLAS's thread count is
// process-wide: Attention sets it to 1 while its goroutines call sgemm and
// restores it after, so a process should drive one Backend at a time (two
// Backends computing at once are correct but slow, as is any concurrent use
// of one OpenBLAS).
package cpu
