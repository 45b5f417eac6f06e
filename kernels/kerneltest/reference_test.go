package kerneltest

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/peertune/peertune/kernels"
)

// These tests prove the references right, independently of any backend:
// every reference backward equals central differences of its reference
// forward over every element (float64 on both sides, so to ~1e-8), and the
// forwards agree with known values and with second, differently written
// formulations of the same math (Hugging Face's rotate_half, a masked
// full-matrix softmax).

// refTol is the agreement of float64 analytic gradients with float64 central
// differences at fdStep: truncation ~h² and rounding ~1e-12·|L| relative.
const refTol = 1e-7

func rnd(r *rand.Rand, n int, lo, hi float64) []float64 {
	x := make([]float64, n)
	for i := range x {
		x[i] = lo + (hi-lo)*r.Float64()
	}
	return x
}

// assertClose fails when max|got − want| / max(max|want|, tiny) > tol.
func assertClose(t *testing.T, what string, got, want []float64, tol float64) {
	t.Helper()
	assertCloseFloor(t, what, got, want, tol, 1e-300)
}

// assertCloseFloor is assertClose with the denominator at least floor.
func assertCloseFloor(t *testing.T, what string, got, want []float64, tol, floor float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d elements, want %d", what, len(got), len(want))
	}
	scale := math.Max(maxAbs(want), floor)
	for i := range got {
		if e := math.Abs(got[i]-want[i]) / scale; !(e <= tol) {
			t.Errorf("%s[%d] = %.12g, want %.12g (rel err %.3g > %.3g)", what, i, got[i], want[i], e, tol)
			return
		}
	}
}

// assertFD checks an analytic gradient against central differences of L
// with respect to x, over every element.
func assertFD(t *testing.T, what string, grad, x []float64, L func() float64) {
	t.Helper()
	assertFDFloor(t, what, grad, x, L, 1e-300)
}

// assertFDFloor is assertFD normalised by at least floor (see gradOut.floor).
func assertFDFloor(t *testing.T, what string, grad, x []float64, L func() float64, floor float64) {
	t.Helper()
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	assertCloseFloor(t, what+" vs finite differences", grad, fdGrad(L, x, idx), refTol, floor)
}

func TestRefMatmulBackwardFD(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 1))
	for _, s := range [][3]int{{1, 1, 1}, {3, 5, 2}, {4, 7, 6}} {
		m, k, n := s[0], s[1], s[2]
		in, w, bias, dOut := rnd(r, m*k, -1, 1), rnd(r, n*k, -1, 1), rnd(r, n, -1, 1), rnd(r, m*n, -1, 1)
		const scale = 0.37
		dIn, dW, dB := refMatmulBackward(dOut, in, w, m, k, n, scale)
		L := func() float64 { return objective(dOut, refMatmul(nil, in, w, bias, m, k, n, scale, false)) }
		assertFD(t, "dIn", dIn, in, L)
		assertFD(t, "dW", dW, w, L)
		assertFD(t, "dBias", dB, bias, L)
	}
}

func TestRefMatmulKnown(t *testing.T) {
	// [1 2; 3 4]·[5 6; 7 8]ᵀ = [17 23; 39 53]; scale 2, bias [1, −1], beta 1 over [10 10; 10 10].
	out := refMatmul([]float64{10, 10, 10, 10}, []float64{1, 2, 3, 4}, []float64{5, 6, 7, 8}, []float64{1, -1}, 2, 2, 2, 2, true)
	assertClose(t, "out", out, []float64{10 + 34 + 1, 10 + 46 - 1, 10 + 78 + 1, 10 + 106 - 1}, 0)
}

func TestRefEmbeddingBackwardFD(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	vocab, dim := 4, 3
	tok := []int32{1, 3, 1, 1, 0}
	table, dOut := rnd(r, vocab*dim, -1, 1), rnd(r, len(tok)*dim, -1, 1)
	d := refEmbeddingBackward(dOut, tok, vocab, dim)
	assertFD(t, "dTable", d, table, func() float64 { return objective(dOut, refEmbedding(table, tok, dim)) })
	// Token 2 is never used: its row gets nothing; token 1 gets three rows.
	if d[2*dim] != 0 || d[1*dim] != dOut[0]+dOut[2*dim]+dOut[3*dim] {
		t.Errorf("dTable rows: %v", d)
	}
}

func TestRefRMSNormBackwardFD(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 3))
	for _, s := range [][2]int{{1, 1}, {3, 5}, {2, 16}} {
		rows, dim := s[0], s[1]
		in, w, dOut := rnd(r, rows*dim, -1, 1), rnd(r, dim, -1.5, 1.5), rnd(r, rows*dim, -1, 1)
		const eps = 1e-5
		_, rstd := refRMSNorm(in, w, rows, dim, eps)
		dIn, dW := refRMSNormBackward(dOut, in, w, rstd, rows, dim)
		L := func() float64 { out, _ := refRMSNorm(in, w, rows, dim, eps); return objective(dOut, out) }
		// At dim 1 dIn is a tiny difference of O(1) terms (see the backward
		// check in ops_norm.go): measure it against the terms.
		terms := 0.0
		for i := range dIn {
			terms = math.Max(terms, math.Abs(rstd[i/dim]*w[i%dim]*dOut[i]))
		}
		assertFDFloor(t, "dIn", dIn, in, L, terms)
		assertFD(t, "dWeight", dW, w, L)
	}
}

func TestRefRMSNormKnown(t *testing.T) {
	// A constant row a: mean square a², rstd = 1/sqrt(a²+eps), out = a·rstd·w.
	out, rstd := refRMSNorm([]float64{2, 2, 2}, []float64{1, 2, 3}, 1, 3, 0.5)
	want := 1 / math.Sqrt(4.5)
	assertClose(t, "rstd", rstd, []float64{want}, 1e-15)
	assertClose(t, "out", out, []float64{2 * want, 4 * want, 6 * want}, 1e-15)
}

// hfRoPE is Hugging Face's formulation, written from modeling_llama.py:
// emb = cat(freqs, freqs); out = x·cos(emb) + rotate_half(x)·sin(emb),
// rotate_half(x) = cat(−x[h:], x[:h]).
func hfRoPE(x []float64, pos float64, theta float64) []float64 {
	d := len(x)
	h := d / 2
	out := make([]float64, d)
	for j := 0; j < d; j++ {
		i := j % h
		invFreq := 1 / math.Pow(theta, float64(2*i)/float64(d))
		a := pos * invFreq
		var rot float64
		if j < h {
			rot = -x[j+h]
		} else {
			rot = x[j-h]
		}
		out[j] = x[j]*math.Cos(a) + rot*math.Sin(a)
	}
	return out
}

func TestRefRoPEMatchesHuggingFace(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 4))
	for _, theta := range []float64{10000, 500000} {
		rows, heads, hd := 4, 3, 8
		pos := []int32{0, 7, 1, 4097}
		x := rnd(r, rows*heads*hd, -1, 1)
		got := refRoPE(x, pos, rows, heads, hd, theta)
		for rr := 0; rr < rows; rr++ {
			for h := 0; h < heads; h++ {
				base := (rr*heads + h) * hd
				assertClose(t, "rope vs HF", got[base:base+hd], hfRoPE(x[base:base+hd], float64(pos[rr]), theta), 1e-14)
			}
		}
		// Position 0 is the identity.
		assertClose(t, "rope at position 0", got[:heads*hd], x[:heads*hd], 0)
	}
}

func TestRefRoPEBackwardFD(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 5))
	rows, heads, hd := 3, 2, 6
	pos := []int32{5, 0, 300}
	x, dOut := rnd(r, rows*heads*hd, -1, 1), rnd(r, rows*heads*hd, -1, 1)
	d := refRoPEBackward(dOut, pos, rows, heads, hd, 10000)
	assertFD(t, "dIn", d, x, func() float64 { return objective(dOut, refRoPE(x, pos, rows, heads, hd, 10000)) })
}

// maskedAttention is attention written the other common way: the full
// [seq, seq] score matrix with −Inf above the diagonal, softmax per row.
func maskedAttention(q, k, v []float64, s attnShape) (out, lse []float64) {
	out = make([]float64, len(q))
	lse = make([]float64, s.batch*s.heads*s.seq)
	for b := 0; b < s.batch; b++ {
		for h := 0; h < s.heads; h++ {
			kh := h * s.kvHeads / s.heads // the same grouping, computed differently
			for i := 0; i < s.seq; i++ {
				row := make([]float64, s.seq)
				for j := range row {
					row[j] = math.Inf(-1) // masked: exp gives 0
					if j <= i {
						dot := 0.0
						for d := 0; d < s.headDim; d++ {
							dot += q[s.qi(b, i, h)+d] * k[s.ki(b, j, kh)+d]
						}
						row[j] = dot / math.Sqrt(float64(s.headDim))
					}
				}
				sum := 0.0
				for _, x := range row {
					sum += math.Exp(x) // scores are O(1) here: no max needed
				}
				lse[s.li(b, h, i)] = math.Log(sum)
				for j, x := range row {
					p := math.Exp(x) / sum
					for d := 0; d < s.headDim; d++ {
						out[s.qi(b, i, h)+d] += p * v[s.ki(b, j, kh)+d]
					}
				}
			}
		}
	}
	return out, lse
}

func TestRefAttentionMatchesMasked(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 6))
	for _, s := range []attnShape{{1, 1, 1, 1, 1}, {2, 5, 4, 2, 3}, {1, 6, 6, 2, 4}, {1, 4, 3, 3, 2}} {
		q := rnd(r, s.batch*s.seq*s.heads*s.headDim, -1, 1)
		k := rnd(r, s.batch*s.seq*s.kvHeads*s.headDim, -1, 1)
		v := rnd(r, len(k), -1, 1)
		out, lse := refAttention(q, k, v, s)
		mo, ml := maskedAttention(q, k, v, s)
		assertClose(t, "out", out, mo, 1e-14)
		assertClose(t, "lse", lse, ml, 1e-14)
	}
}

func TestRefAttentionKnown(t *testing.T) {
	// seq 1: the query sees only its own key, so out = v and lse = q·k/sqrt(d).
	s := attnShape{1, 1, 2, 1, 4}
	q := []float64{1, 2, 3, 4, -1, 0, 1, 0}
	k := []float64{0.5, 0.5, 0.5, 0.5}
	v := []float64{9, 8, 7, 6}
	out, lse := refAttention(q, k, v, s)
	assertClose(t, "out", out, []float64{9, 8, 7, 6, 9, 8, 7, 6}, 1e-15)
	assertClose(t, "lse", lse, []float64{5.0 / 2, 0}, 1e-15)
}

func TestRefAttentionBackwardFD(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 7))
	for _, s := range []attnShape{{1, 1, 1, 1, 1}, {1, 4, 2, 1, 3}, {2, 3, 3, 1, 2}, {1, 5, 4, 2, 3}} {
		q := rnd(r, s.batch*s.seq*s.heads*s.headDim, -1, 1)
		k := rnd(r, s.batch*s.seq*s.kvHeads*s.headDim, -1, 1)
		v := rnd(r, len(k), -1, 1)
		dOut := rnd(r, len(q), -1, 1)
		dq, dk, dv := refAttentionBackward(dOut, q, k, v, s)
		L := func() float64 { out, _ := refAttention(q, k, v, s); return objective(dOut, out) }
		assertFD(t, "dq", dq, q, L)
		assertFD(t, "dk", dk, k, L)
		assertFD(t, "dv", dv, v, L)
	}
}

func TestRefSwiGLUBackwardFD(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 8))
	gate, up, dOut := rnd(r, 20, -6, 6), rnd(r, 20, -2, 2), rnd(r, 20, -1, 1)
	gate[0], gate[1] = 0, -30
	dg, du := refSwiGLUBackward(dOut, gate, up)
	L := func() float64 { return objective(dOut, refSwiGLU(gate, up)) }
	assertFD(t, "dGate", dg, gate, L)
	assertFD(t, "dUp", du, up, L)
	// silu(0) = 0; silu(x) → x for large x.
	out := refSwiGLU([]float64{0, 40}, []float64{1, 1})
	assertClose(t, "silu", out, []float64{0, 40}, 1e-15)
}

func TestRefCrossEntropy(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 9))
	rows, vocab := 4, 5
	logits := rnd(r, rows*vocab, -3, 3)
	targets := []int32{2, kernels.IgnoreIndex, 0, 4}
	const gs = 0.25
	losses, d := refCrossEntropy(logits, targets, rows, vocab, gs)
	L := func() float64 {
		l, _ := refCrossEntropy(logits, targets, rows, vocab, gs)
		return gs * (l[0] + l[1] + l[2] + l[3])
	}
	assertFD(t, "dlogits", d, logits, L)
	if losses[1] != 0 {
		t.Errorf("ignored row loss %v, want 0", losses[1])
	}
	// Uniform logits: loss log(vocab) whatever the target; each gradient
	// row sums to 0 (softmax sums to 1, minus the one-hot).
	u, du := refCrossEntropy(make([]float64, vocab), []int32{3}, 1, vocab, 1)
	assertClose(t, "uniform loss", u, []float64{math.Log(float64(vocab))}, 1e-15)
	sum := 0.0
	for _, v := range du {
		sum += v
	}
	if math.Abs(sum) > 1e-15 {
		t.Errorf("gradient row sums to %g, want 0", sum)
	}
	// Shift invariance with a large offset: the max subtraction works.
	shifted := make([]float64, vocab)
	for i := range shifted {
		shifted[i] = 1000
	}
	s, _ := refCrossEntropy(shifted, []int32{0}, 1, vocab, 1)
	assertClose(t, "shifted loss", s, []float64{math.Log(float64(vocab))}, 1e-12)
}

func TestRefAdamWKnown(t *testing.T) {
	// Step 1 without decay: m̂ = g, v̂ = g², so the update is lr·g/(|g|+eps).
	p := kernels.AdamWParams{LR: 0.5, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, Step: 1, GradScale: 2}
	params, m, v := []float64{1, 1}, []float64{0, 0}, []float64{0, 0}
	refAdamW(params, []float64{0.25, -3}, m, v, p)
	g := []float64{0.5, -6} // grads·gradScale
	want := []float64{1 - 0.5*g[0]/(math.Abs(g[0])+float64(p.Eps)), 1 - 0.5*g[1]/(math.Abs(g[1])+float64(p.Eps))}
	assertClose(t, "params", params, want, 1e-12)
	b1 := float64(p.Beta1)
	assertClose(t, "m", m, []float64{(1 - b1) * g[0], (1 - b1) * g[1]}, 1e-15)
	// Pure decay: zero gradient leaves m̂ = 0, so params shrink by lr·wd·p.
	p = kernels.AdamWParams{LR: 0.1, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.5, Step: 3, GradScale: 1}
	params, m, v = []float64{2}, []float64{0}, []float64{0}
	refAdamW(params, []float64{0}, m, v, p)
	assertClose(t, "decayed", params, []float64{2 - float64(p.LR)*float64(p.WeightDecay)*2}, 1e-7)
}

func TestRefSumSquares(t *testing.T) {
	if got := refSumSquares([]float64{1, -2, 3}); got != 14 {
		t.Errorf("refSumSquares = %v, want 14", got)
	}
}

func TestFDSampling(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 10))
	idx := sampleIdx(r, 100, 10)
	seen := map[int]bool{}
	for _, i := range idx {
		if i < 0 || i >= 100 || seen[i] {
			t.Fatalf("sampleIdx gave %v", idx)
		}
		seen[i] = true
	}
	if len(idx) != 10 || !seen[0] || !seen[99] {
		t.Errorf("sampleIdx(100, 10) = %v: want 10 distinct including 0 and 99", idx)
	}
	if got := sampleIdx(r, 5, 10); len(got) != 5 {
		t.Errorf("sampleIdx(5, 10) = %v, want all 5", got)
	}
}

func TestDimsIndex(t *testing.T) {
	if got := (dims{2, 3, 4}).index(23); got != "[1,2,3]" {
		t.Errorf("index(23) = %s", got)
	}
	if got := (dims(nil)).index(7); got != "[7]" {
		t.Errorf("index(7) = %s", got)
	}
}
