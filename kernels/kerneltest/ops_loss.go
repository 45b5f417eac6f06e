package kerneltest

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

// swigluCase is a length and whether to include extreme gate values.
type swigluCase struct {
	n       int
	extreme bool
}

func (s swigluCase) String() string {
	if s.extreme {
		return fmt.Sprintf("n=%d,extreme", s.n)
	}
	return fmt.Sprintf("n=%d", s.n)
}

var swigluCases = []swigluCase{{1, false}, {7, false}, {33, false}, {65, false}, {1000, false}, {128 * 1376, false}, {40, true}}

// swigluInputs: gate and up in [−4, 4]; with extreme, gate also takes values
// where exp(−gate) overflows float32 (gate < −88.7) or sigmoid saturates, so
// a kernel that computes them naively produces NaN or Inf.
func (c *tcase) swigluInputs(s swigluCase) (gate, up []float32) {
	gate, up = c.uniform(s.n, -4, 4), c.uniform(s.n, -4, 4)
	if s.extreme {
		ext := []float32{0, 20, -20, 50, -50, 88, -88, 89, -89, 100, -100, 1e-8, -1e-8}
		copy(gate, ext)
	}
	return gate, up
}

func checkSwiGLU(o *opT) {
	for _, s := range swigluCases {
		o.run(s.String(), func(c *tcase) {
			gate, up := c.swigluInputs(s)
			out := c.up("out", c.uniform(s.n, -1, 1))
			c.must("SwiGLU", func() error { return c.be.SwiGLU(out, c.in("gate", gate), c.in("up", up)) })
			c.check(cmp{what: "out", got: c.get("out", out), want: refSwiGLU(f64(gate), f64(up)), tol: c.tol("SwiGLU")})
		})
	}
	o.run("Errors", func(c *tcase) {
		c.lenErrors("SwiGLU", []string{"out", "gate", "up"}, []int{5, 5, 5}, func(b []kernels.Buffer) error {
			return c.be.SwiGLU(b[0], b[1], b[2])
		})
	})
}

func checkSwiGLUBackward(o *opT) {
	for i, s := range swigluCases {
		o.run(s.String(), func(c *tcase) {
			gate, up := c.swigluInputs(s)
			dOut := c.uniform(s.n, -1, 1)
			g64, u64, d64 := f64(gate), f64(up), f64(dOut)
			rg, ru := refSwiGLUBackward(d64, g64, u64)
			L := func() float64 { return objective(d64, refSwiGLU(g64, u64)) }
			outs := []gradOut{{"dGate", rg, nil, g64, 0}, {"dUp", ru, nil, u64, 0}}
			bOut, bg, bu := c.in("dOut", dOut), c.in("gate", gate), c.in("up", up)
			c.backwardVariants("SwiGLUBackward", c.tol("SwiGLUBackward"), outs, L, s.n, i < nilShapes, func(g []kernels.Buffer) error {
				return c.be.SwiGLUBackward(g[0], g[1], bOut, bg, bu)
			})
		})
	}
	o.run("Errors", func(c *tcase) {
		c.lenErrors("SwiGLUBackward", []string{"dGate", "dUp", "dOut", "gate", "up"}, []int{5, 5, 5, 5, 5}, func(b []kernels.Buffer) error {
			return c.be.SwiGLUBackward(b[0], b[1], b[2], b[3], b[4])
		})
	})
}

// dropoutInput is never 0, so that a kept element (in/(1−p) ≠ 0) and a
// dropped one (exactly 0) can be told apart in the output.
func (c *tcase) dropoutInput(n int) []float32 {
	x := c.uniform(n, 0.5, 1.5)
	for i := range x {
		if c.rng.IntN(2) == 0 {
			x[i] = -x[i]
		}
	}
	return x
}

// dropout runs the forward on in and returns the output and the mask it used.
func (c *tcase) dropout(in []float32, p float32, seed uint64) (out []float64, mask []bool) {
	c.t.Helper()
	bo := c.up("out", c.uniform(len(in), -1, 1))
	c.must(fmt.Sprintf("Dropout(p=%g, seed=%d)", p, seed), func() error { return c.be.Dropout(bo, c.in("in", in), p, seed) })
	out = c.get("out", bo)
	mask = make([]bool, len(out))
	for i, v := range out {
		mask[i] = v != 0
	}
	return out, mask
}

func checkDropout(o *opT) {
	o.run("p=0", func(c *tcase) {
		in := c.dropoutInput(17)
		out, _ := c.dropout(in, 0, 1)
		c.check(cmp{what: "out (p=0 is a copy)", got: out, want: f64(in), tol: c.tol("Copy")})
	})
	for _, n := range []int{1, 7, 100003} {
		for _, p := range []float32{0.1, 0.5, 0.9} {
			if n < 100 && p != 0.5 {
				continue
			}
			o.run(fmt.Sprintf("n=%d,p=%g", n, p), func(c *tcase) { dropoutCase(c, n, p) })
		}
	}
	o.run("Errors", func(c *tcase) {
		c.lenErrors("Dropout", []string{"out", "in"}, []int{5, 5}, func(b []kernels.Buffer) error {
			return c.be.Dropout(b[0], b[1], 0.5, 1)
		})
	})
}

func dropoutCase(c *tcase, n int, p float32) {
	const seed, otherSeed = 12345, 12346
	in := c.dropoutInput(n)
	out, mask := c.dropout(in, p, seed)
	// Every element is either dropped (0) or kept and scaled by 1/(1−p).
	c.check(cmp{what: "out (kept values must be in/(1−p))", got: out, want: refDropout(f64(in), mask, float64(p)), tol: c.tol("Dropout")})

	// The mask is a pure function of (seed, i): the same call again gives
	// the same bits, and so does a shorter buffer on its prefix (the mask
	// must not depend on the length or on how the work is split).
	again, _ := c.dropout(in, p, seed)
	for i := range out {
		if math.Float64bits(again[i]) != math.Float64bits(out[i]) {
			c.t.Errorf("Dropout is not deterministic: same (seed %d, p %g) twice, element %d: %g then %g", uint64(seed), p, i, out[i], again[i])
			break
		}
	}
	if n > 1 {
		pre := n/2 + 1
		short, _ := c.dropout(in[:pre], p, seed)
		for i := range short {
			if math.Float64bits(short[i]) != math.Float64bits(out[i]) {
				c.t.Errorf("Dropout mask depends on the buffer length: element %d is %g over %d elements but %g over %d (the contract: mask[i] is a pure function of (seed, i))", i, out[i], n, short[i], pre)
				break
			}
		}
	}
	if n < 1000 {
		return // too few draws for the statistics below
	}
	// Kept fraction ≈ 1−p. The count is Binomial(n, 1−p); 6 standard
	// deviations make a false failure a ~1e-9 event, and still catch a mask
	// kept with probability p instead of 1−p, or a biased generator.
	kept := 0
	for _, m := range mask {
		if m {
			kept++
		}
	}
	q := 1 - float64(p)
	sd := math.Sqrt(q * (1 - q) / float64(n))
	if frac := float64(kept) / float64(n); math.Abs(frac-q) > 6*sd {
		c.t.Errorf("Dropout(p=%g) kept %d of %d = %.4f, want 1−p = %.4f ± %.4f (6σ)", p, kept, n, frac, q, 6*sd)
	}
	// Neighbours must be independent: P(mask[i] == mask[i+1]) = q² + (1−q)².
	// A generator with poor mixing of i (e.g. seed+i fed to a weak hash)
	// fails this even when the kept fraction is right. Pairs overlap, so the
	// bound is a generous 8σ.
	same := 0
	for i := 0; i+1 < n; i++ {
		if mask[i] == mask[i+1] {
			same++
		}
	}
	ps := q*q + (1-q)*(1-q)
	sd2 := math.Sqrt(ps * (1 - ps) / float64(n-1))
	if frac := float64(same) / float64(n-1); math.Abs(frac-ps) > 8*sd2 {
		c.t.Errorf("Dropout(p=%g): neighbouring mask bits agree in %.4f of pairs, want %.4f ± %.4f for independent draws", p, frac, ps, 8*sd2)
	}
	// Another seed gives another mask: independent masks differ in a
	// fraction 2q(1−q) of elements; require at least half of that.
	_, other := c.dropout(in, p, otherSeed)
	diff := 0
	for i := range mask {
		if mask[i] != other[i] {
			diff++
		}
	}
	if want := 2 * q * (1 - q); float64(diff)/float64(n) < want/2 {
		c.t.Errorf("Dropout(p=%g): seeds %d and %d give masks that differ in %d of %d elements, want about %.0f (independent masks)", p, uint64(seed), uint64(otherSeed), diff, n, want*float64(n))
	}
}

func checkDropoutBackward(o *opT) {
	for _, n := range []int{1, 7, 1000, 100003} {
		for _, p := range []float32{0, 0.1, 0.5} {
			o.run(fmt.Sprintf("n=%d,p=%g", n, p), func(c *tcase) {
				const seed = 777
				in := c.dropoutInput(n)
				// The mask is the backend's own: take it from the forward.
				_, mask := c.dropout(in, p, seed)
				if p == 0 {
					for i := range mask {
						mask[i] = true
					}
				}
				dOut := c.uniform(n, -1, 1)
				x, d64 := f64(in), f64(dOut)
				ref := refDropout(d64, mask, float64(p))
				L := func() float64 { return objective(d64, refDropout(x, mask, float64(p))) }
				bOut := c.in("dOut", dOut)
				// The mask must be the forward's for the same seed: ref uses it.
				outs := []gradOut{{"dIn", ref, nil, x, 0}}
				c.backwardVariants("DropoutBackward", c.tol("DropoutBackward"), outs, L, n, n <= 7, func(g []kernels.Buffer) error {
					return c.be.DropoutBackward(g[0], bOut, p, seed)
				})
			})
		}
	}
	o.run("Errors", func(c *tcase) {
		c.lenErrors("DropoutBackward", []string{"dIn", "dOut"}, []int{5, 5}, func(b []kernels.Buffer) error {
			return c.be.DropoutBackward(b[0], b[1], 0.5, 1)
		})
	})
}

type ceShape struct {
	rows, vocab int
	ignore      string // "some": about a quarter of rows ignored; "none"; "all"
	gradScale   float32
}

func (s ceShape) String() string {
	return fmt.Sprintf("rows=%d,vocab=%d,ignore=%s,gradScale=%g", s.rows, s.vocab, s.ignore, s.gradScale)
}

func ceShapes(o *opT) []ceShape {
	shapes := []ceShape{
		{1, 1, "none", 1}, // vocab 1: loss 0, gradient 0
		{1, 7, "none", 1},
		{2, 3, "all", 1},
		{3, 17, "some", 1.0 / 37},
		{7, 33, "some", 1},
		{17, 65, "some", 1.0 / 37},
		{8, 32000, "some", 1.0 / 6}, // realistic: a Llama vocabulary
	}
	r := o.rng()
	for i := 0; i < o.random(); i++ {
		shapes = append(shapes, ceShape{pick(r, 33), pick(r, 300), "some", 1})
	}
	return shapes
}

// ceInputs draws logits in [−3, 3] with, when there are enough rows, one
// row shifted by +100 and one by −100: exp overflows or underflows float32
// there unless the kernel subtracts the row max first.
func (c *tcase) ceInputs(s ceShape) (logits []float32, targets []int32) {
	logits = c.uniform(s.rows*s.vocab, -3, 3)
	if s.rows >= 3 {
		for j := 0; j < s.vocab; j++ {
			logits[1*s.vocab+j] += 100
			logits[2*s.vocab+j] -= 100
		}
	}
	targets = make([]int32, s.rows)
	for r := range targets {
		targets[r] = int32(c.rng.IntN(s.vocab))
		if s.ignore == "all" || (s.ignore == "some" && r%4 == 3) {
			targets[r] = kernels.IgnoreIndex
		}
	}
	return logits, targets
}

func checkCrossEntropy(o *opT) {
	for _, s := range ceShapes(o) {
		for _, mode := range []string{"separate", "inplace", "nil"} {
			o.run(s.String()+",dlogits="+mode, func(c *tcase) { crossEntropyCase(c, s, mode) })
		}
	}
	o.run("Errors", func(c *tcase) {
		rows, vocab := 2, 3
		tgt := []int32{1, 2}
		c.lenErrors("CrossEntropy", []string{"losses", "dlogits", "logits"}, []int{rows, rows * vocab, rows * vocab}, func(b []kernels.Buffer) error {
			return c.be.CrossEntropy(b[0], b[1], b[2], tgt, rows, vocab, 1)
		})
		losses, dl, lg := c.zeros("losses", rows), c.zeros("dlogits", rows*vocab), c.zeros("logits", rows*vocab)
		c.mustErr("CrossEntropy", "len(targets) = rows+1", func() error { return c.be.CrossEntropy(losses, dl, lg, []int32{0, 1, 2}, rows, vocab, 1) })
		c.mustErr("CrossEntropy", "len(targets) = rows−1", func() error { return c.be.CrossEntropy(losses, dl, lg, []int32{0}, rows, vocab, 1) })
		for _, bad := range []int32{int32(vocab), -1, kernels.IgnoreIndex - 1} {
			for _, d := range []kernels.Buffer{dl, nil} {
				why := fmt.Sprintf("target %d (outside [0, vocab=%d), not IgnoreIndex)", bad, vocab)
				if d == nil {
					why += ", dlogits nil"
				}
				c.mustErr("CrossEntropy", why, func() error { return c.be.CrossEntropy(losses, d, lg, []int32{0, bad}, rows, vocab, 1) })
			}
		}
	})
}

func crossEntropyCase(c *tcase, s ceShape, mode string) {
	logits, targets := c.ceInputs(s)
	x := f64(logits)
	gs := float64(s.gradScale)
	wantLoss, wantD := refCrossEntropy(x, targets, s.rows, s.vocab, gs)
	bLogits := c.up("logits", logits)
	// losses and a separate dlogits are pre-filled: both are overwritten,
	// including the ignored rows (to 0).
	bLoss := c.up("losses", c.uniform(s.rows, 5, 10))
	var bD kernels.Buffer
	switch mode {
	case "separate":
		bD = c.up("dlogits", c.uniform(s.rows*s.vocab, 5, 10))
	case "inplace":
		bD = bLogits
	}
	c.must("CrossEntropy", func() error {
		return c.be.CrossEntropy(bLoss, bD, bLogits, targets, s.rows, s.vocab, s.gradScale)
	})
	gotLoss := c.get("losses", bLoss)
	c.check(cmp{what: "losses", got: gotLoss, want: wantLoss, shape: dims{s.rows}, tol: c.tol("CrossEntropy.loss"), floor: 1})
	c.ignoredRowsZero("losses", gotLoss, targets, 1)
	if mode == "nil" {
		// Without dlogits the logits are only read.
		c.check(cmp{what: "logits after CrossEntropy with dlogits nil (must be unchanged)", got: c.get("logits", bLogits), want: x, tol: c.tol("Copy")})
		return
	}
	gotD := c.get("dlogits", bD)
	what := "dlogits"
	if mode == "inplace" {
		what = "dlogits (in place over logits)"
	}
	if c.check(cmp{what: what, got: gotD, want: wantD, shape: dims{s.rows, s.vocab}, tol: c.tol("CrossEntropy.dlogits")}) {
		// dlogits is the gradient of gradScale·Σ losses.
		L := func() float64 {
			l, _ := refCrossEntropy(x, targets, s.rows, s.vocab, gs)
			sum := 0.0
			for _, v := range l {
				sum += v
			}
			return gs * sum
		}
		c.checkFD(what, gotD, wantD, x, L, dims{s.rows, s.vocab}, c.tol("CrossEntropy.dlogits"), 0, s.rows*s.vocab)
	}
	c.ignoredRowsZero(what, gotD, targets, s.vocab)
}

// ignoredRowsZero checks that rows with target IgnoreIndex are exactly 0.
func (c *tcase) ignoredRowsZero(what string, got []float64, targets []int32, width int) {
	c.t.Helper()
	for r, t := range targets {
		if t != kernels.IgnoreIndex {
			continue
		}
		for j := 0; j < width; j++ {
			if v := got[r*width+j]; v != 0 {
				c.t.Errorf("%s: row %d has target IgnoreIndex but element %d = %g, want exactly 0", what, r, j, v)
				return
			}
		}
	}
}
