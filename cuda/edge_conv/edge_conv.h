// Torch-free CUDA launchers of cosine_topk and edge_conv_max, called by csrc/edge_conv/edge_conv_cuda.cpp.
//
// The GEMMs run in the binding (cuBLAS through torch's mm/bmm); these kernels are the epilogues and the
// data movement around them. Every pointer is to contiguous device memory; work is enqueued on `stream`;
// each launcher returns the first launch error (or cudaSuccess) and none synchronises. Launchers of ten
// or more arguments take a params struct (filled by name in the binding). No atomics on
// values: every sum is taken by one thread in a fixed order, so results are deterministic.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/core/dtype.h"

namespace facekernels::cuda {

// ---- cosine_topk --------------------------------------------------------------------------------

// inv[b * n + i] = 1 / max(|x[b, :, i]|, 1e-12) in float64, x [batch, channels, n].
cudaError_t edge_inverse_norms(const void* x, int64_t batch, int64_t channels, int64_t n, double* inv, DType dtype,
                               cudaStream_t stream);

// Per row of a block of rows: a list of at most k (similarity, index) entries sorted best first
// (float64 similarity descending, index ascending), and its length (zeroed at the start of the block).
struct TopkLists {
  int64_t k;
  double* value;  // [rows, k]
  int32_t* index; // [rows, k]
  int32_t* size;  // [rows]
};

// The columns of one batch element: x [C, N] and y [C, M] (element (c, i) at x[c * N + i]) with their
// inverse norms; margin >= 2 x the error bound of a tile value after scaling.
struct TopkColumns {
  const void* x;
  const void* y;
  int64_t channels, n, m;
  const double* inv_x;
  const double* inv_y;
  float margin;
};

// Offers the tile sim [rows, cols] (dtype; raw dot products of x's columns n0 .. against y's columns
// c0 ..) to the lists: a column whose scaled tile value is within margin of the row's k-th similarity
// has its similarity recomputed in float64 from x and y, and that is what the list holds. A warp per row.
cudaError_t cosine_topk_tile(const void* sim, const TopkColumns& columns, int64_t n0, int64_t rows, int64_t c0,
                             int64_t cols, const TopkLists& lists, DType dtype, cudaStream_t stream);

// values / indices [rows, k] (values in dtype, indices int64) from the lists; a short list (NaN
// similarities only) is padded with NaN and -1.
cudaError_t cosine_topk_finish(const TopkLists& lists, int64_t rows, void* values, int64_t* indices, DType dtype,
                               cudaStream_t stream);

// ---- edge_conv_max ------------------------------------------------------------------------------

// *first_bad (one unsigned 64-bit value, set to count by the caller) receives the smallest flat position
// of idx whose value is outside [0, n), if any.
cudaError_t edge_index_check(const int64_t* idx, int64_t count, int64_t n, unsigned long long* first_bad,
                             cudaStream_t stream);

// skip[b * k + j] = 1 when idx[b, :, j] equals idx[b, :, q] for some q < j, else 0.
cudaError_t edge_duplicate_neighbours(const int64_t* idx, int64_t batch, int64_t n, int64_t k, uint8_t* skip,
                                      cudaStream_t stream);

// (w_self - w_edge)^T and w_edge^T as float32 [N, M], from w_self / w_edge [M, N] (dtype) of any strides
// (elements).
struct EdgeTransposeParams {
  const void* w_self;
  int64_t s0, s1;
  const void* w_edge;
  int64_t e0, e1;
  int64_t m, n;
  float* self_minus_edge_t;
  float* edge_t;
};
cudaError_t edge_transpose_weights(const EdgeTransposeParams& params, DType dtype, cudaStream_t stream);

// wcat [bc, N, kj M] (dtype) for batch elements b0 .. b0 + bc - 1 and neighbours j0 .. j0 + kj - 1:
// W_j[p, m] = (w_self - w_edge)[m, p] + sum_{n: idx[b, n, j] = p} w_edge[m, n], summed in float32 in
// `scratch` ([bc, N, kj M] float32; may alias wcat when dtype is float32). idx [B, N, k].
struct EdgeBuildParams {
  const float* self_minus_edge_t;  // [N, M]
  const float* edge_t;             // [N, M]
  const int64_t* idx;
  int64_t b0, bc, n, m, k, j0, kj;
  float* scratch;
  void* wcat;
};
cudaError_t edge_build_weights(const EdgeBuildParams& params, DType dtype, cudaStream_t stream);

// Running max over a group (neighbours j0 .. j0 + kj - 1 of k): z [bc, C, kj M] (dtype) into best / arg
// [bc, C, M] (float32 / int32); skip [bc, k]. On the last group (bias nullable): out = ReLU(best + bias)
// in dtype, arg = -1 where the max is <= 0.
struct EdgeMaxGroupParams {
  const void* z;
  int64_t bc, c, m, k, j0, kj;
  const uint8_t* skip;
  float* best;
  int32_t* arg;
  bool last;
  const void* bias;
  void* out;
};
cudaError_t edge_max_group(const EdgeMaxGroupParams& params, DType dtype, cudaStream_t stream);

// dz [bc, C, kj M] (dtype): grad [bc, C, M] routed to winner (neighbours j0 .. j0 + kj - 1), zero elsewhere.
struct EdgeRouteParams {
  const void* grad;
  const int32_t* winner;
  int64_t bc, c, m, j0, kj;
  void* dz;
};
cudaError_t edge_route_gradient(const EdgeRouteParams& params, DType dtype, cudaStream_t stream);

// grad_bias[m] = sum over b, c of grad where winner >= 0 (dtype), [B, C, M] inputs.
cudaError_t edge_bias_gradient(const void* grad, const int32_t* winner, int64_t batch, int64_t c, int64_t m,
                               void* grad_bias, DType dtype, cudaStream_t stream);

// accum[i] += part[i] (float32 += dtype).
cudaError_t edge_accumulate(float* accum, const void* part, int64_t count, DType dtype, cudaStream_t stream);

// From dwcat [bc, N, kj M] (dtype): gd[p, m] += sum_{b, j} dwcat[b, p, j M + m] and
// ge[n, m] += sum_{b, j} dwcat[b, idx[b0 + b, n, j], j M + m] (float32 [N, M]).
struct EdgeWeightGradParams {
  const void* dwcat;
  const int64_t* idx;
  int64_t b0, bc, n, m, k, j0, kj;
  float* gd;
  float* ge;
};
cudaError_t edge_accumulate_weight_grads(const EdgeWeightGradParams& params, DType dtype, cudaStream_t stream);

// out[i] = accum[i] in dtype.
cudaError_t edge_convert(const float* accum, int64_t count, void* out, DType dtype, cudaStream_t stream);

// grad_self[m, n] = gd[n, m], grad_edge[m, n] = ge[n, m] - gd[n, m] (dtype, [M, N]).
cudaError_t edge_finish_weight_grads(const float* gd, const float* ge, int64_t n, int64_t m, void* grad_self,
                                     void* grad_edge, DType dtype, cudaStream_t stream);

}  // namespace facekernels::cuda
