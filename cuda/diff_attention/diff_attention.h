// Torch-free CUDA launchers of diff_attention's row epilogues, called by
// csrc/diff_attention/diff_attention_cuda.cpp (which runs the GEMMs through torch's bmm, i.e. cuBLAS, and
// keeps every tile in float32 whatever the input dtype).
//
// A tile holds `batches` (b, h) pairs (the pairs first_bh .. first_bh + batches - 1) x `rows` query rows
// (queries q0 .. q0 + rows - 1) x `cols` keys (keys 0 .. cols - 1), contiguous [batches, rows, cols]
// float32. Raw scores s are unscaled; the logit is s * scale; with `causal`, key j is visible to query i
// only when j <= i (every row then still sees key 0). lam is float32 [B * H]; lse1, lse2 and row_d2
// are float32 [B * H, queries] (queries = the full T). Work is enqueued on `stream`; each launcher returns
// the first launch error (or cudaSuccess) and never synchronises. Empty tiles launch nothing.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace facekernels::cuda {

struct DiffAttentionTile {
  int64_t first_bh, batches, rows, cols, q0, queries;
  bool causal;
  float scale;
};

// s1 := P = softmax(s1 * scale) - lam softmax(s2 * scale) (0 where masked); lse1, lse2 of the tile's rows.
cudaError_t diff_attention_forward_rows(float* s1, const float* s2, const float* lam, float* lse1, float* lse2,
                                        const DiffAttentionTile& tile, cudaStream_t stream);

// With P_i = exp(s_i * scale - lse_i) and d_i = rowsum(P_i dpv): s1 := scale P1 (dpv - d1),
// s2 := -lam scale P2 (dpv - d2), dpv := P1 - lam P2 (0 where masked); row_d2 receives d2.
cudaError_t diff_attention_backward_rows(float* s1, float* s2, float* dpv, const float* lam, const float* lse1,
                                         const float* lse2, float* row_d2, const DiffAttentionTile& tile,
                                         cudaStream_t stream);

// dst[b * dst_stride + i] += src[b * src_stride + i] for b < batches, i < count (float32).
cudaError_t diff_attention_accumulate(float* dst, int64_t dst_stride, const float* src, int64_t src_stride,
                                      int64_t batches, int64_t count, cudaStream_t stream);

// dlam[bh] = -sum_t row_d2[bh, t] for bh < pairs (float32, a fixed summation order).
cudaError_t diff_attention_lam_gradient(const float* row_d2, int64_t pairs, int64_t queries, float* dlam,
                                        cudaStream_t stream);

}  // namespace facekernels::cuda
