// Package vmath holds the CPU backend's vectorised float32 math: the
// exponentials that softmax (attention, cross-entropy) and SiLU spend most
// of their non-GEMM time in.
//
// It is its own package because kernels/cpu uses cgo, and a cgo package
// cannot contain Go assembly (its .s files go to the C compiler). On amd64
// with AVX2 and FMA, ExpShiftSum runs eight lanes at a time; elsewhere, and
// for the tail of a slice, the same algorithm runs in pure Go; the two agree to
// within 1 ulp (the assembly fuses multiply-adds).
//
//	sum := vmath.ExpShiftSum(row, row, rowMax) // row[i] = e^(row[i]-rowMax)
//	lse := float64(rowMax) + math.Log(sum)
package vmath
