package kerneltest

// The metric (see tcase.check): err = max_i |got_i − want_i| / max(max_i |want_i|, floor),
// normwise over one output tensor, with floor 0 except for log-domain outputs
// (attention lse, cross-entropy losses), whose float32 error is absolute
// (a relative error ε of a sum of exponentials is an absolute error ε of its
// log), so their floor is 1.
//
// Gradients are compared twice with the same tolerance: against the analytic
// float64 reference backward over every element, and against central finite
// differences of the float64 reference forward at sampled coordinates. Both
// references are float64, so the FD truncation and rounding error (~1e-8
// relative at step 1e-4, checked in reference_test.go) is far below these
// tolerances: they budget for the backend's float32 arithmetic only.
//
// Backward checks also include the rounding of adding the gradient into the
// pre-filled output, one ε relative to up to twice the gradient's size.
//
// The tolerances below are for float32 arithmetic with float32 accumulators
// and any summation order (ε = 2⁻²⁴ ≈ 6e-8 per rounding); Options.TolScale
// multiplies all of them for TF32/bf16 backends. The shapes of the suite keep
// every reduction at K ≤ 4096 (rows of a matmul or norm, vocab 32000 for the
// cross-entropy), where a random-walk rounding estimate ε·sqrt(K)·(a few) stays
// below the values given.
var tolerances = map[string]float64{
	// Copies move bits: anything but bit equality is a bug.
	"Zero":      0,
	"Copy":      0,
	"Embedding": 0,

	// One rounding per element (a+b, b·s): |err| ≤ ε·|result|; 2e-7 allows
	// for fused multiply-add contraction differences.
	"Add":   2e-7,
	"Scale": 2e-7,

	// Repeated tokens (up to ~60 per row here) add their rows in an
	// unspecified order: ~ε·sqrt(repeats), plus the pre-fill addition.
	"EmbeddingBackward": 2e-6,

	// Σ x² over up to 1M elements. The contract asks for a float64 (or
	// pairwise/Kahan) accumulator, which gives ~ε; a naive float32 running sum
	// over 1M elements drifts by ~4e-4 (measured) and is meant to fail.
	"SumSquares": 1e-5,

	// Dot products of length K ≤ 4096 with random-sign terms: the rounding
	// error relative to the result grows like ε·sqrt(K) ≈ 4e-6 at K = 4096,
	// times a small factor for the worst of m·n outputs. Bias and beta·out add
	// one rounding each. TF32 backends need TolScale ≈ 100 here.
	"Matmul": 2e-5,
	// dIn reduces over n, dW over m, dBias over m: the same kind of sums.
	"MatmulBackward": 2e-5,

	// Row sum of squares (K = dim ≤ 4096), then sqrt and one multiply per
	// element: the rstd error ~ε·sqrt(dim)/2 carries into every output.
	"RMSNorm":      1e-5,
	"RMSNorm.rstd": 1e-5,
	// Two reductions over dim (the dot Σ g·w·x) and one over rows (dWeight),
	// and a difference of two terms of similar size in dIn.
	"RMSNormBackward": 3e-5,

	// RoPE is a rotation, but its angle pos·θ^(−2i/d) may be computed in
	// float32 (Hugging Face does exactly that), whose rounding is an absolute
	// angle error of up to ~2ε·pos radians, i.e. an output error of ~2ε·pos
	// relative. The RoPE tolerance is therefore
	//   tolerances["RoPE"] + tolerances["RoPE.perPosition"]·maxPosition,
	// e.g. 1.2e-4 at position 300 and 1.2e-3 at 4096: loose only where float32
	// itself is, still orders of magnitude below a wrong frequency, pairing or
	// sign (errors of O(1)).
	"RoPE":             2e-6,
	"RoPE.perPosition": 3e-7,
	"RoPEBackward":     2e-6,

	// Scores are dot products over headDim (≤ 64), softmax sums over ≤ 128
	// keys, the output another sum over keys: three short reductions and an
	// exp, each a few ε·sqrt(K).
	"Attention":     2e-5,
	"Attention.lse": 1e-5,
	// The backward recomputes P from lse and subtracts D = Σ P·dP from dP:
	// the cancellation in dP − D costs one more factor of a few.
	"AttentionBackward": 5e-5,

	// Elementwise with exp: float32 exp is within 1–2 ulp; sigmoid, silu and
	// the product add a few roundings (~4ε per element).
	"SwiGLU":         1e-6,
	"SwiGLUBackward": 2e-6,

	// in·(1/(1−p)): two roundings per kept element; the backward adds a
	// third when it adds into the pre-filled dIn (whose result may be twice
	// the gradient's size).
	"Dropout":         3e-7,
	"DropoutBackward": 5e-7,

	// log Σ exp over the vocab (32000 in the realistic shape): the sum's
	// relative error ~ε·sqrt(V) ≈ 1e-5 for a naive float32 sum becomes an
	// absolute loss error (floor 1). The gradient softmax − onehot inherits
	// the same relative error from exp(x − lse).
	"CrossEntropy.loss":    2e-5,
	"CrossEntropy.dlogits": 2e-5,

	// AdamW parameters are compared as updates (new − old) relative to
	// max(largest update, lr): the normalised Adam step is O(1), so lr is
	// the update's natural size even when m̂ nearly cancels for every
	// element (n = 1). Comparing against the parameters would hide a wrong
	// update below their own rounding. The update itself is a few
	// roundings; what dominates is rounding the new parameter to float32:
	// ε·|p|/lr ≈ 6e-8·1/0.01 = 6e-6 at lr 0.01 and |p| ≤ 1.
	"AdamW.params": 3e-5,
	// m and v: two or three roundings each (v squares g).
	"AdamW.moments": 1e-6,
}
