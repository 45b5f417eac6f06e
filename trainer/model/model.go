package model

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/peertune/peertune/kernels"
)

// Method is what a training run updates.
type Method int

const (
	// MethodLoRA freezes the base weights and trains low-rank adapters.
	MethodLoRA Method = iota
	// MethodFull trains every base weight.
	MethodFull
)

func (m Method) String() string {
	if m == MethodFull {
		return "full"
	}
	return "lora"
}

// ParseMethod parses "lora" or "full".
func ParseMethod(s string) (Method, error) {
	switch s {
	case "lora":
		return MethodLoRA, nil
	case "full":
		return MethodFull, nil
	}
	return 0, fmt.Errorf("unknown method %q: want lora or full", s)
}

// Options choose what is trained and how activations are kept.
type Options struct {
	Method Method
	LoRA   LoRAConfig // used when Method is MethodLoRA
	// Recompute keeps only each layer's input during the forward pass and
	// recomputes the layer's activations in the backward pass: one layer's
	// activations in memory instead of all of them, for about a third more
	// compute.
	Recompute bool
	// Precision is the dtype the step computes in. F32 (the zero value):
	// everything float32. BF16 (GPUs): activations kept for the backward
	// pass and the weights the GEMMs read are bfloat16, so GEMMs run on
	// bf16 tensor cores and activations take half the memory. Frozen base
	// weights are stored in bf16 only; trainable parameters keep their
	// float32 master copy in Params (AdamW updates it: bf16 would lose
	// updates smaller than 2^-8 of a weight), and the forward pass reads a
	// bf16 working copy of them, refreshed from the master at the start of
	// every forward pass. Gradients, optimizer state, logits, and norm and
	// attention statistics stay float32.
	Precision kernels.DType
}

// Model is a Llama-family decoder on one Backend, with its trainable state.
//
// Memory is one flat buffer per role (llm.c style): Base holds every base
// weight; Params are the trainable parameters (the adapters for LoRA, Base
// itself for full fine-tuning); Grads, M and V share Params' layout.
type Model struct {
	Cfg  Config
	Opts Options
	be   kernels.Backend

	BaseLayout *Layout
	Base       kernels.Buffer
	base       Weights

	// TrainLayout names the tensors of Params, Grads, M and V.
	TrainLayout   *Layout
	Params, Grads kernels.Buffer
	// work is the bf16 working copy of Params that the forward pass reads
	// (Precision BF16 only; nil otherwise), laid out like Params.
	work              kernels.Buffer
	M, V              kernels.Buffer
	grads             Weights             // full fine-tuning: views of Grads
	adapters, adGrads [][numProj]*Adapter // LoRA: views of Params and Grads

	acts    *activations
	scalar  kernels.Buffer // one element, for SumSquares
	decayed []span         // AdamW groups over Params
}

// span is a run of Params that shares one weight-decay setting.
type span struct {
	off, n int
	decay  bool
}

// New allocates a model with zero weights; load or initialise them next.
func New(be kernels.Backend, cfg Config, opts Options) (*Model, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if opts.Method == MethodLoRA {
		if err := opts.LoRA.Validate(); err != nil {
			return nil, err
		}
	}
	if opts.Precision != kernels.F32 && opts.Precision != kernels.BF16 {
		return nil, fmt.Errorf("model precision %v: want f32 or bf16", opts.Precision)
	}
	m := &Model{Cfg: cfg, Opts: opts, be: be, BaseLayout: baseLayout(cfg)}
	var err error
	alloc := func(n int, dt kernels.DType) kernels.Buffer {
		if err != nil {
			return nil
		}
		var b kernels.Buffer
		b, err = be.Alloc(n, dt)
		return b
	}
	bf16 := opts.Precision == kernels.BF16
	if opts.Method == MethodFull {
		m.Base = alloc(m.BaseLayout.Total, kernels.F32) // the master copy
		m.TrainLayout = m.BaseLayout
		m.Params = m.Base
	} else {
		m.Base = alloc(m.BaseLayout.Total, opts.Precision) // frozen: no master needed
		m.TrainLayout = loraLayout(cfg, opts.LoRA)
		m.Params = alloc(m.TrainLayout.Total, kernels.F32)
	}
	if bf16 {
		m.work = alloc(m.TrainLayout.Total, kernels.BF16)
	}
	m.Grads = alloc(m.TrainLayout.Total, kernels.F32)
	m.M = alloc(m.TrainLayout.Total, kernels.F32)
	m.V = alloc(m.TrainLayout.Total, kernels.F32)
	m.scalar = alloc(1, kernels.F32)
	if err != nil {
		m.Free()
		return nil, fmt.Errorf("allocate model (%d base + %d trainable parameters, %v): %w", m.BaseLayout.Total, m.TrainLayout.Total, opts.Precision, err)
	}
	// The views the forward pass reads: the working copy where there is one.
	read := m.Params
	if bf16 {
		read = m.work
	}
	if opts.Method == MethodFull {
		m.base = weightViews(cfg, m.BaseLayout, read)
		m.grads = weightViews(cfg, m.BaseLayout, m.Grads)
	} else {
		m.base = weightViews(cfg, m.BaseLayout, m.Base)
		m.adapters = adapterViews(cfg, opts.LoRA, m.TrainLayout, read)
		m.adGrads = adapterViews(cfg, opts.LoRA, m.TrainLayout, m.Grads)
	}
	for _, t := range m.TrainLayout.Tensors {
		decay := !t.NoDecay
		if k := len(m.decayed); k > 0 && m.decayed[k-1].decay == decay {
			m.decayed[k-1].n += t.Size()
		} else {
			m.decayed = append(m.decayed, span{off: t.Offset, n: t.Size(), decay: decay})
		}
	}
	return m, nil
}

// ReleaseActivations frees the activation buffers; the next step allocates
// them again for its batch shape (the memory guard uses it after lowering the
// micro-batch).
func (m *Model) ReleaseActivations() { m.freeActs() }

// Backend is the backend the model runs on.
func (m *Model) Backend() kernels.Backend { return m.be }

// Free releases every buffer.
func (m *Model) Free() {
	m.freeActs()
	for _, b := range []kernels.Buffer{m.Base, m.work, m.Grads, m.M, m.V, m.scalar} {
		if b != nil {
			m.be.Free(b)
		}
	}
	if m.Opts.Method == MethodLoRA && m.Params != nil {
		m.be.Free(m.Params)
	}
	*m = Model{Cfg: m.Cfg, Opts: m.Opts, be: m.be}
}

// TrainableParams is the number of trainable parameters.
func (m *Model) TrainableParams() int { return m.TrainLayout.Total }

// AllParams counts every parameter as PEFT does: base plus adapters.
func (m *Model) AllParams() int {
	if m.Opts.Method == MethodFull {
		return m.BaseLayout.Total
	}
	return m.BaseLayout.Total + m.TrainLayout.Total
}

// InitBase fills the base weights for training from scratch: projections and
// embeddings ~ N(0, 0.02²) (Llama's initializer_range), norms 1, biases 0.
func (m *Model) InitBase(seed uint64) error {
	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	// One host buffer of the largest tensor, filled and copied in tensor by
	// tensor (in layout order, so the values do not depend on it).
	largest := 0
	for _, t := range m.BaseLayout.Tensors {
		largest = max(largest, t.Size())
	}
	host := make([]float32, largest)
	for _, t := range m.BaseLayout.Tensors {
		v := host[:t.Size()]
		clear(v)
		switch {
		case len(t.Shape) == 1 && t.NoDecay && !isBias(t.Name):
			for i := range v {
				v[i] = 1
			}
		case isBias(t.Name):
		default:
			for i := range v {
				v[i] = float32(rng.NormFloat64() * 0.02)
			}
		}
		if err := m.be.CopyIn(m.Base.Slice(t.Offset, t.Size()), v); err != nil {
			return fmt.Errorf("init %s: %w", t.Name, err)
		}
	}
	return nil
}

func isBias(name string) bool { return len(name) > 5 && name[len(name)-5:] == ".bias" }

// InitLoRA initialises the adapters as PEFT does: A from a Kaiming-uniform
// with a = sqrt(5), i.e. U(-1/sqrt(in), 1/sqrt(in)), and B = 0, so the adapted
// model starts equal to the base model.
func (m *Model) InitLoRA(seed uint64) error {
	if m.Opts.Method != MethodLoRA {
		return errors.New("InitLoRA: model is not in LoRA mode")
	}
	rng := rand.New(rand.NewPCG(seed, 0x243f6a8885a308d3))
	host := make([]float32, m.TrainLayout.Total)
	for _, t := range m.TrainLayout.Tensors {
		if t.Name[len(t.Name)-len("lora_A.weight"):] != "lora_A.weight" {
			continue
		}
		bound := 1 / math.Sqrt(float64(t.Shape[1]))
		for i := t.Offset; i < t.Offset+t.Size(); i++ {
			host[i] = float32((rng.Float64()*2 - 1) * bound)
		}
	}
	return m.be.CopyIn(m.Params, host)
}

// ZeroGrads starts a new gradient accumulation.
func (m *Model) ZeroGrads() error { return m.be.Zero(m.Grads) }

// GradSumSquares returns Σ g² over the trainable gradients (the square of the
// global gradient norm when Grads holds the whole step's gradient).
func (m *Model) GradSumSquares() (float64, error) {
	if err := m.be.SumSquares(m.scalar, m.Grads); err != nil {
		return 0, err
	}
	out := make([]float32, 1)
	if err := m.be.CopyOut(out, m.scalar); err != nil {
		return 0, err
	}
	return float64(out[0]), nil
}

// Update applies one AdamW step to Params from Grads. Norm weights and biases
// are not decayed.
func (m *Model) Update(p kernels.AdamWParams) error {
	for _, s := range m.decayed {
		q := p
		if !s.decay {
			q.WeightDecay = 0
		}
		err := m.be.AdamW(m.Params.Slice(s.off, s.n), m.Grads.Slice(s.off, s.n), m.M.Slice(s.off, s.n), m.V.Slice(s.off, s.n), q)
		if err != nil {
			return fmt.Errorf("AdamW: %w", err)
		}
	}
	return nil
}
