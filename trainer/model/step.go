package model

import (
	"fmt"

	"github.com/peertune/peertune/kernels"
)

// Batch is one micro-batch of Rows sequences of Seq tokens, flattened row-major.
//
// Targets are already shifted: Targets[i] is the token that position i must
// predict, or kernels.IgnoreIndex (-100) for positions without a loss (prompt,
// padding, the last position). Positions are the RoPE positions (0..Seq-1 per
// row, or restarting per document when sequences are packed). Attention is
// causal within a row.
type Batch struct {
	Rows, Seq int
	Tokens    []int32
	Targets   []int32
	Positions []int32
}

// Validate checks the batch against the model's vocabulary and positions.
func (b *Batch) Validate(c Config) error {
	n := b.Rows * b.Seq
	if b.Rows <= 0 || b.Seq <= 0 {
		return fmt.Errorf("batch: %d rows × %d positions", b.Rows, b.Seq)
	}
	if len(b.Tokens) != n || len(b.Targets) != n || len(b.Positions) != n {
		return fmt.Errorf("batch: %d rows × %d positions need %d tokens, targets and positions; have %d, %d, %d",
			b.Rows, b.Seq, n, len(b.Tokens), len(b.Targets), len(b.Positions))
	}
	for i := 0; i < n; i++ {
		if t := b.Tokens[i]; t < 0 || int(t) >= c.Vocab {
			return fmt.Errorf("batch: token %d at %d is outside the vocabulary [0,%d)", t, i, c.Vocab)
		}
		if t := b.Targets[i]; t != kernels.IgnoreIndex && (t < 0 || int(t) >= c.Vocab) {
			return fmt.Errorf("batch: target %d at %d is outside the vocabulary [0,%d)", t, i, c.Vocab)
		}
		if p := b.Positions[i]; p < 0 || int(p) >= c.MaxPositions {
			return fmt.Errorf("batch: position %d at %d is outside [0,%d) (max_position_embeddings)", p, i, c.MaxPositions)
		}
	}
	return nil
}

// CountTargets is the number of positions that carry a loss.
func (b *Batch) CountTargets() int {
	n := 0
	for _, t := range b.Targets {
		if t != kernels.IgnoreIndex {
			n++
		}
	}
	return n
}

// layerActs are the activations one layer keeps for its backward pass.
// M = rows·seq tokens.
type layerActs struct {
	rstd1, rstd2 kernels.Buffer          // [M]
	xn1, xn2     kernels.Buffer          // [M, hidden] normalised inputs of attention and MLP
	q            kernels.Buffer          // [M, qDim] after RoPE
	k, v         kernels.Buffer          // [M, kvDim] (k after RoPE)
	att          kernels.Buffer          // [M, qDim] attention output, input of o_proj
	lse          kernels.Buffer          // [rows, heads, seq]
	x2           kernels.Buffer          // [M, hidden] residual after attention
	gate, up     kernels.Buffer          // [M, inter]
	act          kernels.Buffer          // [M, inter] silu(gate)·up, input of down_proj
	h            [numProj]kernels.Buffer // [M, rank] LoRA: x·Aᵀ per adapted projection
}

// activations hold one micro-batch's forward state and the backward scratch.
type activations struct {
	rows, seq, tokens int

	xs     []kernels.Buffer // [layers+1][M, hidden]: xs[l] is layer l's input, xs[layers] the last output
	layers []layerActs      // one per layer, or a single shared one when recomputing
	rstdF  kernels.Buffer   // [M]
	xnF    kernels.Buffer   // [M, hidden]
	logits kernels.Buffer   // [M, vocab], overwritten in place by dlogits
	losses kernels.Buffer   // [M]

	// backward scratch, reused by every layer
	dRes, dxn, dAtt, dq, dk, dv, dqr, dkr, dAct, dGate, dUp, dh kernels.Buffer
	drop, dDrop                                                 kernels.Buffer // [M, max in]: LoRA dropout input and its gradient
	all                                                         []kernels.Buffer
}

func (m *Model) freeActs() {
	if m.acts == nil {
		return
	}
	for _, b := range m.acts.all {
		m.be.Free(b)
	}
	m.acts = nil
}

// ensureActs sizes the activations for rows × seq, reusing them when possible.
func (m *Model) ensureActs(rows, seq int) error {
	if a := m.acts; a != nil && a.rows == rows && a.seq == seq {
		return nil
	}
	m.freeActs()
	c := m.Cfg
	M := rows * seq
	a := &activations{rows: rows, seq: seq, tokens: M}
	var err error
	allocT := func(n int, dt kernels.DType) kernels.Buffer {
		if err != nil {
			return nil
		}
		var b kernels.Buffer
		b, err = m.be.Alloc(n, dt)
		if err == nil {
			a.all = append(a.all, b)
		}
		return b
	}
	// act allocates an activation kept for the backward pass (or read by a
	// GEMM) in the model's precision; alloc a float32 buffer: statistics,
	// logits and every gradient.
	act := func(n int) kernels.Buffer { return allocT(n, m.Opts.Precision) }
	alloc := func(n int) kernels.Buffer { return allocT(n, kernels.F32) }
	C, Q, KV, I := c.Hidden, c.QDim(), c.KVDim(), c.Intermediate
	a.xs = make([]kernels.Buffer, c.Layers+1)
	for i := range a.xs {
		a.xs[i] = act(M * C)
	}
	n := c.Layers
	if m.Opts.Recompute {
		n = 1
	}
	a.layers = make([]layerActs, n)
	lora := m.Opts.Method == MethodLoRA
	for i := range a.layers {
		la := &a.layers[i]
		la.rstd1, la.rstd2 = alloc(M), alloc(M)
		la.xn1, la.xn2 = act(M*C), act(M*C)
		la.q, la.k, la.v = act(M*Q), act(M*KV), act(M*KV)
		la.att, la.lse = act(M*Q), alloc(rows*c.Heads*seq)
		la.x2 = act(M * C)
		la.gate, la.up, la.act = act(M*I), act(M*I), act(M*I)
		if lora {
			for _, p := range m.Opts.LoRA.Targets {
				la.h[p] = act(M * m.Opts.LoRA.Rank)
			}
		}
	}
	a.rstdF, a.xnF = alloc(M), act(M*C)
	a.logits, a.losses = alloc(M*c.Vocab), alloc(M)
	a.dRes, a.dxn = alloc(M*C), alloc(M*C)
	a.dAtt, a.dq, a.dqr = alloc(M*Q), alloc(M*Q), alloc(M*Q)
	a.dk, a.dv, a.dkr = alloc(M*KV), alloc(M*KV), alloc(M*KV)
	a.dAct, a.dGate, a.dUp = alloc(M*I), alloc(M*I), alloc(M*I)
	if lora {
		a.dh = alloc(M * m.Opts.LoRA.Rank)
		if m.Opts.LoRA.Dropout > 0 {
			maxIn := max(C, Q, I)
			a.drop, a.dDrop = act(M*maxIn), alloc(M*maxIn)
		}
	}
	if err != nil {
		for _, b := range a.all {
			m.be.Free(b)
		}
		return fmt.Errorf("allocate activations for %d×%d tokens: %w", rows, seq, err)
	}
	m.acts = a
	return nil
}

// errs chains backend calls and keeps the first error, so the step reads as
// the sequence of ops it is.
type errs struct{ err error }

func (e *errs) do(op string, err error) {
	if e.err == nil && err != nil {
		e.err = fmt.Errorf("%s: %w", op, err)
	}
}

// Loss runs the forward pass only and returns the summed loss over the
// batch's targets and their count (evaluation).
func (m *Model) Loss(b *Batch) (lossSum float64, targets int, err error) {
	if err := m.forward(b, false); err != nil {
		return 0, 0, err
	}
	return m.lossSum(b)
}

// ForwardBackward runs one micro-batch forward and backward and ADDS its
// gradients into Grads. The gradient is that of gradScale·Σ losses: pass
// 1/(the optimizer step's global target count) so that micro-batches and ranks
// sum to the mean loss of the step (DESIGN invariant 2). dropoutSeed seeds the
// LoRA dropout masks; use a value that depends on the step and micro-batch.
// It returns the summed loss and the batch's target count.
func (m *Model) ForwardBackward(b *Batch, gradScale float32, dropoutSeed uint64) (lossSum float64, targets int, err error) {
	if err := m.forward(b, true, dropoutSeed); err != nil {
		return 0, 0, err
	}
	a := m.acts
	var e errs
	// Loss and dlogits in one pass; dlogits overwrites the logits.
	e.do("cross-entropy", m.be.CrossEntropy(a.losses, a.logits, a.logits, b.Targets, a.tokens, m.Cfg.Vocab, gradScale))
	if e.err != nil {
		return 0, 0, e.err
	}
	lossSum, targets, err = m.lossSum(b)
	if err != nil {
		return 0, 0, err
	}
	if err := m.backward(b, dropoutSeed); err != nil {
		return 0, 0, err
	}
	return lossSum, targets, nil
}

// Logits runs the forward pass and returns the logits [rows·seq, vocab].
func (m *Model) Logits(b *Batch) ([]float32, error) {
	if err := m.forward(b, false); err != nil {
		return nil, err
	}
	out := make([]float32, m.acts.logits.Len())
	if err := m.be.CopyOut(out, m.acts.logits); err != nil {
		return nil, err
	}
	return out, nil
}

func (m *Model) lossSum(b *Batch) (float64, int, error) {
	losses := make([]float32, m.acts.tokens)
	if err := m.be.CopyOut(losses, m.acts.losses); err != nil {
		return 0, 0, err
	}
	var s float64
	for _, l := range losses {
		s += float64(l)
	}
	return s, b.CountTargets(), nil
}

// forward runs embedding → layers → final norm → logits, and for evaluation
// (train == false) also the loss without gradients.
func (m *Model) forward(b *Batch, train bool, dropoutSeed ...uint64) error {
	if err := b.Validate(m.Cfg); err != nil {
		return err
	}
	if err := m.ensureActs(b.Rows, b.Seq); err != nil {
		return err
	}
	var seed uint64
	if len(dropoutSeed) > 0 {
		seed = dropoutSeed[0]
	}
	c, a, be := m.Cfg, m.acts, m.be
	var e errs
	if m.work != nil {
		// Refresh the bf16 working copy from the float32 master: Params may
		// have changed by any route (AdamW, a restored snapshot, a broadcast
		// from a peer, a loaded checkpoint), and one conversion per forward
		// pass is small next to the pass itself.
		e.do("bf16 working copy", be.Copy(m.work, m.Params))
	}
	e.do("embedding", be.Embedding(a.xs[0], m.base.Embed, b.Tokens, c.Vocab, c.Hidden))
	for l := 0; l < c.Layers && e.err == nil; l++ {
		e.do(fmt.Sprintf("layer %d forward", l), m.layerForward(l, m.layerActs(l), b, train, seed))
	}
	last := a.xs[c.Layers]
	e.do("final norm", be.RMSNorm(a.xnF, a.rstdF, last, m.base.Norm, a.tokens, c.Hidden, float32(c.RMSEps)))
	e.do("lm_head", be.Matmul(a.logits, a.xnF, m.base.LMHead, nil, a.tokens, c.Hidden, c.Vocab, 1, false))
	if !train {
		e.do("cross-entropy", be.CrossEntropy(a.losses, nil, a.logits, b.Targets, a.tokens, c.Vocab, 0))
	}
	return e.err
}

func (m *Model) layerActs(l int) *layerActs {
	if m.Opts.Recompute {
		return &m.acts.layers[0]
	}
	return &m.acts.layers[l]
}

// dropoutKey gives every adapter of every layer its own dropout stream.
func dropoutKey(seed uint64, layer int, p Proj) uint64 {
	return seed ^ (uint64(layer)*uint64(numProj)+uint64(p)+1)*0x9e3779b97f4a7c15
}

// proj computes out = in·Wᵀ (+ bias) (+ LoRA: scale·dropout(in)·Aᵀ·Bᵀ), adding
// into out when accumulate is set (how the residual connections are summed).
func (m *Model) proj(l int, p Proj, out, in kernels.Buffer, la *layerActs, accumulate, train bool, seed uint64) error {
	c, a, be := m.Cfg, m.acts, m.be
	inF, outF := p.dims(c)
	lw := &m.base.Layers[l]
	if err := be.Matmul(out, in, lw.W[p], lw.Bias[p], a.tokens, inF, outF, 1, accumulate); err != nil {
		return fmt.Errorf("%s: %w", p, err)
	}
	if m.Opts.Method != MethodLoRA || m.adapters[l][p] == nil {
		return nil
	}
	ad, r := m.adapters[l][p], m.Opts.LoRA.Rank
	x := in
	if pd := float32(m.Opts.LoRA.Dropout); train && pd > 0 {
		x = a.drop.Slice(0, a.tokens*inF)
		if err := be.Dropout(x, in, pd, dropoutKey(seed, l, p)); err != nil {
			return fmt.Errorf("%s lora dropout: %w", p, err)
		}
	}
	if err := be.Matmul(la.h[p], x, ad.A, nil, a.tokens, inF, r, 1, false); err != nil {
		return fmt.Errorf("%s lora_A: %w", p, err)
	}
	if err := be.Matmul(out, la.h[p], ad.B, nil, a.tokens, r, outF, m.Opts.LoRA.Scale(), true); err != nil {
		return fmt.Errorf("%s lora_B: %w", p, err)
	}
	return nil
}

// projBackward adds the gradients of proj: dIn += dOut·W (+ LoRA path), and
// for trainable weights dW, dBias, dA, dB.
func (m *Model) projBackward(l int, p Proj, dIn, dOut, in kernels.Buffer, la *layerActs, seed uint64) error {
	c, a, be := m.Cfg, m.acts, m.be
	inF, outF := p.dims(c)
	lw := &m.base.Layers[l]
	var dW, dBias kernels.Buffer
	if m.Opts.Method == MethodFull {
		dW, dBias = m.grads.Layers[l].W[p], m.grads.Layers[l].Bias[p]
	}
	if err := be.MatmulBackward(dIn, dW, dBias, dOut, in, lw.W[p], a.tokens, inF, outF, 1); err != nil {
		return fmt.Errorf("%s backward: %w", p, err)
	}
	if m.Opts.Method != MethodLoRA || m.adapters[l][p] == nil {
		return nil
	}
	ad, gd, r := m.adapters[l][p], m.adGrads[l][p], m.Opts.LoRA.Rank
	var e errs
	e.do("zero dh", be.Zero(a.dh))
	// dh = scale·dOut·B, dB += scale·dOutᵀ·h
	e.do("lora_B backward", be.MatmulBackward(a.dh, gd.B, nil, dOut, la.h[p], ad.B, a.tokens, r, outF, m.Opts.LoRA.Scale()))
	pd := float32(m.Opts.LoRA.Dropout)
	if pd == 0 {
		e.do("lora_A backward", be.MatmulBackward(dIn, gd.A, nil, a.dh, in, ad.A, a.tokens, inF, r, 1))
	} else {
		// Regenerate the dropped input rather than keeping it per adapter.
		x, dx := a.drop.Slice(0, a.tokens*inF), a.dDrop.Slice(0, a.tokens*inF)
		key := dropoutKey(seed, l, p)
		e.do("lora dropout", be.Dropout(x, in, pd, key))
		e.do("zero ddrop", be.Zero(dx))
		e.do("lora_A backward", be.MatmulBackward(dx, gd.A, nil, a.dh, x, ad.A, a.tokens, inF, r, 1))
		e.do("lora dropout backward", be.DropoutBackward(dIn, dx, pd, key))
	}
	if e.err != nil {
		return fmt.Errorf("%s: %w", p, e.err)
	}
	return nil
}

// layerForward computes xs[l+1] from xs[l], keeping activations in la.
func (m *Model) layerForward(l int, la *layerActs, b *Batch, train bool, seed uint64) error {
	c, a, be := m.Cfg, m.acts, m.be
	M, C, D := a.tokens, c.Hidden, c.HeadDim()
	theta := float32(c.RopeTheta)
	x, out := a.xs[l], a.xs[l+1]
	lw := &m.base.Layers[l]
	var e errs
	// attention block: x2 = x + o_proj(attn(rope(q), rope(k), v))
	e.do("attn norm", be.RMSNorm(la.xn1, la.rstd1, x, lw.AttnNorm, M, C, float32(c.RMSEps)))
	e.do("q", m.proj(l, ProjQ, la.q, la.xn1, la, false, train, seed))
	e.do("k", m.proj(l, ProjK, la.k, la.xn1, la, false, train, seed))
	e.do("v", m.proj(l, ProjV, la.v, la.xn1, la, false, train, seed))
	e.do("rope q", be.RoPE(la.q, la.q, b.Positions, M, c.Heads, D, theta))
	e.do("rope k", be.RoPE(la.k, la.k, b.Positions, M, c.KVHeads, D, theta))
	e.do("attention", be.Attention(la.att, la.lse, la.q, la.k, la.v, a.rows, a.seq, c.Heads, c.KVHeads, D))
	e.do("residual", be.Copy(la.x2, x))
	e.do("o", m.proj(l, ProjO, la.x2, la.att, la, true, train, seed))
	// MLP block: out = x2 + down(silu(gate(xn2)) · up(xn2))
	e.do("mlp norm", be.RMSNorm(la.xn2, la.rstd2, la.x2, lw.MLPNorm, M, C, float32(c.RMSEps)))
	e.do("gate", m.proj(l, ProjGate, la.gate, la.xn2, la, false, train, seed))
	e.do("up", m.proj(l, ProjUp, la.up, la.xn2, la, false, train, seed))
	e.do("swiglu", be.SwiGLU(la.act, la.gate, la.up))
	e.do("residual", be.Copy(out, la.x2))
	e.do("down", m.proj(l, ProjDown, out, la.act, la, true, train, seed))
	return e.err
}

// backward runs after CrossEntropy has turned the logits into dlogits.
func (m *Model) backward(b *Batch, seed uint64) error {
	c, a, be := m.Cfg, m.acts, m.be
	M, C := a.tokens, c.Hidden
	full := m.Opts.Method == MethodFull
	var e errs
	var dLMHead, dNorm kernels.Buffer
	if full {
		dLMHead, dNorm = m.grads.LMHead, m.grads.Norm
	}
	e.do("zero", be.Zero(a.dxn))
	e.do("lm_head backward", be.MatmulBackward(a.dxn, dLMHead, nil, a.logits, a.xnF, m.base.LMHead, M, C, c.Vocab, 1))
	e.do("zero", be.Zero(a.dRes))
	e.do("final norm backward", be.RMSNormBackward(a.dRes, dNorm, a.dxn, a.xs[c.Layers], m.base.Norm, a.rstdF, M, C))
	for l := c.Layers - 1; l >= 0 && e.err == nil; l-- {
		la := m.layerActs(l)
		if m.Opts.Recompute {
			e.do(fmt.Sprintf("layer %d recompute", l), m.layerForward(l, la, b, true, seed))
		}
		e.do(fmt.Sprintf("layer %d backward", l), m.layerBackward(l, la, b, seed))
	}
	if full {
		e.do("embedding backward", be.EmbeddingBackward(m.grads.Embed, a.dRes, b.Tokens, c.Vocab, C))
	}
	return e.err
}

// layerBackward turns dRes = d(xs[l+1]) into dRes = d(xs[l]), adding weight
// gradients on the way.
func (m *Model) layerBackward(l int, la *layerActs, b *Batch, seed uint64) error {
	c, a, be := m.Cfg, m.acts, m.be
	M, C, D := a.tokens, c.Hidden, c.HeadDim()
	theta := float32(c.RopeTheta)
	lw := &m.base.Layers[l]
	var dAttnNorm, dMLPNorm kernels.Buffer
	if m.Opts.Method == MethodFull {
		dAttnNorm, dMLPNorm = m.grads.Layers[l].AttnNorm, m.grads.Layers[l].MLPNorm
	}
	var e errs
	// MLP block. The residual passes dRes through unchanged; the norm adds its part.
	e.do("zero", be.Zero(a.dAct))
	e.do("down", m.projBackward(l, ProjDown, a.dAct, a.dRes, la.act, la, seed))
	e.do("zero", be.Zero(a.dGate))
	e.do("zero", be.Zero(a.dUp))
	e.do("swiglu backward", be.SwiGLUBackward(a.dGate, a.dUp, a.dAct, la.gate, la.up))
	e.do("zero", be.Zero(a.dxn))
	e.do("gate", m.projBackward(l, ProjGate, a.dxn, a.dGate, la.xn2, la, seed))
	e.do("up", m.projBackward(l, ProjUp, a.dxn, a.dUp, la.xn2, la, seed))
	e.do("mlp norm backward", be.RMSNormBackward(a.dRes, dMLPNorm, a.dxn, la.x2, lw.MLPNorm, la.rstd2, M, C))
	// Attention block.
	e.do("zero", be.Zero(a.dAtt))
	e.do("o", m.projBackward(l, ProjO, a.dAtt, a.dRes, la.att, la, seed))
	e.do("zero", be.Zero(a.dq))
	e.do("zero", be.Zero(a.dk))
	e.do("zero", be.Zero(a.dv))
	e.do("attention backward", be.AttentionBackward(a.dq, a.dk, a.dv, a.dAtt, la.q, la.k, la.v, la.att, la.lse, a.rows, a.seq, c.Heads, c.KVHeads, D))
	e.do("zero", be.Zero(a.dqr))
	e.do("zero", be.Zero(a.dkr))
	e.do("rope q backward", be.RoPEBackward(a.dqr, a.dq, b.Positions, M, c.Heads, D, theta))
	e.do("rope k backward", be.RoPEBackward(a.dkr, a.dk, b.Positions, M, c.KVHeads, D, theta))
	e.do("zero", be.Zero(a.dxn))
	e.do("q", m.projBackward(l, ProjQ, a.dxn, a.dqr, la.xn1, la, seed))
	e.do("k", m.projBackward(l, ProjK, a.dxn, a.dkr, la.xn1, la, seed))
	e.do("v", m.projBackward(l, ProjV, a.dxn, a.dv, la.xn1, la, seed))
	e.do("attn norm backward", be.RMSNormBackward(a.dRes, dAttnNorm, a.dxn, a.xs[l], lw.AttnNorm, la.rstd1, M, C))
	return e.err
}
