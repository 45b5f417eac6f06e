package cuda

/*
#include <stdlib.h>
#include "cuda_api.h"
*/
import "C"

import (
	"fmt"
	"math"
	"unsafe"
)

// gpu is what the Backend needs from a device: memory, copies, kernel
// launches and GEMMs, all ordered on one stream. The real one is cudaGPU;
// the tests substitute a host-memory fake to check the Backend's own logic
// (shapes, views, argument packing, the GEMM mapping) without a GPU.
type gpu interface {
	// alloc returns device memory of at least bytes bytes (bytes > 0).
	alloc(bytes int) (uint64, error)
	free(p uint64) error
	// htod copies host memory to the device; src may be reused when it returns.
	htod(dst uint64, src unsafe.Pointer, bytes int) error
	// dtoh copies device memory to the host and waits for it (and for
	// everything issued before it).
	dtoh(dst unsafe.Pointer, src uint64, bytes int) error
	dtod(dst, src uint64, bytes int) error
	memsetD32(dst uint64, v uint32, n int) error
	memsetD8(dst uint64, v uint8, n int) error
	// launch runs kernel k; args match k.sig.kinds (checked by the caller).
	launch(k *kernelFn, grid, block [3]uint32, smem int, args []kernelArg) error
	gemm(g gemmCall) error
	// sync waits for the stream and returns the first device error.
	sync() error
	close() error
}

// kernelFn is a kernel resolved on a device.
type kernelFn struct {
	sig      kernelSig
	handle   unsafe.Pointer // CUfunction (real device)
	smemOpt  int            // dynamic shared memory opted in so far (bytes)
	smemMax  int            // the device's opt-in limit
	setAttrF func(bytes int) error
}

// kernelArg is one packed kernel argument: the low 4 bytes are used for
// 32-bit kinds (the host is little-endian).
type kernelArg struct {
	kind argKind
	bits uint64
}

func argP(p uint64) kernelArg  { return kernelArg{argPtr, p} }
func argI(v int) kernelArg     { return kernelArg{argI32, uint64(uint32(int32(v)))} }
func argL(v int64) kernelArg   { return kernelArg{argI64, uint64(v)} }
func argU(v uint64) kernelArg  { return kernelArg{argI64, v} }
func argF(v float32) kernelArg { return kernelArg{argF32, uint64(math.Float32bits(v))} }

// maxKernelArgs bounds the parameters of any kernel (the largest has 15).
const maxKernelArgs = 32

// cudaGPU is a device's primary context with one stream, a cuBLAS handle on
// that stream, and the loaded modules.
type cudaGPU struct {
	drv    *driverAPI
	info   *deviceInfo
	ctx    C.pt_CUcontext
	stream C.pt_CUstream
	blas   *cublasHandle

	modules []C.pt_CUmodule

	// Kernel parameters live in C memory: slots of 8 bytes and the array of
	// pointers to them that cuLaunchKernel reads (cgo forbids handing C a
	// Go array of pointers).
	argSlots unsafe.Pointer // [maxKernelArgs]uint64
	argPtrs  unsafe.Pointer // [maxKernelArgs]void*

	retained bool
}

// openGPU retains the device's primary context (shared with any other
// CUDA user in the process, e.g. NCCL) and creates our stream and cuBLAS
// handle on it.
func openGPU(l *libs, info *deviceInfo) (*cudaGPU, error) {
	g := &cudaGPU{drv: l.drv, info: info}
	d := l.drv
	if err := d.check("cuDevicePrimaryCtxRetain", C.pt_cuDevicePrimaryCtxRetain(d.cuDevicePrimaryCtxRetain, &g.ctx, info.handle)); err != nil {
		return nil, err
	}
	g.retained = true
	// Non-blocking: our stream does not synchronise with the legacy NULL
	// stream that other libraries in the process might use.
	if err := d.check("cuStreamCreate", C.pt_cuStreamCreate(d.cuCtxSetCurrent, g.ctx, d.cuStreamCreate, &g.stream, cuStreamNonBlocking)); err != nil {
		g.close()
		return nil, err
	}
	blas, err := newCublasHandle(l.blas, d.cuCtxSetCurrent, unsafe.Pointer(g.ctx), unsafe.Pointer(g.stream))
	if err != nil {
		g.close()
		return nil, err
	}
	g.blas = blas
	g.argSlots = C.calloc(maxKernelArgs, 8)
	g.argPtrs = C.calloc(maxKernelArgs, C.size_t(unsafe.Sizeof(uintptr(0))))
	slots := unsafe.Slice((*uint64)(g.argSlots), maxKernelArgs)
	ptrs := unsafe.Slice((*unsafe.Pointer)(g.argPtrs), maxKernelArgs)
	for i := range ptrs {
		ptrs[i] = unsafe.Pointer(&slots[i])
	}
	return g, nil
}

// loadModule loads a compiled image and resolves the named kernels.
func (g *cudaGPU) loadModule(img *moduleImage, sigs []kernelSig) (map[string]*kernelFn, error) {
	d := g.drv
	cimg := C.CBytes(img.image)
	defer C.free(cimg)
	var mod C.pt_CUmodule
	if err := d.check("cuModuleLoadData", C.pt_cuModuleLoadData(d.cuCtxSetCurrent, g.ctx, d.cuModuleLoadData, &mod, cimg)); err != nil {
		return nil, err
	}
	g.modules = append(g.modules, mod)
	out := map[string]*kernelFn{}
	for _, s := range sigs {
		var f C.pt_CUfunction
		cname := C.CString(s.name)
		err := d.check("cuModuleGetFunction("+s.name+")", C.pt_cuModuleGetFunction(d.cuCtxSetCurrent, g.ctx, d.cuModuleGetFunction, &f, mod, cname))
		C.free(unsafe.Pointer(cname))
		if err != nil {
			return nil, err
		}
		k := &kernelFn{sig: s, handle: unsafe.Pointer(f), smemOpt: 48 << 10, smemMax: g.info.smemOptin}
		k.setAttrF = func(bytes int) error {
			return d.check("cuFuncSetAttribute(MAX_DYNAMIC_SHARED_SIZE_BYTES)",
				C.pt_cuFuncSetAttribute(d.cuCtxSetCurrent, g.ctx, d.cuFuncSetAttribute, C.pt_CUfunction(k.handle),
					cuFuncAttrMaxDynamicSharedSizeBytes, C.int(bytes)))
		}
		out[s.name] = k
	}
	return out, nil
}

func (g *cudaGPU) alloc(bytes int) (uint64, error) {
	var p C.pt_CUdeviceptr
	err := g.drv.check(fmt.Sprintf("cuMemAlloc(%d bytes)", bytes), C.pt_cuMemAlloc(g.drv.cuCtxSetCurrent, g.ctx, g.drv.cuMemAlloc, &p, C.size_t(bytes)))
	return uint64(p), err
}

func (g *cudaGPU) free(p uint64) error {
	return g.drv.check("cuMemFree", C.pt_cuMemFree(g.drv.cuCtxSetCurrent, g.ctx, g.drv.cuMemFree, C.pt_CUdeviceptr(p)))
}

func (g *cudaGPU) htod(dst uint64, src unsafe.Pointer, bytes int) error {
	// From pageable (Go) memory the driver stages the data before
	// returning, so src may change afterwards; the copy stays ordered on
	// the stream.
	return g.drv.check("cuMemcpyHtoDAsync", C.pt_cuMemcpyHtoDAsync(g.drv.cuCtxSetCurrent, g.ctx, g.drv.cuMemcpyHtoDAsync,
		C.pt_CUdeviceptr(dst), src, C.size_t(bytes), g.stream))
}

func (g *cudaGPU) dtoh(dst unsafe.Pointer, src uint64, bytes int) error {
	return g.drv.check("cuMemcpyDtoHAsync", C.pt_cuMemcpyDtoH(g.drv.cuCtxSetCurrent, g.ctx, g.drv.cuMemcpyDtoHAsync,
		g.drv.cuStreamSynchronize, dst, C.pt_CUdeviceptr(src), C.size_t(bytes), g.stream))
}

func (g *cudaGPU) dtod(dst, src uint64, bytes int) error {
	return g.drv.check("cuMemcpyDtoDAsync", C.pt_cuMemcpyDtoDAsync(g.drv.cuCtxSetCurrent, g.ctx, g.drv.cuMemcpyDtoDAsync,
		C.pt_CUdeviceptr(dst), C.pt_CUdeviceptr(src), C.size_t(bytes), g.stream))
}

func (g *cudaGPU) memsetD32(dst uint64, v uint32, n int) error {
	return g.drv.check("cuMemsetD32Async", C.pt_cuMemsetD32Async(g.drv.cuCtxSetCurrent, g.ctx, g.drv.cuMemsetD32Async,
		C.pt_CUdeviceptr(dst), C.uint(v), C.size_t(n), g.stream))
}

func (g *cudaGPU) memsetD8(dst uint64, v uint8, n int) error {
	return g.drv.check("cuMemsetD8Async", C.pt_cuMemsetD8Async(g.drv.cuCtxSetCurrent, g.ctx, g.drv.cuMemsetD8Async,
		C.pt_CUdeviceptr(dst), C.uchar(v), C.size_t(n), g.stream))
}

func (g *cudaGPU) launch(k *kernelFn, grid, block [3]uint32, smem int, args []kernelArg) error {
	if len(args) > maxKernelArgs {
		return fmt.Errorf("kernel %s: %d arguments, at most %d", k.sig.name, len(args), maxKernelArgs)
	}
	if smem > k.smemOpt {
		if smem > k.smemMax {
			return fmt.Errorf("kernel %s needs %d bytes of shared memory, the device allows %d", k.sig.name, smem, k.smemMax)
		}
		if err := k.setAttrF(smem); err != nil {
			return err
		}
		k.smemOpt = smem
	}
	slots := unsafe.Slice((*uint64)(g.argSlots), maxKernelArgs)
	for i, a := range args {
		slots[i] = a.bits
	}
	return g.drv.check("cuLaunchKernel("+k.sig.name+")", C.pt_cuLaunchKernel(g.drv.cuCtxSetCurrent, g.ctx, g.drv.cuLaunchKernel,
		C.pt_CUfunction(k.handle), C.uint(grid[0]), C.uint(grid[1]), C.uint(grid[2]),
		C.uint(block[0]), C.uint(block[1]), C.uint(block[2]), C.uint(smem), g.stream, (*unsafe.Pointer)(g.argPtrs)))
}

func (g *cudaGPU) gemm(c gemmCall) error { return g.blas.gemm(c) }

func (g *cudaGPU) sync() error {
	return g.drv.check("cuStreamSynchronize", C.pt_cuStreamSynchronize(g.drv.cuCtxSetCurrent, g.ctx, g.drv.cuStreamSynchronize, g.stream))
}

// memInfo returns the free and total device memory.
func (g *cudaGPU) memInfo() (free, total uint64, err error) {
	var f, t C.size_t
	err = g.drv.check("cuMemGetInfo", C.pt_cuMemGetInfo(g.drv.cuCtxSetCurrent, g.ctx, g.drv.cuMemGetInfo, &f, &t))
	return uint64(f), uint64(t), err
}

// close releases everything, in reverse order of creation. It returns the
// first error but always releases the rest.
func (g *cudaGPU) close() error {
	var first error
	keep := func(err error) {
		if first == nil {
			first = err
		}
	}
	d := g.drv
	if g.stream != nil {
		keep(g.sync())
	}
	if g.blas != nil {
		g.blas.destroy()
		g.blas = nil
	}
	for _, m := range g.modules {
		keep(d.check("cuModuleUnload", C.pt_cuModuleUnload(d.cuCtxSetCurrent, g.ctx, d.cuModuleUnload, m)))
	}
	g.modules = nil
	if g.stream != nil {
		keep(d.check("cuStreamDestroy", C.pt_cuStreamDestroy(d.cuCtxSetCurrent, g.ctx, d.cuStreamDestroy, g.stream)))
		g.stream = nil
	}
	if g.argSlots != nil {
		C.free(g.argSlots)
		C.free(g.argPtrs)
		g.argSlots, g.argPtrs = nil, nil
	}
	if g.retained {
		keep(d.check("cuDevicePrimaryCtxRelease", C.pt_cuDevicePrimaryCtxRelease(d.cuDevicePrimaryCtxRelease, g.info.handle)))
		g.retained = false
	}
	return first
}

// handles returns the raw CUcontext and CUstream, for libraries that must
// share them (NCCL enqueues its collectives on our stream).
func (g *cudaGPU) handles() (ctx, stream uintptr) {
	return uintptr(unsafe.Pointer(g.ctx)), uintptr(unsafe.Pointer(g.stream))
}
