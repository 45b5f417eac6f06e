// embedding.cu: Embedding and EmbeddingBackward. Tokens were checked to be
// in [0, vocab) on the host.
#include "common.cuh"

// out[i, :] = table[tokens[i], :]; out [ntok, dim], table [vocab, dim].
extern "C" __global__ void pt_embedding(float *out, const float *table, const int *tokens, i64 ntok, int dim) {
  PT_FOR(e, ntok * dim) {
    const i64 i = e / dim;
    const int d = (int)(e - i * dim);
    out[e] = table[(i64)tokens[i] * dim + d];
  }
}

// dTable[tokens[i], :] += dOut[i, :]. A token may repeat, so each thread owns
// one column of every row and adds the tokens in order: no atomics, no two
// writers of one element, and a fixed summation order (deterministic).
extern "C" __global__ void pt_embedding_backward(float *dtable, const float *dout, const int *tokens, int ntok, int dim) {
  for (int d = blockIdx.x * blockDim.x + threadIdx.x; d < dim; d += gridDim.x * blockDim.x) {
    for (int i = 0; i < ntok; i++) {
      dtable[(i64)tokens[i] * dim + d] += dout[(i64)i * dim + d];
    }
  }
}

// Embedding from a bf16 table (frozen base embeddings stored in bf16): the
// same gather, widening each element to float32 ...
extern "C" __global__ void pt_embedding_bf16(float *out, const unsigned short *table, const int *tokens, i64 ntok, int dim) {
  PT_FOR(e, ntok * dim) {
    const i64 i = e / dim;
    const int d = (int)(e - i * dim);
    out[e] = pt_bf16_to_f32(table[(i64)tokens[i] * dim + d]);
  }
}

// ... or copying the bf16 bits as they are into a bf16 out.
extern "C" __global__ void pt_embedding_bf16_bf16(unsigned short *out, const unsigned short *table, const int *tokens, i64 ntok, int dim) {
  PT_FOR(e, ntok * dim) {
    const i64 i = e / dim;
    const int d = (int)(e - i * dim);
    out[e] = table[(i64)tokens[i] * dim + d];
  }
}
