// Package model is a Llama-family decoder (Llama, Mistral, Qwen2) with an
// explicit forward and backward pass, layer by layer, on a kernels.Backend.
//
// It trains either low-rank adapters (LoRA: the base weights are frozen and
// their weight gradients are never computed) or every weight (full
// fine-tuning). Memory is one flat buffer per role — base weights, trainable
// parameters, gradients, AdamW's two moments — with named views per tensor
// (see Layout), so the trainer all-reduces one buffer per step.
//
// Options.Precision BF16 (GPUs) keeps the activations for the backward pass
// and the frozen base weights in bfloat16 and has the GEMMs read a bf16
// working copy of the trainable parameters, refreshed from their float32
// master copy (Params) at the start of every forward pass; gradients, the
// AdamW moments and the master copy stay float32.
//
// One optimizer step, in outline:
//
//	m, _ := model.New(be, cfg, model.Options{Method: model.MethodLoRA, LoRA: lc})
//	m.LoadBase("model.safetensors")
//	m.InitLoRA(seed)
//	m.ZeroGrads()
//	for _, mb := range microBatches {
//		m.ForwardBackward(mb, 1/float32(stepTargets), dropoutSeed)
//	}
//	// all-reduce m.Grads across ranks, clip with m.GradSumSquares, then
//	m.Update(kernels.AdamWParams{...})
package model
