// dropout.cu: the mask is the CPU backend's, bit for bit (kernels/cpu
// dropoutKeep): element i is kept when the top 24 bits of the i-th output of
// splitmix64 seeded with seed are >= threshold = floor(p * 2^24).
#include "common.cuh"

__device__ __forceinline__ bool pt_dropout_keep(u64 seed, i64 i, u64 threshold) {
  u64 z = seed + (u64)(i + 1) * 0x9e3779b97f4a7c15ULL;
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  z ^= z >> 31;
  return (z >> 40) >= threshold;
}

// out[i] = keep(i) ? in[i] * inv : 0, inv = 1/(1-p) (computed on the host).
// out and in f32 or bf16 (dt bits 0, 1).
extern "C" __global__ void pt_dropout(void *out, const void *in, i64 n, u64 seed, u64 threshold, float inv, int dt) {
  PT_FOR(i, n) { pt_st(out, dt, 0, i, pt_dropout_keep(seed, i, threshold) ? pt_ld(in, dt, 1, i) * inv : 0.0f); }
}

// din[i] += keep(i) ? dout[i] * inv : 0; keepAll (p == 0) keeps everything.
// din and dout f32 or bf16 (dt bits 0, 1).
extern "C" __global__ void pt_dropout_backward(void *din, const void *dout, i64 n, u64 seed, u64 threshold,
                                               float inv, int keepAll, int dt) {
  PT_FOR(i, n) {
    if (keepAll || pt_dropout_keep(seed, i, threshold)) {
      float d = pt_ld(din, dt, 0, i);
      d += pt_ld(dout, dt, 1, i) * inv;
      pt_st(din, dt, 0, i, d);
    }
  }
}
