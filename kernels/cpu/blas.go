package cpu

/*
#include <stdint.h>

// CBLAS enum values (cblas.h); passed as int, which is what the enums are.
enum { PT_ROW_MAJOR = 101, PT_NO_TRANS = 111, PT_TRANS = 112 };

// OpenBLAS's LP64 signature. blasint is int in every build we load: an ILP64
// build (USE64BITINT) is refused in Go before any call is made.
typedef void (*pt_sgemm_fn)(int order, int transA, int transB, int m, int n, int k,
	float alpha, const float *a, int lda, const float *b, int ldb,
	float beta, float *c, int ldc);
typedef void (*pt_set_threads_fn)(int);
typedef int (*pt_get_threads_fn)(void);
typedef char *(*pt_get_config_fn)(void);

// cgo cannot call a C function pointer, so each symbol resolved with dlsym
// is called through one of these trampolines.
static void pt_sgemm(void *fn, int ta, int tb, int m, int n, int k, float alpha,
		const float *a, int lda, const float *b, int ldb, float beta, float *c, int ldc) {
	((pt_sgemm_fn)fn)(PT_ROW_MAJOR, ta ? PT_TRANS : PT_NO_TRANS, tb ? PT_TRANS : PT_NO_TRANS,
		m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}
static void pt_call_int(void *fn, int v) { ((pt_set_threads_fn)fn)(v); }
static int pt_ret_int(void *fn) { return ((pt_get_threads_fn)fn)(); }
static const char *pt_ret_str(void *fn) { return ((pt_get_config_fn)fn)(); }
*/
import "C"

import (
	"fmt"
	"math"
	"strings"
	"unsafe"

	"github.com/peertune/peertune/internal/dl"
	gblas "gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/gonum"
)

// sgemmer is the one BLAS routine the backend needs: row-major
//
//	c[m,n] = alpha * op(a)·op(b) + beta * c
//
// with op(x) = xᵀ when the matching trans flag is set. Slices start at the
// first element of their matrix and lda/ldb/ldc are row strides, so strided
// views (one head of a [seq, heads, headDim] tensor) need no copy. Callers
// have checked every size; implementations do not re-validate.
type sgemmer interface {
	sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
		b []float32, ldb int, beta float32, c []float32, ldc int)
}

// openBLAS calls cblas_sgemm from a libopenblas loaded at run time.
type openBLAS struct {
	lib        *dl.Lib
	sgemmFn    unsafe.Pointer
	setThreads unsafe.Pointer // openblas_set_num_threads; nil if absent
	getThreads unsafe.Pointer // openblas_get_num_threads; nil if absent
	config     string         // openblas_get_config(), e.g. "OpenBLAS 0.3.21 DYNAMIC_ARCH ..."
}

// defaultOpenBLASNames are tried in order: the runtime soname that the
// Debian/Ubuntu libopenblas0-* packages and most distributions ship, then the
// development symlink that a source build installs.
var defaultOpenBLASNames = []string{"libopenblas.so.0", "libopenblas.so"}

// loadOpenBLAS opens OpenBLAS from names and resolves what we call. It never
// dlcloses the library: OpenBLAS keeps worker threads running its code, and
// unmapping it under them would crash the process.
func loadOpenBLAS(names []string) (*openBLAS, error) {
	lib, err := dl.Open(names...)
	if err != nil {
		return nil, err
	}
	ob := &openBLAS{lib: lib}
	if ob.sgemmFn, err = lib.Sym("cblas_sgemm"); err != nil {
		return nil, fmt.Errorf("%s is not a usable OpenBLAS: %w", lib.Name(), err)
	}
	if ob.sgemmFn == nil {
		return nil, fmt.Errorf("%s: cblas_sgemm is NULL", lib.Name())
	}
	// The thread controls and the config string are OpenBLAS extensions; a
	// library without them still works, only without those features.
	ob.setThreads, _ = lib.Sym("openblas_set_num_threads")
	ob.getThreads, _ = lib.Sym("openblas_get_num_threads")
	if p, _ := lib.Sym("openblas_get_config"); p != nil {
		if s := C.pt_ret_str(p); s != nil {
			ob.config = C.GoString(s)
		}
	}
	// An ILP64 build takes 64-bit integers: calling it with our int
	// trampoline would pass garbage sizes. Refuse it rather than crash.
	if strings.Contains(ob.config, "USE64BITINT") {
		return nil, fmt.Errorf("%s is an ILP64 OpenBLAS (%s); peertune needs the 32-bit-integer build (libopenblas0-pthread)", lib.Name(), ob.config)
	}
	return ob, nil
}

func (ob *openBLAS) sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		// Nothing to multiply. OpenBLAS would also reject the leading
		// dimensions of a zero-width matrix, so scale c here.
		scaleRows(c, m, n, ldc, beta)
		return
	}
	C.pt_sgemm(ob.sgemmFn, cbool(transA), cbool(transB), C.int(m), C.int(n), C.int(k), C.float(alpha),
		(*C.float)(unsafe.Pointer(&a[0])), C.int(lda),
		(*C.float)(unsafe.Pointer(&b[0])), C.int(ldb), C.float(beta),
		(*C.float)(unsafe.Pointer(&c[0])), C.int(ldc))
}

// threads reports OpenBLAS's thread count, or 0 when the library cannot say.
func (ob *openBLAS) threads() int {
	if ob.getThreads == nil {
		return 0
	}
	return int(C.pt_ret_int(ob.getThreads))
}

// setNumThreads changes OpenBLAS's (process-wide) thread count. It is a
// no-op when the library lacks the control.
func (ob *openBLAS) setNumThreads(n int) {
	if ob.setThreads != nil && n > 0 {
		C.pt_call_int(ob.setThreads, C.int(n))
	}
}

func cbool(b bool) C.int {
	if b {
		return 1
	}
	return 0
}

// gonumBLAS is the pure-Go fallback. gonum's Sgemm parallelises large
// products over GOMAXPROCS goroutines by itself.
type gonumBLAS struct{ impl gonum.Implementation }

func (g gonumBLAS) sgemm(transA, transB bool, m, n, k int, alpha float32, a []float32, lda int,
	b []float32, ldb int, beta float32, c []float32, ldc int) {
	if m == 0 || n == 0 {
		return
	}
	if k == 0 {
		scaleRows(c, m, n, ldc, beta)
		return
	}
	g.impl.Sgemm(gtrans(transA), gtrans(transB), m, n, k, alpha, a, lda, b, ldb, beta, c, ldc)
}

func gtrans(t bool) gblas.Transpose {
	if t {
		return gblas.Trans
	}
	return gblas.NoTrans
}

// scaleRows computes c[i, :n] *= beta for m rows of stride ldc (beta 0 writes
// zeros, so NaNs in c do not survive, as BLAS specifies).
func scaleRows(c []float32, m, n, ldc int, beta float32) {
	for i := 0; i < m; i++ {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

// fitsCInt reports whether every size can be passed as a C int.
func fitsCInt(v ...int) bool {
	for _, x := range v {
		if x < 0 || x > math.MaxInt32 {
			return false
		}
	}
	return true
}
