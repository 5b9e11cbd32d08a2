// Torch-free CPU kernels of edge_conv_max, compiled once per SIMD level, one concern per source: the
// epilogues and data movement around the GEMMs the driver (edge_conv_cpu.cpp) runs through torch's BLAS
// (edge_conv_kernels.cpp: the float64 forward and the backward by GEMMs), the routed backward
// (edge_conv_routed_kernels.cpp) and the fused float32 forward with its own GEMM
// (edge_conv_fused_kernels.cpp).
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

// Per batch element b and neighbour j, out_j = X W_j with X = x[b] as [C, N] and
// W_j[p, m] = (w_self - w_edge)[m, p] + sum_{n : idx[b, n, j] = p} w_edge[m, n]   ([N, M]).
// A group of kj neighbours j0 .. j0 + kj - 1 is laid side by side: wcat [N, kj * M].
template <typename T>
struct EdgeWeights {
  const T* self_minus_edge_t;  // [N, M]: (w_self - w_edge)^T
  const T* edge_t;             // [N, M]: w_edge^T
  int64_t n, m;
};

// The fused float32 forward (edge_conv_fused_kernels.cpp): weights packed per block of NR output
// columns, [M / NR][N][NR] (zero padded), and the problem it runs.
struct EdgeFused {
  const float* self_minus_edge_p;  // (w_self - w_edge)^T, packed
  const float* edge_p;             // w_edge^T, packed
  const float* bias;               // [M] or nullptr
  int64_t channels, n, m, k;
};

// The routed backward (edge_conv_routed_kernels.cpp): the weights packed by pack_weights (nullptr when
// grad_x is not wanted) and the problem.
template <typename T>
struct EdgeRouted {
  const T* packed;
  int64_t channels, n, m, k;
};

// Around the BLAS GEMMs (edge_conv_kernels.cpp), float and double.
template <typename T>
struct EdgeGemmKernels {
  // wcat [N, kj * M] for neighbours j0 .. j0 + kj - 1 of one batch element (idx_b [N, k] contiguous).
  void (*build_weights)(const EdgeWeights<T>&, const int64_t* idx_b, int64_t k, int64_t j0, int64_t kj, T* wcat);
  // The float64 forward (float32 has the fused kernel; nullptr in the float table). Running max over the
  // group's neighbours: z [rows, kj * M]; best / arg [rows, M] (row stride M).
  // Neighbours with skip[j] set are left out (an exact duplicate of an earlier neighbour); `first` marks
  // the first group (best is then initialised from its first neighbour not skipped).
  void (*max_group)(const T* z, int64_t rows, int64_t m, int64_t j0, int64_t kj, const uint8_t* skip, bool first,
                    T* best, int32_t* arg);
  // best += bias (nullable); out = ReLU(best) in place; arg = -1 where best <= 0. float64 only, as max_group.
  void (*max_finish)(T* best, int32_t* arg, const T* bias, int64_t rows, int64_t m);
  // The backward by GEMMs (small k).
  // dz [rows, kj * M]: grad [rows, M] routed to its winner, zero elsewhere; bias_grad (nullable, [M],
  // float64) += the column sums of the routed gradient (call with it for one group only).
  void (*route_gradient)(const T* grad, const int32_t* winner, int64_t rows, int64_t m, int64_t j0, int64_t kj,
                         T* dz, double* bias_grad);
  // From dwcat [N, kj * M] = X^T dz: grad_self_minus_edge_t [N, M] += sum_j dwcat_j and
  // grad_edge_t[n, :] += sum_j dwcat_j[idx_b[n, j], :].
  void (*accumulate_weight_grads)(const T* dwcat, const int64_t* idx_b, int64_t k, int64_t j0, int64_t kj,
                                  int64_t n, int64_t m, T* grad_self_minus_edge_t, T* grad_edge_t);
  // dst[i] += src[i], i < count.
  void (*add)(T* dst, const T* src, int64_t count);
};

FK_DECLARE_CPU_KERNEL_TABLE(EdgeGemmKernels, edge_gemm_kernels)

// The routed backward (k > 1; edge_conv_routed_kernels.cpp), float and double.
template <typename T>
struct EdgeRoutedKernels {
  // out [rows, M] = grad where winner >= 0, else 0; bias_grad (nullable, [M], float64) += its column sums.
  void (*mask_gradient)(const T* grad, const int32_t* winner, int64_t rows, int64_t m, T* out, double* bias_grad);
  // NR, the columns per block; the scratch elements a thread needs.
  int64_t (*cols)();
  int64_t (*scratch)(int64_t channels, int64_t n, int64_t m, int64_t k);
  // The weights as grad_x reads them: elements, and rows p0 .. p1 - 1 of the N rounded up to NR of them
  // packed from w_self / w_edge [M, N] (strides s0, s1 / e0, e1).
  int64_t (*packed_size)(int64_t n, int64_t m, int64_t k);
  void (*pack_weights)(const T* w_self, int64_t s0, int64_t s1, const T* w_edge, int64_t e0, int64_t e1, int64_t m,
                       int64_t n, int64_t k, int64_t p0, int64_t p1, T* packed);
  // One batch element (g_b = G, win_b [C, M], idx_b [N, k], x_b [C, N], all contiguous): the column
  // blocks pb0 .. pb1 - 1 of dx_b [C, N], written whole.
  void (*grad_x)(const EdgeRouted<T>&, const T* g_b, const int32_t* win_b, const int64_t* idx_b, int64_t pb0,
                 int64_t pb1, T* dx_b, T* scratch);
  // ... and acc [ceil(N / NR) blocks][M][NR] += w_edge's gradient through the gather, the blocks nb0 .. nb1 - 1.
  void (*grad_edge)(const EdgeRouted<T>&, const T* x_b, const T* g_b, const int32_t* win_b, const int64_t* idx_b,
                    int64_t nb0, int64_t nb1, T* acc, T* scratch);
};

FK_DECLARE_CPU_KERNEL_TABLE(EdgeRoutedKernels, edge_routed_kernels)

// The fused float32 forward (edge_conv_fused_kernels.cpp): float32 only, there is no double table.
template <typename T>
struct EdgeFusedKernels {
  // NR, the output columns per block of this level.
  int64_t (*block)();
  // Scratch elements a thread needs for a batch element of `channels` x `n`.
  int64_t (*scratch)(int64_t channels, int64_t n);
  // Packs the m-blocks mb0 .. mb1 - 1 of (w_self - w_edge)^T and w_edge^T ([M, N] with strides s0, s1 and
  // e0, e1).
  void (*pack_weights)(const T* w_self, int64_t s0, int64_t s1, const T* w_edge, int64_t e0, int64_t e1, int64_t m,
                       int64_t n, int64_t mb0, int64_t mb1, T* self_minus_edge_p, T* edge_p);
  // out_b / win_b [C, M] (row stride M), the m-blocks mb0 .. mb1 - 1, of one batch element: x_b with
  // channel stride sc and position stride sn, idx_b [N, k] contiguous, skip[j] (duplicate neighbours).
  void (*forward)(const EdgeFused&, const T* x_b, int64_t sc, int64_t sn, const int64_t* idx_b, const uint8_t* skip,
                  int64_t mb0, int64_t mb1, T* out_b, int32_t* win_b, T* scratch);
};

FK_DECLARE_CPU_KERNEL_TABLE(EdgeFusedKernels, edge_fused_kernels)

}  // namespace facekernels::cpu
