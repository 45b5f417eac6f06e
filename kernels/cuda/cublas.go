package cuda

/*
#include <stddef.h>

// Our own declarations of the cuBLAS API we call, from the facts in
// cublas_api.h and library_types.h (cuBLAS 12.x and 13.x; checked against
// the 13.4 headers). We dlsym the _v2 names: cublas_v2.h #defines
// cublasCreate to cublasCreate_v2 and so on, and the bare names exported by
// libcublas are the legacy API (no handle).
//
// cublas_api.h: "typedef enum {...} cublasStatus_t;" CUBLAS_STATUS_SUCCESS = 0.
typedef int pt_cublasStatus;
// cublas_api.h: "typedef struct cublasContext* cublasHandle_t;"
typedef void *pt_cublasHandle;
// cudaStream_t is "struct CUstream_st *", the same type as the driver's CUstream.
typedef void *pt_cudaStream;
typedef void *pt_CUcontext_b;

// cublasStatus_t cublasCreate_v2(cublasHandle_t* handle);
typedef pt_cublasStatus (*pt_cublasCreate_fn)(pt_cublasHandle *);
// cublasStatus_t cublasDestroy_v2(cublasHandle_t handle);
typedef pt_cublasStatus (*pt_cublasDestroy_fn)(pt_cublasHandle);
// cublasStatus_t cublasGetVersion_v2(cublasHandle_t handle, int* version);
typedef pt_cublasStatus (*pt_cublasGetVersion_fn)(pt_cublasHandle, int *);
// cublasStatus_t cublasSetStream_v2(cublasHandle_t handle, cudaStream_t streamId);
typedef pt_cublasStatus (*pt_cublasSetStream_fn)(pt_cublasHandle, pt_cudaStream);
// cublasStatus_t cublasSetMathMode(cublasHandle_t handle, cublasMath_t mode);
typedef pt_cublasStatus (*pt_cublasSetMathMode_fn)(pt_cublasHandle, int);
// const char* cublasGetStatusString(cublasStatus_t status);
typedef const char *(*pt_cublasGetStatusString_fn)(pt_cublasStatus);
// cublasStatus_t cublasSgemm_v2(cublasHandle_t handle, cublasOperation_t transa,
//   cublasOperation_t transb, int m, int n, int k, const float* alpha,
//   const float* A, int lda, const float* B, int ldb, const float* beta,
//   float* C, int ldc);
typedef pt_cublasStatus (*pt_cublasSgemm_fn)(pt_cublasHandle, int, int, int, int, int,
	const float *, const float *, int, const float *, int, const float *, float *, int);
// cublasStatus_t cublasGemmEx(cublasHandle_t handle, cublasOperation_t transa,
//   cublasOperation_t transb, int m, int n, int k, const void* alpha,
//   const void* A, cudaDataType Atype, int lda, const void* B, cudaDataType Btype,
//   int ldb, const void* beta, void* C, cudaDataType Ctype, int ldc,
//   cublasComputeType_t computeType, cublasGemmAlgo_t algo);
// (The C symbol takes cublasComputeType_t; the overload taking cudaDataType
// is a C++-only inline wrapper in the header.)
typedef pt_cublasStatus (*pt_cublasGemmEx_fn)(pt_cublasHandle, int, int, int, int, int,
	const void *, const void *, int, int, const void *, int, int, const void *, void *, int, int, int, int);
// cublasStatus_t cublasGemmStridedBatchedEx(cublasHandle_t handle,
//   cublasOperation_t transa, cublasOperation_t transb, int m, int n, int k,
//   const void* alpha, const void* A, cudaDataType Atype, int lda, long long int strideA,
//   const void* B, cudaDataType Btype, int ldb, long long int strideB, const void* beta,
//   void* C, cudaDataType Ctype, int ldc, long long int strideC, int batchCount,
//   cublasComputeType_t computeType, cublasGemmAlgo_t algo);
typedef pt_cublasStatus (*pt_cublasGemmStridedBatchedEx_fn)(pt_cublasHandle, int, int, int, int, int,
	const void *, const void *, int, int, long long, const void *, int, int, long long, const void *,
	void *, int, int, long long, int, int, int);

// CUresult cuCtxSetCurrent(CUcontext ctx); (cuda.h) -- cuBLAS runs on the
// calling thread's current context, so each call makes ours current first.
typedef int (*pt_setcur_fn)(pt_CUcontext_b);
#define PT_BSETCUR(setcur, ctx) do { int r_ = ((pt_setcur_fn)(setcur))(ctx); if (r_ != 0) return -1000 - r_; } while (0)

static pt_cublasStatus pt_cublasCreate(void *setcur, pt_CUcontext_b ctx, void *fn, pt_cublasHandle *h) {
	PT_BSETCUR(setcur, ctx);
	return ((pt_cublasCreate_fn)fn)(h);
}
static pt_cublasStatus pt_cublasDestroy(void *setcur, pt_CUcontext_b ctx, void *fn, pt_cublasHandle h) {
	PT_BSETCUR(setcur, ctx);
	return ((pt_cublasDestroy_fn)fn)(h);
}
// Every call makes our context current first, in the same C call: the
// goroutine may run on another OS thread than the last call, and cuBLAS's
// CUDA runtime would otherwise use (or create) device 0's context there
// (cublasSetStream also resets the workspace, which may allocate).
static pt_cublasStatus pt_cublasGetVersion(void *setcur, pt_CUcontext_b ctx, void *fn, pt_cublasHandle h, int *v) {
	PT_BSETCUR(setcur, ctx);
	return ((pt_cublasGetVersion_fn)fn)(h, v);
}
static pt_cublasStatus pt_cublasSetStream(void *setcur, pt_CUcontext_b ctx, void *fn, pt_cublasHandle h, pt_cudaStream s) {
	PT_BSETCUR(setcur, ctx);
	return ((pt_cublasSetStream_fn)fn)(h, s);
}
static pt_cublasStatus pt_cublasSetMathMode(void *setcur, pt_CUcontext_b ctx, void *fn, pt_cublasHandle h, int mode) {
	PT_BSETCUR(setcur, ctx);
	return ((pt_cublasSetMathMode_fn)fn)(h, mode);
}
static const char *pt_cublasGetStatusString(void *fn, pt_cublasStatus s) { return ((pt_cublasGetStatusString_fn)fn)(s); }

// alpha and beta are passed by value and their addresses taken here: the
// handle is in CUBLAS_POINTER_MODE_HOST (the default), so cuBLAS reads them
// before the call returns.
static pt_cublasStatus pt_cublasSgemm(void *setcur, pt_CUcontext_b ctx, void *fn, pt_cublasHandle h,
		int ta, int tb, int m, int n, int k, float alpha,
		unsigned long long A, int lda, unsigned long long B, int ldb, float beta,
		unsigned long long C, int ldc) {
	PT_BSETCUR(setcur, ctx);
	return ((pt_cublasSgemm_fn)fn)(h, ta, tb, m, n, k, &alpha, (const float *)A, lda, (const float *)B, ldb,
		&beta, (float *)C, ldc);
}
static pt_cublasStatus pt_cublasGemmEx(void *setcur, pt_CUcontext_b ctx, void *fn, pt_cublasHandle h,
		int ta, int tb, int m, int n, int k, float alpha,
		unsigned long long A, int atype, int lda, unsigned long long B, int btype, int ldb, float beta,
		unsigned long long C, int ctype, int ldc, int compute, int algo) {
	PT_BSETCUR(setcur, ctx);
	return ((pt_cublasGemmEx_fn)fn)(h, ta, tb, m, n, k, &alpha, (const void *)A, atype, lda,
		(const void *)B, btype, ldb, &beta, (void *)C, ctype, ldc, compute, algo);
}
static pt_cublasStatus pt_cublasGemmStridedBatchedEx(void *setcur, pt_CUcontext_b ctx, void *fn, pt_cublasHandle h,
		int ta, int tb, int m, int n, int k, float alpha,
		unsigned long long A, int atype, int lda, long long sa, unsigned long long B, int btype, int ldb, long long sb,
		float beta, unsigned long long C, int ctype, int ldc, long long sc, int batch, int compute, int algo) {
	PT_BSETCUR(setcur, ctx);
	return ((pt_cublasGemmStridedBatchedEx_fn)fn)(h, ta, tb, m, n, k, &alpha, (const void *)A, atype, lda, sa,
		(const void *)B, btype, ldb, sb, &beta, (void *)C, ctype, ldc, sc, batch, compute, algo);
}
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/peertune/peertune/internal/dl"
)

// Constants from cublas_api.h and library_types.h.
const (
	cublasStatusSuccess = 0 // CUBLAS_STATUS_SUCCESS

	cublasOpN = 0 // CUBLAS_OP_N
	cublasOpT = 1 // CUBLAS_OP_T

	cublasDefaultMath = 0 // CUBLAS_DEFAULT_MATH
	// cublasTF32TensorOpMath = 3 (CUBLAS_TF32_TENSOR_OP_MATH) is not used:
	// TF32 is asked for per call with CUBLAS_COMPUTE_32F_FAST_TF32.

	cublasCompute32F         = 68 // CUBLAS_COMPUTE_32F
	cublasCompute32FFastTF32 = 77 // CUBLAS_COMPUTE_32F_FAST_TF32

	cublasGemmDefault = -1 // CUBLAS_GEMM_DEFAULT

	cudaR32F  = 0  // CUDA_R_32F (library_types.h, cudaDataType)
	cudaR16BF = 14 // CUDA_R_16BF
)

// cublasAPI is libcublas with the symbols we call.
type cublasAPI struct {
	lib *dl.Lib

	create, destroy, getVersion, setStream, setMathMode, sgemm, gemmEx unsafe.Pointer
	gemmStridedBatchedEx                                               unsafe.Pointer // attention's batched GEMMs
	getStatusString                                                    unsafe.Pointer // optional (cuBLAS >= 11.4.2)
}

func loadCublas(lib *dl.Lib) (*cublasAPI, error) {
	b := &cublasAPI{lib: lib}
	syms := []struct {
		name string
		p    *unsafe.Pointer
	}{
		{"cublasCreate_v2", &b.create},
		{"cublasDestroy_v2", &b.destroy},
		{"cublasGetVersion_v2", &b.getVersion},
		{"cublasSetStream_v2", &b.setStream},
		{"cublasSetMathMode", &b.setMathMode},
		{"cublasSgemm_v2", &b.sgemm},
		{"cublasGemmEx", &b.gemmEx},
		{"cublasGemmStridedBatchedEx", &b.gemmStridedBatchedEx},
	}
	for _, s := range syms {
		p, err := lib.Sym(s.name)
		if err != nil {
			return nil, fmt.Errorf("%s is not a usable cuBLAS (CUDA >= 11 needed): %w", lib.Name(), err)
		}
		if p == nil {
			return nil, fmt.Errorf("%s: %s is NULL", lib.Name(), s.name)
		}
		*s.p = p
	}
	b.getStatusString, _ = lib.Sym("cublasGetStatusString")
	return b, nil
}

// cublasStatusNames are the cublasStatus_t values (cublas_api.h), for
// libraries without cublasGetStatusString.
var cublasStatusNames = map[int]string{
	0: "CUBLAS_STATUS_SUCCESS", 1: "CUBLAS_STATUS_NOT_INITIALIZED", 3: "CUBLAS_STATUS_ALLOC_FAILED",
	7: "CUBLAS_STATUS_INVALID_VALUE", 8: "CUBLAS_STATUS_ARCH_MISMATCH", 11: "CUBLAS_STATUS_MAPPING_ERROR",
	13: "CUBLAS_STATUS_EXECUTION_FAILED", 14: "CUBLAS_STATUS_INTERNAL_ERROR", 15: "CUBLAS_STATUS_NOT_SUPPORTED",
	16: "CUBLAS_STATUS_LICENSE_ERROR",
}

// check turns a cublasStatus_t (or a cuCtxSetCurrent failure, encoded by
// the trampolines as -1000-CUresult) into an error naming the call.
func (b *cublasAPI) check(call string, s C.pt_cublasStatus) error {
	if s == cublasStatusSuccess {
		return nil
	}
	if s <= -1000 {
		return fmt.Errorf("%s: cuCtxSetCurrent failed with CUresult %d", call, -1000-int(s))
	}
	name := cublasStatusNames[int(s)]
	if name == "" {
		name = "CUBLAS_STATUS_UNKNOWN"
	}
	msg := ""
	if b.getStatusString != nil {
		if p := C.pt_cublasGetStatusString(b.getStatusString, s); p != nil {
			msg = ": " + C.GoString(p)
		}
	}
	return fmt.Errorf("%s: %s (%d)%s", call, name, int(s), msg)
}

// cublasHandle is one cuBLAS handle bound to a context and a stream.
type cublasHandle struct {
	api    *cublasAPI
	setcur unsafe.Pointer // cuCtxSetCurrent
	ctx    C.pt_CUcontext_b
	h      C.pt_cublasHandle
	ver    int // cublasGetVersion, e.g. 130401
}

func newCublasHandle(api *cublasAPI, setcur unsafe.Pointer, ctx, stream unsafe.Pointer) (*cublasHandle, error) {
	ch := &cublasHandle{api: api, setcur: setcur, ctx: C.pt_CUcontext_b(ctx)}
	if err := api.check("cublasCreate_v2", C.pt_cublasCreate(setcur, ch.ctx, api.create, &ch.h)); err != nil {
		return nil, err
	}
	var v C.int
	if err := api.check("cublasGetVersion_v2", C.pt_cublasGetVersion(setcur, ch.ctx, api.getVersion, ch.h, &v)); err != nil {
		ch.destroy()
		return nil, err
	}
	ch.ver = int(v)
	if err := api.check("cublasSetStream_v2", C.pt_cublasSetStream(setcur, ch.ctx, api.setStream, ch.h, C.pt_cudaStream(stream))); err != nil {
		ch.destroy()
		return nil, err
	}
	// Default math: SGEMM in IEEE float32. TF32 is requested per call.
	if err := api.check("cublasSetMathMode", C.pt_cublasSetMathMode(setcur, ch.ctx, api.setMathMode, ch.h, cublasDefaultMath)); err != nil {
		ch.destroy()
		return nil, err
	}
	return ch, nil
}

func (ch *cublasHandle) destroy() {
	if ch.h != nil {
		C.pt_cublasDestroy(ch.setcur, ch.ctx, ch.api.destroy, ch.h)
		ch.h = nil
	}
}

// gemmCall is one column-major cuBLAS GEMM, C = alpha·op(A)·op(B) + beta·C
// with op(A) m×k, op(B) k×n, C m×n (cuBLAS's own argument meaning).
type gemmCall struct {
	transA, transB bool
	m, n, k        int
	alpha, beta    float32
	a, b, c        uint64 // device pointers
	lda, ldb, ldc  int
	// dtype of A and B (C is float32 unless cBF16); F32 uses cublasSgemm_v2
	// or, with tf32, cublasGemmEx with CUBLAS_COMPUTE_32F_FAST_TF32.
	abBF16, cBF16 bool
	tf32          bool
	// batch > 0: batch GEMMs (cublasGemmStridedBatchedEx), the i-th on A, B
	// and C offset by i times their stride (in elements).
	batch                     int
	strideA, strideB, strideC int64
}

func cublasOp(t bool) C.int {
	if t {
		return cublasOpT
	}
	return cublasOpN
}

func (ch *cublasHandle) gemm(g gemmCall) error {
	if g.batch == 0 && !g.abBF16 && !g.cBF16 && !g.tf32 {
		return ch.api.check("cublasSgemm_v2", C.pt_cublasSgemm(ch.setcur, ch.ctx, ch.api.sgemm, ch.h,
			cublasOp(g.transA), cublasOp(g.transB), C.int(g.m), C.int(g.n), C.int(g.k), C.float(g.alpha),
			C.ulonglong(g.a), C.int(g.lda), C.ulonglong(g.b), C.int(g.ldb), C.float(g.beta),
			C.ulonglong(g.c), C.int(g.ldc)))
	}
	abType, cType, compute := C.int(cudaR32F), C.int(cudaR32F), C.int(cublasCompute32F)
	if g.abBF16 {
		abType = cudaR16BF
	}
	if g.cBF16 {
		cType = cudaR16BF
	}
	if g.tf32 && !g.abBF16 {
		compute = cublasCompute32FFastTF32
	}
	if g.batch > 0 {
		return ch.api.check("cublasGemmStridedBatchedEx", C.pt_cublasGemmStridedBatchedEx(ch.setcur, ch.ctx, ch.api.gemmStridedBatchedEx, ch.h,
			cublasOp(g.transA), cublasOp(g.transB), C.int(g.m), C.int(g.n), C.int(g.k), C.float(g.alpha),
			C.ulonglong(g.a), abType, C.int(g.lda), C.longlong(g.strideA), C.ulonglong(g.b), abType, C.int(g.ldb), C.longlong(g.strideB),
			C.float(g.beta), C.ulonglong(g.c), cType, C.int(g.ldc), C.longlong(g.strideC), C.int(g.batch), compute, cublasGemmDefault))
	}
	return ch.api.check("cublasGemmEx", C.pt_cublasGemmEx(ch.setcur, ch.ctx, ch.api.gemmEx, ch.h,
		cublasOp(g.transA), cublasOp(g.transB), C.int(g.m), C.int(g.n), C.int(g.k), C.float(g.alpha),
		C.ulonglong(g.a), abType, C.int(g.lda), C.ulonglong(g.b), abType, C.int(g.ldb), C.float(g.beta),
		C.ulonglong(g.c), cType, C.int(g.ldc), compute, cublasGemmDefault))
}

// statusError is check for a status given as an int (tests).
func (b *cublasAPI) statusError(call string, status int) error {
	return b.check(call, C.pt_cublasStatus(status))
}
