package nccl

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"

	"github.com/peertune/peertune/internal/dl"
)

// Errors callers test with errors.Is.
var (
	// ErrLibraryNotFound: no usable libnccl.so.2. The error it wraps lists
	// every place looked and why each file found there was refused; the
	// caller falls back to the TCP ring.
	ErrLibraryNotFound = errors.New("nccl: libnccl.so.2 not found")
	// ErrNoGPU: the CUDA driver (libcuda.so.1) is missing, or it sees no
	// usable device. NCCL needs a GPU; the caller falls back to the ring.
	ErrNoGPU = errors.New("nccl: no usable CUDA GPU")
	// ErrShrinkUnsupported: the library predates ncclCommShrink (2.27), so
	// a world that lost ranks must make a new communicator with New.
	ErrShrinkUnsupported = errors.New("nccl: ncclCommShrink needs NCCL >= 2.27")
)

// installHint ends every "not found" message.
const installHint = "install it with `pip install nvidia-nccl-cu12` (or nvidia-nccl-cu13 for CUDA 13; `make test` runs scripts/install-pydeps.sh), or set " +
	EnvLib + " to its path"

// Version is an NCCL release.
type Version struct{ Major, Minor, Patch int }

// versionFromCode decodes NCCL_VERSION_CODE: X*1000+Y*100+Z up to 2.8,
// X*10000+Y*100+Z from 2.9 on (nccl.h's NCCL_VERSION macro). The two ranges
// do not overlap: old codes are below 10000 (2.8.4 is 2804), new ones at or
// above 20900.
func versionFromCode(code int) Version {
	if code >= 10000 {
		return Version{code / 10000, code % 10000 / 100, code % 100}
	}
	return Version{code / 1000, code % 1000 / 100, code % 100}
}

// Code is NCCL_VERSION(Major, Minor, Patch).
func (v Version) Code() int {
	if v.Major <= 2 && v.Minor <= 8 {
		return v.Major*1000 + v.Minor*100 + v.Patch
	}
	return v.Major*10000 + v.Minor*100 + v.Patch
}

// AtLeast reports whether v >= w.
func (v Version) AtLeast(w Version) bool {
	if v.Major != w.Major {
		return v.Major > w.Major
	}
	if v.Minor != w.Minor {
		return v.Minor > w.Minor
	}
	return v.Patch >= w.Patch
}

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Library is a loaded libnccl.so.2 with its entry points resolved. It is
// safe for concurrent use. It is never unloaded: NCCL keeps process-wide
// state and threads, and dlclose under them would crash.
type Library struct {
	lib     *dl.Lib
	path    string // where it was loaded from (or the bare soname)
	from    string // which search rule found it
	version Version
	fns     ncclFns

	cudaOnce sync.Once // the CUDA driver is loaded on first need, once
	cuda     *cudaFns
	cudaErr  error
}

// defaultLib is the process's NCCL: the one global in this package. A
// process can only sensibly hold one NCCL (it keeps process-wide state:
// its init-once, bootstrap network, environment, proxy threads) and must
// never dlclose it while those threads live, so it is loaded once, on first
// use, and kept. sync.Once makes concurrent first uses load it once; the
// error is kept too, so a machine without NCCL pays for the search once.
var defaultLib struct {
	once sync.Once
	lib  *Library
	err  error
}

// Default returns the process's NCCL library, searching for it on first
// use (see the package documentation for the order). The error wraps
// ErrLibraryNotFound and lists every place looked; it is cached, so set
// PEERTUNE_NCCL_LIB before the first call.
func Default() (*Library, error) {
	defaultLib.once.Do(func() {
		defaultLib.lib, defaultLib.err = load(osSearchEnv())
	})
	return defaultLib.lib, defaultLib.err
}

// NewUniqueID makes a communicator id with the default library. Rank 0
// calls it once per world and hands the id to every rank.
func NewUniqueID() ([IDBytes]byte, error) {
	lib, err := Default()
	if err != nil {
		return [IDBytes]byte{}, err
	}
	return lib.NewUniqueID()
}

// load searches e for libnccl.so.2 and returns the first candidate that
// loads, is new enough, and has every entry point peertune needs.
func load(e searchEnv) (*Library, error) {
	cands, looked := e.plan(ncclSoname, EnvLib, e.sysDirs, pipNCCLDir)
	var refused []string
	var override string
	for _, c := range cands {
		l, err := open(c)
		if err != nil {
			if c.from == EnvLib {
				override = err.Error()
			}
			if c.from != "dynamic linker" || !strings.Contains(err.Error(), "cannot open shared object file") {
				refused = append(refused, err.Error())
			}
			continue
		}
		if override != "" {
			// Loaded, but not what the user asked for: say so, the caller logs it.
			l.from += " (" + EnvLib + " refused: " + override + ")"
		}
		return l, nil
	}
	msg := "looked in: " + strings.Join(looked, "; ")
	if len(refused) > 0 {
		msg += ". Found but refused: " + strings.Join(refused, "; ")
	}
	return nil, fmt.Errorf("%w: %s. To use NCCL, %s", ErrLibraryNotFound, msg, installHint)
}

// open loads one candidate and checks it.
func open(c candidate) (*Library, error) {
	lib, err := dl.Open(c.path)
	if err != nil {
		return nil, err
	}
	l := &Library{lib: lib, path: c.path, from: c.from}
	if err := l.resolve(); err != nil {
		lib.Close() // nothing of it ran but ncclGetVersion: safe to unload
		return nil, fmt.Errorf("%s: %w", c.path, err)
	}
	return l, nil
}

// resolve reads the version and resolves the entry points.
func (l *Library) resolve() error {
	sym := func(name string, optional bool) (unsafe.Pointer, error) {
		p, err := l.lib.Sym(name)
		if err != nil && optional {
			return nil, nil
		}
		if err == nil && p == nil {
			err = fmt.Errorf("symbol %s is NULL", name)
		}
		return p, err
	}
	var err error
	if l.fns.getVersion, err = sym("ncclGetVersion", false); err != nil {
		return err
	}
	code, r := l.fns.version()
	if r != Success {
		return fmt.Errorf("ncclGetVersion returned %v", r)
	}
	l.version = versionFromCode(code)
	if !l.version.AtLeast(minVersion) {
		return fmt.Errorf("NCCL %v is too old: peertune needs >= %v (non-blocking communicators, ncclCommInitRankConfig)", l.version, minVersion)
	}
	for _, s := range []struct {
		p        *unsafe.Pointer
		name     string
		optional bool
	}{
		{&l.fns.getUniqueID, "ncclGetUniqueId", false},
		{&l.fns.getErrorString, "ncclGetErrorString", false},
		{&l.fns.commInitRankConfig, "ncclCommInitRankConfig", false},
		{&l.fns.commGetAsyncError, "ncclCommGetAsyncError", false},
		{&l.fns.commAbort, "ncclCommAbort", false},
		{&l.fns.commFinalize, "ncclCommFinalize", false},
		{&l.fns.commDestroy, "ncclCommDestroy", false},
		{&l.fns.commCount, "ncclCommCount", false},
		{&l.fns.commUserRank, "ncclCommUserRank", false},
		{&l.fns.allReduce, "ncclAllReduce", false},
		{&l.fns.broadcast, "ncclBroadcast", false},
		{&l.fns.getLastError, "ncclGetLastError", true},
		{&l.fns.commShrink, "ncclCommShrink", true},
	} {
		if *s.p, err = sym(s.name, s.optional); err != nil {
			return fmt.Errorf("NCCL %v: %w", l.version, err)
		}
	}
	return nil
}

// Version is the loaded library's version (ncclGetVersion).
func (l *Library) Version() Version { return l.version }

// Path is where the library was loaded from: a path, or the bare soname
// when the dynamic linker found it.
func (l *Library) Path() string { return l.path }

// Source says which search rule found the library (for logs).
func (l *Library) Source() string { return l.from }

// CanShrink reports whether the library has ncclCommShrink (NCCL >= 2.27).
func (l *Library) CanShrink() bool {
	return l.fns.commShrink != nil && l.version.AtLeast(shrinkVersion)
}

// NewUniqueID makes a communicator id (ncclGetUniqueId). It needs no GPU:
// the id holds the address of a bootstrap socket that rank 0's NCCL opens.
func (l *Library) NewUniqueID() ([IDBytes]byte, error) {
	var id [IDBytes]byte
	if r := l.fns.uniqueID(&id); r != Success {
		return id, l.errorf("ncclGetUniqueId", r, 0)
	}
	return id, nil
}

// Error is a failed NCCL call, with NCCL's own words for it.
type Error struct {
	// Call is the NCCL function that failed, e.g. "ncclAllReduce", or
	// "ncclCommGetAsyncError" for an asynchronous failure.
	Call string
	// Code is the ncclResult_t.
	Code Result
	// Text is ncclGetErrorString(Code).
	Text string
	// Last is ncclGetLastError's message at the time (may be "").
	Last string
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s: %s (%v)", e.Call, e.Text, e.Code)
	if e.Last != "" {
		s += ": " + e.Last
	}
	return s
}

// errorf builds an *Error for a failed call on comm (0 for none).
func (l *Library) errorf(call string, r Result, comm uintptr) *Error {
	return &Error{Call: call, Code: r, Text: l.fns.errorString(r), Last: strings.TrimSpace(l.fns.lastError(comm))}
}

// CUDAError is a failed CUDA driver call.
type CUDAError struct {
	Call string // e.g. "cuInit"
	Code int    // the CUresult
	Text string // "CUDA_ERROR_NAME: description", from cuGetErrorName/String
}

func (e *CUDAError) Error() string { return fmt.Sprintf("%s: %s", e.Call, e.Text) }

// Is makes a driver that sees no device, or the toolkit's link stub loaded
// in place of the driver, match ErrNoGPU.
func (e *CUDAError) Is(target error) bool {
	return target == ErrNoGPU && (e.Code == cudaErrNoDevice || e.Code == cudaErrStubLibrary)
}

// driver loads the CUDA driver on first need and initialises it.
func (l *Library) driver() (*cudaFns, error) {
	l.cudaOnce.Do(func() { l.cuda, l.cudaErr = loadDriver(osSearchEnv()) })
	return l.cuda, l.cudaErr
}

// loadDriver finds libcuda.so.1, resolves what collective/nccl needs and
// runs cuInit.
func loadDriver(e searchEnv) (*cudaFns, error) {
	cands, looked := e.plan(cudaSoname, "", cudaLibDirs(), "")
	var refused []string
	for _, c := range cands {
		lib, err := dl.Open(c.path)
		if err != nil {
			if c.from != "dynamic linker" || !strings.Contains(err.Error(), "cannot open shared object file") {
				refused = append(refused, err.Error())
			}
			continue
		}
		f, err := resolveDriver(lib)
		if err != nil {
			lib.Close()
			refused = append(refused, fmt.Sprintf("%s: %v", c.path, err))
			continue
		}
		if r := f.cuInit(); r != cudaSuccess {
			// The driver is loaded and initialised process-wide; keep it.
			return nil, fmt.Errorf("%w: %w (driver %s)", ErrNoGPU, &CUDAError{"cuInit", r, f.errorText(r)}, c.path)
		}
		return f, nil
	}
	msg := "looked in: " + strings.Join(looked, "; ")
	if len(refused) > 0 {
		msg += ". Found but refused: " + strings.Join(refused, "; ")
	}
	return nil, fmt.Errorf("%w: CUDA driver %s not found (it comes with the NVIDIA driver; this machine has no NVIDIA GPU driver); %s",
		ErrNoGPU, cudaSoname, msg)
}

func resolveDriver(lib *dl.Lib) (*cudaFns, error) {
	f := &cudaFns{}
	for _, s := range []struct {
		p        *unsafe.Pointer
		name     string
		optional bool
	}{
		{&f.init, "cuInit", false},
		{&f.driverGetVersion, "cuDriverGetVersion", false},
		{&f.deviceGetCount, "cuDeviceGetCount", false},
		{&f.deviceGet, "cuDeviceGet", false},
		{&f.primaryCtxRetain, "cuDevicePrimaryCtxRetain", false},
		// cuda.h: #define cuDevicePrimaryCtxRelease cuDevicePrimaryCtxRelease_v2
		{&f.primaryCtxRelease, "cuDevicePrimaryCtxRelease_v2", false},
		{&f.ctxGetCurrent, "cuCtxGetCurrent", false},
		{&f.ctxSetCurrent, "cuCtxSetCurrent", false},
		// Not the _ptsz variant: cuda.h maps cuStreamQuery to it only under
		// CUDA_API_PER_THREAD_DEFAULT_STREAM, which peertune does not use.
		{&f.streamQuery, "cuStreamQuery", false},
		{&f.getErrorName, "cuGetErrorName", true},
		{&f.getErrorString, "cuGetErrorString", true},
	} {
		p, err := lib.Sym(s.name)
		if err != nil && !s.optional {
			return nil, err
		}
		*s.p = p
	}
	return f, nil
}
