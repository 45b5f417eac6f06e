// Package memory estimates the peak memory of a training run, term by term,
// and plans the largest micro-batch that fits a node's budget (DESIGN
// invariant 6). It is pure arithmetic over a model.Config: no I/O, no
// allocation of the model.
//
// The terms mirror peertune's own buffers rather than a generic formula:
// model.New's flat f32 buffers (Base, LoRA Params, Grads, AdamW m and v), the
// activations model.ensureActs keeps (every layer's set, or one shared set
// with recompute, plus every layer's input), the logits [tokens, vocab], the
// backward scratch, the CPU backend's per-worker attention tiles, the host
// copy that loading the base weights makes, and a fixed process overhead (Go
// runtime and OpenBLAS buffers on the CPU, a CUDA context on a GPU). On the
// CPU the estimate matches the measured peak RSS increase within 1% (see
// TestEstimateMatchesMeasuredRSS).
//
// Before training, on each rank:
//
//	ch, err := memory.Plan(cfg, memory.Options{Method: memory.LoRA, LoRA: lc, SeqLen: seqLen, Device: memory.CPU},
//		budgetBytes, perRankShare)
//	if err != nil {
//		return err // a *BudgetError: even micro-batch 1 with recompute does not fit; it names the terms
//	}
//	// train with micro-batch ch.MicroBatch and recompute ch.Recompute; gradient
//	// accumulation over the rank's share keeps the global batch.
//
// After every step:
//
//	g := memory.NewGuard(budgetBytes, ch.MicroBatch)
//	...
//	if mb, changed, why := g.Observe(used); changed {
//		log.Warn(why) // the next step runs micro-batch mb
//	}
package memory
