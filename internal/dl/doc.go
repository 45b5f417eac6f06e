// Package dl opens shared libraries at run time with dlopen and resolves their
// symbols with dlsym, so that peertune builds with plain `go build` (cgo +
// libc only) and finds OpenBLAS, CUDA, NCCL and friends only when it runs.
//
// It knows nothing about any particular library: a loader names its
// candidates in order of preference, resolves the symbols it needs, and calls
// them through its own small C trampolines (cgo cannot call a C function
// pointer directly).
//
//	lib, err := dl.Open("libopenblas.so.0", "libopenblas.so")
//	if err != nil {
//		return err // names every path tried and what dlerror said
//	}
//	defer lib.Close()
//	sgemm, err := lib.Sym("cblas_sgemm")
//	if err != nil {
//		return err
//	}
//	// pass sgemm to a C trampoline that casts it to the function type.
//
// A Lib may be used by several goroutines at once: dlsym is thread-safe and
// the errors are read inside the same C call that produced them.
package dl
