// elementwise.cu: Add, Scale, the bias of Matmul and its gradient (column
// sums), and the bf16 <-> f32 conversions. Zero and Copy use the driver's
// memset/memcpy. out may alias a or b: every element is read before it is
// written by the same thread.
#include "common.cuh"

// out[i] = a[i] + b[i]; any argument f32 or bf16 (dt bits 0-2).
extern "C" __global__ void pt_add(void *out, const void *a, const void *b, i64 n, int dt) {
  PT_FOR(i, n) { pt_st(out, dt, 0, i, pt_ld(a, dt, 1, i) + pt_ld(b, dt, 2, i)); }
}

// x[i] *= s
extern "C" __global__ void pt_scale(float *x, float s, i64 n) {
  PT_FOR(i, n) { x[i] *= s; }
}

// out[r, c] += bias[c] for out [rows, cols].
extern "C" __global__ void pt_bias_add(float *out, const float *bias, i64 rows, int cols) {
  PT_FOR(i, rows * cols) { out[i] += bias[i % cols]; }
}

// dst[c] += sum_r src[r, c] for src [rows, cols]: one thread per column,
// summing the rows in order in double (deterministic, no atomics).
extern "C" __global__ void pt_col_sums(float *dst, const float *src, int rows, int cols) {
  for (int c = blockIdx.x * blockDim.x + threadIdx.x; c < cols; c += gridDim.x * blockDim.x) {
    double acc = 0.0;
    for (int r = 0; r < rows; r++) acc += (double)src[(i64)r * cols + c];
    dst[c] += (float)acc;
  }
}

// Conversions for bf16 buffers (storage of activations and frozen weights).
extern "C" __global__ void pt_cvt_f32_to_bf16(unsigned short *out, const float *in, i64 n) {
  PT_FOR(i, n) { out[i] = pt_f32_to_bf16(in[i]); }
}
extern "C" __global__ void pt_cvt_bf16_to_f32(float *out, const unsigned short *in, i64 n) {
  PT_FOR(i, n) { out[i] = pt_bf16_to_f32(in[i]); }
}
