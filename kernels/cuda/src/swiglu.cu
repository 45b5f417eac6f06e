// swiglu.cu: out = silu(gate) * up, silu(x) = x * sigmoid(x).
// sigmoid is 1/(1+exp(-x)): exp(-x) overflows to +inf for x < -88.7, which
// gives sigmoid 0 and silu -0 (never NaN); expf is the accurate one (the
// sources are compiled without --use_fast_math).
#include "common.cuh"

extern "C" __global__ void pt_swiglu(float *out, const float *gate, const float *up, i64 n) {
  PT_FOR(i, n) {
    const float x = gate[i];
    out[i] = x / (1.0f + expf(-x)) * up[i];
  }
}

// dgate += dout*up*(s + x*s*(1-s)); dup += dout*x*s; s = sigmoid(x).
// Either output may be NULL (not needed).
extern "C" __global__ void pt_swiglu_backward(float *dgate, float *dup, const float *dout, const float *gate,
                                              const float *up, i64 n) {
  PT_FOR(i, n) {
    const float x = gate[i];
    const float s = 1.0f / (1.0f + expf(-x));
    const float g = dout[i];
    if (dgate != 0) dgate[i] += g * up[i] * (s + x * s * (1.0f - s));
    if (dup != 0) dup[i] += g * x * s;
  }
}
