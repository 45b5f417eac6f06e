// Package cuda is the CUDA implementation of kernels.Backend: float32 and
// bf16 ops on one NVIDIA GPU, GEMMs through cuBLAS (TF32 or bf16 tensor
// cores), every other op a kernel of our own.
//
// Nothing is linked at build time: `go build` needs no CUDA toolkit. When a
// Backend is first created, the package dlopens (internal/dl) three
// libraries and calls them through small C trampolines, with our own
// declarations of the few functions and constants it uses (cuda_api.h,
// nvrtc.go, cublas.go; each cites the header it comes from):
//
//   - the driver, libcuda.so.1 (installed with the NVIDIA driver):
//     the device's primary context, one non-blocking stream, memory,
//     module loading and kernel launches;
//   - NVRTC, libnvrtc.so.13 or .so.12, from the dynamic loader's path, the
//     CUDA toolkit (/usr/local/cuda, $CUDA_HOME) or pip's NVIDIA wheels in
//     any Python site-packages (nvidia/cu13/lib, nvidia/cuda_nvrtc/lib):
//     compiles the embedded .cu sources (src/, one per op pair) for the
//     device's architecture;
//   - cuBLAS, libcublas.so.13 or .so.12, found the same way (the _v2
//     symbols: the bare names are the legacy API).
//
// PEERTUNE_LIBCUDA, PEERTUNE_LIBNVRTC and PEERTUNE_LIBCUBLAS name a library
// explicitly. Libraries of the driver's CUDA major version are preferred,
// then older ones; one newer than the driver is never used (a toolkit needs
// a driver of at least its major), and a GPU older than sm_75 needs the
// CUDA 12 libraries (CUDA 13 dropped it).
// Without a library or a GPU, New returns an error that names what is
// missing, every place it looked and how to install it (IsNotAvailable is
// then true), and Probe says the same without creating anything: the
// binary starts and trains on the CPU.
//
// Compiled kernels are cached on disk, keyed by sha256 of the source, the
// shared header and the options, the target architecture and the NVRTC
// version, under $XDG_CACHE_HOME/peertune/cubin (or ~/.cache/peertune/cubin;
// PEERTUNE_CUBIN_CACHE=dir or "off"). Entries are written atomically and
// checksummed; a corrupt or rejected entry is recompiled. A GPU newer than
// the NVRTC gets PTX for NVRTC's newest architecture, which the driver
// compiles.
//
// Attention has two implementations: flash-style kernels (one pass, CUDA
// cores) and, from 256 positions on, scores through batched tensor-core
// GEMMs with the causal softmax as a kernel (ops_attention_gemm.go);
// Options.Attention or PEERTUNE_CUDA_ATTENTION choose.
//
// Every op checks its shapes on the host and returns an error naming the op
// before issuing anything; kernels then run asynchronously in issue order
// on the Backend's stream, and GPU faults surface at Sync or CopyOut.
// Reductions (column sums, norms' weight gradients, embedding gradients,
// attention's dK/dV, SumSquares) have one writer per element and a fixed
// summation order: no atomics, results are the same on every run. The
// dropout mask is the CPU backend's, bit for bit, and RoPE uses the CPU
// backend's cos/sin table, so the two backends follow the same trajectory
// up to float32 rounding.
//
// Usage:
//
//	be, err := cuda.New(cuda.DefaultOptions())
//	if err != nil {
//		if cuda.IsNotAvailable(err) {
//			// fall back to the CPU backend; err says what is missing
//		}
//		return err
//	}
//	defer be.Close()
//	x, _ := be.Alloc(rows*dim, kernels.F32)
//	be.CopyIn(x, hostData)
//	be.Matmul(y, x, w, nil, rows, dim, out, 1, false)
//	be.CopyOut(hostOut, y) // waits for the GPU
//
// bf16: every op accepts kernels.BF16 buffers in any position (mixed.go),
// which is how trainer/model trains in bf16 (model.Options.Precision):
// GEMMs read bf16 natively on tensor cores with float32 accumulation and a
// float32 or bf16 output (cublasGemmEx), and so does the embedding gather;
// the other ops compute in float32, and either read and write bf16
// themselves (Add, RMSNorm, RoPE, SwiGLU, Dropout and their backward
// passes: the per-layer, memory-bound ones) or have their bf16 arguments
// staged through float32 scratch (attention, cross-entropy, AdamW); either
// way the result is the float32 result on the bf16 values rounded once.
// Copy converts between the two dtypes. GemmTFLOPS measures bf16 GEMMs.
//
// A Backend is not safe for concurrent use. Several Backends may share a
// GPU (each has its own stream and cuBLAS handle on the device's primary
// context).
package cuda
