// rope.cu: rotary position embedding, Hugging Face's rotate-half layout.
// cos/sin come from a table [positions, headDim/2] that the host computes in
// float64 exactly as the CPU backend does, so both backends rotate by the
// same float32 cos/sin values.
#include "common.cuh"

// x, out [rows, heads, headDim]; pos [rows]. For j < half:
//   out[j] = x[j]*c - x[j+half]*s;  out[j+half] = x[j+half]*c + x[j]*s.
// out may alias in: one thread reads both halves of its pair, then writes them.
// out and in f32 or bf16 (dt bits 0, 1).
extern "C" __global__ void pt_rope(void *out, const void *in, const int *pos, const float *cosT, const float *sinT,
                                   int rows, int heads, int headDim, int dt) {
  const int half = headDim / 2;
  PT_FOR(e, (i64)rows * heads * half) {
    const i64 rh = e / half;
    const int j = (int)(e - rh * half);
    const int r = (int)(rh / heads);
    const i64 t = (i64)pos[r] * half + j;
    const float c = cosT[t], s = sinT[t];
    const i64 base = rh * headDim;
    const float a = pt_ld(in, dt, 1, base + j), b = pt_ld(in, dt, 1, base + j + half);
    pt_st(out, dt, 0, base + j, a * c - b * s);
    pt_st(out, dt, 0, base + j + half, b * c + a * s);
  }
}

// din += rotation of dout by -angle. din and dout f32 or bf16 (dt bits 0, 1).
extern "C" __global__ void pt_rope_backward(void *din, const void *dout, const int *pos, const float *cosT,
                                            const float *sinT, int rows, int heads, int headDim, int dt) {
  const int half = headDim / 2;
  PT_FOR(e, (i64)rows * heads * half) {
    const i64 rh = e / half;
    const int j = (int)(e - rh * half);
    const int r = (int)(rh / heads);
    const i64 t = (i64)pos[r] * half + j;
    const float c = cosT[t], s = sinT[t];
    const i64 base = rh * headDim;
    const float a = pt_ld(dout, dt, 1, base + j), b = pt_ld(dout, dt, 1, base + j + half);
    float d0 = pt_ld(din, dt, 0, base + j), d1 = pt_ld(din, dt, 0, base + j + half);
    d0 += a * c + b * s;
    d1 += b * c - a * s;
    pt_st(din, dt, 0, base + j, d0);
    pt_st(din, dt, 0, base + j + half, d1);
  }
}
