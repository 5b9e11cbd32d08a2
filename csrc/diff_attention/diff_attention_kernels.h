// Torch-free CPU epilogues of diff_attention: the row-wise softmax work on one tile of scores. The GEMMs
// (scores, P V and the backward's products) run in the binding through torch's BLAS; see
// diff_attention.cpp for the algorithm. Every kernel here works on one tile on the calling thread.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

// One tile: `rows` query rows (queries q0 .. q0 + rows - 1) against `cols` keys (keys k0 .. k0 + cols - 1),
// every buffer row-major with leading dimension `cols`. Raw scores are s = q . k (unscaled); the logit is
// s * scale. With `causal`, key j is visible to query i only when j <= i; a masked entry contributes
// nothing and every P / dS written for it is 0. Every row has at least one visible key in the tile
// whenever the kernels below are called with `single_block` (the binding guarantees it).
template <typename T>
struct DiffTile {
  T* s1;         // scores of map 1 [rows, cols]
  T* s2;         // scores of map 2
  T* dpv;        // backward: dO V^T [rows, cols]
  int64_t rows, cols, q0, k0;
  bool causal;
  T scale, lam;
};

struct DiffAttentionKernels {
  // Forward, whole key range in one tile: P = softmax(s1 * scale) - lam softmax(s2 * scale) written over
  // s1 (0 where masked); lse1[r], lse2[r] receive the rows' log-sum-exp of the logits.
  void (*forward_single_f32)(const DiffTile<float>&, float* lse1, float* lse2);
  void (*forward_single_f64)(const DiffTile<double>&, double* lse1, double* lse2);
  // Forward, key-blocked pass 1: running row maxima m and sums l (sum exp(logit - m)) of both maps,
  // updated with this block (m = -inf, l = 0 before the first block).
  void (*forward_stats_f32)(const DiffTile<float>&, float* m1, float* l1, float* m2, float* l2);
  void (*forward_stats_f64)(const DiffTile<double>&, double* m1, double* l1, double* m2, double* l2);
  // Forward, key-blocked pass 2: P = exp(logit1 - lse1) - lam exp(logit2 - lse2) over s1.
  void (*forward_probs_f32)(const DiffTile<float>&, const float* lse1, const float* lse2);
  void (*forward_probs_f64)(const DiffTile<double>&, const double* lse1, const double* lse2);
  // Backward pass A: P_i = exp(logit_i - lse_i); d1[r] += sum_j P1 dPV, d2[r] += sum_j P2 dPV. With
  // `store`, P1 and P2 are written over s1 and s2 (then pass B is called with `stored`).
  void (*backward_rowsums_f32)(const DiffTile<float>&, const float* lse1, const float* lse2, double* d1,
                               double* d2, bool store);
  void (*backward_rowsums_f64)(const DiffTile<double>&, const double* lse1, const double* lse2, double* d1,
                               double* d2, bool store);
  // Backward pass B, with the complete d1, d2: s1 := scale P1 (dPV - d1), s2 := -lam scale P2 (dPV - d2)
  // (the scaled dS of each map) and dpv := P1 - lam P2. P is read from s1/s2 when `stored`, else
  // recomputed from the scores and lse.
  void (*backward_grads_f32)(const DiffTile<float>&, const float* lse1, const float* lse2, const double* d1,
                             const double* d2, bool stored);
  void (*backward_grads_f64)(const DiffTile<double>&, const double* lse1, const double* lse2, const double* d1,
                             const double* d2, bool stored);
  // dst[i] += src[i] for i < n (the accumulation of GEMM results into dK, dV, dQ).
  void (*add_f32)(float* dst, const float* src, int64_t n);
  void (*add_f64)(double* dst, const double* src, int64_t n);
};

FK_DECLARE_CPU_KERNELS(const DiffAttentionKernels&, diff_attention_kernels)

}  // namespace facekernels::cpu
