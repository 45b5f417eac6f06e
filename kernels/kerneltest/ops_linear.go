package kerneltest

import (
	"fmt"

	"github.com/peertune/peertune/kernels"
)

type embShape struct {
	vocab, dim, ntok int
	sameToken        bool // every token the same: the accumulate case at its worst
}

func (s embShape) String() string {
	r := fmt.Sprintf("vocab=%d,dim=%d,tokens=%d", s.vocab, s.dim, s.ntok)
	if s.sameToken {
		r += ",same"
	}
	return r
}

func embShapes(o *opT) []embShape {
	shapes := []embShape{
		{1, 1, 1, false},
		{7, 3, 5, false},
		{17, 33, 40, false}, // more tokens than vocab: repeats
		{65, 7, 1, false},
		{3, 65, 17, true},
		{32000, 64, 128, false}, // realistic: a Llama vocabulary
	}
	r := o.rng()
	for i := 0; i < o.random(); i++ {
		shapes = append(shapes, embShape{pick(r, 100), pick(r, 100), pick(r, 100), false})
	}
	return shapes
}

func (c *tcase) tokens(n, vocab int, same bool) []int32 {
	t := make([]int32, n)
	for i := range t {
		t[i] = int32(c.rng.IntN(vocab))
		if same {
			t[i] = int32(vocab - 1)
		}
	}
	return t
}

func checkEmbedding(o *opT) {
	for _, s := range embShapes(o) {
		o.run(s.String(), func(c *tcase) {
			table := c.uniform(s.vocab*s.dim, -1, 1)
			tok := c.tokens(s.ntok, s.vocab, s.sameToken)
			out := c.up("out", c.uniform(s.ntok*s.dim, -1, 1))
			c.must("Embedding", func() error { return c.be.Embedding(out, c.in("table", table), tok, s.vocab, s.dim) })
			c.check(cmp{what: "out", got: c.get("out", out), want: refEmbedding(f64(table), tok, s.dim), shape: dims{s.ntok, s.dim}, tol: c.tol("Embedding")})
		})
	}
	o.run("Errors", func(c *tcase) {
		tok := []int32{0, 4, 2, 1}
		c.lenErrors("Embedding", []string{"out", "table"}, []int{4 * 3, 5 * 3}, func(b []kernels.Buffer) error {
			return c.be.Embedding(b[0], b[1], tok, 5, 3)
		})
		out, table := c.zeros("out", 4*3), c.zeros("table", 5*3)
		for _, bad := range []int32{-1, 5, kernels.IgnoreIndex} {
			c.mustErr("Embedding", fmt.Sprintf("token %d outside [0, vocab=5)", bad), func() error {
				return c.be.Embedding(out, table, []int32{0, bad, 2, 1}, 5, 3)
			})
		}
	})
}

func checkEmbeddingBackward(o *opT) {
	for i, s := range embShapes(o) {
		o.run(s.String(), func(c *tcase) {
			table := f64(c.uniform(s.vocab*s.dim, -1, 1))
			tok := c.tokens(s.ntok, s.vocab, s.sameToken)
			dOut := c.uniform(s.ntok*s.dim, -1, 1)
			d64 := f64(dOut)
			ref := refEmbeddingBackward(d64, tok, s.vocab, s.dim)
			L := func() float64 { return objective(d64, refEmbedding(table, tok, s.dim)) }
			bOut := c.in("dOut", dOut)
			outs := []gradOut{{"dTable", ref, dims{s.vocab, s.dim}, table, 0}}
			c.backwardVariants("EmbeddingBackward", c.tol("EmbeddingBackward"), outs, L, s.ntok*s.dim, i < nilShapes, func(g []kernels.Buffer) error {
				return c.be.EmbeddingBackward(g[0], bOut, tok, s.vocab, s.dim)
			})
		})
	}
	o.run("Errors", func(c *tcase) {
		tok := []int32{0, 4, 2, 1}
		c.lenErrors("EmbeddingBackward", []string{"dTable", "dOut"}, []int{5 * 3, 4 * 3}, func(b []kernels.Buffer) error {
			return c.be.EmbeddingBackward(b[0], b[1], tok, 5, 3)
		})
		// Not spelled out for the backward in kernels.go, but a token
		// outside the table would write outside dTable: it must be refused
		// like the forward refuses it.
		dTable, dOut := c.zeros("dTable", 5*3), c.zeros("dOut", 4*3)
		for _, bad := range []int32{-1, 5} {
			c.mustErr("EmbeddingBackward", fmt.Sprintf("token %d outside [0, vocab=5)", bad), func() error {
				return c.be.EmbeddingBackward(dTable, dOut, []int32{0, bad, 2, 1}, 5, 3)
			})
		}
	})
}

type mmShape struct {
	m, k, n   int
	realistic bool // large: fewer variants
}

func (s mmShape) String() string { return fmt.Sprintf("m=%d,k=%d,n=%d", s.m, s.k, s.n) }

func mmShapes(o *opT) []mmShape {
	shapes := []mmShape{
		{1, 1, 1, false},
		{1, 7, 3, false},
		{3, 17, 1, false},
		{7, 33, 17, false},
		{17, 65, 33, false},
		{65, 3, 7, false},
		{33, 1, 65, false},
		{128, 384, 256, true}, // realistic: a projection of 128 tokens
		{16, 4096, 32, true},  // a long reduction, like an MLP down-projection's K
	}
	r := o.rng()
	for i := 0; i < o.random(); i++ {
		shapes = append(shapes, mmShape{pick(r, 100), pick(r, 100), pick(r, 100), false})
	}
	return shapes
}

func checkMatmul(o *opT) {
	for _, s := range mmShapes(o) {
		for _, bias := range []bool{false, true} {
			for _, scale := range []float32{1, 0.37} {
				for _, acc := range []bool{false, true} {
					if s.realistic && (bias != acc || scale == 1) {
						continue // two variants are enough for the large shapes
					}
					name := s.String()
					if bias {
						name += ",bias"
					}
					name += fmt.Sprintf(",scale=%g", scale)
					if acc {
						name += ",acc"
					}
					o.run(name, func(c *tcase) { matmulCase(c, s, bias, scale, acc) })
				}
			}
		}
	}
	o.run("Errors", func(c *tcase) {
		m, k, n := 2, 3, 4
		c.lenErrors("Matmul", []string{"out", "in", "w", "bias"}, []int{m * n, m * k, n * k, n}, func(b []kernels.Buffer) error {
			return c.be.Matmul(b[0], b[1], b[2], b[3], m, k, n, 1, false)
		})
		c.mustErr("Matmul", "m = -1", func() error {
			return c.be.Matmul(c.zeros("out", n), c.zeros("in", k), c.zeros("w", n*k), nil, -1, k, n, 1, false)
		})
	})
}

func matmulCase(c *tcase, s mmShape, bias bool, scale float32, acc bool) {
	in, w := c.uniform(s.m*s.k, -1, 1), c.uniform(s.n*s.k, -1, 1)
	// With accumulate false, out's old contents must be ignored: fill it
	// with values that would show.
	out0 := c.uniform(s.m*s.n, -1, 1)
	var b []float32
	var bb kernels.Buffer
	if bias {
		b = c.uniform(s.n, -1, 1)
		bb = c.in("bias", b)
	}
	out := c.up("out", out0)
	c.must("Matmul", func() error {
		return c.be.Matmul(out, c.in("in", in), c.in("w", w), bb, s.m, s.k, s.n, scale, acc)
	})
	var b64 []float64
	if bias {
		b64 = f64(b)
	}
	want := refMatmul(f64(out0), f64(in), f64(w), b64, s.m, s.k, s.n, float64(scale), acc)
	c.check(cmp{what: "out", got: c.get("out", out), want: want, shape: dims{s.m, s.n}, tol: c.tol("Matmul")})
}

func checkMatmulBackward(o *opT) {
	for i, s := range mmShapes(o) {
		for _, scale := range []float32{1, 0.37} {
			if s.realistic && scale == 1 {
				continue
			}
			o.run(fmt.Sprintf("%s,scale=%g", s, scale), func(c *tcase) { matmulBackwardCase(c, s, scale, i < nilShapes) })
		}
	}
	o.run("Errors", func(c *tcase) {
		m, k, n := 2, 3, 4
		c.lenErrors("MatmulBackward", []string{"dIn", "dW", "dBias", "dOut", "in", "w"},
			[]int{m * k, n * k, n, m * n, m * k, n * k}, func(b []kernels.Buffer) error {
				return c.be.MatmulBackward(b[0], b[1], b[2], b[3], b[4], b[5], m, k, n, 1)
			})
	})
}

// nilShapes is how many of the first (small, fixed) shapes of each backward
// op also run the nil-output variants.
const nilShapes = 3

// gradOut is one gradient output of a backward op in a nil-variant loop.
type gradOut struct {
	name  string
	ref   []float64 // analytic float64 reference gradient
	shape dims
	x     []float64 // the input it is the gradient of (perturbed by FD)
	// floor, when the gradient is a difference of larger terms, is the
	// terms' magnitude: float32 rounding is relative to it, not to the
	// (possibly much smaller) result. See cmp.floor.
	floor float64
}

// nilVariants returns the variants a backward with outputs outs runs: all
// present, each one nil alone, all nil. Bit i set means outs[i] is nil.
func nilVariants(outs int) []int {
	v := []int{0}
	for i := 0; i < outs; i++ {
		v = append(v, 1<<i)
	}
	if outs > 1 {
		v = append(v, 1<<outs-1)
	}
	return v
}

func variantName(outs []gradOut, nils int) string {
	if nils == 0 {
		return "all gradients"
	}
	s := ""
	for i, g := range outs {
		if nils&(1<<i) != 0 {
			if s != "" {
				s += ","
			}
			s += g.name
		}
	}
	return s + " nil"
}

// backwardVariants runs a backward op with pre-filled gradient buffers and
// checks result = prefill + gradient for every output, and compares each
// gradient against finite differences of L. With withNils it then runs the
// op once per nil variant (each output nil alone, then all nil), checking
// that it succeeds and that the outputs still present are right; this runs
// on a few small shapes per op, which is enough for a skipped-output code
// path and keeps a missing one from failing every shape. call receives the
// gradient buffers (nil where skipped) in the order of outs.
func (c *tcase) backwardVariants(op string, tol float64, outs []gradOut, L func() float64, flops int, withNils bool, call func(g []kernels.Buffer) error) {
	c.t.Helper()
	variants := []int{0}
	if withNils {
		variants = nilVariants(len(outs))
	}
	for _, nils := range variants {
		label := variantName(outs, nils)
		bufs := make([]kernels.Buffer, len(outs))
		pres := make([][]float32, len(outs))
		for i, g := range outs {
			if nils&(1<<i) == 0 {
				pres[i] = c.prefill(g.ref)
				bufs[i] = c.up(g.name, pres[i])
			}
		}
		if err := c.call(op, func() error { return call(bufs) }); err != nil {
			if err != errPanicked {
				c.t.Errorf("%s (%s): unexpected error: %v", op, label, err)
			}
			continue
		}
		for i, g := range outs {
			if bufs[i] == nil {
				continue
			}
			res := c.get(g.name, bufs[i])
			pf := f64(pres[i])
			ok := c.check(cmp{what: fmt.Sprintf("%s (%s)", g.name, label), got: sub(res, pf), want: g.ref, shape: g.shape, tol: tol, floor: g.floor, prefill: pf})
			if ok && nils == 0 && L != nil {
				c.checkFD(g.name, sub(res, pf), g.ref, g.x, L, g.shape, tol, g.floor, flops)
			}
		}
	}
}

func matmulBackwardCase(c *tcase, s mmShape, scale float32, withNils bool) {
	in, w, dOut := c.uniform(s.m*s.k, -1, 1), c.uniform(s.n*s.k, -1, 1), c.uniform(s.m*s.n, -1, 1)
	in64, w64, d64 := f64(in), f64(w), f64(dOut)
	bias64 := make([]float64, s.n)
	rIn, rW, rB := refMatmulBackward(d64, in64, w64, s.m, s.k, s.n, float64(scale))
	L := func() float64 {
		return objective(d64, refMatmul(nil, in64, w64, bias64, s.m, s.k, s.n, float64(scale), false))
	}
	outs := []gradOut{
		{"dIn", rIn, dims{s.m, s.k}, in64, 0},
		{"dW", rW, dims{s.n, s.k}, w64, 0},
		{"dBias", rB, dims{s.n}, bias64, 0},
	}
	bIn, bW, bOut := c.in("in", in), c.in("w", w), c.in("dOut", dOut)
	c.backwardVariants("MatmulBackward", c.tol("MatmulBackward"), outs, L, s.m*s.k*s.n, withNils, func(g []kernels.Buffer) error {
		return c.be.MatmulBackward(g[0], g[1], g[2], bOut, bIn, bW, s.m, s.k, s.n, scale)
	})
}
