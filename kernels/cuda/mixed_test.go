package cuda

import (
	"fmt"
	"math"
	"strings"
	"testing"

	"github.com/peertune/peertune/kernels"
)

// mixedArg is one buffer argument of a mixed-precision case.
type mixedArg struct {
	name   string
	n      int
	output bool // written by the op: compared after it
	pos    bool // values must be positive (AdamW's v, RMSNorm's rstd)
}

// mixedCase calls one op on buffers given in args' order.
type mixedCase struct {
	name string
	args []mixedArg
	call func(be *Backend, b []kernels.Buffer) error
}

func mixedCases() []mixedCase {
	in := func(name string, n int) mixedArg { return mixedArg{name: name, n: n} }
	out := func(name string, n int) mixedArg { return mixedArg{name: name, n: n, output: true} }
	tokens := []int32{3, 0, 7, 3, 5, 1}
	positions := []int32{0, 1, 2, 3, 4, 5}
	targets := []int32{2, kernels.IgnoreIndex, 0, 9, 4, 9}
	const (
		rows, dim          = 6, 24
		heads, kvh, hd     = 4, 2, 8
		batch, seq         = 2, 3
		m, k, n, vocab, nv = 6, 20, 12, 10, 37
	)
	nq, nkv := batch*seq*heads*hd, batch*seq*kvh*hd
	cases := []mixedCase{
		{"Add", []mixedArg{out("out", nv), in("a", nv), in("b", nv)},
			func(be *Backend, b []kernels.Buffer) error { return be.Add(b[0], b[1], b[2]) }},
		{"AddInPlace", []mixedArg{out("out", nv), in("b", nv)},
			func(be *Backend, b []kernels.Buffer) error { return be.Add(b[0], b[0], b[1]) }},
		{"Scale", []mixedArg{out("b", nv)},
			func(be *Backend, b []kernels.Buffer) error { return be.Scale(b[0], -1.75) }},
		{"Copy", []mixedArg{out("dst", nv), in("src", nv)},
			func(be *Backend, b []kernels.Buffer) error { return be.Copy(b[0], b[1]) }},
		{"SwiGLU", []mixedArg{out("out", nv), in("gate", nv), in("up", nv)},
			func(be *Backend, b []kernels.Buffer) error { return be.SwiGLU(b[0], b[1], b[2]) }},
		{"SwiGLUBackward", []mixedArg{out("dGate", nv), out("dUp", nv), in("dOut", nv), in("gate", nv), in("up", nv)},
			func(be *Backend, b []kernels.Buffer) error { return be.SwiGLUBackward(b[0], b[1], b[2], b[3], b[4]) }},
		{"Dropout", []mixedArg{out("out", nv), in("in", nv)},
			func(be *Backend, b []kernels.Buffer) error { return be.Dropout(b[0], b[1], 0.3, 77) }},
		{"DropoutBackward", []mixedArg{out("dIn", nv), in("dOut", nv)},
			func(be *Backend, b []kernels.Buffer) error { return be.DropoutBackward(b[0], b[1], 0.3, 77) }},
		{"AdamW", []mixedArg{out("params", nv), in("grads", nv), out("m", nv), {name: "v", n: nv, output: true, pos: true}},
			func(be *Backend, b []kernels.Buffer) error {
				return be.AdamW(b[0], b[1], b[2], b[3], kernels.AdamWParams{LR: 0.01, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8, WeightDecay: 0.1, Step: 3, GradScale: 0.5})
			}},
		{"SumSquares", []mixedArg{out("out", 3), in("in", nv)},
			func(be *Backend, b []kernels.Buffer) error { return be.SumSquares(b[0], b[1]) }},
		{"RMSNorm", []mixedArg{out("out", rows*dim), out("rstd", rows), in("in", rows*dim), in("weight", dim)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.RMSNorm(b[0], b[1], b[2], b[3], rows, dim, 1e-5)
			}},
		{"RMSNormInPlace", []mixedArg{out("x", rows*dim), out("rstd", rows), in("weight", dim)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.RMSNorm(b[0], b[1], b[0], b[2], rows, dim, 1e-5)
			}},
		{"RMSNormBackward", []mixedArg{out("dIn", rows*dim), out("dWeight", dim), in("dOut", rows*dim), in("in", rows*dim), in("weight", dim), {name: "rstd", n: rows, pos: true}},
			func(be *Backend, b []kernels.Buffer) error {
				return be.RMSNormBackward(b[0], b[1], b[2], b[3], b[4], b[5], rows, dim)
			}},
		{"RoPEInPlace", []mixedArg{out("x", rows*heads*hd)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.RoPE(b[0], b[0], positions, rows, heads, hd, 10000)
			}},
		{"RoPEBackward", []mixedArg{out("dIn", rows*heads*hd), in("dOut", rows*heads*hd)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.RoPEBackward(b[0], b[1], positions, rows, heads, hd, 10000)
			}},
		{"Attention", []mixedArg{out("out", nq), out("lse", batch*heads*seq), in("q", nq), in("k", nkv), in("v", nkv)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.Attention(b[0], b[1], b[2], b[3], b[4], batch, seq, heads, kvh, hd)
			}},
		{"AttentionBackward", []mixedArg{out("dq", nq), out("dk", nkv), out("dv", nkv), in("dOut", nq), in("q", nq), in("k", nkv), in("v", nkv), in("out", nq), in("lse", batch*heads*seq)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.AttentionBackward(b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8], batch, seq, heads, kvh, hd)
			}},
		{"CrossEntropyInPlace", []mixedArg{out("losses", rows), out("logits", rows*vocab)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.CrossEntropy(b[0], b[1], b[1], targets, rows, vocab, 0.25)
			}},
		{"Embedding", []mixedArg{out("out", len(tokens)*dim), in("table", 8*dim)},
			func(be *Backend, b []kernels.Buffer) error { return be.Embedding(b[0], b[1], tokens, 8, dim) }},
		{"EmbeddingBackward", []mixedArg{out("dTable", 8*dim), in("dOut", len(tokens)*dim)},
			func(be *Backend, b []kernels.Buffer) error { return be.EmbeddingBackward(b[0], b[1], tokens, 8, dim) }},
		{"Matmul", []mixedArg{out("out", m*n), in("in", m*k), in("w", n*k)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.Matmul(b[0], b[1], b[2], nil, m, k, n, 0.5, false)
			}},
		{"MatmulAccumulateBias", []mixedArg{out("out", m*n), in("in", m*k), in("w", n*k), in("bias", n)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.Matmul(b[0], b[1], b[2], b[3], m, k, n, 1, true)
			}},
		{"MatmulBackward", []mixedArg{out("dIn", m*k), out("dW", n*k), out("dBias", n), in("dOut", m*n), in("in", m*k), in("w", n*k)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.MatmulBackward(b[0], b[1], b[2], b[3], b[4], b[5], m, k, n, 0.5)
			}},
		{"MatmulBackwardFrozen", []mixedArg{out("dIn", m*k), in("dOut", m*n), in("w", n*k)},
			func(be *Backend, b []kernels.Buffer) error {
				return be.MatmulBackward(b[0], nil, nil, b[1], nil, b[2], m, k, n, 2)
			}},
	}
	return cases
}

// TestMixedPrecisionOps: every op accepts bf16 buffers in any position, and
// its result is the float32 result on the bf16 values, rounded once where
// it is stored in bf16. Each case runs once on float32 buffers holding
// bf16-representable values, then under several bf16 assignments (all
// inputs, all outputs, everything, each argument alone). On the fake GPU
// the results must match exactly; on a real GPU the GEMMs' tensor-core
// summation order differs, so within a few bf16 ulps.
func TestMixedPrecisionOps(t *testing.T) {
	for bname, be := range backendsForTest(t) {
		t.Run(bname, func(t *testing.T) {
			for ci, c := range mixedCases() {
				t.Run(c.name, func(t *testing.T) {
					r := &testRand{s: uint64(1000 + ci)}
					init := make([][]float32, len(c.args))
					for i, a := range c.args {
						v := r.floats(a.n)
						for j := range v {
							if a.pos {
								v[j] = 0.1 + float32(math.Abs(float64(v[j])))
							}
							v[j] = f32FromBF16(bf16FromF32(v[j]))
						}
						init[i] = v
					}
					all := make([]kernels.DType, len(c.args))
					want := runMixed(t, be, c, init, all)
					for _, dts := range mixedAssignments(c.args) {
						got := runMixed(t, be, c, init, dts)
						for i, a := range c.args {
							if !a.output {
								continue
							}
							compareMixed(t, bname, fmt.Sprintf("%s with dtypes %v", a.name, dts), want[i], got[i], dts[i] == kernels.BF16)
						}
					}
				})
			}
		})
	}
}

// mixedAssignments lists the dtype assignments a case is run under.
func mixedAssignments(args []mixedArg) [][]kernels.DType {
	var out [][]kernels.DType
	pick := func(f func(i int, a mixedArg) bool) {
		d := make([]kernels.DType, len(args))
		any := false
		for i, a := range args {
			if f(i, a) {
				d[i], any = kernels.BF16, true
			}
		}
		if any {
			out = append(out, d)
		}
	}
	pick(func(_ int, a mixedArg) bool { return !a.output })
	pick(func(_ int, a mixedArg) bool { return a.output })
	pick(func(int, mixedArg) bool { return true })
	if len(args) > 1 {
		for j := range args {
			pick(func(i int, _ mixedArg) bool { return i == j })
		}
	}
	return out
}

// runMixed runs c on fresh buffers of dtypes dts filled with init and
// returns every argument's contents afterwards.
func runMixed(t *testing.T, be *Backend, c mixedCase, init [][]float32, dts []kernels.DType) [][]float32 {
	t.Helper()
	bufs := make([]kernels.Buffer, len(c.args))
	for i, a := range c.args {
		b, err := be.Alloc(a.n, dts[i])
		if err != nil {
			t.Fatal(err)
		}
		defer be.Free(b)
		if err := be.CopyIn(b, init[i]); err != nil {
			t.Fatal(err)
		}
		bufs[i] = b
	}
	if err := c.call(be, bufs); err != nil {
		t.Fatalf("dtypes %v: %v", dts, err)
	}
	out := make([][]float32, len(c.args))
	for i, a := range c.args {
		out[i] = make([]float32, a.n)
		if err := be.CopyOut(out[i], bufs[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

func compareMixed(t *testing.T, backend, what string, f32Result, got []float32, bf16 bool) {
	t.Helper()
	scale := 0.0
	for _, v := range f32Result {
		scale = max(scale, math.Abs(float64(v)))
	}
	bad := 0
	for i, v := range f32Result {
		want := v
		if bf16 {
			want = f32FromBF16(bf16FromF32(v))
		}
		d := math.Abs(float64(got[i]) - float64(want))
		tol := 0.0 // the fake GPU computes exactly what the float32 run did
		if backend != "fake" {
			tol = 3*math.Abs(float64(want))/256 + 1e-5*scale
		}
		if !(d <= tol) {
			if bad < 3 {
				t.Errorf("%s: element %d = %v, want %v (float32 result %v)", what, i, got[i], want, v)
			}
			bad++
		}
	}
	if bad > 3 {
		t.Errorf("%s: %d of %d elements differ", what, bad, len(got))
	}
}

// TestMixedPartialOverlapRefused: a bf16 argument that partly overlaps
// another is an error naming the op (staging would copy the two apart).
func TestMixedPartialOverlapRefused(t *testing.T) {
	be, _ := newFakeBackend(t, false)
	b, _ := be.Alloc(10, kernels.BF16)
	defer be.Free(b)
	err := be.Add(b.Slice(0, 6), b.Slice(2, 6), b.Slice(2, 6))
	if err == nil || !strings.Contains(err.Error(), "Add") || !strings.Contains(err.Error(), "partly overlaps") {
		t.Errorf("Add over partly overlapping bf16 views: err = %v", err)
	}
}

// TestMixedEmptyBuffers: empty bf16 arguments are no work and no error
// (they once made MatmulBackward recurse for ever and the staged ops
// refuse them as bf16).
func TestMixedEmptyBuffers(t *testing.T) {
	be, _ := newFakeBackend(t, false)
	z16, _ := be.Alloc(0, kernels.BF16)
	z32, _ := be.Alloc(0, kernels.F32)
	w, _ := be.Alloc(12, kernels.F32)
	if err := be.MatmulBackward(z16, nil, nil, z32, nil, w, 0, 4, 3, 1); err != nil {
		t.Errorf("MatmulBackward with an empty bf16 dIn: %v", err)
	}
	if err := be.Add(z16, z16, z16); err != nil {
		t.Errorf("Add of empty bf16 buffers: %v", err)
	}
	if err := be.Scale(z16, 2); err != nil {
		t.Errorf("Scale of an empty bf16 buffer: %v", err)
	}
	if err := be.SwiGLU(z16, z32, z16); err != nil {
		t.Errorf("SwiGLU of empty mixed buffers: %v", err)
	}
}
