package cpu

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

// AdamW updates params in place (decoupled weight decay), fused over the
// flat buffers and split across goroutines in contiguous chunks. The bias
// corrections are computed once, in float64.
func (be *Backend) AdamW(params, grads, m, v kernels.Buffer, p kernels.AdamWParams) error {
	const op = "AdamW"
	pd, err := host(op, "params", params)
	if err != nil {
		return err
	}
	gd, err := host(op, "grads", grads)
	if err != nil {
		return err
	}
	md, err := host(op, "m", m)
	if err != nil {
		return err
	}
	vd, err := host(op, "v", v)
	if err != nil {
		return err
	}
	if len(gd) != len(pd) || len(md) != len(pd) || len(vd) != len(pd) {
		return fmt.Errorf("cpu: %s: lengths differ: params %d, grads %d, m %d, v %d", op, len(pd), len(gd), len(md), len(vd))
	}
	if p.Step < 1 {
		return fmt.Errorf("cpu: %s: Step = %d, want >= 1 (steps count from 1)", op, p.Step)
	}
	if !(p.Beta1 >= 0 && p.Beta1 < 1 && p.Beta2 >= 0 && p.Beta2 < 1) {
		return fmt.Errorf("cpu: %s: Beta1 = %v, Beta2 = %v, want each in [0, 1)", op, p.Beta1, p.Beta2)
	}
	all := [][]float32{pd, gd, md, vd}
	for i := range all {
		for j := i + 1; j < len(all); j++ {
			if overlaps(all[i], all[j]) {
				return fmt.Errorf("cpu: %s: params, grads, m and v must not overlap", op)
			}
		}
	}
	bc1 := 1 - math.Pow(float64(p.Beta1), float64(p.Step))
	bc2 := 1 - math.Pow(float64(p.Beta2), float64(p.Step))
	b1, b2 := p.Beta1, p.Beta2
	c1, c2 := 1-p.Beta1, 1-p.Beta2
	inv1, inv2 := float32(1/bc1), float32(1/bc2)
	lr, eps, wd, gs := p.LR, p.Eps, p.WeightDecay, p.GradScale
	be.parallelFor(len(pd), 16, func(lo, hi int) {
		pp, gg, mm, vv := pd[lo:hi], gd[lo:hi], md[lo:hi], vd[lo:hi]
		for i := range pp {
			g := gg[i] * gs
			mi := b1*mm[i] + c1*g
			vi := b2*vv[i] + c2*g*g
			mm[i], vv[i] = mi, vi
			den := float32(math.Sqrt(float64(vi*inv2))) + eps
			pp[i] -= lr * (mi*inv1/den + wd*pp[i])
		}
	})
	return nil
}

// sumSquaresChunk is the fixed piece size of SumSquares' partial sums. Being
// fixed (not per thread) makes the result bit-identical on any machine,
// which matters because ranks compare gradient norms.
const sumSquaresChunk = 1 << 16

// SumSquares writes Σ in[i]² into out[0], accumulated in float64.
func (be *Backend) SumSquares(out, in kernels.Buffer) error {
	const op = "SumSquares"
	o, err := host(op, "out", out)
	if err != nil {
		return err
	}
	x, err := host(op, "in", in)
	if err != nil {
		return err
	}
	if len(o) < 1 {
		return fmt.Errorf("cpu: %s: out has 0 elements, want at least 1", op)
	}
	nc := (len(x) + sumSquaresChunk - 1) / sumSquaresChunk
	partial := make([]float64, nc)
	be.parallelFor(nc, sumSquaresChunk, func(lo, hi int) {
		for c := lo; c < hi; c++ {
			var s float64
			for _, v := range x[c*sumSquaresChunk : min(len(x), (c+1)*sumSquaresChunk)] {
				s += float64(v) * float64(v)
			}
			partial[c] = s
		}
	})
	var total float64
	for _, s := range partial {
		total += s
	}
	o[0] = float32(total)
	return nil
}
