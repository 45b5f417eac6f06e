package dl

/*
// glibc >= 2.34 has dlopen in libc itself; -ldl keeps older glibc working and
// is harmless on newer ones (libdl.so.2 is then an empty stub).
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>
#include <string.h>

// dlerror's message lives in thread-local storage and a goroutine may move to
// another OS thread between two cgo calls, so each wrapper reads dlerror in
// the same C call as the dlopen/dlsym it reports on and copies it out.
static void pt_copy_dlerror(char *buf, size_t n) {
	const char *e = dlerror();
	if (n == 0) {
		return;
	}
	if (e == NULL) {
		buf[0] = 0;
		return;
	}
	strncpy(buf, e, n - 1);
	buf[n - 1] = 0;
}

static void *pt_dlopen(const char *name, int flags, char *err, size_t n) {
	dlerror(); // clear any stale error
	void *h = dlopen(name, flags);
	if (h == NULL) {
		pt_copy_dlerror(err, n);
	}
	return h;
}

// pt_dlsym distinguishes "not found" from a symbol whose value is NULL the
// way dlsym(3) prescribes: clear dlerror, call dlsym, then check dlerror.
static void *pt_dlsym(void *h, const char *name, int *found, char *err, size_t n) {
	dlerror();
	void *p = dlsym(h, name);
	const char *e = dlerror();
	if (e != NULL) {
		*found = 0;
		strncpy(err, e, n - 1);
		err[n - 1] = 0;
		return NULL;
	}
	*found = 1;
	return p;
}

static int pt_dlclose(void *h, char *err, size_t n) {
	dlerror();
	int rc = dlclose(h);
	if (rc != 0) {
		pt_copy_dlerror(err, n);
	}
	return rc;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"unsafe"
)

// errBufLen bounds the dlerror text copied out of C; dlerror messages are a
// path plus a short reason.
const errBufLen = 1024

// Lib is an open shared library.
type Lib struct {
	name string // the candidate that opened

	mu     sync.Mutex // guards handle against Close racing Sym
	handle unsafe.Pointer
}

// Open tries each candidate in order with dlopen(RTLD_NOW|RTLD_LOCAL) and
// returns the first that loads. A candidate is a bare soname
// ("libopenblas.so.0"), searched the usual way (LD_LIBRARY_PATH, ld.so.cache,
// default directories), or a path. RTLD_NOW makes a library with missing
// dependencies fail here rather than at the first call; RTLD_LOCAL keeps its
// symbols from leaking into other libraries loaded later.
//
// When none loads, the error lists every candidate with dlerror's reason.
func Open(names ...string) (*Lib, error) {
	if len(names) == 0 {
		return nil, errors.New("dl: Open: no library names given")
	}
	var tried []string
	errBuf := (*C.char)(C.malloc(errBufLen))
	defer C.free(unsafe.Pointer(errBuf))
	for _, name := range names {
		if name == "" {
			tried = append(tried, `"": empty name`)
			continue
		}
		cname := C.CString(name)
		h := C.pt_dlopen(cname, C.RTLD_NOW|C.RTLD_LOCAL, errBuf, errBufLen)
		C.free(unsafe.Pointer(cname))
		if h != nil {
			return &Lib{name: name, handle: h}, nil
		}
		reason := C.GoString(errBuf)
		if reason == "" {
			reason = "dlopen failed"
		}
		if !strings.Contains(reason, name) { // glibc's text usually starts with the name already
			reason = name + ": " + reason
		}
		tried = append(tried, reason)
	}
	return nil, fmt.Errorf("dl: cannot open any of [%s]: %s",
		strings.Join(names, ", "), strings.Join(tried, "; "))
}

// Name is the candidate name (or path) that Open loaded.
func (l *Lib) Name() string { return l.name }

// Sym returns the address of the symbol name. A symbol that exists but whose
// value is NULL is returned as (nil, nil); a missing symbol is an error that
// names the library and the symbol.
func (l *Lib) Sym(name string) (unsafe.Pointer, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.handle == nil {
		return nil, fmt.Errorf("dl: %s: Sym(%q) on a closed library", l.name, name)
	}
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	errBuf := (*C.char)(C.malloc(errBufLen))
	defer C.free(unsafe.Pointer(errBuf))
	var found C.int
	p := C.pt_dlsym(l.handle, cname, &found, errBuf, errBufLen)
	if found == 0 {
		return nil, fmt.Errorf("dl: %s: symbol %q not found: %s", l.name, name, C.GoString(errBuf))
	}
	return p, nil
}

// Close releases the library with dlclose. Pointers obtained from Sym must
// not be used afterwards. Closing twice is a no-op.
func (l *Lib) Close() error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.handle == nil {
		return nil
	}
	errBuf := (*C.char)(C.malloc(errBufLen))
	defer C.free(unsafe.Pointer(errBuf))
	rc := C.pt_dlclose(l.handle, errBuf, errBufLen)
	l.handle = nil
	if rc != 0 {
		return fmt.Errorf("dl: close %s: %s", l.name, C.GoString(errBuf))
	}
	return nil
}
