package dl

/*
#include <stddef.h>
#include <stdlib.h>
typedef size_t (*pt_strlen_fn)(const char *);
static size_t pt_call_strlen(void *fn, const char *s) { return ((pt_strlen_fn)fn)(s); }
*/
import "C"

import "unsafe"

// callStrlen calls a strlen resolved with Sym. It exists only for the tests
// (cgo is not allowed in _test.go files); it shows the trampoline pattern the
// real loaders use: C receives the function pointer and casts it.
func callStrlen(fn unsafe.Pointer, s string) int {
	cs := C.CString(s)
	defer C.free(unsafe.Pointer(cs))
	return int(C.pt_call_strlen(fn, cs))
}
