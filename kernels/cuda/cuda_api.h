// cuda_api.h: our own declarations of the CUDA driver API that peertune
// calls, and the C trampolines that call it through pointers from dlsym.
// Included by the cgo preambles of driver.go and device.go (cgo types are
// per file, so the ones both use must come from one place). No CUDA header
// is included anywhere: the driver is dlopened at run time.
#ifndef PT_CUDA_API_H
#define PT_CUDA_API_H

#include <stddef.h>
#include <stdlib.h>

// Our own declarations of the CUDA driver API we call, from the facts in
// cuda.h (CUDA 12.x and 13.x; checked against the CUDA 13.2 header). No
// header is included: the driver is dlopened at run time.
//
// cuda.h: "typedef enum cudaError_enum {...} CUresult;" with CUDA_SUCCESS = 0.
typedef int pt_CUresult;
// cuda.h: "typedef int CUdevice_v1; typedef CUdevice_v1 CUdevice;"
typedef int pt_CUdevice;
// cuda.h: "typedef unsigned long long CUdeviceptr_v2;" (64-bit hosts);
// "typedef CUdeviceptr_v2 CUdeviceptr;"
typedef unsigned long long pt_CUdeviceptr;
// cuda.h: "typedef struct CUctx_st *CUcontext;", "struct CUmod_st *CUmodule",
// "struct CUfunc_st *CUfunction", "struct CUstream_st *CUstream": opaque pointers.
typedef void *pt_CUcontext;
typedef void *pt_CUmodule;
typedef void *pt_CUfunction;
typedef void *pt_CUstream;

// Signatures (cuda.h). Where cuda.h #defines the name to a versioned symbol
// the comment names the symbol we dlsym.
// CUresult cuInit(unsigned int Flags);
typedef pt_CUresult (*pt_cuInit_fn)(unsigned int);
// CUresult cuDriverGetVersion(int *driverVersion);
typedef pt_CUresult (*pt_cuDriverGetVersion_fn)(int *);
// CUresult cuDeviceGetCount(int *count);
typedef pt_CUresult (*pt_cuDeviceGetCount_fn)(int *);
// CUresult cuDeviceGet(CUdevice *device, int ordinal);
typedef pt_CUresult (*pt_cuDeviceGet_fn)(pt_CUdevice *, int);
// CUresult cuDeviceGetAttribute(int *pi, CUdevice_attribute attrib, CUdevice dev);
typedef pt_CUresult (*pt_cuDeviceGetAttribute_fn)(int *, int, pt_CUdevice);
// CUresult cuDeviceGetName(char *name, int len, CUdevice dev);
typedef pt_CUresult (*pt_cuDeviceGetName_fn)(char *, int, pt_CUdevice);
// cuDeviceTotalMem -> cuDeviceTotalMem_v2: CUresult (size_t *bytes, CUdevice dev);
typedef pt_CUresult (*pt_cuDeviceTotalMem_fn)(size_t *, pt_CUdevice);
// CUresult cuDevicePrimaryCtxRetain(CUcontext *pctx, CUdevice dev);
typedef pt_CUresult (*pt_cuDevicePrimaryCtxRetain_fn)(pt_CUcontext *, pt_CUdevice);
// cuDevicePrimaryCtxRelease -> cuDevicePrimaryCtxRelease_v2: CUresult (CUdevice dev);
typedef pt_CUresult (*pt_cuDevicePrimaryCtxRelease_fn)(pt_CUdevice);
// CUresult cuCtxSetCurrent(CUcontext ctx);
typedef pt_CUresult (*pt_cuCtxSetCurrent_fn)(pt_CUcontext);
// CUresult cuStreamCreate(CUstream *phStream, unsigned int Flags);
typedef pt_CUresult (*pt_cuStreamCreate_fn)(pt_CUstream *, unsigned int);
// cuStreamDestroy -> cuStreamDestroy_v2: CUresult (CUstream hStream);
typedef pt_CUresult (*pt_cuStreamDestroy_fn)(pt_CUstream);
// CUresult cuStreamSynchronize(CUstream hStream);
typedef pt_CUresult (*pt_cuStreamSynchronize_fn)(pt_CUstream);
// cuMemAlloc -> cuMemAlloc_v2: CUresult (CUdeviceptr *dptr, size_t bytesize);
typedef pt_CUresult (*pt_cuMemAlloc_fn)(pt_CUdeviceptr *, size_t);
// cuMemFree -> cuMemFree_v2: CUresult (CUdeviceptr dptr);
typedef pt_CUresult (*pt_cuMemFree_fn)(pt_CUdeviceptr);
// cuMemGetInfo -> cuMemGetInfo_v2: CUresult (size_t *free, size_t *total);
typedef pt_CUresult (*pt_cuMemGetInfo_fn)(size_t *, size_t *);
// cuMemcpyHtoDAsync -> cuMemcpyHtoDAsync_v2:
//   CUresult (CUdeviceptr dstDevice, const void *srcHost, size_t ByteCount, CUstream hStream);
typedef pt_CUresult (*pt_cuMemcpyHtoDAsync_fn)(pt_CUdeviceptr, const void *, size_t, pt_CUstream);
// cuMemcpyDtoHAsync -> cuMemcpyDtoHAsync_v2:
//   CUresult (void *dstHost, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream);
typedef pt_CUresult (*pt_cuMemcpyDtoHAsync_fn)(void *, pt_CUdeviceptr, size_t, pt_CUstream);
// cuMemcpyDtoDAsync -> cuMemcpyDtoDAsync_v2:
//   CUresult (CUdeviceptr dstDevice, CUdeviceptr srcDevice, size_t ByteCount, CUstream hStream);
typedef pt_CUresult (*pt_cuMemcpyDtoDAsync_fn)(pt_CUdeviceptr, pt_CUdeviceptr, size_t, pt_CUstream);
// CUresult cuMemsetD32Async(CUdeviceptr dstDevice, unsigned int ui, size_t N, CUstream hStream);
typedef pt_CUresult (*pt_cuMemsetD32Async_fn)(pt_CUdeviceptr, unsigned int, size_t, pt_CUstream);
// CUresult cuMemsetD8Async(CUdeviceptr dstDevice, unsigned char uc, size_t N, CUstream hStream);
typedef pt_CUresult (*pt_cuMemsetD8Async_fn)(pt_CUdeviceptr, unsigned char, size_t, pt_CUstream);
// CUresult cuModuleLoadData(CUmodule *module, const void *image);
typedef pt_CUresult (*pt_cuModuleLoadData_fn)(pt_CUmodule *, const void *);
// CUresult cuModuleUnload(CUmodule hmod);
typedef pt_CUresult (*pt_cuModuleUnload_fn)(pt_CUmodule);
// CUresult cuModuleGetFunction(CUfunction *hfunc, CUmodule hmod, const char *name);
typedef pt_CUresult (*pt_cuModuleGetFunction_fn)(pt_CUfunction *, pt_CUmodule, const char *);
// CUresult cuFuncSetAttribute(CUfunction hfunc, CUfunction_attribute attrib, int value);
typedef pt_CUresult (*pt_cuFuncSetAttribute_fn)(pt_CUfunction, int, int);
// CUresult cuLaunchKernel(CUfunction f, unsigned int gridDimX, unsigned int gridDimY,
//   unsigned int gridDimZ, unsigned int blockDimX, unsigned int blockDimY,
//   unsigned int blockDimZ, unsigned int sharedMemBytes, CUstream hStream,
//   void **kernelParams, void **extra);
typedef pt_CUresult (*pt_cuLaunchKernel_fn)(pt_CUfunction, unsigned int, unsigned int, unsigned int,
	unsigned int, unsigned int, unsigned int, unsigned int, pt_CUstream, void **, void **);
// CUresult cuGetErrorString(CUresult error, const char **pStr); (same for cuGetErrorName)
typedef pt_CUresult (*pt_cuGetErrorString_fn)(pt_CUresult, const char **);

// cgo cannot call C function pointers, so every call goes through one of
// these trampolines, which receives the pointer dlsym returned. Calls that
// need a context take cuCtxSetCurrent and the context too and make it
// current in the same C call: a goroutine may run on another OS thread at
// each cgo call, and the driver's current context is per thread.
#define PT_SETCUR(setcur, ctx) do { pt_CUresult r_ = ((pt_cuCtxSetCurrent_fn)(setcur))(ctx); if (r_ != 0) return r_; } while (0)

static inline pt_CUresult pt_cuInit(void *fn, unsigned int flags) { return ((pt_cuInit_fn)fn)(flags); }
static inline pt_CUresult pt_cuDriverGetVersion(void *fn, int *v) { return ((pt_cuDriverGetVersion_fn)fn)(v); }
static inline pt_CUresult pt_cuDeviceGetCount(void *fn, int *n) { return ((pt_cuDeviceGetCount_fn)fn)(n); }
static inline pt_CUresult pt_cuDeviceGet(void *fn, pt_CUdevice *d, int ordinal) { return ((pt_cuDeviceGet_fn)fn)(d, ordinal); }
static inline pt_CUresult pt_cuDeviceGetAttribute(void *fn, int *v, int attr, pt_CUdevice d) {
	return ((pt_cuDeviceGetAttribute_fn)fn)(v, attr, d);
}
static inline pt_CUresult pt_cuDeviceGetName(void *fn, char *name, int len, pt_CUdevice d) {
	return ((pt_cuDeviceGetName_fn)fn)(name, len, d);
}
static inline pt_CUresult pt_cuDeviceTotalMem(void *fn, size_t *bytes, pt_CUdevice d) {
	return ((pt_cuDeviceTotalMem_fn)fn)(bytes, d);
}
static inline pt_CUresult pt_cuDevicePrimaryCtxRetain(void *fn, pt_CUcontext *c, pt_CUdevice d) {
	return ((pt_cuDevicePrimaryCtxRetain_fn)fn)(c, d);
}
static inline pt_CUresult pt_cuDevicePrimaryCtxRelease(void *fn, pt_CUdevice d) {
	return ((pt_cuDevicePrimaryCtxRelease_fn)fn)(d);
}
static inline pt_CUresult pt_cuStreamCreate(void *setcur, pt_CUcontext ctx, void *fn, pt_CUstream *s, unsigned int flags) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuStreamCreate_fn)fn)(s, flags);
}
static inline pt_CUresult pt_cuStreamDestroy(void *setcur, pt_CUcontext ctx, void *fn, pt_CUstream s) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuStreamDestroy_fn)fn)(s);
}
static inline pt_CUresult pt_cuStreamSynchronize(void *setcur, pt_CUcontext ctx, void *fn, pt_CUstream s) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuStreamSynchronize_fn)fn)(s);
}
static inline pt_CUresult pt_cuMemAlloc(void *setcur, pt_CUcontext ctx, void *fn, pt_CUdeviceptr *p, size_t n) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuMemAlloc_fn)fn)(p, n);
}
static inline pt_CUresult pt_cuMemFree(void *setcur, pt_CUcontext ctx, void *fn, pt_CUdeviceptr p) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuMemFree_fn)fn)(p);
}
static inline pt_CUresult pt_cuMemGetInfo(void *setcur, pt_CUcontext ctx, void *fn, size_t *free_, size_t *total) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuMemGetInfo_fn)fn)(free_, total);
}
static inline pt_CUresult pt_cuMemcpyHtoDAsync(void *setcur, pt_CUcontext ctx, void *fn,
		pt_CUdeviceptr dst, const void *src, size_t n, pt_CUstream s) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuMemcpyHtoDAsync_fn)fn)(dst, src, n, s);
}
// pt_cuMemcpyDtoH copies and then waits for the stream, all in one C call,
// so that the Go memory it writes is never written after the call returns.
static inline pt_CUresult pt_cuMemcpyDtoH(void *setcur, pt_CUcontext ctx, void *fn, void *syncfn,
		void *dst, pt_CUdeviceptr src, size_t n, pt_CUstream s) {
	PT_SETCUR(setcur, ctx);
	pt_CUresult r = ((pt_cuMemcpyDtoHAsync_fn)fn)(dst, src, n, s);
	if (r != 0) {
		return r;
	}
	return ((pt_cuStreamSynchronize_fn)syncfn)(s);
}
static inline pt_CUresult pt_cuMemcpyDtoDAsync(void *setcur, pt_CUcontext ctx, void *fn,
		pt_CUdeviceptr dst, pt_CUdeviceptr src, size_t n, pt_CUstream s) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuMemcpyDtoDAsync_fn)fn)(dst, src, n, s);
}
static inline pt_CUresult pt_cuMemsetD32Async(void *setcur, pt_CUcontext ctx, void *fn,
		pt_CUdeviceptr dst, unsigned int v, size_t n, pt_CUstream s) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuMemsetD32Async_fn)fn)(dst, v, n, s);
}
static inline pt_CUresult pt_cuMemsetD8Async(void *setcur, pt_CUcontext ctx, void *fn,
		pt_CUdeviceptr dst, unsigned char v, size_t n, pt_CUstream s) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuMemsetD8Async_fn)fn)(dst, v, n, s);
}
static inline pt_CUresult pt_cuModuleLoadData(void *setcur, pt_CUcontext ctx, void *fn, pt_CUmodule *m, const void *image) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuModuleLoadData_fn)fn)(m, image);
}
static inline pt_CUresult pt_cuModuleUnload(void *setcur, pt_CUcontext ctx, void *fn, pt_CUmodule m) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuModuleUnload_fn)fn)(m);
}
static inline pt_CUresult pt_cuModuleGetFunction(void *setcur, pt_CUcontext ctx, void *fn,
		pt_CUfunction *f, pt_CUmodule m, const char *name) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuModuleGetFunction_fn)fn)(f, m, name);
}
static inline pt_CUresult pt_cuFuncSetAttribute(void *setcur, pt_CUcontext ctx, void *fn, pt_CUfunction f, int attr, int v) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuFuncSetAttribute_fn)fn)(f, attr, v);
}
static inline pt_CUresult pt_cuLaunchKernel(void *setcur, pt_CUcontext ctx, void *fn, pt_CUfunction f,
		unsigned int gx, unsigned int gy, unsigned int gz,
		unsigned int bx, unsigned int by, unsigned int bz,
		unsigned int smem, pt_CUstream s, void **params) {
	PT_SETCUR(setcur, ctx);
	return ((pt_cuLaunchKernel_fn)fn)(f, gx, gy, gz, bx, by, bz, smem, s, params, NULL);
}
// Also used for cuGetErrorName, which has the same signature.
static inline pt_CUresult pt_cuGetErrorString(void *fn, pt_CUresult e, const char **s) {
	return ((pt_cuGetErrorString_fn)fn)(e, s);
}

#endif // PT_CUDA_API_H
