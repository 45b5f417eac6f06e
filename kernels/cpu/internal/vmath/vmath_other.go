//go:build !amd64

package vmath

import "math"

func expCore(dst, src []float32, scale, shift float32) float64 {
	return expCoreGo(dst, src, scale, shift)
}

// Max returns the largest element of x, NaN if any element is NaN, and −Inf
// for an empty x.
func Max(x []float32) float32 { return maxGo(x, float32(math.Inf(-1))) }
