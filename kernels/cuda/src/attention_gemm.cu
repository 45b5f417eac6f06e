// attention_gemm.cu: the elementwise parts of attention computed through
// GEMMs (ops_attention_gemm.go). cuBLAS makes the scores of a batch of
// heads, S = scale * Q K^T, into a [E, T, T] float32 buffer on tensor
// cores; these kernels turn them into causal softmax probabilities (and the
// log-sum-exp the backward pass needs), recompute the probabilities in the
// backward pass, and form dS = P o (dP - rowsum(dO o O)).
//
// Entry e of a [E, T, T] buffer is query head h = (kv0 + e) * g + j of batch
// b (g query heads share a kv head; one cuBLAS call covers the kv heads
// kv0 .. kv0+E-1 for one (b, j)). lse and dsum are [B, H, T].
#include "common.cuh"

// Row r of the buffer is query i = r % T of entry e = r / T. One block per
// row (the row loop is block-uniform, so the block reductions are safe);
// keys j > i are masked: probability 0.
extern "C" __global__ void pt_attn_softmax(float *s, float *lse, int E, int T, int H, int b, int j, int kv0, int g) {
  __shared__ float red[32];
  for (i64 r = blockIdx.x; r < (i64)E * T; r += gridDim.x) {
    const int e = (int)(r / T), i = (int)(r % T);
    float *row = s + r * T;
    float m = PT_NEG_INF;
    for (int c = threadIdx.x; c <= i; c += blockDim.x) m = fmaxf(m, row[c]);
    m = pt_block_max(m, red);
    float sum = 0.0f;
    for (int c = threadIdx.x; c <= i; c += blockDim.x) sum += expf(row[c] - m);
    sum = pt_block_sum(sum, red);
    const float l = m + logf(sum);  // sum >= 1: the diagonal key is always there
    for (int c = threadIdx.x; c < T; c += blockDim.x) row[c] = c <= i ? expf(row[c] - l) : 0.0f;
    if (threadIdx.x == 0) lse[((i64)b * H + (kv0 + e) * g + j) * T + i] = l;
  }
}

// The backward pass's probabilities from recomputed scores and the forward
// pass's lse: p = exp(s - lse_i) for keys c <= i, else 0 (in place).
extern "C" __global__ void pt_attn_probs(float *s, const float *lse, int E, int T, int H, int b, int j, int kv0, int g) {
  PT_FOR(x, (i64)E * T * T) {
    const i64 r = x / T;
    const int c = (int)(x - r * T);
    const int e = (int)(r / T), i = (int)(r % T);
    s[x] = c <= i ? expf(s[x] - lse[((i64)b * H + (kv0 + e) * g + j) * T + i]) : 0.0f;
  }
}

// dS = P o (dP - dsum_i) for keys c <= i, else 0 (in place over dP). The
// softmax scale is applied by the GEMMs that consume dS.
extern "C" __global__ void pt_attn_dscores(float *dp, const float *p, const float *dsum, int E, int T, int H, int b, int j,
                                           int kv0, int g) {
  PT_FOR(x, (i64)E * T * T) {
    const i64 r = x / T;
    const int c = (int)(x - r * T);
    const int e = (int)(r / T), i = (int)(r % T);
    dp[x] = c <= i ? p[x] * (dp[x] - dsum[((i64)b * H + (kv0 + e) * g + j) * T + i]) : 0.0f;
  }
}
