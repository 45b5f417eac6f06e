// sumsquares.cu: out[0] = sum in[i]^2 in double, in two deterministic
// stages: a fixed grid (chosen by the host from n alone) writes one partial
// sum per block, then one block adds the partials in order. The result is
// the same bits on every run and every GPU of the same kind.
#include "common.cuh"

extern "C" __global__ void pt_sumsq_partial(double *partial, const float *in, i64 n) {
  __shared__ double red[32];
  double acc = 0.0;
  PT_FOR(i, n) {
    const double x = (double)in[i];
    acc += x * x;
  }
  acc = pt_block_sum_d(acc, red);
  if (threadIdx.x == 0) partial[blockIdx.x] = acc;
}

extern "C" __global__ void pt_sumsq_final(float *out, const double *partial, int np) {
  __shared__ double red[32];
  double acc = 0.0;
  for (int i = threadIdx.x; i < np; i += blockDim.x) acc += partial[i];
  acc = pt_block_sum_d(acc, red);
  if (threadIdx.x == 0) out[0] = (float)acc;
}
