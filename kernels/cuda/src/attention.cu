// attention.cu: causal grouped-query attention, flash-attention style: the
// forward keeps only each query row's log-sum-exp, and the backward
// recomputes the probabilities from it. Nothing of size [seq, seq] is stored.
//
// Layouts (row-major):
//   q, out, dq, dout  [B, T, H, D]      k, v, dk, dv  [B, T, KV, D]
//   lse, dsum         [B, H, T]
// Query head h reads kv head h / (H/KV). Scores are scaled by `scale`
// (1/sqrt(D), from the host).
//
// Work split. A block is PT_AT_WARPS warps. In the forward and the dQ pass
// each warp owns one query row and walks the keys j <= i in tiles of
// PT_AT_TILE keys staged in shared memory: lane t scores key j0+t, the
// softmax statistics are warp reductions, and for the D-long vectors lane
// owns elements d = lane + 32*r (r < PT_AT_MAXR, so D <= 256). In the dK/dV
// pass each warp owns one key row and walks the queries i >= j of every
// head of its group in tiles staged the same way. Every output element has
// exactly one writer, and its sum runs in a fixed order: no atomics, and
// results do not depend on scheduling.
//
// Shared memory is dynamic; the host computes the same sizes (see
// attention.go) and opts in above 48 KiB when D is large.
#include "common.cuh"

#define PT_AT_WARPS 8
#define PT_AT_TILE 32
#define PT_AT_MAXR 8

// forward. grid (ceil(T/PT_AT_WARPS), H, B), block 32*PT_AT_WARPS.
// shared: Ks, Vs [PT_AT_TILE][D+1], Qs [PT_AT_WARPS][D].
extern "C" __global__ void pt_attention_fwd(float *out, float *lse, const float *q, const float *k, const float *v,
                                            int T, int H, int KV, int D, float scale) {
  extern __shared__ float sm[];
  const int ld = D + 1;  // padded rows: lane t reading row t hits distinct banks
  float *Ks = sm;
  float *Vs = Ks + PT_AT_TILE * ld;
  float *Qs = Vs + PT_AT_TILE * ld;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
  const int i0 = blockIdx.x * PT_AT_WARPS;
  const int i = i0 + warp;
  const bool active = i < T;
  const int iLast = min(T, i0 + PT_AT_WARPS) - 1;
  const i64 ldq = (i64)H * D, ldk = (i64)KV * D;
  const float *qb = q + (i64)b * T * ldq + (i64)h * D;
  const float *kb = k + (i64)b * T * ldk + (i64)g * D;
  const float *vb = v + (i64)b * T * ldk + (i64)g * D;

  float *qrow = Qs + warp * D;
  for (int d = lane; d < D; d += 32) qrow[d] = active ? qb[(i64)i * ldq + d] : 0.0f;

  float m = PT_NEG_INF, l = 0.0f;
  float acc[PT_AT_MAXR];
#pragma unroll
  for (int r = 0; r < PT_AT_MAXR; r++) acc[r] = 0.0f;

  for (int j0 = 0; j0 <= iLast; j0 += PT_AT_TILE) {
    __syncthreads();  // the previous tile is consumed (and qrow written, on the first pass)
    for (int e = threadIdx.x; e < PT_AT_TILE * D; e += blockDim.x) {
      const int t = e / D, d = e - t * D, j = j0 + t;
      float kv = 0.0f, vv = 0.0f;
      if (j < T) {
        kv = kb[(i64)j * ldk + d];
        vv = vb[(i64)j * ldk + d];
      }
      Ks[t * ld + d] = kv;
      Vs[t * ld + d] = vv;
    }
    __syncthreads();
    if (active && j0 <= i) {  // uniform within the warp
      const int j = j0 + lane;
      float s = PT_NEG_INF;
      if (j <= i) {
        const float *kr = Ks + lane * ld;
        float dot = 0.0f;
        for (int d = 0; d < D; d++) dot += qrow[d] * kr[d];
        s = dot * scale;
      }
      const float mNew = fmaxf(m, pt_warp_max(s));  // finite: key j0 <= i is in the tile
      const float p = j <= i ? expf(s - mNew) : 0.0f;
      const float alpha = expf(m - mNew);  // 0 on the first tile (m = -inf)
      l = l * alpha + pt_warp_sum(p);
      m = mNew;
#pragma unroll
      for (int r = 0; r < PT_AT_MAXR; r++) acc[r] *= alpha;
      const int nt = min(PT_AT_TILE, i - j0 + 1);
      for (int t = 0; t < nt; t++) {
        const float pt = __shfl_sync(PT_FULL_MASK, p, t);
        const float *vr = Vs + t * ld;
#pragma unroll
        for (int r = 0; r < PT_AT_MAXR; r++) {
          const int d = lane + 32 * r;
          if (d < D) acc[r] += pt * vr[d];
        }
      }
    }
  }
  if (active) {
    const float inv = 1.0f / l;
    float *o = out + (i64)b * T * ldq + (i64)i * ldq + (i64)h * D;
#pragma unroll
    for (int r = 0; r < PT_AT_MAXR; r++) {
      const int d = lane + 32 * r;
      if (d < D) o[d] = acc[r] * inv;
    }
    if (lane == 0) lse[((i64)b * H + h) * T + i] = m + logf(l);
  }
}

// dsum[b,h,i] = sum_d dout[b,i,h,d] * out[b,i,h,d], one warp per row, in double.
extern "C" __global__ void pt_attention_dsum(float *dsum, const float *dout, const float *out, int B, int T, int H,
                                             int D) {
  const int lane = threadIdx.x & 31;
  const i64 nrows = (i64)B * T * H;
  const i64 wpb = blockDim.x >> 5;
  for (i64 row = (i64)blockIdx.x * wpb + (threadIdx.x >> 5); row < nrows; row += (i64)gridDim.x * wpb) {
    // row enumerates (b, i, h) in memory order of dout/out.
    const float *x = dout + row * D, *y = out + row * D;
    double acc = 0.0;
    for (int d = lane; d < D; d += 32) acc += (double)x[d] * (double)y[d];
    acc = pt_warp_sum_d(acc);
    if (lane == 0) {
      const int h = (int)(row % H);
      const i64 bi = row / H;
      const int i = (int)(bi % T);
      const int b = (int)(bi / T);
      dsum[((i64)b * H + h) * T + i] = (float)acc;
    }
  }
}

// dQ pass. grid (ceil(T/PT_AT_WARPS), H, B). For query row i and keys j <= i:
//   p_j = exp(scale*q_i.k_j - lse_i), dp_j = dout_i.v_j, ds_j = p_j*(dp_j - dsum_i),
//   dq_i += scale * sum_j ds_j k_j.
// shared: Ks, Vs [PT_AT_TILE][D+1], Qs, dOs [PT_AT_WARPS][D].
extern "C" __global__ void pt_attention_bwd_dq(float *dq, const float *dout, const float *q, const float *k,
                                               const float *v, const float *lse, const float *dsum, int T, int H,
                                               int KV, int D, float scale) {
  extern __shared__ float sm[];
  const int ld = D + 1;
  float *Ks = sm;
  float *Vs = Ks + PT_AT_TILE * ld;
  float *Qs = Vs + PT_AT_TILE * ld;
  float *dOs = Qs + PT_AT_WARPS * D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = blockIdx.z, h = blockIdx.y, g = h / (H / KV);
  const int i0 = blockIdx.x * PT_AT_WARPS;
  const int i = i0 + warp;
  const bool active = i < T;
  const int iLast = min(T, i0 + PT_AT_WARPS) - 1;
  const i64 ldq = (i64)H * D, ldk = (i64)KV * D;
  const i64 qoff = (i64)b * T * ldq + (i64)i * ldq + (i64)h * D;
  const float *kb = k + (i64)b * T * ldk + (i64)g * D;
  const float *vb = v + (i64)b * T * ldk + (i64)g * D;

  float *qrow = Qs + warp * D, *dorow = dOs + warp * D;
  for (int d = lane; d < D; d += 32) {
    qrow[d] = active ? q[qoff + d] : 0.0f;
    dorow[d] = active ? dout[qoff + d] : 0.0f;
  }
  const i64 li = ((i64)b * H + h) * T + i;
  const float Li = active ? lse[li] : 0.0f;
  const float Di = active ? dsum[li] : 0.0f;

  float acc[PT_AT_MAXR];
#pragma unroll
  for (int r = 0; r < PT_AT_MAXR; r++) acc[r] = 0.0f;

  for (int j0 = 0; j0 <= iLast; j0 += PT_AT_TILE) {
    __syncthreads();
    for (int e = threadIdx.x; e < PT_AT_TILE * D; e += blockDim.x) {
      const int t = e / D, d = e - t * D, j = j0 + t;
      float kv = 0.0f, vv = 0.0f;
      if (j < T) {
        kv = kb[(i64)j * ldk + d];
        vv = vb[(i64)j * ldk + d];
      }
      Ks[t * ld + d] = kv;
      Vs[t * ld + d] = vv;
    }
    __syncthreads();
    if (active && j0 <= i) {
      const int j = j0 + lane;
      float ds = 0.0f;
      if (j <= i) {
        const float *kr = Ks + lane * ld, *vr = Vs + lane * ld;
        float s = 0.0f, dp = 0.0f;
        for (int d = 0; d < D; d++) {
          s += qrow[d] * kr[d];
          dp += dorow[d] * vr[d];
        }
        const float p = expf(s * scale - Li);
        ds = p * (dp - Di);
      }
      const int nt = min(PT_AT_TILE, i - j0 + 1);
      for (int t = 0; t < nt; t++) {
        const float dst = __shfl_sync(PT_FULL_MASK, ds, t);
        const float *kr = Ks + t * ld;
#pragma unroll
        for (int r = 0; r < PT_AT_MAXR; r++) {
          const int d = lane + 32 * r;
          if (d < D) acc[r] += dst * kr[d];
        }
      }
    }
  }
  if (active) {
#pragma unroll
    for (int r = 0; r < PT_AT_MAXR; r++) {
      const int d = lane + 32 * r;
      if (d < D) dq[qoff + d] += scale * acc[r];
    }
  }
}

// dK/dV pass. grid (ceil(T/PT_AT_WARPS), KV, B). For key row j of kv head g,
// over the heads h of its group and the queries i >= j:
//   p = exp(scale*q_i.k_j - lse_{h,i}), dv_j += p * dout_i,
//   ds = p*(dout_i.v_j - dsum_{h,i}),   dk_j += scale * ds * q_i.
// dk or dv may be NULL (not needed).
// shared: Qs, dOs [PT_AT_TILE][D+1], Ls, Ds [PT_AT_TILE], Kw, Vw [PT_AT_WARPS][D].
extern "C" __global__ void pt_attention_bwd_dkv(float *dk, float *dv, const float *dout, const float *q,
                                                const float *k, const float *v, const float *lse,
                                                const float *dsum, int T, int H, int KV, int D, float scale) {
  extern __shared__ float sm[];
  const int ld = D + 1;
  float *Qs = sm;
  float *dOs = Qs + PT_AT_TILE * ld;
  float *Ls = dOs + PT_AT_TILE * ld;
  float *Ds = Ls + PT_AT_TILE;
  float *Kw = Ds + PT_AT_TILE;
  float *Vw = Kw + PT_AT_WARPS * D;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const int b = blockIdx.z, g = blockIdx.y, rep = H / KV;
  const int jFirst = blockIdx.x * PT_AT_WARPS;
  const int j = jFirst + warp;
  const bool active = j < T;
  const i64 ldq = (i64)H * D, ldk = (i64)KV * D;
  const i64 koff = (i64)b * T * ldk + (i64)j * ldk + (i64)g * D;

  float *krow = Kw + warp * D, *vrow = Vw + warp * D;
  for (int d = lane; d < D; d += 32) {
    krow[d] = active ? k[koff + d] : 0.0f;
    vrow[d] = active ? v[koff + d] : 0.0f;
  }

  float accK[PT_AT_MAXR], accV[PT_AT_MAXR];
#pragma unroll
  for (int r = 0; r < PT_AT_MAXR; r++) {
    accK[r] = 0.0f;
    accV[r] = 0.0f;
  }

  for (int hh = 0; hh < rep; hh++) {
    const int h = g * rep + hh;
    const float *qb = q + (i64)b * T * ldq + (i64)h * D;
    const float *ob = dout + (i64)b * T * ldq + (i64)h * D;
    const i64 lb = ((i64)b * H + h) * T;
    for (int i0 = jFirst; i0 < T; i0 += PT_AT_TILE) {
      __syncthreads();  // the previous tile is consumed (and krow/vrow written, on the first pass)
      for (int e = threadIdx.x; e < PT_AT_TILE * D; e += blockDim.x) {
        const int t = e / D, d = e - t * D, i = i0 + t;
        float qv = 0.0f, ov = 0.0f;
        if (i < T) {
          qv = qb[(i64)i * ldq + d];
          ov = ob[(i64)i * ldq + d];
        }
        Qs[t * ld + d] = qv;
        dOs[t * ld + d] = ov;
      }
      for (int t = threadIdx.x; t < PT_AT_TILE; t += blockDim.x) {
        const int i = i0 + t;
        Ls[t] = i < T ? lse[lb + i] : 0.0f;
        Ds[t] = i < T ? dsum[lb + i] : 0.0f;
      }
      __syncthreads();
      if (active) {
        const int i = i0 + lane;
        float p = 0.0f, ds = 0.0f;
        if (i < T && i >= j) {
          const float *qr = Qs + lane * ld, *orow = dOs + lane * ld;
          float s = 0.0f, dp = 0.0f;
          for (int d = 0; d < D; d++) {
            s += qr[d] * krow[d];
            dp += orow[d] * vrow[d];
          }
          p = expf(s * scale - Ls[lane]);
          ds = p * (dp - Ds[lane]);
        }
        const int nt = min(PT_AT_TILE, T - i0);
        for (int t = 0; t < nt; t++) {
          const float pt = __shfl_sync(PT_FULL_MASK, p, t);
          const float dst = __shfl_sync(PT_FULL_MASK, ds, t);
          const float *qr = Qs + t * ld, *orow = dOs + t * ld;
#pragma unroll
          for (int r = 0; r < PT_AT_MAXR; r++) {
            const int d = lane + 32 * r;
            if (d < D) {
              accV[r] += pt * orow[d];
              accK[r] += dst * qr[d];
            }
          }
        }
      }
    }
  }
  if (active) {
#pragma unroll
    for (int r = 0; r < PT_AT_MAXR; r++) {
      const int d = lane + 32 * r;
      if (d < D) {
        if (dk != 0) dk[koff + d] += scale * accK[r];
        if (dv != 0) dv[koff + d] += accV[r];
      }
    }
  }
}
