// swiglu.cu: out = silu(gate) * up, silu(x) = x * sigmoid(x).
// sigmoid is 1/(1+exp(-x)): exp(-x) overflows to +inf for x < -88.7, which
// gives sigmoid 0 and silu -0 (never NaN); expf is the accurate one (the
// sources are compiled without --use_fast_math).
#include "common.cuh"

// Every buffer argument f32 or bf16 (dt, see pt_ld).
extern "C" __global__ void pt_swiglu(void *out, const void *gate, const void *up, i64 n, int dt) {
  PT_FOR(i, n) {
    const float x = pt_ld(gate, dt, 1, i);
    pt_st(out, dt, 0, i, x / (1.0f + expf(-x)) * pt_ld(up, dt, 2, i));
  }
}

// dgate += dout*up*(s + x*s*(1-s)); dup += dout*x*s; s = sigmoid(x).
// Either output may be NULL (not needed).
extern "C" __global__ void pt_swiglu_backward(void *dgate, void *dup, const void *dout, const void *gate,
                                              const void *up, i64 n, int dt) {
  PT_FOR(i, n) {
    const float x = pt_ld(gate, dt, 3, i);
    const float s = 1.0f / (1.0f + expf(-x));
    const float g = pt_ld(dout, dt, 2, i);
    if (dgate != 0) {
      float d = pt_ld(dgate, dt, 0, i);
      d += g * pt_ld(up, dt, 4, i) * (s + x * s * (1.0f - s));
      pt_st(dgate, dt, 0, i, d);
    }
    if (dup != 0) {
      float d = pt_ld(dup, dt, 1, i);
      d += g * x * s;
      pt_st(dup, dt, 1, i, d);
    }
  }
}
