package kerneltest

import (
	"fmt"
	"math"

	"github.com/peertune/peertune/kernels"
)

// refBackend is a kernels.Backend built from the float64 references: it
// stores float32 and computes every op in float64, so its only error is one
// rounding per output. The suite must pass it (that shows the suite's checks
// and tolerances are consistent with the references); and with one
// deliberate bug switched on (mutant) the suite must fail the op that has
// the bug (that shows the checks catch it). See suite_test.go.
type refBackend struct {
	mutant string
}

// refBuf is a view [off, off+n) of a shared array, so that a mutant can
// write just outside a view, as a buggy kernel would.
type refBuf struct {
	all    []float32
	off, n int
}

func (b *refBuf) Len() int             { return b.n }
func (b *refBuf) DType() kernels.DType { return kernels.F32 }
func (b *refBuf) Host() []float32      { return b.all[b.off : b.off+b.n] }
func (b *refBuf) Slice(off, n int) kernels.Buffer {
	if off < 0 || n < 0 || off+n > b.n {
		panic(fmt.Sprintf("Slice(%d, %d) of %d elements", off, n, b.n))
	}
	return &refBuf{all: b.all, off: b.off + off, n: n}
}

func (be *refBackend) Name() string { return "ref/" + be.mutant }

func (be *refBackend) Alloc(n int, dt kernels.DType) (kernels.Buffer, error) {
	if n < 0 || dt != kernels.F32 {
		return nil, fmt.Errorf("alloc: n %d dtype %v", n, dt)
	}
	return &refBuf{all: make([]float32, n), n: n}, nil
}

func (be *refBackend) Free(kernels.Buffer) {}

func (be *refBackend) CopyIn(dst kernels.Buffer, src []float32) error {
	if len(src) != dst.Len() {
		return fmt.Errorf("copyin: %d into %d", len(src), dst.Len())
	}
	copy(h(dst), src)
	return nil
}

func (be *refBackend) CopyOut(dst []float32, src kernels.Buffer) error {
	if len(dst) != src.Len() {
		return fmt.Errorf("copyout: %d from %d", src.Len(), len(dst))
	}
	copy(dst, h(src))
	return nil
}

func (be *refBackend) Sync() error { return nil }

func h(b kernels.Buffer) []float32 { return b.(*refBuf).Host() }

// get reads a buffer as float64; nil stays nil.
func get(b kernels.Buffer) []float64 {
	if b == nil {
		return nil
	}
	return f64(h(b))
}

// put writes float64 values into a buffer.
func put(b kernels.Buffer, x []float64) {
	d := h(b)
	for i := range d {
		d[i] = float32(x[i])
	}
}

// acc adds float64 values into a buffer (the Backward contract).
func acc(b kernels.Buffer, x []float64) {
	d := h(b)
	for i := range d {
		d[i] = float32(float64(d[i]) + x[i])
	}
}

// lens checks buffer lengths; nil buffers (optional outputs) are skipped.
func lens(op string, pairs ...any) error {
	for i := 0; i < len(pairs); i += 3 {
		name, b, want := pairs[i].(string), pairs[i+1], pairs[i+2].(int)
		if want < 0 {
			return fmt.Errorf("%s: negative size for %s", op, name)
		}
		if b == nil || b.(kernels.Buffer) == nil {
			continue
		}
		if got := b.(kernels.Buffer).Len(); got != want {
			return fmt.Errorf("%s: %s has %d elements, want %d", op, name, got, want)
		}
	}
	return nil
}

func buf(b kernels.Buffer) any {
	if b == nil {
		return nil
	}
	return b
}

func (be *refBackend) Zero(b kernels.Buffer) error {
	put(b, make([]float64, b.Len()))
	return nil
}

func (be *refBackend) Copy(dst, src kernels.Buffer) error {
	if err := lens("copy", "src", src, dst.Len()); err != nil {
		return err
	}
	copy(h(dst), h(src))
	return nil
}

func (be *refBackend) Add(out, a, b kernels.Buffer) error {
	if err := lens("add", "a", a, out.Len(), "b", b, out.Len()); err != nil {
		return err
	}
	put(out, add(get(a), get(b)))
	return nil
}

func (be *refBackend) Scale(b kernels.Buffer, s float32) error {
	x := get(b)
	for i := range x {
		x[i] *= float64(s)
	}
	put(b, x)
	if be.mutant == "scale-oob-write" && b.(*refBuf).off+b.Len() < len(b.(*refBuf).all) {
		rb := b.(*refBuf)
		rb.all[rb.off+rb.n] = 0
	}
	return nil
}

func checkTokens(op string, tokens []int32, vocab int) error {
	for i, t := range tokens {
		if t < 0 || int(t) >= vocab {
			return fmt.Errorf("%s: token %d = %d outside [0, %d)", op, i, t, vocab)
		}
	}
	return nil
}

func (be *refBackend) Embedding(out, table kernels.Buffer, tokens []int32, vocab, dim int) error {
	if err := lens("embedding", "out", out, len(tokens)*dim, "table", table, vocab*dim); err != nil {
		return err
	}
	if err := checkTokens("embedding", tokens, vocab); err != nil {
		return err
	}
	put(out, refEmbedding(get(table), tokens, dim))
	return nil
}

func (be *refBackend) EmbeddingBackward(dTable, dOut kernels.Buffer, tokens []int32, vocab, dim int) error {
	if err := lens("embedding backward", "dTable", buf(dTable), vocab*dim, "dOut", dOut, len(tokens)*dim); err != nil {
		return err
	}
	if err := checkTokens("embedding backward", tokens, vocab); err != nil {
		return err
	}
	if dTable == nil {
		return nil
	}
	d := refEmbeddingBackward(get(dOut), tokens, vocab, dim)
	if be.mutant == "embedding-bwd-last-wins" {
		// Repeated tokens: the last row overwrites instead of summing.
		dd, g := h(dTable), get(dOut)
		for i, t := range tokens {
			for j := 0; j < dim; j++ {
				dd[int(t)*dim+j] = float32(g[i*dim+j])
			}
		}
		return nil
	}
	acc(dTable, d)
	return nil
}

func (be *refBackend) Matmul(out, in, w, bias kernels.Buffer, m, k, n int, scale float32, accumulate bool) error {
	if be.mutant == "matmul-len-lenient" {
		// Only too-short buffers are refused.
		if out.Len() < m*n || in.Len() < m*k || w.Len() < n*k || (bias != nil && bias.Len() < n) || m < 0 {
			return fmt.Errorf("matmul: short buffer")
		}
		put(out.Slice(0, m*n), refMatmul(get(out.Slice(0, m*n)), get(in.Slice(0, m*k)), get(w.Slice(0, n*k)), nil, m, k, n, float64(scale), accumulate))
		return nil
	}
	if err := lens("matmul", "out", out, m*n, "in", in, m*k, "w", w, n*k, "bias", buf(bias), n); err != nil {
		return err
	}
	if m < 0 || k < 0 || n < 0 {
		return fmt.Errorf("matmul: negative size")
	}
	if be.mutant == "matmul-panic" && bias == nil {
		var p *refBuf
		_ = p.n // a nil dereference, as a missing nil check would do
	}
	put(out, refMatmul(get(out), get(in), get(w), get(bias), m, k, n, float64(scale), accumulate))
	return nil
}

func (be *refBackend) MatmulBackward(dIn, dW, dBias, dOut, in, w kernels.Buffer, m, k, n int, scale float32) error {
	if err := lens("matmul backward", "dIn", buf(dIn), m*k, "dW", buf(dW), n*k, "dBias", buf(dBias), n, "dOut", dOut, m*n, "in", in, m*k, "w", w, n*k); err != nil {
		return err
	}
	if be.mutant == "matmulbwd-nil-error" && (dIn == nil || dW == nil || dBias == nil) {
		return fmt.Errorf("matmul backward: nil gradient")
	}
	gi, gw, gb := refMatmulBackward(get(dOut), get(in), get(w), m, k, n, float64(scale))
	if dIn != nil {
		acc(dIn, gi)
	}
	if dW != nil {
		if be.mutant == "matmul-bwd-overwrite" {
			put(dW, gw)
		} else {
			acc(dW, gw)
		}
	}
	if dBias != nil {
		acc(dBias, gb)
	}
	return nil
}

func (be *refBackend) RMSNorm(out, rstd, in, weight kernels.Buffer, rows, dim int, eps float32) error {
	if err := lens("rmsnorm", "out", out, rows*dim, "rstd", rstd, rows, "in", in, rows*dim, "weight", weight, dim); err != nil {
		return err
	}
	o, r := refRMSNorm(get(in), get(weight), rows, dim, float64(eps))
	if be.mutant == "rmsnorm-eps-outside" {
		x := get(in)
		for i := 0; i < rows; i++ {
			ss := 0.0
			for j := 0; j < dim; j++ {
				ss += x[i*dim+j] * x[i*dim+j]
			}
			r[i] = 1 / (math.Sqrt(ss/float64(dim)) + float64(eps))
			for j := 0; j < dim; j++ {
				o[i*dim+j] = x[i*dim+j] * r[i] * get(weight)[j]
			}
		}
	}
	put(out, o)
	put(rstd, r)
	return nil
}

func (be *refBackend) RMSNormBackward(dIn, dWeight, dOut, in, weight, rstd kernels.Buffer, rows, dim int) error {
	if err := lens("rmsnorm backward", "dIn", buf(dIn), rows*dim, "dWeight", buf(dWeight), dim, "dOut", dOut, rows*dim, "in", in, rows*dim, "weight", weight, dim, "rstd", rstd, rows); err != nil {
		return err
	}
	gi, gw := refRMSNormBackward(get(dOut), get(in), get(weight), get(rstd), rows, dim)
	if dIn != nil {
		acc(dIn, gi)
	}
	if dWeight != nil {
		acc(dWeight, gw)
	}
	return nil
}

func ropeChecks(op string, a, b kernels.Buffer, positions []int32, rows, heads, headDim int) error {
	if headDim%2 != 0 {
		return fmt.Errorf("%s: odd headDim %d", op, headDim)
	}
	if len(positions) != rows {
		return fmt.Errorf("%s: %d positions for %d rows", op, len(positions), rows)
	}
	return lens(op, "a", buf(a), rows*heads*headDim, "b", b, rows*heads*headDim)
}

func (be *refBackend) RoPE(out, in kernels.Buffer, positions []int32, rows, heads, headDim int, theta float32) error {
	if err := ropeChecks("rope", out, in, positions, rows, heads, headDim); err != nil {
		return err
	}
	if be.mutant == "rope-interleaved" {
		// GPT-J style pairs (2i, 2i+1) instead of rotate-half.
		x, o := get(in), make([]float64, in.Len())
		for r := 0; r < rows; r++ {
			for hd := 0; hd < heads; hd++ {
				base := (r*heads + hd) * headDim
				for i := 0; i < headDim/2; i++ {
					a := ropeAngle(positions[r], i, headDim, float64(theta))
					x0, x1 := x[base+2*i], x[base+2*i+1]
					o[base+2*i] = x0*math.Cos(a) - x1*math.Sin(a)
					o[base+2*i+1] = x1*math.Cos(a) + x0*math.Sin(a)
				}
			}
		}
		put(out, o)
		return nil
	}
	put(out, refRoPE(get(in), positions, rows, heads, headDim, float64(theta)))
	return nil
}

func (be *refBackend) RoPEBackward(dIn, dOut kernels.Buffer, positions []int32, rows, heads, headDim int, theta float32) error {
	if err := ropeChecks("rope backward", dIn, dOut, positions, rows, heads, headDim); err != nil {
		return err
	}
	if dIn != nil {
		acc(dIn, refRoPEBackward(get(dOut), positions, rows, heads, headDim, float64(theta)))
	}
	return nil
}

func attnChecks(op string, s attnShape) error {
	if s.kvHeads <= 0 || s.heads%s.kvHeads != 0 {
		return fmt.Errorf("%s: heads %d not a multiple of kvHeads %d", op, s.heads, s.kvHeads)
	}
	return nil
}

func (be *refBackend) Attention(out, lse, q, k, v kernels.Buffer, batch, seq, heads, kvHeads, headDim int) error {
	s := attnShape{batch, seq, heads, kvHeads, headDim}
	nq, nk := batch*seq*heads*headDim, batch*seq*kvHeads*headDim
	if err := lens("attention", "out", out, nq, "lse", lse, batch*heads*seq, "q", q, nq, "k", k, nk, "v", v, nk); err != nil {
		return err
	}
	if err := attnChecks("attention", s); err != nil {
		return err
	}
	if be.mutant == "attention-noncausal" {
		// Every query sees every key, the future included: the causal
		// attention of a sequence extended by seq−1 copies of the last
		// query's row would be needed to express it with the reference,
		// so it is written out directly.
		qq, kk, vv := get(q), get(k), get(v)
		o, l := make([]float64, nq), make([]float64, batch*heads*seq)
		for b := 0; b < batch; b++ {
			for hh := 0; hh < heads; hh++ {
				for t := 0; t < seq; t++ {
					sc := make([]float64, seq)
					sum := 0.0
					for j := range sc {
						for d := 0; d < headDim; d++ {
							sc[j] += qq[s.qi(b, t, hh)+d] * kk[s.ki(b, j, s.kvHead(hh))+d] / math.Sqrt(float64(headDim))
						}
						sum += math.Exp(sc[j])
					}
					l[s.li(b, hh, t)] = math.Log(sum)
					for j := range sc {
						for d := 0; d < headDim; d++ {
							o[s.qi(b, t, hh)+d] += math.Exp(sc[j]) / sum * vv[s.ki(b, j, s.kvHead(hh))+d]
						}
					}
				}
			}
		}
		put(out, o)
		put(lse, l)
		return nil
	}
	o, l := refAttention(get(q), get(k), get(v), s)
	put(out, o)
	put(lse, l)
	return nil
}

func (be *refBackend) AttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse kernels.Buffer, batch, seq, heads, kvHeads, headDim int) error {
	s := attnShape{batch, seq, heads, kvHeads, headDim}
	nq, nk := batch*seq*heads*headDim, batch*seq*kvHeads*headDim
	if err := lens("attention backward", "dq", buf(dq), nq, "dk", buf(dk), nk, "dv", buf(dv), nk, "dOut", dOut, nq, "q", q, nq, "k", k, nk, "v", v, nk, "out", out, nq, "lse", lse, batch*heads*seq); err != nil {
		return err
	}
	if err := attnChecks("attention backward", s); err != nil {
		return err
	}
	gq, gk, gv := refAttentionBackward(get(dOut), get(q), get(k), get(v), s)
	if be.mutant == "attention-bwd-gqa-first-head" && heads != kvHeads {
		// dk and dv only from the first query head of each group.
		one := s
		one.heads = kvHeads
		group := heads / kvHeads
		pick := func(x []float64) []float64 { // q-layout → first head of each group
			y := make([]float64, batch*seq*kvHeads*headDim)
			for b := 0; b < batch; b++ {
				for t := 0; t < seq; t++ {
					for kh := 0; kh < kvHeads; kh++ {
						copy(y[one.qi(b, t, kh):one.qi(b, t, kh)+headDim], x[s.qi(b, t, kh*group):s.qi(b, t, kh*group)+headDim])
					}
				}
			}
			return y
		}
		_, gk, gv = refAttentionBackward(pick(get(dOut)), pick(get(q)), get(k), get(v), one)
	}
	if dq != nil {
		acc(dq, gq)
	}
	if dk != nil {
		acc(dk, gk)
	}
	if dv != nil {
		acc(dv, gv)
	}
	return nil
}

func (be *refBackend) SwiGLU(out, gate, up kernels.Buffer) error {
	if err := lens("swiglu", "gate", gate, out.Len(), "up", up, out.Len()); err != nil {
		return err
	}
	put(out, refSwiGLU(get(gate), get(up)))
	return nil
}

func (be *refBackend) SwiGLUBackward(dGate, dUp, dOut, gate, up kernels.Buffer) error {
	n := dOut.Len()
	if err := lens("swiglu backward", "dGate", buf(dGate), n, "dUp", buf(dUp), n, "gate", gate, n, "up", up, n); err != nil {
		return err
	}
	gg, gu := refSwiGLUBackward(get(dOut), get(gate), get(up))
	if be.mutant == "swiglu-bwd-writes-dout" {
		h(dOut)[0] = 0 // scratch use of an input
	}
	if dGate != nil {
		acc(dGate, gg)
	}
	if dUp != nil {
		acc(dUp, gu)
	}
	return nil
}

// keep is the dropout mask: a splitmix64 hash of (seed, i).
func (be *refBackend) keep(seed uint64, i, n int, p float32) bool {
	switch be.mutant {
	case "dropout-length":
		seed ^= uint64(n) // the mask depends on the buffer length
	case "dropout-weak":
		// Right kept fraction, but runs instead of independent draws.
		return float64((i/8)%100) >= float64(p)*100
	}
	z := seed + uint64(i)*0x9e3779b97f4a7c15
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	z ^= z >> 31
	return float64(z>>11)/(1<<53) >= float64(p)
}

func (be *refBackend) Dropout(out, in kernels.Buffer, p float32, seed uint64) error {
	if err := lens("dropout", "in", in, out.Len()); err != nil {
		return err
	}
	x, n := get(in), in.Len()
	mask := make([]bool, n)
	for i := range mask {
		mask[i] = p == 0 || be.keep(seed, i, n, p)
	}
	put(out, refDropout(x, mask, float64(p)))
	return nil
}

func (be *refBackend) DropoutBackward(dIn, dOut kernels.Buffer, p float32, seed uint64) error {
	n := dOut.Len()
	if err := lens("dropout backward", "dIn", buf(dIn), n); err != nil {
		return err
	}
	if dIn == nil {
		return nil
	}
	mask := make([]bool, n)
	for i := range mask {
		mask[i] = p == 0 || be.keep(seed, i, n, p)
	}
	acc(dIn, refDropout(get(dOut), mask, float64(p)))
	return nil
}

func (be *refBackend) CrossEntropy(losses, dlogits, logits kernels.Buffer, targets []int32, rows, vocab int, gradScale float32) error {
	if err := lens("cross entropy", "losses", losses, rows, "dlogits", buf(dlogits), rows*vocab, "logits", logits, rows*vocab); err != nil {
		return err
	}
	if len(targets) != rows {
		return fmt.Errorf("crossentropy: %d targets for %d rows", len(targets), rows)
	}
	tg := append([]int32(nil), targets...)
	for i, t := range targets {
		if t != kernels.IgnoreIndex && (t < 0 || int(t) >= vocab) {
			return fmt.Errorf("CrossEntropy: target %d = %d", i, t)
		}
		if be.mutant == "ce-ignore-as-zero" && t == kernels.IgnoreIndex {
			tg[i] = 0 // the ignored row trains towards token 0
		}
	}
	l, d := refCrossEntropy(get(logits), tg, rows, vocab, float64(gradScale))
	put(losses, l)
	if dlogits != nil {
		put(dlogits, d)
	}
	return nil
}

func (be *refBackend) AdamW(params, grads, m, v kernels.Buffer, p kernels.AdamWParams) error {
	n := params.Len()
	if err := lens("adamw", "grads", grads, n, "m", m, n, "v", v, n); err != nil {
		return err
	}
	pp, mm, vv := get(params), get(m), get(v)
	if be.mutant == "adamw-no-bias-correction" {
		p.Step = 1 << 20 // 1 − β^step ≈ 1: the correction vanishes
	}
	refAdamW(pp, get(grads), mm, vv, p)
	put(params, pp)
	put(m, mm)
	put(v, vv)
	return nil
}

func (be *refBackend) SumSquares(out, in kernels.Buffer) error {
	if out.Len() < 1 {
		return fmt.Errorf("sumsquares: empty out")
	}
	if be.mutant == "sumsquares-float32" {
		var s float32
		for _, x := range h(in) {
			s += x * x
		}
		h(out)[0] = s
		return nil
	}
	h(out)[0] = float32(refSumSquares(get(in)))
	return nil
}
