package kernels

import "fmt"

// DType is the element type of a Buffer.
type DType int

const (
	// F32 is IEEE float32, the type every backend supports.
	F32 DType = iota
	// BF16 is bfloat16 (the upper half of a float32), for GPU activations and
	// frozen base weights.
	BF16
)

func (d DType) String() string {
	switch d {
	case F32:
		return "f32"
	case BF16:
		return "bf16"
	}
	return fmt.Sprintf("dtype(%d)", int(d))
}

// IgnoreIndex is the target value that CrossEntropy skips: the row adds no loss
// and gets a zero gradient (PyTorch's and Hugging Face's convention).
const IgnoreIndex = -100

// Buffer is a contiguous array of elements owned by one Backend. A Buffer is
// only ever passed to the Backend that allocated it.
type Buffer interface {
	// Len is the number of elements.
	Len() int
	// DType is the element type.
	DType() DType
	// Slice returns a view of elements [off, off+n) that shares memory with
	// the receiver. It panics only on a programming error (out of range).
	Slice(off, n int) Buffer
}

// Backend launches the ops of one Llama training step on buffers it owns.
//
// Conventions, shared by every op:
//   - Outputs come first in the argument list, then inputs, then sizes.
//   - Matrices are row-major. A linear layer's weight has PyTorch's layout
//     [out, in], so y = x·Wᵀ.
//   - Every Backward op ADDS into its gradient outputs (dIn += ..., dW += ...);
//     callers zero gradients when a new accumulation starts. This is what lets
//     the residual stream, LoRA's two paths and tied embeddings sum their
//     gradients without extra buffers. CrossEntropy is the one exception: it
//     overwrites dlogits (it is usually computed in place over the logits).
//   - A nil gradient output means "not needed": a frozen weight gets no weight
//     gradient, and the backend skips that work entirely.
//   - Shapes are checked against buffer lengths; a mismatch returns an error
//     naming the op. Device errors may surface only at Sync.
//   - Ops on one Backend run in issue order; a Backend is not safe for
//     concurrent use by several goroutines.
type Backend interface {
	// Name identifies the backend and its variant for logs, e.g. "cpu/openblas".
	Name() string

	// Alloc returns a zeroed buffer of n elements.
	Alloc(n int, dt DType) (Buffer, error)
	// Free releases a buffer. Using it afterwards is a programming error.
	Free(b Buffer)
	// CopyIn copies host floats into dst (converting to dst's dtype); len(src) == dst.Len().
	CopyIn(dst Buffer, src []float32) error
	// CopyOut copies src to host floats; len(dst) == src.Len().
	CopyOut(dst []float32, src Buffer) error
	// Sync waits for all issued ops and reports the first device error.
	Sync() error

	// Zero sets every element of b to 0.
	Zero(b Buffer) error
	// Copy copies src into dst (same length).
	Copy(dst, src Buffer) error
	// Add computes out = a + b elementwise (out may alias a or b).
	Add(out, a, b Buffer) error
	// Scale computes b *= s.
	Scale(b Buffer, s float32) error

	// Embedding gathers out[i, :] = table[tokens[i], :].
	// out [len(tokens), dim], table [vocab, dim]. A token outside [0, vocab)
	// is an error.
	Embedding(out, table Buffer, tokens []int32, vocab, dim int) error
	// EmbeddingBackward adds dTable[tokens[i], :] += dOut[i, :].
	EmbeddingBackward(dTable, dOut Buffer, tokens []int32, vocab, dim int) error

	// Matmul computes out[m,n] = beta*out + scale * in[m,k]·w[n,k]ᵀ (+ bias[n]
	// when bias != nil), where beta is 1 if accumulate else 0.
	Matmul(out, in, w, bias Buffer, m, k, n int, scale float32, accumulate bool) error
	// MatmulBackward, for out = scale * in·wᵀ + bias:
	//   dIn[m,k]  += scale * dOut[m,n]·w[n,k]   (skipped when dIn is nil)
	//   dW[n,k]   += scale * dOut[m,n]ᵀ·in[m,k] (skipped when dW is nil: frozen weight)
	//   dBias[n]  += Σ_m dOut[m,n]               (skipped when dBias is nil)
	MatmulBackward(dIn, dW, dBias, dOut, in, w Buffer, m, k, n int, scale float32) error

	// RMSNorm computes, per row r, rstd[r] = 1/sqrt(mean(in[r,:]²) + eps) and
	// out[r,:] = in[r,:] * rstd[r] * weight[:]. out/in [rows, dim], rstd [rows].
	// rstd is kept for the backward.
	RMSNorm(out, rstd, in, weight Buffer, rows, dim int, eps float32) error
	// RMSNormBackward adds the gradients w.r.t. in and weight (dWeight may be nil).
	RMSNormBackward(dIn, dWeight, dOut, in, weight, rstd Buffer, rows, dim int) error

	// RoPE rotates each head of in[rows, heads, headDim] by its row's position
	// with Hugging Face's rotate-half convention: for i < headDim/2, frequency
	// f_i = theta^(-2i/headDim), angle a = pos·f_i, and
	//   out[j]   = x[j]·cos a − x[j+h]·sin a
	//   out[j+h] = x[j+h]·cos a + x[j]·sin a     (h = headDim/2, j = i)
	// len(positions) == rows. out may alias in.
	RoPE(out, in Buffer, positions []int32, rows, heads, headDim int, theta float32) error
	// RoPEBackward adds the inverse rotation of dOut into dIn.
	RoPEBackward(dIn, dOut Buffer, positions []int32, rows, heads, headDim int, theta float32) error

	// Attention is causal grouped-query scaled dot-product attention.
	//   q, out [batch, seq, heads, headDim]; k, v [batch, seq, kvHeads, headDim];
	//   lse [batch, heads, seq] receives each query row's log-sum-exp of its
	//   scaled scores, which is all the backward needs (scores are recomputed,
	//   so no [seq, seq] matrix per head is kept). Query head h reads kv head
	//   h / (heads/kvHeads). Scores are scaled by 1/sqrt(headDim).
	Attention(out, lse, q, k, v Buffer, batch, seq, heads, kvHeads, headDim int) error
	// AttentionBackward adds into dq, dk, dv given dOut and the forward's out and lse.
	AttentionBackward(dq, dk, dv, dOut, q, k, v, out, lse Buffer, batch, seq, heads, kvHeads, headDim int) error

	// SwiGLU computes out = silu(gate) * up elementwise, silu(x) = x·sigmoid(x).
	SwiGLU(out, gate, up Buffer) error
	// SwiGLUBackward adds the gradients w.r.t. gate and up.
	SwiGLUBackward(dGate, dUp, dOut, gate, up Buffer) error

	// Dropout computes out = in * mask / (1-p), where mask[i] is a Bernoulli(1-p)
	// draw that is a pure function of (seed, i), so the backward regenerates it
	// instead of storing it. p == 0 is a copy.
	Dropout(out, in Buffer, p float32, seed uint64) error
	// DropoutBackward adds dOut * mask / (1-p) into dIn.
	DropoutBackward(dIn, dOut Buffer, p float32, seed uint64) error

	// CrossEntropy is softmax cross-entropy fused with its gradient, in one
	// pass over logits [rows, vocab]:
	//   losses[r] = logsumexp(logits[r,:]) − logits[r, targets[r]]   (0 when ignored)
	//   dlogits[r,:] = gradScale * (softmax(logits[r,:]) − onehot(targets[r]))
	// Rows whose target is IgnoreIndex get loss 0 and a zero gradient.
	// dlogits is OVERWRITTEN (not added) and may alias logits; dlogits nil
	// skips the gradient (evaluation). A target outside [0, vocab) that is not
	// IgnoreIndex is an error.
	CrossEntropy(losses, dlogits, logits Buffer, targets []int32, rows, vocab int, gradScale float32) error

	// AdamW updates params in place with decoupled weight decay (Loshchilov &
	// Hutter), over flat buffers of equal length:
	//   g = grads * gradScale
	//   m = beta1*m + (1-beta1)*g;  v = beta2*v + (1-beta2)*g²
	//   params -= lr * ( (m/(1-beta1^step)) / (sqrt(v/(1-beta2^step)) + eps) + weightDecay*params )
	// step counts from 1. gradScale carries gradient clipping.
	AdamW(params, grads, m, v Buffer, p AdamWParams) error
	// SumSquares writes Σ in[i]² into out[0] (accumulated in float64 where the
	// backend can). The global gradient norm is sqrt of the sum over buffers.
	SumSquares(out, in Buffer) error
}

// AdamWParams are the scalar arguments of one AdamW update.
type AdamWParams struct {
	LR, Beta1, Beta2, Eps, WeightDecay float32
	Step                               int
	GradScale                          float32
}

// HostBuffer is a Buffer whose elements live in host memory as float32 (the
// CPU backend's buffers). Code that must touch the elements directly, such as
// the TCP ring all-reduce, uses it instead of copying through the Backend.
type HostBuffer interface {
	Buffer
	// Host returns the elements; the slice aliases the buffer.
	Host() []float32
}
