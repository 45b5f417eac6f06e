package model

import (
	"fmt"

	"github.com/peertune/peertune/kernels"
)

// Tensor is one named tensor inside a flat buffer.
type Tensor struct {
	Name   string // Hugging Face key, e.g. "model.layers.0.self_attn.q_proj.weight"
	Shape  []int
	Offset int // element offset into the flat buffer
	// NoDecay marks norm weights and biases, which AdamW does not decay
	// (the usual practice: decaying a gain toward 0 fights the normalisation).
	NoDecay bool
}

// Size is the tensor's element count.
func (t Tensor) Size() int {
	n := 1
	for _, d := range t.Shape {
		n *= d
	}
	return n
}

// Layout places named tensors one after another in a flat buffer, in a fixed
// order. The same layout describes params, grads and both AdamW moments
// (llm.c style: one buffer per role, views by name).
type Layout struct {
	Tensors []Tensor
	Total   int
	index   map[string]int
}

func (l *Layout) add(name string, noDecay bool, shape ...int) {
	if l.index == nil {
		l.index = map[string]int{}
	}
	t := Tensor{Name: name, Shape: shape, Offset: l.Total, NoDecay: noDecay}
	l.index[name] = len(l.Tensors)
	l.Tensors = append(l.Tensors, t)
	l.Total += t.Size()
}

// Lookup returns the tensor called name.
func (l *Layout) Lookup(name string) (Tensor, bool) {
	i, ok := l.index[name]
	if !ok {
		return Tensor{}, false
	}
	return l.Tensors[i], true
}

// View returns the slice of buf holding the tensor called name. It panics on an
// unknown name: names come from the layout itself, never from user input.
func (l *Layout) View(buf kernels.Buffer, name string) kernels.Buffer {
	t, ok := l.Lookup(name)
	if !ok {
		panic(fmt.Sprintf("model: layout has no tensor %q", name))
	}
	return buf.Slice(t.Offset, t.Size())
}

// Hugging Face key names of the base model.
const (
	keyEmbed  = "model.embed_tokens.weight"
	keyNorm   = "model.norm.weight"
	keyLMHead = "lm_head.weight"
)

func layerKey(l int, suffix string) string { return fmt.Sprintf("model.layers.%d.%s", l, suffix) }

// baseLayout is the flat layout of every base-model weight:
//
//	embed_tokens [vocab, hidden]
//	per layer:   input_layernorm [hidden]
//	             q_proj [qDim, hidden] (+ bias [qDim])   k_proj, v_proj [kvDim, hidden] (+ bias [kvDim])
//	             o_proj [hidden, qDim]
//	             post_attention_layernorm [hidden]
//	             gate_proj, up_proj [inter, hidden]      down_proj [hidden, inter]
//	norm [hidden]
//	lm_head [vocab, hidden] (absent when tied to embed_tokens)
func baseLayout(c Config) *Layout {
	l := &Layout{}
	C, I, Q, KV := c.Hidden, c.Intermediate, c.QDim(), c.KVDim()
	l.add(keyEmbed, false, c.Vocab, C)
	for i := 0; i < c.Layers; i++ {
		l.add(layerKey(i, "input_layernorm.weight"), true, C)
		l.add(layerKey(i, "self_attn.q_proj.weight"), false, Q, C)
		if c.QKVBias {
			l.add(layerKey(i, "self_attn.q_proj.bias"), true, Q)
		}
		l.add(layerKey(i, "self_attn.k_proj.weight"), false, KV, C)
		if c.QKVBias {
			l.add(layerKey(i, "self_attn.k_proj.bias"), true, KV)
		}
		l.add(layerKey(i, "self_attn.v_proj.weight"), false, KV, C)
		if c.QKVBias {
			l.add(layerKey(i, "self_attn.v_proj.bias"), true, KV)
		}
		l.add(layerKey(i, "self_attn.o_proj.weight"), false, C, Q)
		l.add(layerKey(i, "post_attention_layernorm.weight"), true, C)
		l.add(layerKey(i, "mlp.gate_proj.weight"), false, I, C)
		l.add(layerKey(i, "mlp.up_proj.weight"), false, I, C)
		l.add(layerKey(i, "mlp.down_proj.weight"), false, C, I)
	}
	l.add(keyNorm, true, C)
	if !c.TiedEmbed {
		l.add(keyLMHead, false, c.Vocab, C)
	}
	return l
}

// Proj names one of the seven linear projections of a layer.
type Proj int

// The projections, in the order a layer runs them.
const (
	ProjQ Proj = iota
	ProjK
	ProjV
	ProjO
	ProjGate
	ProjUp
	ProjDown
	numProj
)

// projNames are the PEFT/Hugging Face module names (LoRA target names).
var projNames = [numProj]string{"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}

// projPath is each module's path inside a layer.
var projPath = [numProj]string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}

func (p Proj) String() string { return projNames[p] }

// ProjNames lists the valid LoRA target module names.
func ProjNames() []string { return append([]string(nil), projNames[:]...) }

// dims returns the projection's (in, out) features.
func (p Proj) dims(c Config) (in, out int) {
	switch p {
	case ProjQ:
		return c.Hidden, c.QDim()
	case ProjK, ProjV:
		return c.Hidden, c.KVDim()
	case ProjO:
		return c.QDim(), c.Hidden
	case ProjGate, ProjUp:
		return c.Hidden, c.Intermediate
	default: // ProjDown
		return c.Intermediate, c.Hidden
	}
}

// hasBias reports whether the projection carries a bias under c.
func (p Proj) hasBias(c Config) bool { return c.QKVBias && p <= ProjV }

// LayerWeights are views of one layer's tensors in a flat buffer laid out by
// baseLayout. Bias[p] is nil when the projection has no bias.
type LayerWeights struct {
	AttnNorm kernels.Buffer // [hidden]
	MLPNorm  kernels.Buffer // [hidden]
	W        [numProj]kernels.Buffer
	Bias     [numProj]kernels.Buffer
}

// Weights are views of every base-model tensor in one flat buffer. LMHead is
// Embed when the embeddings are tied.
type Weights struct {
	Embed  kernels.Buffer // [vocab, hidden]
	Layers []LayerWeights
	Norm   kernels.Buffer // [hidden]
	LMHead kernels.Buffer // [vocab, hidden]
}

func weightViews(c Config, l *Layout, buf kernels.Buffer) Weights {
	w := Weights{Embed: l.View(buf, keyEmbed), Norm: l.View(buf, keyNorm)}
	w.LMHead = w.Embed
	if !c.TiedEmbed {
		w.LMHead = l.View(buf, keyLMHead)
	}
	w.Layers = make([]LayerWeights, c.Layers)
	for i := range w.Layers {
		lw := &w.Layers[i]
		lw.AttnNorm = l.View(buf, layerKey(i, "input_layernorm.weight"))
		lw.MLPNorm = l.View(buf, layerKey(i, "post_attention_layernorm.weight"))
		for p := ProjQ; p < numProj; p++ {
			lw.W[p] = l.View(buf, layerKey(i, projPath[p]+".weight"))
			if p.hasBias(c) {
				lw.Bias[p] = l.View(buf, layerKey(i, projPath[p]+".bias"))
			}
		}
	}
	return w
}
