// Package model is a Llama-family decoder (Llama, Mistral, Qwen2) with an
// explicit forward and backward pass, layer by layer, on a kernels.Backend.
//
// It trains either low-rank adapters (LoRA: the base weights are frozen and
// their weight gradients are never computed) or every weight (full
// fine-tuning). Memory is one flat buffer per role — base weights, trainable
// parameters, gradients, AdamW's two moments — with named views per tensor
// (see Layout), so the trainer all-reduces one buffer per step.
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
