package cpu

import (
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/peertune/peertune/kernels"
)

// Focused tests of the parts most likely to go wrong in this backend: the
// tiled attention, the in-place cross-entropy, error paths. The shared suite
// (kerneltest, run in cpu_test.go) covers every op against its reference.

func backends(t *testing.T) map[string]*Backend {
	t.Helper()
	m := map[string]*Backend{"gonum": newTestBackend(t, Options{ForceGonum: true})}
	if be, err := New(DefaultOptions()); err == nil && be.BLAS() == BLASOpenBLAS {
		m["openblas"] = be
	}
	return m
}

func randSlice(r *rand.Rand, n int, scale float64) []float32 {
	s := make([]float32, n)
	for i := range s {
		s[i] = float32(r.NormFloat64() * scale)
	}
	return s
}

func buf(be *Backend, data []float32) *Buffer {
	return be.Wrap(append([]float32(nil), data...))
}

// naiveAttention is the textbook float64 computation with full score
// matrices: out, lse and the gradients for dOut.
func naiveAttention(q, k, v, dOut []float32, B, S, H, KVH, D int) (out, lse, dq, dk, dv []float64) {
	out = make([]float64, B*S*H*D)
	lse = make([]float64, B*H*S)
	dq = make([]float64, len(q))
	dk = make([]float64, len(k))
	dv = make([]float64, len(v))
	scale := 1 / math.Sqrt(float64(D))
	qi := func(b, i, h, d int) int { return ((b*S+i)*H+h)*D + d }
	ki := func(b, j, g, d int) int { return ((b*S+j)*KVH+g)*D + d }
	for b := 0; b < B; b++ {
		for h := 0; h < H; h++ {
			g := h / (H / KVH)
			P := make([][]float64, S)
			for i := 0; i < S; i++ {
				s := make([]float64, i+1)
				mx := math.Inf(-1)
				for j := 0; j <= i; j++ {
					for d := 0; d < D; d++ {
						s[j] += float64(q[qi(b, i, h, d)]) * float64(k[ki(b, j, g, d)])
					}
					s[j] *= scale
					mx = math.Max(mx, s[j])
				}
				var sum float64
				for j := range s {
					s[j] = math.Exp(s[j] - mx)
					sum += s[j]
				}
				lse[(b*H+h)*S+i] = mx + math.Log(sum)
				for j := range s {
					s[j] /= sum
					for d := 0; d < D; d++ {
						out[qi(b, i, h, d)] += s[j] * float64(v[ki(b, j, g, d)])
					}
				}
				P[i] = s
			}
			for i := 0; i < S; i++ {
				var Di float64
				for d := 0; d < D; d++ {
					Di += float64(dOut[qi(b, i, h, d)]) * out[qi(b, i, h, d)]
				}
				for j := 0; j <= i; j++ {
					var dp float64
					for d := 0; d < D; d++ {
						dp += float64(dOut[qi(b, i, h, d)]) * float64(v[ki(b, j, g, d)])
						dv[ki(b, j, g, d)] += P[i][j] * float64(dOut[qi(b, i, h, d)])
					}
					ds := P[i][j] * (dp - Di)
					for d := 0; d < D; d++ {
						dq[qi(b, i, h, d)] += scale * ds * float64(k[ki(b, j, g, d)])
						dk[ki(b, j, g, d)] += scale * ds * float64(q[qi(b, i, h, d)])
					}
				}
			}
		}
	}
	return
}

// maxRelErr is max|got−want| / max(1, max|want|).
func maxRelErr(got []float32, want []float64) float64 {
	var worst, ref float64
	for i := range want {
		worst = math.Max(worst, math.Abs(float64(got[i])-want[i]))
		ref = math.Max(ref, math.Abs(want[i]))
	}
	return worst / math.Max(1, ref)
}

func TestAttentionMatchesNaive(t *testing.T) {
	shapes := []struct{ B, S, H, KVH, D int }{
		{1, 1, 1, 1, 4},
		{1, 5, 2, 1, 8},
		{2, 70, 4, 2, 16},  // seq crosses a block boundary
		{1, 129, 6, 3, 8},  // 3 blocks, last with one row
		{1, 256, 9, 3, 64}, // smollm2-135m
		{2, 64, 4, 4, 32},  // MHA, exactly one block
		{1, 200, 8, 1, 16}, // MQA
	}
	for name, be := range backends(t) {
		for _, sh := range shapes {
			t.Run(fmt.Sprintf("%s/B%dS%dH%dKV%dD%d", name, sh.B, sh.S, sh.H, sh.KVH, sh.D), func(t *testing.T) {
				r := rand.New(rand.NewPCG(1, uint64(sh.S*131+sh.H)))
				nq, nkv := sh.B*sh.S*sh.H*sh.D, sh.B*sh.S*sh.KVH*sh.D
				q, k, v := randSlice(r, nq, 1), randSlice(r, nkv, 1), randSlice(r, nkv, 1)
				dOut := randSlice(r, nq, 1)
				wOut, wLse, wdq, wdk, wdv := naiveAttention(q, k, v, dOut, sh.B, sh.S, sh.H, sh.KVH, sh.D)

				out, lse := be.Wrap(make([]float32, nq)), be.Wrap(make([]float32, sh.B*sh.H*sh.S))
				qb, kb, vb := buf(be, q), buf(be, k), buf(be, v)
				if err := be.Attention(out, lse, qb, kb, vb, sh.B, sh.S, sh.H, sh.KVH, sh.D); err != nil {
					t.Fatal(err)
				}
				check := func(what string, got []float32, want []float64, tol float64) {
					t.Helper()
					if e := maxRelErr(got, want); e > tol {
						t.Errorf("%s: max error %.3g > %.3g", what, e, tol)
					}
				}
				check("out", out.Host(), wOut, 1e-5)
				check("lse", lse.Host(), wLse, 1e-5)

				// Gradients are added to a pre-fill of ones.
				ones := func(n int) *Buffer {
					b := be.Wrap(make([]float32, n))
					for i := range b.data {
						b.data[i] = 1
					}
					return b
				}
				dq, dk, dv := ones(nq), ones(nkv), ones(nkv)
				if err := be.AttentionBackward(dq, dk, dv, buf(be, dOut), qb, kb, vb, out, lse, sh.B, sh.S, sh.H, sh.KVH, sh.D); err != nil {
					t.Fatal(err)
				}
				for _, g := range [][]float64{wdq, wdk, wdv} {
					for i := range g {
						g[i]++
					}
				}
				check("dq", dq.Host(), wdq, 2e-5)
				check("dk", dk.Host(), wdk, 2e-5)
				check("dv", dv.Host(), wdv, 2e-5)

				// Each gradient alone gives the same values.
				dk2 := ones(nkv)
				if err := be.AttentionBackward(nil, dk2, nil, buf(be, dOut), qb, kb, vb, out, lse, sh.B, sh.S, sh.H, sh.KVH, sh.D); err != nil {
					t.Fatal(err)
				}
				check("dk alone", dk2.Host(), wdk, 2e-5)
			})
		}
	}
}

// TestAttentionBackwardThreadInvariant: every output row has one writer and
// sums in a fixed order, so the thread count does not change a bit.
func TestAttentionBackwardThreadInvariant(t *testing.T) {
	const B, S, H, KVH, D = 1, 150, 6, 2, 16
	r := rand.New(rand.NewPCG(7, 7))
	nq, nkv := B*S*H*D, B*S*KVH*D
	q, k, v, dOut := randSlice(r, nq, 1), randSlice(r, nkv, 1), randSlice(r, nkv, 1), randSlice(r, nq, 1)
	var ref [][]float32
	for _, threads := range []int{1, 2, 3} {
		be := newTestBackend(t, Options{ForceGonum: true, Threads: threads})
		out, lse := be.Wrap(make([]float32, nq)), be.Wrap(make([]float32, B*H*S))
		qb, kb, vb := buf(be, q), buf(be, k), buf(be, v)
		if err := be.Attention(out, lse, qb, kb, vb, B, S, H, KVH, D); err != nil {
			t.Fatal(err)
		}
		dq, dk, dv := be.Wrap(make([]float32, nq)), be.Wrap(make([]float32, nkv)), be.Wrap(make([]float32, nkv))
		if err := be.AttentionBackward(dq, dk, dv, buf(be, dOut), qb, kb, vb, out, lse, B, S, H, KVH, D); err != nil {
			t.Fatal(err)
		}
		got := [][]float32{out.Host(), lse.Host(), dq.Host(), dk.Host(), dv.Host()}
		if ref == nil {
			ref = got
			continue
		}
		for i := range got {
			for j := range got[i] {
				if math.Float32bits(got[i][j]) != math.Float32bits(ref[i][j]) {
					t.Fatalf("threads=%d: output %d element %d = %v, threads=1 gave %v", threads, i, j, got[i][j], ref[i][j])
				}
			}
		}
	}
}

func TestCrossEntropyInPlace(t *testing.T) {
	be := newTestBackend(t, Options{ForceGonum: true})
	const rows, vocab = 9, 1000
	r := rand.New(rand.NewPCG(3, 3))
	logits := randSlice(r, rows*vocab, 4)
	logits[5*vocab+17] = 80 // large logit: max subtraction must keep it finite
	targets := []int32{0, 999, kernels.IgnoreIndex, 17, 500, 17, 3, kernels.IgnoreIndex, 42}
	const gs = 0.25

	losses := be.Wrap(make([]float32, rows))
	sep := be.Wrap(make([]float32, rows*vocab))
	if err := be.CrossEntropy(losses, sep, buf(be, logits), targets, rows, vocab, gs); err != nil {
		t.Fatal(err)
	}
	inPlace := buf(be, logits)
	losses2 := be.Wrap(make([]float32, rows))
	if err := be.CrossEntropy(losses2, inPlace, inPlace, targets, rows, vocab, gs); err != nil {
		t.Fatal(err)
	}
	evalLoss := be.Wrap(make([]float32, rows))
	if err := be.CrossEntropy(evalLoss, nil, buf(be, logits), targets, rows, vocab, gs); err != nil {
		t.Fatal(err)
	}
	for rr := 0; rr < rows; rr++ {
		x := logits[rr*vocab : (rr+1)*vocab]
		var wantLoss float64
		want := make([]float64, vocab)
		if t := targets[rr]; t != kernels.IgnoreIndex {
			mx := math.Inf(-1)
			for _, v := range x {
				mx = math.Max(mx, float64(v))
			}
			var sum float64
			for _, v := range x {
				sum += math.Exp(float64(v) - mx)
			}
			lse := mx + math.Log(sum)
			wantLoss = lse - float64(x[t])
			for j, v := range x {
				want[j] = gs * math.Exp(float64(v)-lse)
			}
			want[t] -= gs
		}
		for _, l := range []*Buffer{losses, losses2, evalLoss} {
			if got := float64(l.data[rr]); math.Abs(got-wantLoss) > 1e-5*math.Max(1, wantLoss) {
				t.Errorf("row %d: loss %v, want %v", rr, got, wantLoss)
			}
		}
		for j := range want {
			a, b := sep.data[rr*vocab+j], inPlace.data[rr*vocab+j]
			if a != b {
				t.Fatalf("row %d col %d: in-place dlogits %v != separate %v", rr, j, b, a)
			}
			if math.Abs(float64(a)-want[j]) > 1e-7 {
				t.Fatalf("row %d col %d: dlogits %v, want %v", rr, j, a, want[j])
			}
		}
	}
	if err := be.CrossEntropy(losses, nil, buf(be, logits), []int32{0, 1, 2, 3, 4, 5, 6, 7, 1000}, rows, vocab, 1); err == nil ||
		!strings.Contains(err.Error(), "CrossEntropy") {
		t.Errorf("target == vocab: err = %v, want an error naming CrossEntropy", err)
	}
}

func TestRoPEInPlaceAndGrowth(t *testing.T) {
	be := newTestBackend(t, Options{ForceGonum: true})
	const rows, heads, hd = 5, 3, 8
	r := rand.New(rand.NewPCG(4, 4))
	x := randSlice(r, rows*heads*hd, 1)
	for _, pos := range [][]int32{{0, 1, 2, 3, 4}, {10, 300, 5000, 7, 0}} {
		out := be.Wrap(make([]float32, len(x)))
		if err := be.RoPE(out, buf(be, x), pos, rows, heads, hd, 10000); err != nil {
			t.Fatal(err)
		}
		inPlace := buf(be, x)
		if err := be.RoPE(inPlace, inPlace, pos, rows, heads, hd, 10000); err != nil {
			t.Fatal(err)
		}
		for i := range x {
			row, j := i/(heads*hd), i%hd
			h := hd / 2
			f := math.Pow(10000, -2*float64(j%h)/hd)
			a := float64(pos[row]) * f
			base := i - j
			var want float64
			if j < h {
				want = float64(x[base+j])*math.Cos(a) - float64(x[base+j+h])*math.Sin(a)
			} else {
				want = float64(x[base+j])*math.Cos(a) + float64(x[base+j-h])*math.Sin(a)
			}
			if math.Abs(float64(out.data[i])-want) > 1e-5 || out.data[i] != inPlace.data[i] {
				t.Fatalf("pos %v elem %d: out %v, in place %v, want %v", pos, i, out.data[i], inPlace.data[i], want)
			}
		}
	}
	if err := be.RoPE(be.Wrap(make([]float32, 8)), be.Wrap(make([]float32, 8)), []int32{-1}, 1, 1, 8, 10000); err == nil {
		t.Error("negative position: want an error")
	}
}

func TestDropoutPureFunction(t *testing.T) {
	a := newTestBackend(t, Options{ForceGonum: true, Threads: 1})
	b := newTestBackend(t, Options{ForceGonum: true, Threads: 3})
	const n, p = 100000, 0.3
	x := make([]float32, n)
	for i := range x {
		x[i] = 1
	}
	oa, ob := a.Wrap(make([]float32, n)), b.Wrap(make([]float32, n))
	if err := a.Dropout(oa, buf(a, x), p, 99); err != nil {
		t.Fatal(err)
	}
	if err := b.Dropout(ob, buf(b, x), p, 99); err != nil {
		t.Fatal(err)
	}
	kept := 0
	for i := range x {
		if oa.data[i] != ob.data[i] {
			t.Fatalf("element %d differs across thread counts", i)
		}
		if oa.data[i] != 0 {
			kept++
			if math.Abs(float64(oa.data[i])-1/(1-p)) > 1e-6 {
				t.Fatalf("kept value %v, want 1/(1-p)", oa.data[i])
			}
		}
	}
	if frac := float64(kept) / n; math.Abs(frac-(1-p)) > 0.01 {
		t.Errorf("kept fraction %v, want ≈ %v", frac, 1-p)
	}
	if err := a.Dropout(oa, buf(a, x), 1, 0); err == nil {
		t.Error("p = 1: want an error")
	}
}

// foreignBuffer is a kernels.Buffer from some other backend.
type foreignBuffer struct{ n int }

func (f foreignBuffer) Len() int                        { return f.n }
func (f foreignBuffer) DType() kernels.DType            { return kernels.F32 }
func (f foreignBuffer) Slice(off, n int) kernels.Buffer { return foreignBuffer{n} }

func TestErrors(t *testing.T) {
	be := newTestBackend(t, Options{ForceGonum: true})
	if _, err := be.Alloc(4, kernels.BF16); err == nil || !strings.Contains(err.Error(), "bf16") {
		t.Errorf("Alloc BF16: err = %v, want an error naming bf16", err)
	}
	a := be.Wrap(make([]float32, 6))
	b := be.Wrap(make([]float32, 6))
	cases := []struct {
		op   string
		err  error
		want string
	}{
		{"Matmul", be.Matmul(a, b, b, nil, 2, 3, 4, 1, false), "out has 6 elements, want m*n=8"},
		{"Matmul", be.Matmul(a, b, foreignBuffer{6}, nil, 2, 3, 3, 1, false), "another backend"},
		{"Matmul", be.Matmul(a, a, be.Wrap(make([]float32, 9)), nil, 2, 3, 3, 1, false), "overlaps"},
		{"Matmul", be.Matmul(a, b, b, nil, -2, -3, 3, 1, false), "m=-2"},
		{"MatmulBackward", be.MatmulBackward(a, nil, nil, b, nil, nil, 2, 3, 3, 1), "w"},
		{"Add", be.Add(a, b, be.Wrap(make([]float32, 5))), "lengths differ"},
		{"Add", be.Add(a, nil, b), "a is nil"},
		{"Attention", be.Attention(a, b, a, b, b, 1, 1, 3, 2, 2), "multiple"},
		{"Attention", be.Attention(be.Wrap(make([]float32, 6)), be.Wrap(make([]float32, 3)), b, be.Wrap(make([]float32, 5)), b, 1, 1, 3, 3, 2), "k has 5 elements"},
		{"RMSNorm", be.RMSNorm(a, b, a, b, 2, 3, 1e-5), "rstd has 6 elements, want rows=2"},
		{"Embedding", be.Embedding(a, b, []int32{0, 3}, 2, 3), "tokens[1] = 3"},
		{"RoPE", be.RoPE(a, b, []int32{0}, 1, 2, 3, 1e4), "headDim"},
		{"AdamW", be.AdamW(a, b, be.Wrap(make([]float32, 6)), be.Wrap(make([]float32, 6)), kernels.AdamWParams{Step: 0}), "Step"},
		{"SumSquares", be.SumSquares(be.Wrap(nil), a), "out has 0"},
		{"CopyIn", be.CopyIn(a, make([]float32, 5)), "len(src) = 5"},
	}
	for _, c := range cases {
		if c.err == nil {
			t.Errorf("%s: want an error containing %q, got nil", c.op, c.want)
			continue
		}
		msg := c.err.Error()
		if !strings.Contains(msg, "cpu: "+c.op+":") || !strings.Contains(msg, c.want) {
			t.Errorf("%s: error %q, want it to name the op and contain %q", c.op, msg, c.want)
		}
	}
}

func TestBuffer(t *testing.T) {
	be := newTestBackend(t, Options{ForceGonum: true})
	b, err := be.Alloc(10, kernels.F32)
	if err != nil {
		t.Fatal(err)
	}
	v := b.Slice(2, 5).(kernels.HostBuffer)
	v.Host()[0] = 7
	if b.(kernels.HostBuffer).Host()[2] != 7 {
		t.Error("Slice does not share memory")
	}
	if v.Len() != 5 || cap(v.Host()) != 5 {
		t.Errorf("view len %d cap %d, want 5 and 5", v.Len(), cap(v.Host()))
	}
	func() {
		defer func() {
			if recover() == nil {
				t.Error("Slice out of range did not panic")
			}
		}()
		b.Slice(8, 3)
	}()
	if be.Name() != "cpu/gonum" {
		t.Errorf("Name() = %q", be.Name())
	}
}

// TestAttentionRestoresBLASThreads: attention runs OpenBLAS single-threaded
// under its own goroutines and must hand the pool back for the big GEMMs.
func TestAttentionRestoresBLASThreads(t *testing.T) {
	requireOpenBLAS(t)
	be := newTestBackend(t, Options{Threads: 2})
	if be.ob == nil || be.blasThreads <= 1 {
		t.Skipf("OpenBLAS runs %d thread(s) here: nothing to restore", be.blasThreads)
	}
	const B, S, H, KVH, D = 1, 130, 4, 2, 8
	r := rand.New(rand.NewPCG(5, 5))
	q, k, v := be.Wrap(randSlice(r, B*S*H*D, 1)), be.Wrap(randSlice(r, B*S*KVH*D, 1)), be.Wrap(randSlice(r, B*S*KVH*D, 1))
	out, lse := be.Wrap(make([]float32, B*S*H*D)), be.Wrap(make([]float32, B*H*S))
	if err := be.Attention(out, lse, q, k, v, B, S, H, KVH, D); err != nil {
		t.Fatal(err)
	}
	if got := be.ob.threads(); got != be.blasThreads {
		t.Errorf("OpenBLAS threads after Attention = %d, want %d", got, be.blasThreads)
	}
	dq := be.Wrap(make([]float32, B*S*H*D))
	if err := be.AttentionBackward(dq, nil, nil, out, q, k, v, out, lse, B, S, H, KVH, D); err != nil {
		t.Fatal(err)
	}
	if got := be.ob.threads(); got != be.blasThreads {
		t.Errorf("OpenBLAS threads after AttentionBackward = %d, want %d", got, be.blasThreads)
	}
}
