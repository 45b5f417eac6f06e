// Package kernels defines Backend, exactly the set of ops one Llama training
// step needs (embedding, matmul, RMSNorm, RoPE, causal grouped-query
// attention, SwiGLU, dropout, fused cross-entropy, AdamW, sum of squares),
// each a forward/backward pair with outputs first.
//
// Backends live in sub-packages: kernels/cpu (float32, OpenBLAS loaded at run
// time with a pure-Go fallback) and kernels/cuda. kernels/kerneltest is the one
// suite every backend must pass.
//
// The usage loop of a training step, in outline:
//
//	x, _ := be.Alloc(rows*dim, kernels.F32)
//	be.Embedding(x, wte, tokens, vocab, dim)
//	be.RMSNorm(xn, rstd, x, normW, rows, dim, eps)
//	be.Matmul(q, xn, wq, nil, rows, dim, qDim, 1, false)
//	... forward through every layer, then CrossEntropy in place over the logits ...
//	be.MatmulBackward(dxn, nil, nil, dq, xn, wq, rows, dim, qDim, 1) // frozen wq: no dW
//	...
//	be.AdamW(params, grads, m, v, kernels.AdamWParams{...})
//	be.Sync()
package kernels
