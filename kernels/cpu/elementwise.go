package cpu

import (
	"fmt"

	"github.com/peertune/peertune/kernels"
	"github.com/peertune/peertune/kernels/cpu/internal/vmath"
)

// Zero sets every element of b to 0.
func (be *Backend) Zero(b kernels.Buffer) error {
	d, err := host("Zero", "b", b)
	if err != nil {
		return err
	}
	be.parallelFor(len(d), 1, func(lo, hi int) { clear(d[lo:hi]) })
	return nil
}

// Copy copies src into dst.
func (be *Backend) Copy(dst, src kernels.Buffer) error {
	d, err := host("Copy", "dst", dst)
	if err != nil {
		return err
	}
	s, err := host("Copy", "src", src)
	if err != nil {
		return err
	}
	if err := wantLen("Copy", "dst", len(d), len(s), "len(src)"); err != nil {
		return err
	}
	// copy has memmove semantics, so overlapping views are fine when done
	// in one piece; split only disjoint copies across goroutines.
	if overlaps(d, s) {
		copy(d, s)
		return nil
	}
	be.parallelFor(len(d), 1, func(lo, hi int) { copy(d[lo:hi], s[lo:hi]) })
	return nil
}

// Add computes out = a + b (out may alias a or b).
func (be *Backend) Add(out, a, b kernels.Buffer) error {
	o, x, y, err := three("Add", out, a, b)
	if err != nil {
		return err
	}
	be.parallelFor(len(o), 1, func(lo, hi int) {
		o, x, y := o[lo:hi], x[lo:hi], y[lo:hi]
		for i := range o {
			o[i] = x[i] + y[i]
		}
	})
	return nil
}

// Scale computes b *= s.
func (be *Backend) Scale(b kernels.Buffer, s float32) error {
	d, err := host("Scale", "b", b)
	if err != nil {
		return err
	}
	be.parallelFor(len(d), 1, func(lo, hi int) {
		d := d[lo:hi]
		for i := range d {
			d[i] *= s
		}
	})
	return nil
}

// three fetches three equally long buffers (out, a, b).
func three(op string, out, a, b kernels.Buffer) (o, x, y []float32, err error) {
	if o, err = host(op, "out", out); err != nil {
		return
	}
	if x, err = host(op, "a", a); err != nil {
		return
	}
	if y, err = host(op, "b", b); err != nil {
		return
	}
	if len(x) != len(o) || len(y) != len(o) {
		err = fmt.Errorf("cpu: %s: lengths differ: out %d, a %d, b %d", op, len(o), len(x), len(y))
	}
	return
}

// sigmoidBlock is how many e^−x SwiGLU computes at once (vectorised) into
// a stack buffer before using them.
const sigmoidBlock = 256

// SwiGLU computes out = silu(gate) * up, silu(x) = x·sigmoid(x).
func (be *Backend) SwiGLU(out, gate, up kernels.Buffer) error {
	o, g, u, err := three("SwiGLU", out, gate, up)
	if err != nil {
		return fmt.Errorf("%w (out, gate, up)", err)
	}
	be.parallelFor(len(o), 8, func(lo, hi int) {
		var e [sigmoidBlock]float32
		for b := lo; b < hi; b += sigmoidBlock {
			n := min(sigmoidBlock, hi-b)
			g, u, o := g[b:b+n], u[b:b+n], o[b:b+n]
			vmath.ExpNeg(e[:n], g)
			for i, x := range g {
				o[i] = x / (1 + e[i]) * u[i]
			}
		}
	})
	return nil
}

// SwiGLUBackward adds dGate += dOut·up·silu'(gate) and dUp += dOut·silu(gate),
// with silu'(x) = s + x·s·(1−s), s = sigmoid(x). Either output may be nil.
func (be *Backend) SwiGLUBackward(dGate, dUp, dOut, gate, up kernels.Buffer) error {
	const op = "SwiGLUBackward"
	dg, hasDG, err := optHost(op, "dGate", dGate)
	if err != nil {
		return err
	}
	du, hasDU, err := optHost(op, "dUp", dUp)
	if err != nil {
		return err
	}
	do, g, u, err := three(op, dOut, gate, up)
	if err != nil {
		return fmt.Errorf("%w (dOut, gate, up)", err)
	}
	if hasDG {
		if err := wantLen(op, "dGate", len(dg), len(g), "len(gate)"); err != nil {
			return err
		}
	}
	if hasDU {
		if err := wantLen(op, "dUp", len(du), len(g), "len(gate)"); err != nil {
			return err
		}
	}
	be.parallelFor(len(g), 10, func(lo, hi int) {
		var e [sigmoidBlock]float32
		for b := lo; b < hi; b += sigmoidBlock {
			n := min(sigmoidBlock, hi-b)
			vmath.ExpNeg(e[:n], g[b:b+n])
			for k := 0; k < n; k++ {
				i := b + k
				x := g[i]
				s := 1 / (1 + e[k])
				if hasDG {
					dg[i] += do[i] * u[i] * (s + x*s*(1-s))
				}
				if hasDU {
					du[i] += do[i] * x * s
				}
			}
		}
	})
	return nil
}

// dropoutKeep reports whether element i survives dropout: a Bernoulli(1−p)
// draw that is a pure function of (seed, i), so the backward regenerates the
// mask and goroutines need no shared RNG state. The draw is the i-th output
// of splitmix64 seeded with seed (state seed + (i+1)·γ, then its finalizer);
// its top 24 bits, as a fraction of 2²⁴, are compared with p. Another
// backend that wants bit-identical masks implements exactly this.
func dropoutKeep(seed uint64, i int, threshold uint64) bool {
	z := seed + uint64(i+1)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return z>>40 >= threshold
}

// dropoutThreshold converts p to the 24-bit threshold of dropoutKeep.
func dropoutThreshold(op string, p float32) (uint64, error) {
	if !(p >= 0 && p < 1) {
		return 0, fmt.Errorf("cpu: %s: p = %v, want 0 <= p < 1", op, p)
	}
	return uint64(float64(p) * (1 << 24)), nil
}

// Dropout computes out = in·mask/(1−p); p == 0 is a copy.
func (be *Backend) Dropout(out, in kernels.Buffer, p float32, seed uint64) error {
	const op = "Dropout"
	th, err := dropoutThreshold(op, p)
	if err != nil {
		return err
	}
	o, err := host(op, "out", out)
	if err != nil {
		return err
	}
	x, err := host(op, "in", in)
	if err != nil {
		return err
	}
	if err := wantLen(op, "out", len(o), len(x), "len(in)"); err != nil {
		return err
	}
	if p == 0 {
		return be.Copy(out, in)
	}
	inv := 1 / (1 - p)
	be.parallelFor(len(o), 4, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if dropoutKeep(seed, i, th) {
				o[i] = x[i] * inv
			} else {
				o[i] = 0
			}
		}
	})
	return nil
}

// DropoutBackward adds dOut·mask/(1−p) into dIn (nil dIn: nothing to do).
func (be *Backend) DropoutBackward(dIn, dOut kernels.Buffer, p float32, seed uint64) error {
	const op = "DropoutBackward"
	th, err := dropoutThreshold(op, p)
	if err != nil {
		return err
	}
	di, hasDIn, err := optHost(op, "dIn", dIn)
	if err != nil {
		return err
	}
	do, err := host(op, "dOut", dOut)
	if err != nil {
		return err
	}
	if !hasDIn {
		return nil
	}
	if err := wantLen(op, "dIn", len(di), len(do), "len(dOut)"); err != nil {
		return err
	}
	inv := 1 / (1 - p)
	be.parallelFor(len(di), 4, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			if p == 0 || dropoutKeep(seed, i, th) {
				di[i] += do[i] * inv
			}
		}
	})
	return nil
}
