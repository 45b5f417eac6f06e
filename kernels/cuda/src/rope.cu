// rope.cu: rotary position embedding, Hugging Face's rotate-half layout.
// cos/sin come from a table [positions, headDim/2] that the host computes in
// float64 exactly as the CPU backend does, so both backends rotate by the
// same float32 cos/sin values.
#include "common.cuh"

// x, out [rows, heads, headDim]; pos [rows]. For j < half:
//   out[j] = x[j]*c - x[j+half]*s;  out[j+half] = x[j+half]*c + x[j]*s.
// out may alias in: one thread reads both halves of its pair, then writes them.
extern "C" __global__ void pt_rope(float *out, const float *in, const int *pos, const float *cosT, const float *sinT,
                                   int rows, int heads, int headDim) {
  const int half = headDim / 2;
  PT_FOR(e, (i64)rows * heads * half) {
    const i64 rh = e / half;
    const int j = (int)(e - rh * half);
    const int r = (int)(rh / heads);
    const i64 t = (i64)pos[r] * half + j;
    const float c = cosT[t], s = sinT[t];
    const i64 base = rh * headDim;
    const float a = in[base + j], b = in[base + j + half];
    out[base + j] = a * c - b * s;
    out[base + j + half] = b * c + a * s;
  }
}

// din += rotation of dout by -angle.
extern "C" __global__ void pt_rope_backward(float *din, const float *dout, const int *pos, const float *cosT,
                                            const float *sinT, int rows, int heads, int headDim) {
  const int half = headDim / 2;
  PT_FOR(e, (i64)rows * heads * half) {
    const i64 rh = e / half;
    const int j = (int)(e - rh * half);
    const int r = (int)(rh / heads);
    const i64 t = (i64)pos[r] * half + j;
    const float c = cosT[t], s = sinT[t];
    const i64 base = rh * headDim;
    const float a = dout[base + j], b = dout[base + j + half];
    din[base + j] += a * c + b * s;
    din[base + j + half] += b * c - a * s;
  }
}
