package cuda

/*
#include "cuda_api.h"
*/
import "C"

import (
	"fmt"
	"unsafe"

	"github.com/peertune/peertune/internal/dl"
)

// Constants from cuda.h.
const (
	cudaSuccess           = 0   // CUDA_SUCCESS
	cudaErrorNoDevice     = 100 // CUDA_ERROR_NO_DEVICE
	cudaErrorInvalidImage = 200 // CUDA_ERROR_INVALID_IMAGE
	cudaErrorNoBinaryGPU  = 209 // CUDA_ERROR_NO_BINARY_FOR_GPU
	cudaErrorUnsupPTX     = 222 // CUDA_ERROR_UNSUPPORTED_PTX_VERSION
	cudaErrorInvalidPTX   = 218 // CUDA_ERROR_INVALID_PTX

	cuDevAttrMultiprocessorCount       = 16 // CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT
	cuDevAttrComputeCapabilityMajor    = 75 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR
	cuDevAttrComputeCapabilityMinor    = 76 // CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR
	cuDevAttrMaxSharedMemPerBlockOptin = 97 // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN

	cuFuncAttrMaxDynamicSharedSizeBytes = 8 // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES

	cuStreamNonBlocking = 0x1 // CU_STREAM_NON_BLOCKING
)

// driverAPI is libcuda with the symbols we call.
type driverAPI struct {
	lib *dl.Lib

	cuInit, cuDriverGetVersion, cuDeviceGetCount, cuDeviceGet, cuDeviceGetAttribute,
	cuDeviceGetName, cuDeviceTotalMem, cuDevicePrimaryCtxRetain, cuDevicePrimaryCtxRelease,
	cuCtxSetCurrent, cuStreamCreate, cuStreamDestroy, cuStreamSynchronize,
	cuMemAlloc, cuMemFree, cuMemGetInfo, cuMemcpyHtoDAsync, cuMemcpyDtoHAsync, cuMemcpyDtoDAsync,
	cuMemsetD32Async, cuMemsetD8Async, cuModuleLoadData, cuModuleUnload, cuModuleGetFunction, cuFuncSetAttribute,
	cuLaunchKernel, cuGetErrorString, cuGetErrorName unsafe.Pointer

	version int // cuDriverGetVersion: 1000*major + 10*minor, e.g. 13020
}

// loadDriver resolves every symbol of driverAPI from lib. The versioned
// names are the ones cuda.h maps the API names to (cuMemAlloc is
// "#define cuMemAlloc cuMemAlloc_v2"); the unversioned cuMemAlloc in
// libcuda is the CUDA 3.1 ABI with 32-bit sizes.
func loadDriver(lib *dl.Lib) (*driverAPI, error) {
	d := &driverAPI{lib: lib}
	syms := []struct {
		name string
		p    *unsafe.Pointer
	}{
		{"cuInit", &d.cuInit},
		{"cuDriverGetVersion", &d.cuDriverGetVersion},
		{"cuDeviceGetCount", &d.cuDeviceGetCount},
		{"cuDeviceGet", &d.cuDeviceGet},
		{"cuDeviceGetAttribute", &d.cuDeviceGetAttribute},
		{"cuDeviceGetName", &d.cuDeviceGetName},
		{"cuDeviceTotalMem_v2", &d.cuDeviceTotalMem},
		{"cuDevicePrimaryCtxRetain", &d.cuDevicePrimaryCtxRetain},
		{"cuDevicePrimaryCtxRelease_v2", &d.cuDevicePrimaryCtxRelease},
		{"cuCtxSetCurrent", &d.cuCtxSetCurrent},
		{"cuStreamCreate", &d.cuStreamCreate},
		{"cuStreamDestroy_v2", &d.cuStreamDestroy},
		{"cuStreamSynchronize", &d.cuStreamSynchronize},
		{"cuMemAlloc_v2", &d.cuMemAlloc},
		{"cuMemFree_v2", &d.cuMemFree},
		{"cuMemGetInfo_v2", &d.cuMemGetInfo},
		{"cuMemcpyHtoDAsync_v2", &d.cuMemcpyHtoDAsync},
		{"cuMemcpyDtoHAsync_v2", &d.cuMemcpyDtoHAsync},
		{"cuMemcpyDtoDAsync_v2", &d.cuMemcpyDtoDAsync},
		{"cuMemsetD32Async", &d.cuMemsetD32Async},
		{"cuMemsetD8Async", &d.cuMemsetD8Async},
		{"cuModuleLoadData", &d.cuModuleLoadData},
		{"cuModuleUnload", &d.cuModuleUnload},
		{"cuModuleGetFunction", &d.cuModuleGetFunction},
		{"cuFuncSetAttribute", &d.cuFuncSetAttribute},
		{"cuLaunchKernel", &d.cuLaunchKernel},
		{"cuGetErrorString", &d.cuGetErrorString},
		{"cuGetErrorName", &d.cuGetErrorName},
	}
	for _, s := range syms {
		p, err := lib.Sym(s.name)
		if err != nil {
			return nil, fmt.Errorf("%s is not a usable CUDA driver: %w", lib.Name(), err)
		}
		if p == nil {
			return nil, fmt.Errorf("%s: %s is NULL", lib.Name(), s.name)
		}
		*s.p = p
	}
	return d, nil
}

// cuError is a failed driver call.
type cuError struct {
	call string
	code int
	name string // e.g. "CUDA_ERROR_OUT_OF_MEMORY"
	msg  string // cuGetErrorString's text
}

func (e *cuError) Error() string {
	return fmt.Sprintf("%s: %s (%d): %s", e.call, e.name, e.code, e.msg)
}

// check turns a CUresult into an error naming the call.
func (d *driverAPI) check(call string, r C.pt_CUresult) error {
	if r == cudaSuccess {
		return nil
	}
	e := &cuError{call: call, code: int(r), name: "CUDA_ERROR", msg: "unknown error"}
	var s *C.char
	if C.pt_cuGetErrorString(d.cuGetErrorName, r, &s) == cudaSuccess && s != nil {
		e.name = C.GoString(s)
	}
	s = nil
	if C.pt_cuGetErrorString(d.cuGetErrorString, r, &s) == cudaSuccess && s != nil {
		e.msg = C.GoString(s)
	}
	return e
}

// init reads the driver version (which needs no cuInit, so it is known
// even when there is no GPU) and calls cuInit(0).
func (d *driverAPI) init() error {
	var v C.int
	if err := d.check("cuDriverGetVersion", C.pt_cuDriverGetVersion(d.cuDriverGetVersion, &v)); err != nil {
		return err
	}
	d.version = int(v)
	return d.check("cuInit", C.pt_cuInit(d.cuInit, 0))
}

func (d *driverAPI) deviceCount() (int, error) {
	var n C.int
	err := d.check("cuDeviceGetCount", C.pt_cuDeviceGetCount(d.cuDeviceGetCount, &n))
	return int(n), err
}

// deviceInfo is what we read about one GPU.
type deviceInfo struct {
	ordinal      int
	handle       C.pt_CUdevice
	name         string
	major, minor int // compute capability
	sms          int
	totalMem     uint64
	smemOptin    int // largest dynamic shared memory a kernel may opt in to
}

func (d *driverAPI) device(ordinal int) (*deviceInfo, error) {
	info := &deviceInfo{ordinal: ordinal}
	if err := d.check("cuDeviceGet", C.pt_cuDeviceGet(d.cuDeviceGet, &info.handle, C.int(ordinal))); err != nil {
		return nil, err
	}
	attr := func(a int) (int, error) {
		var v C.int
		err := d.check(fmt.Sprintf("cuDeviceGetAttribute(%d)", a), C.pt_cuDeviceGetAttribute(d.cuDeviceGetAttribute, &v, C.int(a), info.handle))
		return int(v), err
	}
	var err error
	if info.major, err = attr(cuDevAttrComputeCapabilityMajor); err != nil {
		return nil, err
	}
	if info.minor, err = attr(cuDevAttrComputeCapabilityMinor); err != nil {
		return nil, err
	}
	if info.sms, err = attr(cuDevAttrMultiprocessorCount); err != nil {
		return nil, err
	}
	if info.smemOptin, err = attr(cuDevAttrMaxSharedMemPerBlockOptin); err != nil {
		return nil, err
	}
	buf := (*C.char)(C.malloc(256))
	defer C.free(unsafe.Pointer(buf))
	if err := d.check("cuDeviceGetName", C.pt_cuDeviceGetName(d.cuDeviceGetName, buf, 256, info.handle)); err != nil {
		return nil, err
	}
	info.name = C.GoString(buf)
	var total C.size_t
	if err := d.check("cuDeviceTotalMem", C.pt_cuDeviceTotalMem(d.cuDeviceTotalMem, &total, info.handle)); err != nil {
		return nil, err
	}
	info.totalMem = uint64(total)
	return info, nil
}

// driverVersionString formats cuDriverGetVersion's value: 13020 -> "13.2".
func driverVersionString(v int) string {
	return fmt.Sprintf("%d.%d", v/1000, (v%1000)/10)
}
