package cpu

import "unsafe"

// overlaps reports whether two slices share any element. Ops whose outputs
// must not alias their inputs (GEMM operands, attention) use it to return an
// error instead of silently computing garbage.
func overlaps(a, b []float32) bool {
	if len(a) == 0 || len(b) == 0 {
		return false
	}
	a0 := uintptr(unsafe.Pointer(unsafe.SliceData(a)))
	b0 := uintptr(unsafe.Pointer(unsafe.SliceData(b)))
	a1 := a0 + uintptr(len(a))*4
	b1 := b0 + uintptr(len(b))*4
	return a0 < b1 && b0 < a1
}
