package nccl

/*
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

// Our own declarations of the few NCCL and CUDA driver types peertune
// touches. They mirror the public headers (nccl.h, cuda.h) so that the build
// needs no CUDA toolkit; consts.go has the enumerator values.

// ncclUniqueId: typedef struct { char internal[NCCL_UNIQUE_ID_BYTES]; },
// NCCL_UNIQUE_ID_BYTES = 128. Passed BY VALUE to ncclCommInitRankConfig.
typedef struct { char internal[128]; } pt_ncclUniqueId;

// ncclConfig_t as nccl.h 2.17 declares it (struct ncclConfig_v21700). NCCL
// reads `size` first, copies min(size, its own sizeof) bytes over a config
// pre-filled by its own NCCL_CONFIG_INITIALIZER, checks `magic`, and resets
// the fields that are newer than `version` to their defaults. So a library
// newer than this layout treats everything after netName as "undefined"
// (its default), and an older one (2.14-2.16, whose ncclConfig_v21400 ends
// after `blocking`) stops copying there: the Go side sets size and version
// by the library's runtime version (config.go). Only `blocking` is set to
// anything but NCCL_CONFIG_UNDEF_INT / NCCL_CONFIG_UNDEF_PTR.
typedef struct {
	size_t size;            // sizeof(ncclConfig_t) of the header used
	unsigned int magic;     // NCCL_API_MAGIC (0xcafebeef)
	unsigned int version;   // NCCL_VERSION_CODE of the header used
	int blocking;           // 2.14+: 0 = non-blocking communicator
	int cgaClusterSize;     // 2.17+
	int minCTAs;            // 2.17+
	int maxCTAs;            // 2.17+
	const char *netName;    // 2.17+
} pt_ncclConfig_t;

_Static_assert(sizeof(pt_ncclUniqueId) == 128, "ncclUniqueId is NCCL_UNIQUE_ID_BYTES");
_Static_assert(offsetof(pt_ncclConfig_t, magic) == 8, "ncclConfig_t.magic");
_Static_assert(offsetof(pt_ncclConfig_t, version) == 12, "ncclConfig_t.version");
_Static_assert(offsetof(pt_ncclConfig_t, blocking) == 16, "ncclConfig_t.blocking");
_Static_assert(offsetof(pt_ncclConfig_t, cgaClusterSize) == 20, "ncclConfig_t.cgaClusterSize");
_Static_assert(offsetof(pt_ncclConfig_t, netName) == 32, "ncclConfig_t.netName");
_Static_assert(sizeof(pt_ncclConfig_t) == 40, "ncclConfig_v21700");

// Function types, from the prototypes in nccl.h. ncclResult_t,
// ncclDataType_t and ncclRedOp_t are int-sized enums; ncclComm_t is
// struct ncclComm*; cudaStream_t (and CUstream) is struct CUstream_st*.
typedef int (*pt_ncclGetVersion_fn)(int *version);
typedef int (*pt_ncclGetUniqueId_fn)(pt_ncclUniqueId *uniqueId);
typedef const char *(*pt_ncclGetErrorString_fn)(int result);
typedef const char *(*pt_ncclGetLastError_fn)(void *comm);
typedef int (*pt_ncclCommInitRankConfig_fn)(void **comm, int nranks, pt_ncclUniqueId commId, int rank, pt_ncclConfig_t *config);
typedef int (*pt_ncclCommGetAsyncError_fn)(void *comm, int *asyncError);
typedef int (*pt_ncclComm_fn)(void *comm); // ncclCommAbort, ncclCommFinalize, ncclCommDestroy
typedef int (*pt_ncclCommInt_fn)(void *comm, int *out); // ncclCommCount, ncclCommUserRank
typedef int (*pt_ncclAllReduce_fn)(const void *sendbuff, void *recvbuff, size_t count, int datatype, int op, void *comm, void *stream);
typedef int (*pt_ncclBroadcast_fn)(const void *sendbuff, void *recvbuff, size_t count, int datatype, int root, void *comm, void *stream);
typedef int (*pt_ncclCommShrink_fn)(void *comm, int *excludeRanksList, int excludeRanksCount, void **newcomm, pt_ncclConfig_t *config, int shrinkFlags);

// From cuda.h. CUresult is an int-sized enum, CUdevice an int, CUcontext
// and CUstream pointers.
typedef int (*pt_cuInit_fn)(unsigned int flags);
typedef int (*pt_cuInt_fn)(int *out);                  // cuDeviceGetCount, cuDriverGetVersion
typedef int (*pt_cuDeviceGet_fn)(int *device, int ordinal);
typedef int (*pt_cuDevicePrimaryCtxRetain_fn)(void **pctx, int dev);
typedef int (*pt_cuDevicePrimaryCtxRelease_fn)(int dev); // symbol cuDevicePrimaryCtxRelease_v2
typedef int (*pt_cuCtxGetCurrent_fn)(void **pctx);
typedef int (*pt_cuCtxSetCurrent_fn)(void *ctx);
typedef int (*pt_cuStreamQuery_fn)(void *stream);
typedef int (*pt_cuGetErrorText_fn)(int error, const char **pStr); // cuGetErrorName, cuGetErrorString

// pt_bind makes ctx the calling thread's current CUDA context for the
// duration of one trampoline and then restores what was current before.
// Binding inside the same C call as the NCCL or CUDA call it serves is what
// lets Go call these from any goroutine: a goroutine may change OS threads
// between two cgo calls, never during one.
typedef struct {
	void *getCurrent;  // cuCtxGetCurrent
	void *setCurrent;  // cuCtxSetCurrent
	uintptr_t ctx;     // the CUcontext to bind; 0 binds nothing
	void *saved;
} pt_bind;

#define PT_BIND_FAILED (-1)

static int pt_bind_enter(pt_bind *b, int *cuerr) {
	*cuerr = 0;
	b->saved = NULL;
	if (b->ctx == 0) {
		return 1;
	}
	int r = ((pt_cuCtxGetCurrent_fn)b->getCurrent)(&b->saved);
	if (r != 0) {
		*cuerr = r;
		return 0;
	}
	if (b->saved == (void *)b->ctx) {
		return 1;
	}
	r = ((pt_cuCtxSetCurrent_fn)b->setCurrent)((void *)b->ctx);
	if (r != 0) {
		*cuerr = r;
		return 0;
	}
	return 1;
}

static void pt_bind_leave(pt_bind *b) {
	if (b->ctx == 0 || b->saved == (void *)b->ctx) {
		return;
	}
	((pt_cuCtxSetCurrent_fn)b->setCurrent)(b->saved); // NULL unbinds
}

// ---- NCCL trampolines: cast the dlsym'd pointer and call it. ----

static int pt_ncclGetVersion(void *fn, int *v) {
	return ((pt_ncclGetVersion_fn)fn)(v);
}

static int pt_ncclGetUniqueId(void *fn, void *id) {
	return ((pt_ncclGetUniqueId_fn)fn)((pt_ncclUniqueId *)id);
}

static const char *pt_ncclGetErrorString(void *fn, int r) {
	return ((pt_ncclGetErrorString_fn)fn)(r);
}

static const char *pt_ncclGetLastError(void *fn, uintptr_t comm) {
	return ((pt_ncclGetLastError_fn)fn)((void *)comm);
}

static int pt_ncclCommInitRankConfig(void *fn, pt_bind b, uintptr_t *comm, int nranks, const void *id, int rank,
		pt_ncclConfig_t *cfg, int *cuerr) {
	if (!pt_bind_enter(&b, cuerr)) {
		return PT_BIND_FAILED;
	}
	pt_ncclUniqueId uid;
	memcpy(&uid, id, sizeof uid);
	void *c = NULL;
	int r = ((pt_ncclCommInitRankConfig_fn)fn)(&c, nranks, uid, rank, cfg);
	*comm = (uintptr_t)c;
	pt_bind_leave(&b);
	return r;
}

static int pt_ncclCommGetAsyncError(void *fn, pt_bind b, uintptr_t comm, int *state, int *cuerr) {
	if (!pt_bind_enter(&b, cuerr)) {
		return PT_BIND_FAILED;
	}
	int r = ((pt_ncclCommGetAsyncError_fn)fn)((void *)comm, state);
	pt_bind_leave(&b);
	return r;
}

static int pt_ncclComm(void *fn, pt_bind b, uintptr_t comm, int *cuerr) {
	if (!pt_bind_enter(&b, cuerr)) {
		return PT_BIND_FAILED;
	}
	int r = ((pt_ncclComm_fn)fn)((void *)comm);
	pt_bind_leave(&b);
	return r;
}

static int pt_ncclCommInt(void *fn, uintptr_t comm, int *out) {
	return ((pt_ncclCommInt_fn)fn)((void *)comm, out);
}

static int pt_ncclAllReduce(void *fn, pt_bind b, uintptr_t buf, size_t count, int datatype, int op,
		uintptr_t comm, uintptr_t stream, int *cuerr) {
	if (!pt_bind_enter(&b, cuerr)) {
		return PT_BIND_FAILED;
	}
	// In place: sendbuff == recvbuff.
	int r = ((pt_ncclAllReduce_fn)fn)((const void *)buf, (void *)buf, count, datatype, op, (void *)comm, (void *)stream);
	pt_bind_leave(&b);
	return r;
}

static int pt_ncclBroadcast(void *fn, pt_bind b, uintptr_t buf, size_t count, int datatype, int root,
		uintptr_t comm, uintptr_t stream, int *cuerr) {
	if (!pt_bind_enter(&b, cuerr)) {
		return PT_BIND_FAILED;
	}
	int r = ((pt_ncclBroadcast_fn)fn)((const void *)buf, (void *)buf, count, datatype, root, (void *)comm, (void *)stream);
	pt_bind_leave(&b);
	return r;
}

static int pt_ncclCommShrink(void *fn, pt_bind b, uintptr_t comm, int *exclude, int n, uintptr_t *newcomm,
		pt_ncclConfig_t *cfg, int flags, int *cuerr) {
	if (!pt_bind_enter(&b, cuerr)) {
		return PT_BIND_FAILED;
	}
	void *nc = NULL;
	int r = ((pt_ncclCommShrink_fn)fn)((void *)comm, exclude, n, &nc, cfg, flags);
	*newcomm = (uintptr_t)nc;
	pt_bind_leave(&b);
	return r;
}

// ---- CUDA driver trampolines. ----

static int pt_cuInit(void *fn, unsigned int flags) {
	return ((pt_cuInit_fn)fn)(flags);
}

static int pt_cuInt(void *fn, int *out) {
	return ((pt_cuInt_fn)fn)(out);
}

static int pt_cuDeviceGet(void *fn, int *dev, int ordinal) {
	return ((pt_cuDeviceGet_fn)fn)(dev, ordinal);
}

static int pt_cuDevicePrimaryCtxRetain(void *fn, uintptr_t *ctx, int dev) {
	void *c = NULL;
	int r = ((pt_cuDevicePrimaryCtxRetain_fn)fn)(&c, dev);
	*ctx = (uintptr_t)c;
	return r;
}

static int pt_cuDevicePrimaryCtxRelease(void *fn, int dev) {
	return ((pt_cuDevicePrimaryCtxRelease_fn)fn)(dev);
}

static int pt_cuStreamQuery(void *fn, pt_bind b, uintptr_t stream) {
	int cuerr;
	if (!pt_bind_enter(&b, &cuerr)) {
		return cuerr;
	}
	int r = ((pt_cuStreamQuery_fn)fn)((void *)stream);
	pt_bind_leave(&b);
	return r;
}

static const char *pt_cuGetErrorText(void *fn, int err) {
	const char *s = NULL;
	if (fn == NULL || ((pt_cuGetErrorText_fn)fn)(err, &s) != 0) {
		return NULL;
	}
	return s;
}
*/
import "C"

import (
	"strconv"
	"unsafe"
)

// cConfig is the C ncclConfig_t, named for the files that do not import "C".
type cConfig = C.pt_ncclConfig_t

// cInt is a C int array element (the exclude list of a shrink).
type cInt = C.int

// ncclFns are the NCCL entry points, resolved with dlsym. Optional ones are
// nil when the library predates them.
type ncclFns struct {
	getVersion, getUniqueID, getErrorString unsafe.Pointer
	commInitRankConfig, commGetAsyncError   unsafe.Pointer
	commAbort, commFinalize, commDestroy    unsafe.Pointer
	commCount, commUserRank                 unsafe.Pointer
	allReduce, broadcast                    unsafe.Pointer
	getLastError /* 2.13+ */, commShrink/* 2.27+ */ unsafe.Pointer
}

// cudaFns are the CUDA driver entry points, resolved with dlsym.
type cudaFns struct {
	init, deviceGetCount, deviceGet           unsafe.Pointer
	primaryCtxRetain, primaryCtxRelease       unsafe.Pointer
	ctxGetCurrent, ctxSetCurrent, streamQuery unsafe.Pointer
	driverGetVersion                          unsafe.Pointer
	getErrorName, getErrorString              unsafe.Pointer // optional
}

// binder is the CUDA context a call runs in (see pt_bind). The zero value
// binds nothing.
type binder struct {
	get, set unsafe.Pointer
	ctx      uintptr
}

func (b binder) c() C.pt_bind {
	return C.pt_bind{getCurrent: b.get, setCurrent: b.set, ctx: C.uintptr_t(b.ctx)}
}

// callResult is one trampoline's outcome: the NCCL result, or, when code is
// ptBindFailed, the CUresult of binding the context (cu).
type callResult struct {
	code Result
	cu   int
}

func (f *ncclFns) version() (int, Result) {
	var v C.int
	r := C.pt_ncclGetVersion(f.getVersion, &v)
	return int(v), Result(r)
}

func (f *ncclFns) uniqueID(id *[IDBytes]byte) Result {
	return Result(C.pt_ncclGetUniqueId(f.getUniqueID, unsafe.Pointer(id)))
}

func (f *ncclFns) errorString(r Result) string {
	return C.GoString(C.pt_ncclGetErrorString(f.getErrorString, C.int(r)))
}

// lastError is ncclGetLastError's text ("" before 2.13). The comm argument
// is unused by NCCL up to at least 2.30; it may be 0.
func (f *ncclFns) lastError(comm uintptr) string {
	if f.getLastError == nil {
		return ""
	}
	return C.GoString(C.pt_ncclGetLastError(f.getLastError, C.uintptr_t(comm)))
}

func (f *ncclFns) commInit(b binder, nranks int, id *[IDBytes]byte, rank int, cfg *cConfig) (uintptr, callResult) {
	var comm C.uintptr_t
	var cuerr C.int
	r := C.pt_ncclCommInitRankConfig(f.commInitRankConfig, b.c(), &comm, C.int(nranks), unsafe.Pointer(id), C.int(rank), cfg, &cuerr)
	return uintptr(comm), callResult{Result(r), int(cuerr)}
}

// asyncError returns the communicator's state (ncclCommGetAsyncError's
// output) and the call's own result.
func (f *ncclFns) asyncError(b binder, comm uintptr) (state Result, call callResult) {
	var st, cuerr C.int
	r := C.pt_ncclCommGetAsyncError(f.commGetAsyncError, b.c(), C.uintptr_t(comm), &st, &cuerr)
	return Result(st), callResult{Result(r), int(cuerr)}
}

func (f *ncclFns) commCall(fn unsafe.Pointer, b binder, comm uintptr) callResult {
	var cuerr C.int
	r := C.pt_ncclComm(fn, b.c(), C.uintptr_t(comm), &cuerr)
	return callResult{Result(r), int(cuerr)}
}

func (f *ncclFns) commInt(fn unsafe.Pointer, comm uintptr) (int, Result) {
	var v C.int
	r := C.pt_ncclCommInt(fn, C.uintptr_t(comm), &v)
	return int(v), Result(r)
}

func (f *ncclFns) allReduceCall(b binder, buf uintptr, count int, dtype, op int, comm, stream uintptr) callResult {
	var cuerr C.int
	r := C.pt_ncclAllReduce(f.allReduce, b.c(), C.uintptr_t(buf), C.size_t(count), C.int(dtype), C.int(op),
		C.uintptr_t(comm), C.uintptr_t(stream), &cuerr)
	return callResult{Result(r), int(cuerr)}
}

func (f *ncclFns) broadcastCall(b binder, buf uintptr, count int, dtype, root int, comm, stream uintptr) callResult {
	var cuerr C.int
	r := C.pt_ncclBroadcast(f.broadcast, b.c(), C.uintptr_t(buf), C.size_t(count), C.int(dtype), C.int(root),
		C.uintptr_t(comm), C.uintptr_t(stream), &cuerr)
	return callResult{Result(r), int(cuerr)}
}

// shrinkCall calls ncclCommShrink. exclude must be C memory: a
// non-blocking shrink may read it after the call returns.
func (f *ncclFns) shrinkCall(b binder, comm uintptr, exclude *cInt, n int, cfg *cConfig, flags int) (uintptr, callResult) {
	var nc C.uintptr_t
	var cuerr C.int
	r := C.pt_ncclCommShrink(f.commShrink, b.c(), C.uintptr_t(comm), exclude, C.int(n), &nc, cfg, C.int(flags), &cuerr)
	return uintptr(nc), callResult{Result(r), int(cuerr)}
}

func (f *cudaFns) cuInit() int { return int(C.pt_cuInit(f.init, 0)) }

func (f *cudaFns) deviceCount() (int, int) {
	var n C.int
	r := C.pt_cuInt(f.deviceGetCount, &n)
	return int(n), int(r)
}

func (f *cudaFns) driverVersion() (int, int) {
	var v C.int
	r := C.pt_cuInt(f.driverGetVersion, &v)
	return int(v), int(r)
}

func (f *cudaFns) device(ordinal int) (int, int) {
	var d C.int
	r := C.pt_cuDeviceGet(f.deviceGet, &d, C.int(ordinal))
	return int(d), int(r)
}

func (f *cudaFns) retainPrimary(dev int) (uintptr, int) {
	var ctx C.uintptr_t
	r := C.pt_cuDevicePrimaryCtxRetain(f.primaryCtxRetain, &ctx, C.int(dev))
	return uintptr(ctx), int(r)
}

func (f *cudaFns) releasePrimary(dev int) int {
	return int(C.pt_cuDevicePrimaryCtxRelease(f.primaryCtxRelease, C.int(dev)))
}

func (f *cudaFns) queryStream(b binder, stream uintptr) int {
	return int(C.pt_cuStreamQuery(f.streamQuery, b.c(), C.uintptr_t(stream)))
}

// errorText is "CUDA_ERROR_NAME: description" for a CUresult, as far as the
// driver can say.
func (f *cudaFns) errorText(code int) string {
	name := C.pt_cuGetErrorText(f.getErrorName, C.int(code))
	desc := C.pt_cuGetErrorText(f.getErrorString, C.int(code))
	switch {
	case name != nil && desc != nil:
		return C.GoString(name) + ": " + C.GoString(desc)
	case name != nil:
		return C.GoString(name)
	}
	return "CUresult " + strconv.Itoa(code)
}

// newConfig allocates, in C memory, an ncclConfig_t filled the way
// NCCL_CONFIG_INITIALIZER of the header matching the library's version
// would fill it, with blocking = 0. C memory because a non-blocking init may
// read it after the call returns; free it with freeConfig once the
// communicator is gone.
func newConfig(v Version) *cConfig {
	cfg := (*C.pt_ncclConfig_t)(C.calloc(1, C.size_t(unsafe.Sizeof(C.pt_ncclConfig_t{}))))
	size, hdr := configHeader(v)
	cfg.size = C.size_t(size)
	cfg.magic = C.uint(ncclAPIMagic)
	cfg.version = C.uint(hdr.Code())
	cfg.blocking = 0
	cfg.cgaClusterSize = C.int(ncclConfigUndefInt)
	cfg.minCTAs = C.int(ncclConfigUndefInt)
	cfg.maxCTAs = C.int(ncclConfigUndefInt)
	cfg.netName = nil // NCCL_CONFIG_UNDEF_PTR
	return cfg
}

func freeConfig(cfg *cConfig) {
	if cfg != nil {
		C.free(unsafe.Pointer(cfg))
	}
}

// configFields reads back what newConfig wrote, for tests (cgo is not
// allowed in _test.go files).
func configFields(cfg *cConfig) (size uintptr, magic, version uint32, blocking, cga, minCTAs, maxCTAs int32, netNameNil bool) {
	return uintptr(cfg.size), uint32(cfg.magic), uint32(cfg.version), int32(cfg.blocking),
		int32(cfg.cgaClusterSize), int32(cfg.minCTAs), int32(cfg.maxCTAs), cfg.netName == nil
}

// cInts copies xs into C memory (free with C.free via freeInts).
func cInts(xs []int) *cInt {
	p := (*C.int)(C.calloc(C.size_t(max(len(xs), 1)), C.size_t(unsafe.Sizeof(C.int(0)))))
	s := unsafe.Slice(p, max(len(xs), 1))
	for i, x := range xs {
		s[i] = C.int(x)
	}
	return p
}

func freeInts(p *cInt) { C.free(unsafe.Pointer(p)) }

// configSize is sizeof(ncclConfig_v21700) as this package declares it.
const configSize = unsafe.Sizeof(C.pt_ncclConfig_t{})

// configSize2_14 is sizeof(ncclConfig_v21400) (nccl.h 2.14-2.16): size_t
// size; unsigned magic; unsigned version; int blocking = 20 bytes, padded to
// size_t's 8-byte alignment.
const configSize2_14 = 24
