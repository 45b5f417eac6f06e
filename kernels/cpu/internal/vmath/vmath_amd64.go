//go:build amd64

package vmath

import (
	"math"

	"golang.org/x/sys/cpu"
)

// expCoreAVX2 is expCoreGo eight lanes at a time, for n a multiple of 8
// (vmath_amd64.s).
//
//go:noescape
func expCoreAVX2(dst, src *float32, n int, scale, shift float32) float64

// expCore runs the AVX2 loop over the largest multiple of 8 elements when
// the CPU has AVX2 and FMA, and the Go loop over the rest.
func expCore(dst, src []float32, scale, shift float32) float64 {
	n := len(src)
	dst = dst[:n]
	done := 0
	var sum float64
	if n >= 8 && cpu.X86.HasAVX2 && cpu.X86.HasFMA {
		done = n &^ 7
		sum = expCoreAVX2(&dst[0], &src[0], done, scale, shift)
	}
	return sum + expCoreGo(dst[done:], src[done:], scale, shift)
}

// maxAVX2 is Max for n a positive multiple of 8 (vmath_amd64.s).
//
//go:noescape
func maxAVX2(x *float32, n int) float32

// Max returns the largest element of x, NaN if any element is NaN, and −Inf
// for an empty x.
func Max(x []float32) float32 {
	n := len(x)
	if n < 8 || !cpu.X86.HasAVX2 {
		return maxGo(x, float32(math.Inf(-1)))
	}
	done := n &^ 7
	return maxGo(x[done:], maxAVX2(&x[0], done))
}
