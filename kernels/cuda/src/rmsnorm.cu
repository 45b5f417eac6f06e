// rmsnorm.cu: RMSNorm and its backward. One block per row for the row
// reductions; the weight gradient is a column reduction, one thread per
// column summing the rows in order in double.
#include "common.cuh"

// rstd[r] = 1/sqrt(mean(in[r,:]^2) + eps); out[r,:] = in[r,:] * rstd[r] * w.
// out may alias in: the row is fully read (reduction, barrier) before any
// thread writes, and each element is written by the thread that read it.
// out, in and w f32 or bf16 (dt bits 0, 2, 3); rstd f32.
extern "C" __global__ void pt_rmsnorm(void *out, float *rstd, const void *in, const void *w,
                                      int rows, int dim, float eps, int dt) {
  __shared__ float red[32];
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const i64 row = (i64)r * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
      const float x = pt_ld(in, dt, 2, row + i);
      ss += x * x;
    }
    ss = pt_block_sum(ss, red);
    const float rs = (float)(1.0 / sqrt((double)ss / dim + (double)eps));
    if (threadIdx.x == 0) rstd[r] = rs;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
      pt_st(out, dt, 0, row + i, pt_ld(in, dt, 2, row + i) * rs * pt_ld(w, dt, 3, i));
  }
}

// din[r,i] += rs*w_i*g_i - x_i * rs^3/dim * sum_j g_j*w_j*x_j.
// din may alias dout or in: same argument as pt_rmsnorm. din, dout, in and
// w f32 or bf16 (dt bits 0-3); rstd f32.
extern "C" __global__ void pt_rmsnorm_backward_dx(void *din, const void *dout, const void *in, const void *w,
                                                  const float *rstd, int rows, int dim, int dt) {
  __shared__ float red[32];
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const i64 row = (i64)r * dim;
    float dot = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x)
      dot += pt_ld(dout, dt, 1, row + i) * pt_ld(w, dt, 3, i) * pt_ld(in, dt, 2, row + i);
    dot = pt_block_sum(dot, red);
    const float rs = rstd[r];
    const float coef = (float)((double)rs * rs * rs * dot / dim);
    for (int i = threadIdx.x; i < dim; i += blockDim.x) {
      float d = pt_ld(din, dt, 0, row + i);
      d += rs * pt_ld(w, dt, 3, i) * pt_ld(dout, dt, 1, row + i) - pt_ld(in, dt, 2, row + i) * coef;
      pt_st(din, dt, 0, row + i, d);
    }
  }
}

// dw[i] += sum_r dout[r,i] * in[r,i] * rstd[r]. dout and in f32 or bf16 (dt
// bits 1, 2); dw and rstd f32.
extern "C" __global__ void pt_rmsnorm_backward_dw(float *dw, const void *dout, const void *in, const float *rstd,
                                                  int rows, int dim, int dt) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < dim; i += gridDim.x * blockDim.x) {
    double acc = 0.0;
    for (int r = 0; r < rows; r++) {
      const i64 e = (i64)r * dim + i;
      acc += (double)pt_ld(dout, dt, 1, e) * (double)pt_ld(in, dt, 2, e) * (double)rstd[r];
    }
    dw[i] += (float)acc;
  }
}
