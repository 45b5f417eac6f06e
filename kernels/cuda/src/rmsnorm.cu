// rmsnorm.cu: RMSNorm and its backward. One block per row for the row
// reductions; the weight gradient is a column reduction, one thread per
// column summing the rows in order in double.
#include "common.cuh"

// rstd[r] = 1/sqrt(mean(in[r,:]^2) + eps); out[r,:] = in[r,:] * rstd[r] * w.
// out may alias in: the row is fully read (reduction, barrier) before any
// thread writes, and each element is written by the thread that read it.
extern "C" __global__ void pt_rmsnorm(float *out, float *rstd, const float *in, const float *w,
                                      int rows, int dim, float eps) {
  __shared__ float red[32];
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *x = in + (i64)r * dim;
    float ss = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) ss += x[i] * x[i];
    ss = pt_block_sum(ss, red);
    const float rs = (float)(1.0 / sqrt((double)ss / dim + (double)eps));
    if (threadIdx.x == 0) rstd[r] = rs;
    float *o = out + (i64)r * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) o[i] = x[i] * rs * w[i];
  }
}

// din[r,i] += rs*w_i*g_i - x_i * rs^3/dim * sum_j g_j*w_j*x_j.
// din may alias dout or in: same argument as pt_rmsnorm.
extern "C" __global__ void pt_rmsnorm_backward_dx(float *din, const float *dout, const float *in, const float *w,
                                                  const float *rstd, int rows, int dim) {
  __shared__ float red[32];
  for (int r = blockIdx.x; r < rows; r += gridDim.x) {
    const float *g = dout + (i64)r * dim;
    const float *x = in + (i64)r * dim;
    float dot = 0.0f;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) dot += g[i] * w[i] * x[i];
    dot = pt_block_sum(dot, red);
    const float rs = rstd[r];
    const float coef = (float)((double)rs * rs * rs * dot / dim);
    float *d = din + (i64)r * dim;
    for (int i = threadIdx.x; i < dim; i += blockDim.x) d[i] += rs * w[i] * g[i] - x[i] * coef;
  }
}

// dw[i] += sum_r dout[r,i] * in[r,i] * rstd[r].
extern "C" __global__ void pt_rmsnorm_backward_dw(float *dw, const float *dout, const float *in, const float *rstd,
                                                  int rows, int dim) {
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < dim; i += gridDim.x * blockDim.x) {
    double acc = 0.0;
    for (int r = 0; r < rows; r++) {
      const i64 e = (i64)r * dim + i;
      acc += (double)dout[e] * (double)in[e] * (double)rstd[r];
    }
    dw[i] += (float)acc;
  }
}
