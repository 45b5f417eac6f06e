package model

// StepFLOPs is the arithmetic of one training step per token, split so that a
// benchmark can say where the work goes. Counts are multiply-adds × 2.
type StepFLOPs struct {
	Forward  float64 // projections, lm_head and attention, forward
	Backward float64 // activation gradients, plus weight gradients of what is trained
	Total    float64
}

// FLOPsPerToken counts the model FLOPs of one forward+backward per token at
// sequence length seq (causal attention: a token attends to (seq+1)/2 keys on
// average). Recomputation is not counted (these are model FLOPs, not hardware
// FLOPs). In LoRA mode the frozen weights get no weight gradient, so the
// backward costs about as much as the forward instead of twice as much.
func (c Config) FLOPsPerToken(method Method, lora LoRAConfig, seq int) StepFLOPs {
	var linear float64 // weights of every matmul
	for p := ProjQ; p < numProj; p++ {
		in, out := p.dims(c)
		linear += float64(in * out)
	}
	linear *= float64(c.Layers)
	linear += float64(c.Vocab * c.Hidden) // lm_head
	keys := float64(seq+1) / 2
	attn := 2 * 2 * float64(c.Heads*c.HeadDim()) * keys * float64(c.Layers) // QKᵀ and PV
	f := StepFLOPs{Forward: 2*linear + attn}
	switch method {
	case MethodFull:
		f.Backward = 4*linear + 2*attn
	default:
		var adapters float64
		for _, p := range lora.Targets {
			in, out := p.dims(c)
			adapters += float64(lora.Rank * (in + out))
		}
		adapters *= float64(c.Layers)
		f.Forward += 2 * adapters
		f.Backward = 2*linear + 2*attn + 4*adapters
	}
	f.Total = f.Forward + f.Backward
	return f
}
