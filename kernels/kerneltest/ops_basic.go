package kerneltest

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

// lenErrors checks the contract "shapes are checked against buffer lengths;
// a mismatch returns an error naming the op": the op with correctly sized
// buffers must succeed, and with any one buffer one element short or one
// element long must return an error (short would read or write out of
// bounds; long means the caller's shape and buffer disagree).
func (c *tcase) lenErrors(op string, names []string, sizes []int, call func(b []kernels.Buffer) error) {
	c.t.Helper()
	good := make([]kernels.Buffer, len(sizes))
	for i, n := range sizes {
		good[i] = c.up(names[i], c.uniform(n, 0.5, 1))
	}
	c.must(op+" with correct lengths", func() error { return call(good) })
	for i, n := range sizes {
		for _, delta := range []int{-1, +1} {
			if n+delta < 0 {
				continue
			}
			args := append([]kernels.Buffer(nil), good...)
			args[i] = c.up(names[i], c.uniform(n+delta, 0.5, 1))
			word := "short"
			if delta > 0 {
				word = "long"
			}
			c.mustErr(op, fmt.Sprintf("%s one element too %s (len %d, want %d)", names[i], word, n+delta, n),
				func() error { return call(args) })
		}
	}
	if err := c.be.Sync(); err != nil {
		c.t.Errorf("Sync after %s calls that returned shape errors: %v (a shape error must not poison the backend)", op, err)
	}
}

func checkBuffers(o *opT) {
	for _, n := range []int{1, 7, 1000} {
		o.run(fmt.Sprintf("Alloc/n=%d", n), func(c *tcase) {
			b, err := c.be.Alloc(n, kernels.F32)
			if err != nil {
				c.t.Fatalf("Alloc(%d, F32): %v", n, err)
			}
			defer c.be.Free(b)
			if b.Len() != n || b.DType() != kernels.F32 {
				c.t.Fatalf("Alloc(%d, F32) gave Len %d, DType %v", n, b.Len(), b.DType())
			}
			got := c.get("fresh buffer", b)
			for i, v := range got {
				if v != 0 || math.Signbit(v) {
					c.t.Fatalf("Alloc(%d) is not zeroed: element %d = %v", n, i, v)
				}
			}
		})
	}
	o.run("CopyRoundTrip", func(c *tcase) {
		// Special values must survive bit for bit: a copy is not arithmetic.
		src := []float32{0, float32(math.Copysign(0, -1)), 1, -2.5, 1e-40, -3e38,
			float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 0.1}
		b, err := c.be.Alloc(len(src), kernels.F32)
		if err != nil {
			c.t.Fatal(err)
		}
		defer c.be.Free(b)
		c.must("CopyIn", func() error { return c.be.CopyIn(b, src) })
		dst := make([]float32, len(src))
		c.must("CopyOut", func() error { return c.be.CopyOut(dst, b) })
		for i := range src {
			if math.Float32bits(dst[i]) != math.Float32bits(src[i]) {
				c.t.Errorf("CopyIn/CopyOut element %d: got %v (bits %#x), want %v (bits %#x)",
					i, dst[i], math.Float32bits(dst[i]), src[i], math.Float32bits(src[i]))
			}
		}
		c.mustErr("CopyIn", "a source one element short", func() error { return c.be.CopyIn(b, src[1:]) })
		c.mustErr("CopyIn", "a source one element long", func() error { return c.be.CopyIn(b, append(src, 1)) })
		c.mustErr("CopyOut", "a destination one element short", func() error { return c.be.CopyOut(dst[1:], b) })
		c.mustErr("CopyOut", "a destination one element long", func() error { return c.be.CopyOut(append(dst, 1), b) })
	})
	o.run("Slice", func(c *tcase) {
		// Every other check runs on views at an unaligned offset, so views
		// must work first: Slice shares memory, and slices of slices compose.
		b, err := c.be.Alloc(10, kernels.F32)
		if err != nil {
			c.t.Fatal(err)
		}
		defer c.be.Free(b)
		v := b.Slice(3, 5)
		if v.Len() != 5 || v.DType() != kernels.F32 {
			c.t.Fatalf("Slice(3, 5): Len %d DType %v, want 5 f32", v.Len(), v.DType())
		}
		c.must("CopyIn to a view", func() error { return c.be.CopyIn(v, []float32{1, 2, 3, 4, 5}) })
		got := c.get("parent", b)
		want := []float64{0, 0, 0, 1, 2, 3, 4, 5, 0, 0}
		for i := range want {
			if got[i] != want[i] {
				c.t.Fatalf("after CopyIn of 1..5 into Slice(3, 5), parent = %v, want %v", got, want)
			}
		}
		vv := v.Slice(1, 2)
		if got := c.get("slice of slice", vv); got[0] != 2 || got[1] != 3 {
			c.t.Errorf("Slice(3,5).Slice(1,2) reads %v, want [2 3]", got)
		}
		if hb, ok := v.(kernels.HostBuffer); ok {
			h := hb.Host()
			if len(h) != 5 || h[0] != 1 || h[4] != 5 {
				c.t.Errorf("HostBuffer view: Host() = %v, want [1 2 3 4 5]", h)
			} else {
				h[0] = 42 // Host aliases the buffer: the write must show.
				if got := c.get("parent", b); got[3] != 42 {
					c.t.Errorf("a write through Host() of a view is not visible in the parent: element 3 = %v, want 42", got[3])
				}
			}
		}
	})
}

// elementwiseSizes are the lengths the elementwise ops run on: 1, odd sizes
// that break vector widths, and one large enough for a backend to split
// across threads or blocks.
var elementwiseSizes = []int{1, 7, 65, 1000, 100003}

func checkZero(o *opT) {
	for _, n := range elementwiseSizes {
		o.run(fmt.Sprintf("n=%d", n), func(c *tcase) {
			b := c.up("b", c.uniform(n, -1, 1))
			c.must("Zero", func() error { return c.be.Zero(b) })
			c.check(cmp{what: "b", got: c.get("b", b), want: make([]float64, n), tol: c.tol("Zero")})
		})
	}
}

func checkCopy(o *opT) {
	for _, n := range elementwiseSizes {
		o.run(fmt.Sprintf("n=%d", n), func(c *tcase) {
			src := c.uniform(n, -1, 1)
			dst := c.up("dst", c.uniform(n, -1, 1))
			c.must("Copy", func() error { return c.be.Copy(dst, c.in("src", src)) })
			c.check(cmp{what: "dst", got: c.get("dst", dst), want: f64(src), tol: c.tol("Copy")})
		})
	}
	o.run("Errors", func(c *tcase) {
		c.lenErrors("Copy", []string{"dst", "src"}, []int{5, 5}, func(b []kernels.Buffer) error {
			return c.be.Copy(b[0], b[1])
		})
	})
}

func checkAdd(o *opT) {
	for _, n := range elementwiseSizes {
		for _, alias := range []string{"none", "out=a", "out=b", "a=b"} {
			o.run(fmt.Sprintf("n=%d,alias=%s", n, alias), func(c *tcase) {
				a, b := c.uniform(n, -1, 1), c.uniform(n, -1, 1)
				ba, bb := c.up("a", a), c.up("b", b)
				var out kernels.Buffer
				switch alias {
				case "none":
					out = c.up("out", c.uniform(n, -1, 1))
				case "out=a":
					out = ba
				case "out=b":
					out = bb
				case "a=b":
					out, bb, b = c.up("out", c.uniform(n, -1, 1)), ba, a
				}
				c.must("Add", func() error { return c.be.Add(out, ba, bb) })
				c.check(cmp{what: "out", got: c.get("out", out), want: add(f64(a), f64(b)), tol: c.tol("Add")})
			})
		}
	}
	o.run("Errors", func(c *tcase) {
		c.lenErrors("Add", []string{"out", "a", "b"}, []int{5, 5, 5}, func(b []kernels.Buffer) error {
			return c.be.Add(b[0], b[1], b[2])
		})
	})
}

func checkScale(o *opT) {
	for _, n := range elementwiseSizes {
		for _, s := range []float32{0, -1.5, 1e-3, 1} {
			o.run(fmt.Sprintf("n=%d,s=%g", n, s), func(c *tcase) {
				x := c.uniform(n, -1, 1)
				b := c.up("b", x)
				c.must("Scale", func() error { return c.be.Scale(b, s) })
				want := f64(x)
				for i := range want {
					want[i] *= float64(s)
				}
				c.check(cmp{what: "b", got: c.get("b", b), want: want, tol: c.tol("Scale")})
			})
		}
	}
}

func checkSumSquares(o *opT) {
	for _, n := range []int{1, 7, 33, 1000, 1<<20 + 3} {
		o.run(fmt.Sprintf("n=%d", n), func(c *tcase) {
			x := c.uniform(n, -1, 1)
			// out is pre-filled: SumSquares writes out[0], it does not add.
			out := c.up("out", []float32{123})
			c.must("SumSquares", func() error { return c.be.SumSquares(out, c.in("in", x)) })
			c.check(cmp{what: "out[0]", got: c.get("out", out), want: []float64{refSumSquares(f64(x))}, tol: c.tol("SumSquares")})
		})
	}
	o.run("Errors", func(c *tcase) {
		c.mustErr("SumSquares", "an empty out buffer", func() error {
			return c.be.SumSquares(c.up("out", nil), c.up("in", []float32{1, 2}))
		})
	})
}

func checkAdamW(o *opT) {
	configs := []struct {
		name string
		p    kernels.AdamWParams
	}{
		// A typical fine-tuning step with decoupled weight decay.
		{"wd=0.1", kernels.AdamWParams{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1, GradScale: 1}},
		// No decay, beta2 0.95 (LLM pre-training's), a larger eps and a
		// gradScale as gradient clipping produces it.
		{"clip", kernels.AdamWParams{LR: 0.01, Beta1: 0.9, Beta2: 0.95, Eps: 1e-6, WeightDecay: 0, GradScale: 0.37}},
	}
	for _, n := range []int{1, 7, 1000, 65537} {
		for _, cfg := range configs {
			o.run(fmt.Sprintf("n=%d,%s", n, cfg.name), func(c *tcase) {
				params, m, v := c.up("params", c.uniform(n, -1, 1)), c.zeros("m", n), c.zeros("v", n)
				// Steps 1..4 see bias correction at its strongest; step 1000
				// (as after a resume) sees it nearly gone.
				for _, step := range []int{1, 2, 3, 4, 1000} {
					// Gradients span four orders of magnitude so that eps
					// matters for some elements; a few are exactly 0.
					g := c.uniform(n, -1, 1)
					for i := range g {
						g[i] *= float32(math.Pow(10, -4*c.rng.Float64()))
						if c.rng.IntN(50) == 0 {
							g[i] = 0
						}
					}
					p0, m0, v0 := c.get("params", params), c.get("m", m), c.get("v", v)
					pr, mr, vr := append([]float64(nil), p0...), append([]float64(nil), m0...), append([]float64(nil), v0...)
					ap := cfg.p
					ap.Step = step
					refAdamW(pr, f64(g), mr, vr, ap)
					c.must(fmt.Sprintf("AdamW step %d", step), func() error { return c.be.AdamW(params, c.in("grads", g), m, v, ap) })
					// The reference starts each step from the backend's own
					// float32 state, so errors do not compound across steps.
					pg := c.get("params", params)
					c.check(cmp{what: fmt.Sprintf("step %d: params update (new − old)", step), got: sub(pg, p0), want: sub(pr, p0), tol: c.tol("AdamW.params"), floor: float64(ap.LR)})
					// m = β1·m + (1−β1)·g cancels when g changes sign: its
					// rounding is relative to the terms, its floor.
					mTerms := float64(ap.Beta1)*maxAbs(m0) + (1-float64(ap.Beta1))*maxAbs(f64(g))*float64(ap.GradScale)
					c.check(cmp{what: fmt.Sprintf("step %d: m", step), got: c.get("m", m), want: mr, tol: c.tol("AdamW.moments"), floor: mTerms})
					c.check(cmp{what: fmt.Sprintf("step %d: v", step), got: c.get("v", v), want: vr, tol: c.tol("AdamW.moments")})
					if c.t.Failed() {
						return
					}
				}
			})
		}
	}
	o.run("Errors", func(c *tcase) {
		p := configs[0].p
		p.Step = 1
		c.lenErrors("AdamW", []string{"params", "grads", "m", "v"}, []int{5, 5, 5, 5}, func(b []kernels.Buffer) error {
			return c.be.AdamW(b[0], b[1], b[2], b[3], p)
		})
	})
}
