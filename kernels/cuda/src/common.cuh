// common.cuh: helpers shared by every peertune kernel. NVRTC receives it as
// a header (nvrtcCreateProgram's headers/includeNames), so each .cu file
// includes it by name; no system header is used anywhere.
//
// Conventions of every kernel:
//   - extern "C" names (no C++ mangling), prefixed pt_, looked up by name.
//   - Element counts and offsets are 64-bit (i64) wherever a product of
//     sizes can exceed 2^31.
//   - Pointers may be at any element offset (buffers are views): 4-byte
//     aligned for float32, only 2-byte aligned for bf16, so no kernel uses
//     vector loads that need more alignment.
//   - Elementwise kernels use grid-stride loops, so any grid size is correct.
#ifndef PT_COMMON_CUH
#define PT_COMMON_CUH

typedef long long i64;
typedef unsigned long long u64;

#define PT_FULL_MASK 0xffffffffu
#define PT_IGNORE_INDEX (-100)
// -inf without math.h (NVRTC has no system headers).
#define PT_NEG_INF __int_as_float(0xff800000)

// Grid-stride loop over [0, n).
#define PT_FOR(i, n) \
  for (i64 i = (i64)blockIdx.x * blockDim.x + threadIdx.x; i < (n); i += (i64)gridDim.x * blockDim.x)

__device__ __forceinline__ float pt_warp_sum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(PT_FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ double pt_warp_sum_d(double v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(PT_FULL_MASK, v, o);
  return v;
}

__device__ __forceinline__ float pt_warp_max(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(PT_FULL_MASK, v, o));
  return v;
}

// Block-wide sum; every thread of the block must call it and gets the
// result. blockDim.x is a multiple of 32 (at most 1024); scratch holds 32
// values. The leading barrier lets a block call it several times in a row
// with the same scratch.
__device__ __forceinline__ float pt_block_sum(float v, float *scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = pt_warp_sum(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nw ? scratch[lane] : 0.0f;
    v = pt_warp_sum(v);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

__device__ __forceinline__ double pt_block_sum_d(double v, double *scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = pt_warp_sum_d(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nw ? scratch[lane] : 0.0;
    v = pt_warp_sum_d(v);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

__device__ __forceinline__ float pt_block_max(float v, float *scratch) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
  v = pt_warp_max(v);
  __syncthreads();
  if (lane == 0) scratch[warp] = v;
  __syncthreads();
  if (warp == 0) {
    v = lane < nw ? scratch[lane] : PT_NEG_INF;
    v = pt_warp_max(v);
    if (lane == 0) scratch[0] = v;
  }
  __syncthreads();
  return scratch[0];
}

// bfloat16 is the upper half of a float32. Conversions by bit manipulation
// (no cuda_bf16.h needed): round to nearest even, NaN kept quiet.
__device__ __forceinline__ float pt_bf16_to_f32(unsigned short h) {
  return __uint_as_float(((unsigned int)h) << 16);
}
__device__ __forceinline__ unsigned short pt_f32_to_bf16(float f) {
  unsigned int u = __float_as_uint(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)((u >> 16) | 0x40u);  // NaN
  u += 0x7fffu + ((u >> 16) & 1u);
  return (unsigned short)(u >> 16);
}

// Arguments that may be float32 or bfloat16 ("void *" in a kernel's
// parameters): bit k of the kernel's dt argument says that its parameter k
// (counting from 0, every parameter) is bf16. Values are loaded widened to
// float32, computed in float32 and rounded once when stored, so a kernel's
// result on bf16 buffers is bit for bit its float32 result on the bf16
// values, rounded: what staging through float32 copies gives, without the
// extra passes over memory. dt is the same for every thread of a launch, so
// the branch costs no divergence.
__device__ __forceinline__ float pt_ld(const void *p, int dt, int k, i64 i) {
  return (dt >> k) & 1 ? pt_bf16_to_f32(((const unsigned short *)p)[i]) : ((const float *)p)[i];
}
__device__ __forceinline__ void pt_st(void *p, int dt, int k, i64 i, float v) {
  if ((dt >> k) & 1) {
    ((unsigned short *)p)[i] = pt_f32_to_bf16(v);
  } else {
    ((float *)p)[i] = v;
  }
}

#endif  // PT_COMMON_CUH
