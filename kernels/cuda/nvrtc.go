package cuda

/*
#include <stddef.h>
#include <stdlib.h>

// Our own declarations of the NVRTC API we call, from the facts in nvrtc.h
// (CUDA 12.x and 13.x; checked against the 12.9 and 13.2 headers).
//
// nvrtc.h: "typedef enum {...} nvrtcResult;" with NVRTC_SUCCESS = 0,
// NVRTC_ERROR_COMPILATION = 6.
typedef int pt_nvrtcResult;
// nvrtc.h: "typedef struct _nvrtcProgram *nvrtcProgram;"
typedef void *pt_nvrtcProgram;

// const char *nvrtcGetErrorString(nvrtcResult result);
typedef const char *(*pt_nvrtcGetErrorString_fn)(pt_nvrtcResult);
// nvrtcResult nvrtcVersion(int *major, int *minor);
typedef pt_nvrtcResult (*pt_nvrtcVersion_fn)(int *, int *);
// nvrtcResult nvrtcGetNumSupportedArchs(int *numArchs);
typedef pt_nvrtcResult (*pt_nvrtcGetNumSupportedArchs_fn)(int *);
// nvrtcResult nvrtcGetSupportedArchs(int *supportedArchs);
typedef pt_nvrtcResult (*pt_nvrtcGetSupportedArchs_fn)(int *);
// nvrtcResult nvrtcCreateProgram(nvrtcProgram *prog, const char *src, const char *name,
//   int numHeaders, const char * const *headers, const char * const *includeNames);
typedef pt_nvrtcResult (*pt_nvrtcCreateProgram_fn)(pt_nvrtcProgram *, const char *, const char *,
	int, const char * const *, const char * const *);
// nvrtcResult nvrtcDestroyProgram(nvrtcProgram *prog);
typedef pt_nvrtcResult (*pt_nvrtcDestroyProgram_fn)(pt_nvrtcProgram *);
// nvrtcResult nvrtcCompileProgram(nvrtcProgram prog, int numOptions, const char * const *options);
typedef pt_nvrtcResult (*pt_nvrtcCompileProgram_fn)(pt_nvrtcProgram, int, const char * const *);
// nvrtcResult nvrtcGetProgramLogSize(nvrtcProgram prog, size_t *logSizeRet);
// nvrtcResult nvrtcGetCUBINSize(nvrtcProgram prog, size_t *cubinSizeRet);
// nvrtcResult nvrtcGetPTXSize(nvrtcProgram prog, size_t *ptxSizeRet);
typedef pt_nvrtcResult (*pt_nvrtcGetSize_fn)(pt_nvrtcProgram, size_t *);
// nvrtcResult nvrtcGetProgramLog(nvrtcProgram prog, char *log);
// nvrtcResult nvrtcGetCUBIN(nvrtcProgram prog, char *cubin);
// nvrtcResult nvrtcGetPTX(nvrtcProgram prog, char *ptx);
typedef pt_nvrtcResult (*pt_nvrtcGetData_fn)(pt_nvrtcProgram, char *);

static const char *pt_nvrtcGetErrorString(void *fn, pt_nvrtcResult r) { return ((pt_nvrtcGetErrorString_fn)fn)(r); }
static pt_nvrtcResult pt_nvrtcVersion(void *fn, int *major, int *minor) { return ((pt_nvrtcVersion_fn)fn)(major, minor); }
static pt_nvrtcResult pt_nvrtcGetNumSupportedArchs(void *fn, int *n) { return ((pt_nvrtcGetNumSupportedArchs_fn)fn)(n); }
static pt_nvrtcResult pt_nvrtcGetSupportedArchs(void *fn, int *a) { return ((pt_nvrtcGetSupportedArchs_fn)fn)(a); }
static pt_nvrtcResult pt_nvrtcCreateProgram(void *fn, pt_nvrtcProgram *p, const char *src, const char *name,
		int nh, const char * const *headers, const char * const *names) {
	return ((pt_nvrtcCreateProgram_fn)fn)(p, src, name, nh, headers, names);
}
static pt_nvrtcResult pt_nvrtcDestroyProgram(void *fn, pt_nvrtcProgram *p) { return ((pt_nvrtcDestroyProgram_fn)fn)(p); }
static pt_nvrtcResult pt_nvrtcCompileProgram(void *fn, pt_nvrtcProgram p, int n, const char * const *opts) {
	return ((pt_nvrtcCompileProgram_fn)fn)(p, n, opts);
}
static pt_nvrtcResult pt_nvrtcGetSize(void *fn, pt_nvrtcProgram p, size_t *n) { return ((pt_nvrtcGetSize_fn)fn)(p, n); }
static pt_nvrtcResult pt_nvrtcGetData(void *fn, pt_nvrtcProgram p, char *out) { return ((pt_nvrtcGetData_fn)fn)(p, out); }
*/
import "C"

import (
	"fmt"
	"slices"
	"strings"
	"unsafe"

	"github.com/peertune/peertune/internal/dl"
)

const nvrtcErrorCompilation = 6 // NVRTC_ERROR_COMPILATION

// nvrtcAPI is libnvrtc with the symbols we call.
type nvrtcAPI struct {
	lib *dl.Lib

	getErrorString, version, getNumSupportedArchs, getSupportedArchs,
	createProgram, destroyProgram, compileProgram,
	getProgramLogSize, getProgramLog, getCUBINSize, getCUBIN, getPTXSize, getPTX unsafe.Pointer

	major, minor int   // nvrtcVersion
	archs        []int // nvrtcGetSupportedArchs, e.g. [75 80 86 ... 120], ascending
}

func loadNVRTC(lib *dl.Lib) (*nvrtcAPI, error) {
	n := &nvrtcAPI{lib: lib}
	syms := []struct {
		name string
		p    *unsafe.Pointer
	}{
		{"nvrtcGetErrorString", &n.getErrorString},
		{"nvrtcVersion", &n.version},
		{"nvrtcGetNumSupportedArchs", &n.getNumSupportedArchs},
		{"nvrtcGetSupportedArchs", &n.getSupportedArchs},
		{"nvrtcCreateProgram", &n.createProgram},
		{"nvrtcDestroyProgram", &n.destroyProgram},
		{"nvrtcCompileProgram", &n.compileProgram},
		{"nvrtcGetProgramLogSize", &n.getProgramLogSize},
		{"nvrtcGetProgramLog", &n.getProgramLog},
		{"nvrtcGetCUBINSize", &n.getCUBINSize},
		{"nvrtcGetCUBIN", &n.getCUBIN},
		{"nvrtcGetPTXSize", &n.getPTXSize},
		{"nvrtcGetPTX", &n.getPTX},
	}
	for _, s := range syms {
		p, err := lib.Sym(s.name)
		if err != nil {
			return nil, fmt.Errorf("%s is not a usable NVRTC (CUDA >= 11.2 needed): %w", lib.Name(), err)
		}
		if p == nil {
			return nil, fmt.Errorf("%s: %s is NULL", lib.Name(), s.name)
		}
		*s.p = p
	}
	var major, minor C.int
	if err := n.check("nvrtcVersion", C.pt_nvrtcVersion(n.version, &major, &minor)); err != nil {
		return nil, err
	}
	n.major, n.minor = int(major), int(minor)
	var num C.int
	if err := n.check("nvrtcGetNumSupportedArchs", C.pt_nvrtcGetNumSupportedArchs(n.getNumSupportedArchs, &num)); err != nil {
		return nil, err
	}
	if num > 0 && num < 1024 {
		a := make([]C.int, int(num))
		if err := n.check("nvrtcGetSupportedArchs", C.pt_nvrtcGetSupportedArchs(n.getSupportedArchs, &a[0])); err != nil {
			return nil, err
		}
		for _, v := range a {
			n.archs = append(n.archs, int(v))
		}
		slices.Sort(n.archs)
	}
	return n, nil
}

// versionString is e.g. "12.9".
func (n *nvrtcAPI) versionString() string { return fmt.Sprintf("%d.%d", n.major, n.minor) }

func (n *nvrtcAPI) check(call string, r C.pt_nvrtcResult) error {
	if r == 0 {
		return nil
	}
	msg := "unknown error"
	if s := C.pt_nvrtcGetErrorString(n.getErrorString, r); s != nil {
		msg = C.GoString(s)
	}
	return fmt.Errorf("%s: %s (%d)", call, msg, int(r))
}

// supports reports whether NVRTC can emit SASS for sm_<arch> (arch = 10*major+minor).
func (n *nvrtcAPI) supports(arch int) bool { return slices.Contains(n.archs, arch) }

// compileResult is one NVRTC compilation.
type compileResult struct {
	image []byte // a cubin, or PTX text with a trailing NUL when ptx is set
	ptx   bool
	log   string // NVRTC's log (warnings), trimmed; empty when clean
}

// compile compiles src (the file name is used in messages) with the given
// headers (include name -> text) and options. target is "sm_XY" for a cubin
// or "compute_XY" for PTX. A compile error returns the log in the error.
func (n *nvrtcAPI) compile(name, src string, headers map[string]string, target string, extra []string) (*compileResult, error) {
	var cstrs []*C.char
	cstr := func(s string) *C.char {
		p := C.CString(s)
		cstrs = append(cstrs, p)
		return p
	}
	defer func() {
		for _, p := range cstrs {
			C.free(unsafe.Pointer(p))
		}
	}()
	// C arrays of char* must live in C memory (cgo forbids passing Go
	// memory that holds pointers).
	carray := func(ss []string) **C.char {
		if len(ss) == 0 {
			return nil
		}
		arr := (**C.char)(C.malloc(C.size_t(len(ss)) * C.size_t(unsafe.Sizeof(uintptr(0)))))
		cstrs = append(cstrs, (*C.char)(unsafe.Pointer(arr)))
		view := unsafe.Slice(arr, len(ss))
		for i, s := range ss {
			view[i] = cstr(s)
		}
		return arr
	}
	hnames := make([]string, 0, len(headers))
	for h := range headers {
		hnames = append(hnames, h)
	}
	slices.Sort(hnames)
	htexts := make([]string, len(hnames))
	for i, h := range hnames {
		htexts[i] = headers[h]
	}

	var prog C.pt_nvrtcProgram
	if err := n.check("nvrtcCreateProgram", C.pt_nvrtcCreateProgram(n.createProgram, &prog, cstr(src), cstr(name),
		C.int(len(hnames)), carray(htexts), carray(hnames))); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	defer C.pt_nvrtcDestroyProgram(n.destroyProgram, &prog)

	opts := append([]string{"--gpu-architecture=" + target}, extra...)
	rc := C.pt_nvrtcCompileProgram(n.compileProgram, prog, C.int(len(opts)), carray(opts))
	log, logErr := n.programLog(prog)
	if rc != 0 {
		if rc == nvrtcErrorCompilation {
			return nil, fmt.Errorf("NVRTC %s: compile %s for %s (%s): %s", n.versionString(), name, target, strings.Join(opts, " "), log)
		}
		return nil, fmt.Errorf("NVRTC %s: compile %s for %s: %w (log: %s)", n.versionString(), name, target, n.check("nvrtcCompileProgram", rc), log)
	}
	if logErr != nil {
		return nil, fmt.Errorf("%s: %w", name, logErr)
	}
	res := &compileResult{log: log, ptx: strings.HasPrefix(target, "compute_")}
	sizeFn, dataFn, what := n.getCUBINSize, n.getCUBIN, "nvrtcGetCUBIN"
	if res.ptx {
		sizeFn, dataFn, what = n.getPTXSize, n.getPTX, "nvrtcGetPTX"
	}
	var size C.size_t
	if err := n.check(what+"Size", C.pt_nvrtcGetSize(sizeFn, prog, &size)); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if size == 0 {
		return nil, fmt.Errorf("%s: %s: empty image for %s", name, what, target)
	}
	buf := C.malloc(size)
	defer C.free(buf)
	if err := n.check(what, C.pt_nvrtcGetData(dataFn, prog, (*C.char)(buf))); err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	res.image = C.GoBytes(buf, C.int(size))
	return res, nil
}

// programLog returns the compile log without the trailing NUL and blank lines.
func (n *nvrtcAPI) programLog(prog C.pt_nvrtcProgram) (string, error) {
	var size C.size_t
	if err := n.check("nvrtcGetProgramLogSize", C.pt_nvrtcGetSize(n.getProgramLogSize, prog, &size)); err != nil {
		return "", err
	}
	if size <= 1 {
		return "", nil
	}
	buf := C.malloc(size)
	defer C.free(buf)
	if err := n.check("nvrtcGetProgramLog", C.pt_nvrtcGetData(n.getProgramLog, prog, (*C.char)(buf))); err != nil {
		return "", err
	}
	return strings.TrimSpace(C.GoString((*C.char)(buf))), nil
}
