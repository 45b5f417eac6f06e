package nccl

import "fmt"

// The numbers below are facts from NVIDIA's public headers, declared here
// (not included) so that peertune builds without a CUDA toolkit. Each line
// names the header constant it mirrors; the values were checked against
// nccl.h of NCCL 2.14, 2.17, 2.27 and 2.30 and cuda.h of CUDA 13.

// IDBytes is the size of an NCCL unique id: NCCL_UNIQUE_ID_BYTES (nccl.h),
// the length of ncclUniqueId's internal[] array. Unchanged since NCCL 2.0.
const IDBytes = 128

// Result is NCCL's ncclResult_t: every NCCL call returns one, and
// ncclCommGetAsyncError reports the communicator's state as one.
type Result int32

// ncclResult_t values (nccl.h). They are a stable ABI: later versions only
// append.
const (
	Success            Result = 0 // ncclSuccess
	UnhandledCudaError Result = 1 // ncclUnhandledCudaError: a CUDA call inside NCCL failed (no GPU, driver too old, device fault)
	SystemError        Result = 2 // ncclSystemError: a system call failed (socket, shared memory, ...)
	InternalError      Result = 3 // ncclInternalError
	InvalidArgument    Result = 4 // ncclInvalidArgument
	InvalidUsage       Result = 5 // ncclInvalidUsage
	RemoteError        Result = 6 // ncclRemoteError (2.13+): a remote process exited or the network failed
	InProgress         Result = 7 // ncclInProgress (2.14+): a non-blocking call has not finished yet
	Timeout            Result = 8 // ncclTimeout: in the 2.30 header, absent from 2.27's (ncclNumResults was 8 there)
)

// String is the enumerator's name as nccl.h spells it.
func (r Result) String() string {
	switch r {
	case Success:
		return "ncclSuccess"
	case UnhandledCudaError:
		return "ncclUnhandledCudaError"
	case SystemError:
		return "ncclSystemError"
	case InternalError:
		return "ncclInternalError"
	case InvalidArgument:
		return "ncclInvalidArgument"
	case InvalidUsage:
		return "ncclInvalidUsage"
	case RemoteError:
		return "ncclRemoteError"
	case InProgress:
		return "ncclInProgress"
	case Timeout:
		return "ncclTimeout"
	}
	return fmt.Sprintf("ncclResult_t(%d)", int32(r))
}

// peerLost reports whether an asynchronous error means the world broke (a
// peer died, the network failed, a peer stopped answering) rather than a
// local fault or a bug. Those are the errors a new world can cure.
func (r Result) peerLost() bool {
	switch r {
	case SystemError, InternalError, RemoteError, Timeout:
		return true
	}
	return false
}

// ncclDataType_t values (nccl.h); the enum is int-sized.
const (
	ncclFloat32  = 7 // ncclFloat32 (= ncclFloat)
	ncclBfloat16 = 9 // ncclBfloat16 (NCCL built with CUDA >= 11)
)

// ncclRedOp_t values (nccl.h); the enum is int-sized
// (ncclMaxRedOp = 0x7fffffff>>(32-8*sizeof(ncclRedOp_dummy_t))).
const (
	ncclSum = 0 // ncclSum
	ncclAvg = 4 // ncclAvg (2.10+): sum then divide by nranks (floats: pre-multiply by 1/nranks)
)

// ncclConfig_t header values (nccl.h).
const (
	ncclAPIMagic       = 0xcafebeef // NCCL_API_MAGIC; NCCL_CONFIG_INITIALIZER's "magic" field (2.14+)
	ncclConfigUndefInt = -1 << 31   // NCCL_CONFIG_UNDEF_INT = INT_MIN: "use NCCL's default"
	// NCCL_CONFIG_UNDEF_PTR is NULL; the C side writes it for netName.
)

// ncclCommShrink flags (nccl.h 2.27+).
const (
	ncclShrinkAbort = 0x01 // NCCL_SHRINK_ABORT: terminate the parent's ongoing operations, then shrink
)

// Library versions that gate features. NCCL_VERSION(X,Y,Z) encodes
// X*1000+Y*100+Z up to 2.8 and X*10000+Y*100+Z from 2.9 on (nccl.h).
var (
	// minVersion: ncclCommInitRankConfig, ncclConfig_t.blocking,
	// ncclInProgress and ncclCommFinalize appeared in NCCL 2.14.
	minVersion = Version{2, 14, 0}
	// config2_17: ncclConfig_v21700 added cgaClusterSize, minCTAs,
	// maxCTAs and netName after blocking.
	config2_17 = Version{2, 17, 0}
	// shrinkVersion: ncclCommShrink and NCCL_SHRINK_ABORT appeared in 2.27.
	shrinkVersion = Version{2, 27, 0}
)

// CUresult values (cuda.h). The enum is int-sized.
const (
	cudaSuccess        = 0   // CUDA_SUCCESS
	cudaErrNotReady    = 600 // CUDA_ERROR_NOT_READY: cuStreamQuery's "work still pending"
	cudaErrNoDevice    = 100 // CUDA_ERROR_NO_DEVICE
	cudaErrStubLibrary = 34  // CUDA_ERROR_STUB_LIBRARY: the toolkit's link stub was loaded instead of the driver
)

// ptBindFailed is what a trampoline returns, instead of an ncclResult_t or
// CUresult, when binding the CUDA context before the call failed; the
// CUresult of that failure comes back separately.
const ptBindFailed = -1
