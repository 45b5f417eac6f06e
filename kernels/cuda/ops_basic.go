package cuda

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

// Zero sets every element of b to 0 (cuMemsetD32Async; bytes for bf16).
func (be *Backend) Zero(b kernels.Buffer) error {
	x, err := be.anyBuf("Zero", "b", b)
	if err != nil {
		return err
	}
	if x.n == 0 {
		return nil
	}
	if x.a.dt == kernels.F32 {
		err = be.g.memsetD32(x.ptr(), 0, x.n)
	} else {
		err = be.g.memsetD8(x.ptr(), 0, x.bytes())
	}
	if err != nil {
		return fmt.Errorf("cuda: Zero: %w", err)
	}
	return nil
}

// Copy copies src into dst (same length). Overlapping views are copied
// through a temporary buffer (memmove semantics). Between float32 and bf16
// it converts (rounding to nearest even into bf16; widening is exact).
func (be *Backend) Copy(dst, src kernels.Buffer) error {
	const op = "Copy"
	d, err := be.anyBuf(op, "dst", dst)
	if err != nil {
		return err
	}
	s, err := be.anyBuf(op, "src", src)
	if err != nil {
		return err
	}
	if err := wantLen(op, "dst", d, s.n, "len(src)"); err != nil {
		return err
	}
	if d.a.dt != s.a.dt {
		// A conversion (views of different dtypes never share memory): how a
		// float32 master copy refreshes its bf16 working copy.
		if d.n == 0 {
			return nil
		}
		kernel := "pt_cvt_f32_to_bf16"
		if s.a.dt == kernels.BF16 {
			kernel = "pt_cvt_bf16_to_f32"
		}
		return be.launch(op, kernel, grid1(d.n), block1, 0, argP(d.ptr()), argP(s.ptr()), argL(int64(d.n)))
	}
	if d.n == 0 || d.same(s) {
		return nil
	}
	if d.overlaps(s) {
		tmp, err := be.g.alloc(s.bytes())
		if err != nil {
			return fmt.Errorf("cuda: %s: temporary for overlapping views: %w", op, err)
		}
		err = be.g.dtod(tmp, s.ptr(), s.bytes())
		if err == nil {
			err = be.g.dtod(d.ptr(), tmp, s.bytes())
		}
		if err == nil {
			err = be.g.sync() // tmp is in use until the copies ran
		}
		be.g.free(tmp)
		if err != nil {
			return fmt.Errorf("cuda: %s: %w", op, err)
		}
		return nil
	}
	if err := be.g.dtod(d.ptr(), s.ptr(), s.bytes()); err != nil {
		return fmt.Errorf("cuda: %s: %w", op, err)
	}
	return nil
}

// three fetches three equally long float32 buffers.
func (be *Backend) three(op string, names [3]string, x, y, z kernels.Buffer) (a, b, c *Buffer, err error) {
	return threeVia(be.buf, op, names, x, y, z)
}

// threeAny is three for ops whose kernels read and write bf16 as well.
func (be *Backend) threeAny(op string, names [3]string, x, y, z kernels.Buffer) (a, b, c *Buffer, err error) {
	return threeVia(be.anyBuf, op, names, x, y, z)
}

// threeVia fetches three equally long buffers with resolve (buf or anyBuf).
func threeVia(resolve func(op, arg string, b kernels.Buffer) (*Buffer, error), op string, names [3]string, x, y, z kernels.Buffer) (a, b, c *Buffer, err error) {
	if a, err = resolve(op, names[0], x); err != nil {
		return
	}
	if b, err = resolve(op, names[1], y); err != nil {
		return
	}
	if c, err = resolve(op, names[2], z); err != nil {
		return
	}
	if b.n != a.n || c.n != a.n {
		err = fmt.Errorf("cuda: %s: lengths differ: %s %d, %s %d, %s %d", op, names[0], a.n, names[1], b.n, names[2], c.n)
	}
	return
}

// add is Add on float32 or bf16 buffers (each reads and writes its own
// dtype, see dtMask): computes out = a + b (out may alias a or b).
func (be *Backend) add(out, a, b kernels.Buffer) error {
	o, x, y, err := be.threeAny("Add", [3]string{"out", "a", "b"}, out, a, b)
	if err != nil {
		return err
	}
	return be.launch("Add", "pt_add", grid1(o.n), block1, 0, argP(o.ptr()), argP(x.ptr()), argP(y.ptr()), argL(int64(o.n)), argI(int(dtMask(o, x, y))))
}

// scaleF32 is Scale on float32 buffers: computes b *= s.
func (be *Backend) scaleF32(b kernels.Buffer, s float32) error {
	x, err := be.buf("Scale", "b", b)
	if err != nil {
		return err
	}
	return be.launch("Scale", "pt_scale", grid1(x.n), block1, 0, argP(x.ptr()), argF(s), argL(int64(x.n)))
}

// swiGLU is SwiGLU on float32 or bf16 buffers (see dtMask): computes
// out = silu(gate) * up.
func (be *Backend) swiGLU(out, gate, up kernels.Buffer) error {
	o, g, u, err := be.threeAny("SwiGLU", [3]string{"out", "gate", "up"}, out, gate, up)
	if err != nil {
		return err
	}
	return be.launch("SwiGLU", "pt_swiglu", grid1(o.n), block1, 0, argP(o.ptr()), argP(g.ptr()), argP(u.ptr()), argL(int64(o.n)), argI(int(dtMask(o, g, u))))
}

// swiGLUBackward is SwiGLUBackward on float32 or bf16 buffers (see
// dtMask): adds the gradients w.r.t. gate and up (either may be nil).
func (be *Backend) swiGLUBackward(dGate, dUp, dOut, gate, up kernels.Buffer) error {
	const op = "SwiGLUBackward"
	dg, err := be.optAny(op, "dGate", dGate)
	if err != nil {
		return err
	}
	du, err := be.optAny(op, "dUp", dUp)
	if err != nil {
		return err
	}
	do, g, u, err := be.threeAny(op, [3]string{"dOut", "gate", "up"}, dOut, gate, up)
	if err != nil {
		return err
	}
	if dg != nil {
		if err := wantLen(op, "dGate", dg, g.n, "len(gate)"); err != nil {
			return err
		}
	}
	if du != nil {
		if err := wantLen(op, "dUp", du, g.n, "len(gate)"); err != nil {
			return err
		}
	}
	if dg == nil && du == nil {
		return nil
	}
	return be.launch(op, "pt_swiglu_backward", grid1(g.n), block1, 0,
		argP(dg.ptr()), argP(du.ptr()), argP(do.ptr()), argP(g.ptr()), argP(u.ptr()), argL(int64(g.n)), argI(int(dtMask(dg, du, do, g, u))))
}

// dropoutThreshold converts p to the 24-bit threshold of the mask (the
// CPU backend's formula: floor(p·2^24) computed in float64).
func dropoutThreshold(op string, p float32) (uint64, error) {
	if !(p >= 0 && p < 1) {
		return 0, fmt.Errorf("cuda: %s: p = %v, want 0 <= p < 1", op, p)
	}
	return uint64(float64(p) * (1 << 24)), nil
}

// dropout is Dropout on float32 or bf16 buffers (see dtMask): computes
// out = in·mask/(1−p) with the CPU backend's mask; p == 0 is a copy.
func (be *Backend) dropout(out, in kernels.Buffer, p float32, seed uint64) error {
	const op = "Dropout"
	th, err := dropoutThreshold(op, p)
	if err != nil {
		return err
	}
	o, err := be.anyBuf(op, "out", out)
	if err != nil {
		return err
	}
	x, err := be.anyBuf(op, "in", in)
	if err != nil {
		return err
	}
	if err := wantLen(op, "out", o, x.n, "len(in)"); err != nil {
		return err
	}
	if p == 0 {
		return be.Copy(out, in)
	}
	inv := 1 / (1 - p)
	return be.launch(op, "pt_dropout", grid1(o.n), block1, 0,
		argP(o.ptr()), argP(x.ptr()), argL(int64(o.n)), argU(seed), argU(th), argF(inv), argI(int(dtMask(o, x))))
}

// dropoutBackward is DropoutBackward on float32 or bf16 buffers (see
// dtMask): adds dOut·mask/(1−p) into dIn (nil dIn: nothing to do).
func (be *Backend) dropoutBackward(dIn, dOut kernels.Buffer, p float32, seed uint64) error {
	const op = "DropoutBackward"
	th, err := dropoutThreshold(op, p)
	if err != nil {
		return err
	}
	di, err := be.optAny(op, "dIn", dIn)
	if err != nil {
		return err
	}
	do, err := be.anyBuf(op, "dOut", dOut)
	if err != nil {
		return err
	}
	if di == nil {
		return nil
	}
	if err := wantLen(op, "dIn", di, do.n, "len(dOut)"); err != nil {
		return err
	}
	inv := 1 / (1 - p)
	keepAll := 0
	if p == 0 {
		keepAll = 1
	}
	return be.launch(op, "pt_dropout_backward", grid1(di.n), block1, 0,
		argP(di.ptr()), argP(do.ptr()), argL(int64(di.n)), argU(seed), argU(th), argF(inv), argI(keepAll), argI(int(dtMask(di, do))))
}

// adamWF32 is AdamW on float32 buffers: updates params in place (decoupled weight decay), fused.
func (be *Backend) adamWF32(params, grads, m, v kernels.Buffer, p kernels.AdamWParams) error {
	const op = "AdamW"
	names := []string{"params", "grads", "m", "v"}
	bufs := make([]*Buffer, 4)
	for i, b := range []kernels.Buffer{params, grads, m, v} {
		x, err := be.buf(op, names[i], b)
		if err != nil {
			return err
		}
		bufs[i] = x
	}
	pd, gd, md, vd := bufs[0], bufs[1], bufs[2], bufs[3]
	if gd.n != pd.n || md.n != pd.n || vd.n != pd.n {
		return fmt.Errorf("cuda: %s: lengths differ: params %d, grads %d, m %d, v %d", op, pd.n, gd.n, md.n, vd.n)
	}
	if p.Step < 1 {
		return fmt.Errorf("cuda: %s: Step = %d, want >= 1 (steps count from 1)", op, p.Step)
	}
	if !(p.Beta1 >= 0 && p.Beta1 < 1 && p.Beta2 >= 0 && p.Beta2 < 1) {
		return fmt.Errorf("cuda: %s: Beta1 = %v, Beta2 = %v, want each in [0, 1)", op, p.Beta1, p.Beta2)
	}
	for i := range bufs {
		for j := i + 1; j < len(bufs); j++ {
			if bufs[i].overlaps(bufs[j]) {
				return fmt.Errorf("cuda: %s: params, grads, m and v must not overlap", op)
			}
		}
	}
	bc1 := 1 - math.Pow(float64(p.Beta1), float64(p.Step))
	bc2 := 1 - math.Pow(float64(p.Beta2), float64(p.Step))
	return be.launch(op, "pt_adamw", grid1(pd.n), block1, 0,
		argP(pd.ptr()), argP(gd.ptr()), argP(md.ptr()), argP(vd.ptr()), argL(int64(pd.n)),
		argF(p.LR), argF(p.Beta1), argF(p.Beta2), argF(1-p.Beta1), argF(1-p.Beta2),
		argF(float32(1/bc1)), argF(float32(1/bc2)), argF(p.Eps), argF(p.WeightDecay), argF(p.GradScale))
}

// sumSquaresBlocks is the largest number of partial sums of SumSquares'
// first pass. The grid depends on n only, so the summation order, and the
// result's bits, are the same on every run.
const sumSquaresBlocks = 1024

// sumSquaresF32 is SumSquares on float32 buffers: writes Σ in[i]² into out[0], accumulated in float64.
func (be *Backend) sumSquaresF32(out, in kernels.Buffer) error {
	const op = "SumSquares"
	o, err := be.buf(op, "out", out)
	if err != nil {
		return err
	}
	x, err := be.buf(op, "in", in)
	if err != nil {
		return err
	}
	if o.n < 1 {
		return fmt.Errorf("cuda: %s: out has 0 elements, want at least 1", op)
	}
	if o.overlaps(x) {
		return fmt.Errorf("cuda: %s: out overlaps in", op)
	}
	nb := min(sumSquaresBlocks, max(1, (x.n+blockSize-1)/blockSize))
	part, err := be.partial.ensure(be.g, 8*sumSquaresBlocks)
	if err != nil {
		return fmt.Errorf("cuda: %s: %w", op, err)
	}
	if err := be.launch(op, "pt_sumsq_partial", [3]uint32{uint32(nb), 1, 1}, block1, 0,
		argP(part), argP(x.ptr()), argL(int64(x.n))); err != nil {
		return err
	}
	return be.launch(op, "pt_sumsq_final", [3]uint32{1, 1, 1}, block1, 0, argP(o.ptr()), argP(part), argI(nb))
}
