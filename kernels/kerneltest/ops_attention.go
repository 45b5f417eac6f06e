package kerneltest

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

type attnCase struct {
	attnShape
	// sharp multiplies q and k so that scores reach ~±100: softmax is then
	// nearly one-hot and exp overflows float32 unless the kernel subtracts
	// the row max (or works with lse) first.
	sharp float64
}

func (s attnCase) String() string {
	r := fmt.Sprintf("batch=%d,seq=%d,heads=%d,kvHeads=%d,headDim=%d", s.batch, s.seq, s.heads, s.kvHeads, s.headDim)
	if s.sharp != 1 {
		r += fmt.Sprintf(",sharp=%g", s.sharp)
	}
	return r
}

func (s attnShape) flops() int { return s.batch * s.heads * s.seq * (s.seq + 1) * s.headDim }

func attnShapes(o *opT) []attnCase {
	shapes := []attnCase{
		{attnShape{1, 1, 1, 1, 1}, 1},
		{attnShape{2, 1, 4, 2, 8}, 1},  // seq = 1: each query sees only itself
		{attnShape{1, 3, 2, 1, 7}, 1},  // GQA ratio 2
		{attnShape{2, 7, 3, 1, 17}, 1}, // ratio 3, batch 2
		{attnShape{1, 17, 4, 1, 8}, 1}, // ratio 4
		{attnShape{1, 5, 4, 4, 3}, 1},  // ratio 1 (plain multi-head)
		{attnShape{2, 9, 6, 3, 5}, 1},  // ratio 2 with several groups
		{attnShape{1, 33, 8, 2, 16}, 1},
		{attnShape{1, 17, 2, 1, 16}, 10},
		{attnShape{1, 128, 8, 2, 64}, 1}, // realistic: Llama-style GQA, headDim 64
	}
	r := o.rng()
	for i := 0; i < o.random(); i++ {
		kv := 1 + r.IntN(3)
		ratio := 1 + r.IntN(4)
		shapes = append(shapes, attnCase{attnShape{1 + r.IntN(2), pick(r, 40), kv * ratio, kv, pick(r, 33)}, 1})
	}
	return shapes
}

func (c *tcase) attnInputs(s attnCase) (q, k, v []float32) {
	nq := s.batch * s.seq * s.heads * s.headDim
	nk := s.batch * s.seq * s.kvHeads * s.headDim
	q, k, v = c.uniform(nq, -s.sharp, s.sharp), c.uniform(nk, -s.sharp, s.sharp), c.uniform(nk, -1, 1)
	return q, k, v
}

func checkAttention(o *opT) {
	for _, s := range attnShapes(o) {
		o.run(s.String(), func(c *tcase) {
			q, k, v := c.attnInputs(s)
			nq := len(q)
			out := c.up("out", c.uniform(nq, -1, 1))
			lse := c.up("lse", c.uniform(s.batch*s.heads*s.seq, -1, 1))
			c.must("Attention", func() error {
				return c.be.Attention(out, lse, c.in("q", q), c.in("k", k), c.in("v", v), s.batch, s.seq, s.heads, s.kvHeads, s.headDim)
			})
			wantOut, wantLse := refAttention(f64(q), f64(k), f64(v), s.attnShape)
			c.check(cmp{what: "out", got: c.get("out", out), want: wantOut, shape: dims{s.batch, s.seq, s.heads, s.headDim}, tol: c.tol("Attention")})
			c.check(cmp{what: "lse", got: c.get("lse", lse), want: wantLse, shape: dims{s.batch, s.heads, s.seq}, tol: c.tol("Attention.lse"), floor: 1})
		})
	}
	o.run("Errors", func(c *tcase) {
		b, t, h, kv, d := 1, 3, 4, 2, 5
		nq, nk := b*t*h*d, b*t*kv*d
		c.lenErrors("Attention", []string{"out", "lse", "q", "k", "v"}, []int{nq, b * h * t, nq, nk, nk}, func(x []kernels.Buffer) error {
			return c.be.Attention(x[0], x[1], x[2], x[3], x[4], b, t, h, kv, d)
		})
		// heads 3 over kvHeads 2: no whole group per kv head. The buffers
		// match these sizes exactly, so only the divisibility can fail.
		h, kv = 3, 2
		nq, nk = b*t*h*d, b*t*kv*d
		c.mustErr("Attention", "heads=3 not a multiple of kvHeads=2", func() error {
			return c.be.Attention(c.zeros("out", nq), c.zeros("lse", b*h*t), c.zeros("q", nq), c.zeros("k", nk), c.zeros("v", nk), b, t, h, kv, d)
		})
		c.mustErr("Attention", "kvHeads=0", func() error {
			return c.be.Attention(c.zeros("out", nq), c.zeros("lse", b*h*t), c.zeros("q", nq), c.zeros("k", 0), c.zeros("v", 0), b, t, h, 0, d)
		})
	})
}

func checkAttentionBackward(o *opT) {
	for i, s := range attnShapes(o) {
		o.run(s.String(), func(c *tcase) {
			q, k, v := c.attnInputs(s)
			dOut := c.uniform(len(q), -1, 1)
			q64, k64, v64, d64 := f64(q), f64(k), f64(v), f64(dOut)
			// out and lse come from the reference (rounded to float32), so a
			// failure here is the backward's own.
			out, lse := refAttention(q64, k64, v64, s.attnShape)
			rq, rk, rv := refAttentionBackward(d64, q64, k64, v64, s.attnShape)
			L := func() float64 {
				o, _ := refAttention(q64, k64, v64, s.attnShape)
				return objective(d64, o)
			}
			// dq and dk sum dS_j = P_j·(dP_j − D), differences that cancel
			// exactly at seq 1 (the gradient is 0 but float32 leaves
			// ~ε·|dP| behind) and partly whenever one key dominates. Their
			// rounding error is relative to the terms |dP|·|k|/sqrt(d)
			// and |dP|·|q|/sqrt(d), which are their floors.
			dp := maxAttnDP(d64, v64, s.attnShape) / math.Sqrt(float64(s.headDim))
			outs := []gradOut{
				{"dq", rq, dims{s.batch, s.seq, s.heads, s.headDim}, q64, dp * maxAbs(k64)},
				{"dk", rk, dims{s.batch, s.seq, s.kvHeads, s.headDim}, k64, dp * maxAbs(q64)},
				{"dv", rv, dims{s.batch, s.seq, s.kvHeads, s.headDim}, v64, 0},
			}
			bOut, bq, bk, bv := c.in("dOut", dOut), c.in("q", q), c.in("k", k), c.in("v", v)
			bo, bl := c.in("out", f32(out)), c.in("lse", f32(lse))
			c.backwardVariants("AttentionBackward", c.tol("AttentionBackward"), outs, L, s.flops(), i < nilShapes+1, func(g []kernels.Buffer) error {
				return c.be.AttentionBackward(g[0], g[1], g[2], bOut, bq, bk, bv, bo, bl, s.batch, s.seq, s.heads, s.kvHeads, s.headDim)
			})
		})
	}
	o.run("Errors", func(c *tcase) {
		b, t, h, kv, d := 1, 3, 4, 2, 5
		nq, nk, nl := b*t*h*d, b*t*kv*d, b*h*t
		c.lenErrors("AttentionBackward", []string{"dq", "dk", "dv", "dOut", "q", "k", "v", "out", "lse"},
			[]int{nq, nk, nk, nq, nq, nk, nk, nq, nl}, func(x []kernels.Buffer) error {
				return c.be.AttentionBackward(x[0], x[1], x[2], x[3], x[4], x[5], x[6], x[7], x[8], b, t, h, kv, d)
			})
	})
}

// maxAttnDP is max |dP_j| = |dOut[t]·v[j]| over every query row t and key
// j ≤ t it attends to.
func maxAttnDP(dOut, v []float64, s attnShape) float64 {
	m := 0.0
	for b := 0; b < s.batch; b++ {
		for h := 0; h < s.heads; h++ {
			for t := 0; t < s.seq; t++ {
				for j := 0; j <= t; j++ {
					dot := 0.0
					for d := 0; d < s.headDim; d++ {
						dot += dOut[s.qi(b, t, h)+d] * v[s.ki(b, j, s.kvHead(h))+d]
					}
					m = math.Max(m, math.Abs(dot))
				}
			}
		}
	}
	return m
}
