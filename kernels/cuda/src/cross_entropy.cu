// cross_entropy.cu: softmax cross-entropy fused with its gradient, one block
// per row. dlogits may alias logits exactly (in place): the target logit is
// read before the first barrier, the row max and sum before the writes, and
// each element is written by the thread that read it.
#include "common.cuh"

// losses[r] = logsumexp(x[r,:]) - x[r,t]; dlogits[r,:] = gradScale*(softmax - onehot(t)).
// Ignored rows (t == -100): loss 0, zero gradient. dlogits NULL: loss only.
extern "C" __global__ void pt_cross_entropy(float *losses, float *dlogits, const float *logits, const int *targets,
                                            int rows, int vocab, float gradScale) {
  __shared__ float red[32];
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *x = logits + (i64)r * vocab;
    float *d = dlogits != 0 ? dlogits + (i64)r * vocab : 0;
    const int t = targets[r];
    if (t == PT_IGNORE_INDEX) {  // uniform across the block
      if (threadIdx.x == 0) losses[r] = 0.0f;
      if (d != 0)
        for (int j = threadIdx.x; j < vocab; j += blockDim.x) d[j] = 0.0f;
      continue;
    }
    const float xt = x[t];
    float mx = PT_NEG_INF;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) mx = fmaxf(mx, x[j]);
    mx = pt_block_max(mx, red);
    float sum = 0.0f;
    for (int j = threadIdx.x; j < vocab; j += blockDim.x) sum += expf(x[j] - mx);
    sum = pt_block_sum(sum, red);
    if (threadIdx.x == 0) losses[r] = (float)((double)mx + log((double)sum) - (double)xt);
    if (d != 0) {
      const float f = gradScale / sum;
      for (int j = threadIdx.x; j < vocab; j += blockDim.x) {
        float v = expf(x[j] - mx) * f;
        if (j == t) v -= gradScale;
        d[j] = v;
      }
    }
    __syncthreads();  // the next row's reduction reuses red
  }
}
