package kerneltest

import (
	"math"
	"math/rand/v2"
	"testing"
)

// fdStep is the central-difference step h. Inputs are O(1), except the
// RMSNorm rows scaled by 1e-2, where h is 1% of the input and a plain central
// difference is only accurate to ~1e-4; fdGrad therefore extrapolates
// (Richardson): (4·D(h/2) − D(h))/3 cancels the h² term, leaving
// ~(h/x)⁴ ≈ 1e-8 there and far less elsewhere. Rounding, ε₆₄·|L|/h ≈
// 1e-12·|L|, is as far below any float32 tolerance.
const fdStep = 1e-4

// objective is L = Σ_i w_i·out_i: a random linear functional of an op's
// output, so that dL/dout = w is the dOut handed to the backend's backward.
func objective(w, out []float64) float64 {
	s := 0.0
	for i := range w {
		s += w[i] * out[i]
	}
	return s
}

// fdGrad returns the Richardson-extrapolated central differences of L at
// the coordinates idx of x. L reads x, which fdGrad perturbs in place and
// restores. It evaluates L four times per coordinate.
func fdGrad(L func() float64, x []float64, idx []int) []float64 {
	central := func(j int, h float64) float64 {
		x0 := x[j]
		x[j] = x0 + h
		lp := L()
		x[j] = x0 - h
		lm := L()
		x[j] = x0
		return (lp - lm) / (2 * h)
	}
	g := make([]float64, len(idx))
	for n, j := range idx {
		g[n] = (4*central(j, fdStep/2) - central(j, fdStep)) / 3
	}
	return g
}

// sampleIdx returns up to max distinct coordinates of an n-element tensor:
// all of them when n ≤ max, else the first, the last (where indexing bugs
// live) and random others.
func sampleIdx(r *rand.Rand, n, max int) []int {
	if n <= max {
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		return idx
	}
	seen := map[int]bool{0: true, n - 1: true}
	idx := []int{0, n - 1}
	for len(idx) < max {
		j := r.IntN(n)
		if !seen[j] {
			seen[j] = true
			idx = append(idx, j)
		}
	}
	return idx
}

// fdCoords is how many coordinates of each gradient tensor the FD check
// samples for a forward evaluation of cost ~flops: enough to visit every
// element of the small shapes, a few for the realistic ones (which the
// analytic reference covers in full), so the suite stays fast.
func (c *tcase) fdCoords(flops int) int {
	budget := 4_000_000 // float64 multiply-adds per gradient tensor
	if c.short() {
		budget /= 4
	}
	n := budget / (4 * max(flops, 1))
	return min(max(n, 4), 48)
}

// checkFD compares a gradient the backend produced (prefill already
// subtracted) against central differences of L with respect to x at sampled
// coordinates. The error is normalised like check's, by the largest
// magnitude of the reference gradient ref (the analytic float64 backward),
// of the differences themselves and floor.
func (c *tcase) checkFD(what string, got []float64, ref []float64, x []float64, L func() float64, shape dims, tol, floor float64, flops int) bool {
	c.t.Helper()
	idx := sampleIdx(c.rng, len(x), c.fdCoords(flops))
	fd := fdGrad(L, x, idx)
	scale := math.Max(maxAbs(ref), floor)
	for _, v := range fd {
		scale = math.Max(scale, math.Abs(v))
	}
	if scale == 0 {
		scale = math.SmallestNonzeroFloat64
	}
	worst, worstErr := -1, 0.0
	for n, j := range idx {
		e := math.Abs(got[j]-fd[n]) / scale
		if math.IsNaN(e) || e > worstErr || worst < 0 {
			worst, worstErr = n, e
			if math.IsNaN(e) {
				break
			}
		}
	}
	if !(worstErr > tol) {
		return true
	}
	j := worst
	c.t.Errorf("%s vs finite differences of the float64 forward: max error %.3g > tol %.3g (normalised by %.4g) over %d sampled elements; worst at %s: got %.9g, finite difference %.9g, analytic reference %.9g (seed %d)",
		what, worstErr, tol, scale, len(idx), shape.index(idx[j]), got[idx[j]], fd[j], ref[idx[j]], c.opts.Seed)
	return false
}

func (c *tcase) short() bool { return testing.Short() }
