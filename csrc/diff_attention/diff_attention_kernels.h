// Torch-free CPU epilogues of diff_attention: the row-wise softmax work on one tile of scores. The GEMMs
// (scores, P V and the backward's products) run in the CPU driver through torch's BLAS; see
// diff_attention_cpu.cpp for the algorithm. Every kernel here works on one tile on the calling thread.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

// One tile: `rows` query rows (queries q0 .. q0 + rows - 1) against `cols` keys (keys k0 .. k0 + cols - 1),
// every buffer row-major with leading dimension `cols`. Raw scores are s = q . k (unscaled); the logit is
// s * scale. With `causal`, key j is visible to query i only when j <= i; a masked entry contributes
// nothing and every P / dS written for it is 0. Every row has at least one visible key in the tile
// whenever the kernels below are called with `single_block` (the CPU driver guarantees it).
template <typename T>
struct DiffTile {
  T* s1;         // scores of map 1 [rows, cols]
  T* s2;         // scores of map 2
  T* dpv;        // backward: dO V^T [rows, cols]
  int64_t rows, cols, q0, k0;
  bool causal;
  T scale, lam;
};

template <typename T>
struct DiffAttentionKernels {
  // Forward, whole key range in one tile: P = softmax(s1 * scale) - lam softmax(s2 * scale) written over
  // s1 (0 where masked); lse1[r], lse2[r] receive the rows' log-sum-exp of the logits.
  void (*forward_single)(const DiffTile<T>&, T* lse1, T* lse2);
  // Forward, key-blocked pass 1: running row maxima m and sums l (sum exp(logit - m)) of both maps,
  // updated with this block (m = -inf, l = 0 before the first block).
  void (*forward_stats)(const DiffTile<T>&, T* m1, T* l1, T* m2, T* l2);
  // Forward, key-blocked pass 2: P = exp(logit1 - lse1) - lam exp(logit2 - lse2) over s1.
  void (*forward_probs)(const DiffTile<T>&, const T* lse1, const T* lse2);
  // Backward pass A: P_i = exp(logit_i - lse_i); d1[r] += sum_j P1 dPV, d2[r] += sum_j P2 dPV. With
  // `store`, P1 and P2 are written over s1 and s2 (then pass B is called with `stored`).
  void (*backward_rowsums)(const DiffTile<T>&, const T* lse1, const T* lse2, double* d1, double* d2, bool store);
  // Backward pass B, with the complete d1, d2: s1 := scale P1 (dPV - d1), s2 := -lam scale P2 (dPV - d2)
  // (the scaled dS of each map) and dpv := P1 - lam P2. P is read from s1/s2 when `stored`, else
  // recomputed from the scores and lse.
  void (*backward_grads)(const DiffTile<T>&, const T* lse1, const T* lse2, const double* d1, const double* d2,
                         bool stored);
  // dst[i] += src[i] for i < n (the accumulation of GEMM results into dK, dV, dQ).
  void (*add)(T* dst, const T* src, int64_t n);
};

// One table per dtype (float, double) and SIMD level; the driver takes the current level's with
// FK_CPU_KERNEL_TABLE(cpu::diff_attention_kernels, T).
FK_DECLARE_CPU_KERNEL_TABLE(DiffAttentionKernels, diff_attention_kernels)

}  // namespace facekernels::cpu
