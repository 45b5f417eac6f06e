// adamw.cu: fused AdamW (decoupled weight decay) over flat buffers. The bias
// corrections inv1 = 1/(1-beta1^step), inv2 = 1/(1-beta2^step) are computed
// on the host in float64, as the CPU backend does.
#include "common.cuh"

extern "C" __global__ void pt_adamw(float *p, const float *g, float *m, float *v, i64 n, float lr, float beta1,
                                    float beta2, float c1, float c2, float inv1, float inv2, float eps, float wd,
                                    float gradScale) {
  PT_FOR(i, n) {
    const float gi = g[i] * gradScale;
    const float mi = beta1 * m[i] + c1 * gi;
    const float vi = beta2 * v[i] + c2 * gi * gi;
    m[i] = mi;
    v[i] = vi;
    const float den = sqrtf(vi * inv2) + eps;
    const float pi = p[i];
    p[i] = pi - lr * (mi * inv1 / den + wd * pi);
  }
}
