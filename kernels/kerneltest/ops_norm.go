package kerneltest

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

type normShape struct {
	rows, dim int
	eps       float32
}

func (s normShape) String() string { return fmt.Sprintf("rows=%d,dim=%d,eps=%g", s.rows, s.dim, s.eps) }

func normShapes(o *opT) []normShape {
	shapes := []normShape{
		{1, 1, 1e-5},
		{1, 7, 1e-6},
		{2, 3, 1e-5},
		{3, 17, 1e-5},
		{7, 33, 1e-6},
		{17, 65, 1e-5},
		{128, 576, 1e-5}, // realistic: 128 tokens of a small Llama's hidden size
		{3, 4096, 1e-6},  // a long row: the sum of squares over 4096
	}
	r := o.rng()
	for i := 0; i < o.random(); i++ {
		shapes = append(shapes, normShape{pick(r, 65), pick(r, 200), 1e-5})
	}
	return shapes
}

// normInput draws rows at three scales: O(1), small enough that eps matters
// (mean square ~3e-5 against eps 1e-5), and large (×30).
func (c *tcase) normInput(rows, dim int) []float32 {
	x := c.uniform(rows*dim, -1, 1)
	for r := 0; r < rows; r++ {
		s := []float32{1, 1e-2, 30}[r%3]
		for j := 0; j < dim; j++ {
			x[r*dim+j] *= s
		}
	}
	return x
}

func checkRMSNorm(o *opT) {
	for _, s := range normShapes(o) {
		o.run(s.String(), func(c *tcase) {
			in, w := c.normInput(s.rows, s.dim), c.uniform(s.dim, -1.5, 1.5)
			out, rstd := c.up("out", c.uniform(s.rows*s.dim, -1, 1)), c.up("rstd", c.uniform(s.rows, -1, 1))
			c.must("RMSNorm", func() error { return c.be.RMSNorm(out, rstd, c.in("in", in), c.in("weight", w), s.rows, s.dim, s.eps) })
			wantOut, wantRstd := refRMSNorm(f64(in), f64(w), s.rows, s.dim, float64(s.eps))
			// rstd differs by row scale (1e-2 vs 30 → factor 3000), so it is
			// compared row-relative: each row's rstd against itself.
			gotRstd := c.get("rstd", rstd)
			rel, ones := make([]float64, s.rows), make([]float64, s.rows)
			for r := range rel {
				rel[r], ones[r] = gotRstd[r]/wantRstd[r], 1
			}
			c.check(cmp{what: "rstd (as got/want per row)", got: rel, want: ones, shape: dims{s.rows}, tol: c.tol("RMSNorm.rstd")})
			c.check(cmp{what: "out", got: c.get("out", out), want: wantOut, shape: dims{s.rows, s.dim}, tol: c.tol("RMSNorm")})
		})
	}
	o.run("Errors", func(c *tcase) {
		rows, dim := 2, 3
		c.lenErrors("RMSNorm", []string{"out", "rstd", "in", "weight"}, []int{rows * dim, rows, rows * dim, dim}, func(b []kernels.Buffer) error {
			return c.be.RMSNorm(b[0], b[1], b[2], b[3], rows, dim, 1e-5)
		})
	})
}

func checkRMSNormBackward(o *opT) {
	for i, s := range normShapes(o) {
		o.run(s.String(), func(c *tcase) {
			in, w, dOut := c.normInput(s.rows, s.dim), c.uniform(s.dim, -1.5, 1.5), c.uniform(s.rows*s.dim, -1, 1)
			in64, w64, d64 := f64(in), f64(w), f64(dOut)
			eps := float64(s.eps)
			// The backward gets the reference rstd (rounded to float32), so a
			// failure here is the backward's own, not the forward's.
			_, rstd := refRMSNorm(in64, w64, s.rows, s.dim, eps)
			rstd32 := f32(rstd)
			rIn, rW := refRMSNormBackward(d64, in64, w64, f64(rstd32), s.rows, s.dim)
			L := func() float64 {
				out, _ := refRMSNorm(in64, w64, s.rows, s.dim, eps)
				return objective(d64, out)
			}
			// dIn = r·w·g − (r³/dim)·x·Σ g·w·x is a difference of two terms
			// that nearly cancel when one element dominates its row (always
			// at dim 1, where dIn = r·w·g·eps/(x²+eps)); its float32 error
			// is relative to the first term's size.
			terms := 0.0
			for r := 0; r < s.rows; r++ {
				for j := 0; j < s.dim; j++ {
					terms = max(terms, math.Abs(float64(rstd32[r])*w64[j]*d64[r*s.dim+j]))
				}
			}
			outs := []gradOut{
				{"dIn", rIn, dims{s.rows, s.dim}, in64, terms},
				{"dWeight", rW, dims{s.dim}, w64, 0},
			}
			bOut, bIn, bW, bR := c.in("dOut", dOut), c.in("in", in), c.in("weight", w), c.in("rstd", rstd32)
			c.backwardVariants("RMSNormBackward", c.tol("RMSNormBackward"), outs, L, 3*s.rows*s.dim, i < nilShapes, func(g []kernels.Buffer) error {
				return c.be.RMSNormBackward(g[0], g[1], bOut, bIn, bW, bR, s.rows, s.dim)
			})
		})
	}
	o.run("Errors", func(c *tcase) {
		rows, dim := 2, 3
		c.lenErrors("RMSNormBackward", []string{"dIn", "dWeight", "dOut", "in", "weight", "rstd"},
			[]int{rows * dim, dim, rows * dim, rows * dim, dim, rows}, func(b []kernels.Buffer) error {
				return c.be.RMSNormBackward(b[0], b[1], b[2], b[3], b[4], b[5], rows, dim)
			})
	})
}

type ropeShape struct {
	rows, heads, headDim int
	theta                float32
	// positions: "random" (unordered, in [0, 300)), "long" (unordered, up
	// to 4097), "seq" (0, 1, ..., rows−1 as in a training batch, +offset).
	positions string
}

func (s ropeShape) String() string {
	return fmt.Sprintf("rows=%d,heads=%d,headDim=%d,theta=%g,pos=%s", s.rows, s.heads, s.headDim, s.theta, s.positions)
}

func ropeShapes(o *opT) []ropeShape {
	shapes := []ropeShape{
		{1, 1, 2, 10000, "random"},
		{3, 1, 4, 500000, "random"},
		{7, 3, 6, 10000, "random"},
		{17, 2, 34, 500000, "random"},
		{5, 3, 64, 10000, "long"},
		{2, 1, 128, 500000, "long"},
		{128, 8, 64, 10000, "seq"},  // realistic: Llama-2 style
		{128, 4, 64, 500000, "seq"}, // realistic: Llama-3 style theta
	}
	r := o.rng()
	for i := 0; i < o.random(); i++ {
		theta := float32(10000)
		if r.IntN(2) == 0 {
			theta = 500000
		}
		shapes = append(shapes, ropeShape{pick(r, 65), pick(r, 9), 2 * pick(r, 33), theta, "random"})
	}
	return shapes
}

// ropePositions draws the positions of a shape; it returns them and their max.
func (c *tcase) ropePositions(s ropeShape) ([]int32, int) {
	pos := make([]int32, s.rows)
	mx := 0
	for i := range pos {
		switch s.positions {
		case "random":
			pos[i] = int32(c.rng.IntN(300))
		case "long":
			pos[i] = int32(c.rng.IntN(4098))
		case "seq":
			pos[i] = int32(i + 1000) // a later window of a long sequence
		}
		if i == 0 && s.positions != "seq" {
			pos[i] = 0 // the identity rotation
		}
		mx = max(mx, int(pos[i]))
	}
	return pos, mx
}

// ropeTol is the RoPE tolerance at the shape's largest position (see the
// "RoPE.perPosition" comment in tolerance.go).
func (c *tcase) ropeTol(key string, maxPos int) float64 {
	return c.tol(key) + c.tol("RoPE.perPosition")*float64(maxPos)
}

func checkRoPE(o *opT) {
	for _, s := range ropeShapes(o) {
		for _, inPlace := range []bool{false, true} {
			name := s.String()
			if inPlace {
				name += ",inplace"
			}
			o.run(name, func(c *tcase) {
				n := s.rows * s.heads * s.headDim
				pos, mx := c.ropePositions(s)
				x := c.uniform(n, -1, 1)
				in := c.up("in", x)
				out := in
				if !inPlace {
					out = c.up("out", c.uniform(n, -1, 1))
				}
				c.must("RoPE", func() error { return c.be.RoPE(out, in, pos, s.rows, s.heads, s.headDim, s.theta) })
				want := refRoPE(f64(x), pos, s.rows, s.heads, s.headDim, float64(s.theta))
				c.check(cmp{what: "out", got: c.get("out", out), want: want, shape: dims{s.rows, s.heads, s.headDim}, tol: c.ropeTol("RoPE", mx)})
			})
		}
	}
	o.run("Errors", func(c *tcase) {
		rows, heads, hd := 2, 3, 4
		pos := []int32{0, 1}
		c.lenErrors("RoPE", []string{"out", "in"}, []int{rows * heads * hd, rows * heads * hd}, func(b []kernels.Buffer) error {
			return c.be.RoPE(b[0], b[1], pos, rows, heads, hd, 10000)
		})
		out, in := c.zeros("out", rows*heads*hd), c.zeros("in", rows*heads*hd)
		c.mustErr("RoPE", "len(positions) = rows+1", func() error { return c.be.RoPE(out, in, []int32{0, 1, 2}, rows, heads, hd, 10000) })
		c.mustErr("RoPE", "len(positions) = rows−1", func() error { return c.be.RoPE(out, in, []int32{0}, rows, heads, hd, 10000) })
		// Rotate-half pairs element j with j + headDim/2: an odd headDim has
		// no such pairing.
		o3, i3 := c.zeros("out", 2*1*3), c.zeros("in", 2*1*3)
		c.mustErr("RoPE", "odd headDim 3", func() error { return c.be.RoPE(o3, i3, pos, 2, 1, 3, 10000) })
	})
}

func checkRoPEBackward(o *opT) {
	for i, s := range ropeShapes(o) {
		o.run(s.String(), func(c *tcase) {
			n := s.rows * s.heads * s.headDim
			pos, mx := c.ropePositions(s)
			x, dOut := f64(c.uniform(n, -1, 1)), c.uniform(n, -1, 1)
			d64 := f64(dOut)
			theta := float64(s.theta)
			ref := refRoPEBackward(d64, pos, s.rows, s.heads, s.headDim, theta)
			L := func() float64 { return objective(d64, refRoPE(x, pos, s.rows, s.heads, s.headDim, theta)) }
			bOut := c.in("dOut", dOut)
			outs := []gradOut{{"dIn", ref, dims{s.rows, s.heads, s.headDim}, x, 0}}
			c.backwardVariants("RoPEBackward", c.ropeTol("RoPEBackward", mx), outs, L, 4*n, i < nilShapes, func(g []kernels.Buffer) error {
				return c.be.RoPEBackward(g[0], bOut, pos, s.rows, s.heads, s.headDim, s.theta)
			})
		})
	}
	o.run("Errors", func(c *tcase) {
		rows, heads, hd := 2, 3, 4
		pos := []int32{0, 1}
		c.lenErrors("RoPEBackward", []string{"dIn", "dOut"}, []int{rows * heads * hd, rows * heads * hd}, func(b []kernels.Buffer) error {
			return c.be.RoPEBackward(b[0], b[1], pos, rows, heads, hd, 10000)
		})
		dIn, dOut := c.zeros("dIn", rows*heads*hd), c.zeros("dOut", rows*heads*hd)
		c.mustErr("RoPEBackward", "len(positions) = rows+1", func() error {
			return c.be.RoPEBackward(dIn, dOut, []int32{0, 1, 2}, rows, heads, hd, 10000)
		})
		o3, i3 := c.zeros("dIn", 2*1*3), c.zeros("dOut", 2*1*3)
		c.mustErr("RoPEBackward", "odd headDim 3", func() error { return c.be.RoPEBackward(o3, i3, pos, 2, 1, 3, 10000) })
	})
}
