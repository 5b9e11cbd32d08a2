// Torch-free CPU kernels of cosine_topk and edge_conv_max: the epilogues and data movement around the
// GEMM tiles, which the binding (edge_conv.cpp) runs through torch's BLAS. See edge_conv_cpu.cpp.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

// ---- cosine_topk --------------------------------------------------------------------------------

// The columns of one batch element: x [C, N] and y [C, M], contiguous (column n of x is x[c * N + n]).
template <typename T>
struct TopkColumns {
  const T* x;
  const T* y;
  int64_t channels, n, m;
  const double* inv_x;  // [N]: 1 / max(|x[:, n]|, 1e-12), float64
  const double* inv_y;  // [M]
  const T* inv_y_t;     // [M + 64]: inv_y rounded to T (zero padded)
  T margin;             // >= 2 x the error bound of a tile's similarity value
  // Optional transposed copies for the float64 recomputations (contiguous channels, so a candidate costs
  // C cache-friendly loads instead of C strided ones; the summation order is the same either way):
  // x_rows [rows, C] holds the columns n0 .. of x, y_rows [M, C] all of y (nullptr: read x / y in place).
  // y_slot (nullable) maps a column m to its row of y_rows (a gathered subset of y's columns).
  const T* x_rows;
  int64_t x_row0;
  const T* y_rows;
  const int32_t* y_slot;
};

// The selection state of a block of rows (one thread's): per row, a buffer of candidates (approximate
// similarity from the tile, column index) and the k-th largest approximate similarity seen so far (the
// root of a min-heap of the k largest).
// Every column whose approximate similarity is within `margin` of that threshold is a candidate, so the
// true top k (by the float64 similarity) are always among them; the binding sizes `capacity` >= 2k + 64.
template <typename T>
struct TopkState {
  int64_t k, capacity;
  T* approx;          // [rows, capacity]
  int32_t* index;     // [rows, capacity]
  int64_t* count;     // [rows]
  T* threshold;       // [rows]: the k-th largest approximate similarity so far (-inf before k)
  T* heap;            // [rows, k]: min-heap of the k largest approximate similarities so far
  int64_t* filled;    // [rows]: entries in the heap
  double* exact;      // [capacity] scratch
  int32_t* order;     // [capacity] scratch
  T* select;          // [capacity] scratch
};

// ---- edge_conv_max ------------------------------------------------------------------------------

// Per batch element b and neighbour j, out_j = X W_j with X = x[b] as [C, N] and
// W_j[p, m] = (w_self - w_edge)[m, p] + sum_{n : idx[b, n, j] = p} w_edge[m, n]   ([N, M]).
// A group of kj neighbours j0 .. j0 + kj - 1 is laid side by side: wcat [N, kj * M].
template <typename T>
struct EdgeWeights {
  const T* self_minus_edge_t;  // [N, M]: (w_self - w_edge)^T
  const T* edge_t;             // [N, M]: w_edge^T
  int64_t n, m;
};

// The fused float32 forward (edge_conv_cpu.cpp): weights packed per block of NR output columns,
// [M / NR][N][NR] (zero padded), and the problem it runs.
struct EdgeFused {
  const float* self_minus_edge_p;  // (w_self - w_edge)^T, packed
  const float* edge_p;             // w_edge^T, packed
  const float* bias;               // [M] or nullptr
  int64_t channels, n, m, k;
};

// The routed backward (edge_conv_cpu.cpp): the weights packed by edge_routed_pack_weights (nullptr when
// grad_x is not wanted) and the problem.
template <typename T>
struct EdgeRouted {
  const T* packed;
  int64_t channels, n, m, k;
};

struct EdgeConvKernels {
  // inv[b * n + i] = 1 / max(|x[b, :, i]|, 1e-12) in float64 for x [batch, channels, n] contiguous;
  // inv_t (row stride inv_t_stride) receives the same rounded to T.
  void (*inverse_norms_f32)(const float* x, int64_t batch, int64_t channels, int64_t n, double* inv, float* inv_t,
                            int64_t inv_t_stride);
  void (*inverse_norms_f64)(const double* x, int64_t batch, int64_t channels, int64_t n, double* inv,
                            double* inv_t, int64_t inv_t_stride);
  // Offers the tile sim [rows, cols] (raw dot products of rows n0 .. of x against columns c0 .. of y) to
  // the state's rows 0 .. rows - 1.
  void (*topk_tile_f32)(const TopkColumns<float>&, const float* sim, int64_t n0, int64_t rows, int64_t c0,
                        int64_t cols, const TopkState<float>&);
  void (*topk_tile_f64)(const TopkColumns<double>&, const double* sim, int64_t n0, int64_t rows, int64_t c0,
                        int64_t cols, const TopkState<double>&);
  // Drops the candidates the rows' final thresholds rule out (before topk_finish).
  void (*topk_prune_f32)(const TopkColumns<float>&, int64_t n0, int64_t rows, const TopkState<float>&);
  void (*topk_prune_f64)(const TopkColumns<double>&, int64_t n0, int64_t rows, const TopkState<double>&);
  // Writes the k best of each row (float64 similarity descending, smaller index first among equals) to
  // values / indices [rows, k] and resets the state.
  void (*topk_finish_f32)(const TopkColumns<float>&, int64_t n0, int64_t rows, const TopkState<float>&,
                          float* values, int64_t* indices);
  void (*topk_finish_f64)(const TopkColumns<double>&, int64_t n0, int64_t rows, const TopkState<double>&,
                          double* values, int64_t* indices);

  // wcat [N, kj * M] for neighbours j0 .. j0 + kj - 1 of one batch element (idx_b [N, k] contiguous).
  void (*build_weights_f32)(const EdgeWeights<float>&, const int64_t* idx_b, int64_t k, int64_t j0, int64_t kj,
                            float* wcat);
  void (*build_weights_f64)(const EdgeWeights<double>&, const int64_t* idx_b, int64_t k, int64_t j0, int64_t kj,
                            double* wcat);
  // The float64 forward (float32 has the fused kernel below). Running max over the group's neighbours:
  // z [rows, kj * M]; best / arg [rows, M] (row stride M).
  // Neighbours with skip[j] set are left out (an exact duplicate of an earlier neighbour); `first` marks
  // the first group (best is then initialised from its first neighbour not skipped).
  void (*max_group_f64)(const double* z, int64_t rows, int64_t m, int64_t j0, int64_t kj, const uint8_t* skip,
                        bool first, double* best, int32_t* arg);
  // best += bias (nullable); out = ReLU(best) in place; arg = -1 where best <= 0.
  void (*max_finish_f64)(double* best, int32_t* arg, const double* bias, int64_t rows, int64_t m);
  // The backward by GEMMs (small k).
  // dz [rows, kj * M]: grad [rows, M] routed to its winner, zero elsewhere; bias_grad (nullable, [M],
  // float64) += the column sums of the routed gradient (call with it for one group only).
  void (*route_gradient_f32)(const float* grad, const int32_t* winner, int64_t rows, int64_t m, int64_t j0,
                             int64_t kj, float* dz, double* bias_grad);
  void (*route_gradient_f64)(const double* grad, const int32_t* winner, int64_t rows, int64_t m, int64_t j0,
                             int64_t kj, double* dz, double* bias_grad);
  // From dwcat [N, kj * M] = X^T dz: grad_self_minus_edge_t [N, M] += sum_j dwcat_j and
  // grad_edge_t[n, :] += sum_j dwcat_j[idx_b[n, j], :].
  void (*accumulate_weight_grads_f32)(const float* dwcat, const int64_t* idx_b, int64_t k, int64_t j0, int64_t kj,
                                      int64_t n, int64_t m, float* grad_self_minus_edge_t, float* grad_edge_t);
  void (*accumulate_weight_grads_f64)(const double* dwcat, const int64_t* idx_b, int64_t k, int64_t j0,
                                      int64_t kj, int64_t n, int64_t m, double* grad_self_minus_edge_t,
                                      double* grad_edge_t);
  // dst[i] += src[i], i < count.
  void (*add_f32)(float* dst, const float* src, int64_t count);
  void (*add_f64)(double* dst, const double* src, int64_t count);
  // The routed backward (k > 1; edge_conv_cpu.cpp). out [rows, M] = grad where winner >= 0, else 0;
  // bias_grad (nullable, [M], float64) += its column sums.
  void (*edge_mask_gradient_f32)(const float* grad, const int32_t* winner, int64_t rows, int64_t m, float* out,
                                 double* bias_grad);
  void (*edge_mask_gradient_f64)(const double* grad, const int32_t* winner, int64_t rows, int64_t m, double* out,
                                 double* bias_grad);
  // The routed backward: NR, the columns per block; the scratch elements a thread needs.
  int64_t (*edge_routed_cols_f32)();
  int64_t (*edge_routed_cols_f64)();
  int64_t (*edge_routed_scratch_f32)(int64_t channels, int64_t n, int64_t m, int64_t k);
  int64_t (*edge_routed_scratch_f64)(int64_t channels, int64_t n, int64_t m, int64_t k);
  // The weights as grad_x reads them: elements, and rows p0 .. p1 - 1 of the N rounded up to NR of them
  // packed from w_self / w_edge [M, N] (strides s0, s1 / e0, e1).
  int64_t (*edge_routed_packed_size_f32)(int64_t n, int64_t m, int64_t k);
  int64_t (*edge_routed_packed_size_f64)(int64_t n, int64_t m, int64_t k);
  void (*edge_routed_pack_weights_f32)(const float* w_self, int64_t s0, int64_t s1, const float* w_edge, int64_t e0,
                                       int64_t e1, int64_t m, int64_t n, int64_t k, int64_t p0, int64_t p1,
                                       float* packed);
  void (*edge_routed_pack_weights_f64)(const double* w_self, int64_t s0, int64_t s1, const double* w_edge,
                                       int64_t e0, int64_t e1, int64_t m, int64_t n, int64_t k, int64_t p0,
                                       int64_t p1, double* packed);
  // One batch element (g_b = G, win_b [C, M], idx_b [N, k], x_b [C, N], all contiguous): the column
  // blocks pb0 .. pb1 - 1 of dx_b [C, N], written whole.
  void (*edge_routed_grad_x_f32)(const EdgeRouted<float>&, const float* g_b, const int32_t* win_b,
                                 const int64_t* idx_b, int64_t pb0, int64_t pb1, float* dx_b, float* scratch);
  void (*edge_routed_grad_x_f64)(const EdgeRouted<double>&, const double* g_b, const int32_t* win_b,
                                 const int64_t* idx_b, int64_t pb0, int64_t pb1, double* dx_b, double* scratch);
  // ... and acc [ceil(N / NR) blocks][M][NR] += w_edge's gradient through the gather, the blocks nb0 .. nb1 - 1.
  void (*edge_routed_grad_edge_f32)(const EdgeRouted<float>&, const float* x_b, const float* g_b,
                                    const int32_t* win_b, const int64_t* idx_b, int64_t nb0, int64_t nb1,
                                    float* acc, float* scratch);
  void (*edge_routed_grad_edge_f64)(const EdgeRouted<double>&, const double* x_b, const double* g_b,
                                    const int32_t* win_b, const int64_t* idx_b, int64_t nb0, int64_t nb1,
                                    double* acc, double* scratch);

  // The fused float32 forward. NR, the output columns per block of this level.
  int64_t (*edge_fused_block)();
  // Scratch floats a thread needs for a batch element of `channels` x `n`.
  int64_t (*edge_fused_scratch)(int64_t channels, int64_t n);
  // Packs the m-blocks mb0 .. mb1 - 1 of (w_self - w_edge)^T and w_edge^T ([M, N] with strides s0, s1 and
  // e0, e1).
  void (*edge_fused_pack_weights)(const float* w_self, int64_t s0, int64_t s1, const float* w_edge, int64_t e0,
                                  int64_t e1, int64_t m, int64_t n, int64_t mb0, int64_t mb1,
                                  float* self_minus_edge_p, float* edge_p);
  // out_b / win_b [C, M] (row stride M), the m-blocks mb0 .. mb1 - 1, of one batch element: x_b with
  // channel stride sc and position stride sn, idx_b [N, k] contiguous, skip[j] (duplicate neighbours).
  void (*edge_fused_forward)(const EdgeFused&, const float* x_b, int64_t sc, int64_t sn, const int64_t* idx_b,
                             const uint8_t* skip, int64_t mb0, int64_t mb1, float* out_b, int32_t* win_b,
                             float* scratch);

  // cosine_topk of float32 x against itself: sim [N, N] = x^T x for x [C, N] contiguous, exactly
  // symmetric, with about half a GEMM's work. Scratch floats a thread needs for it.
  int64_t (*gram_self_scratch)(int64_t channels, int64_t n);
  void (*gram_self)(const float* x, int64_t channels, int64_t n, float* sim, float* scratch);
};

FK_DECLARE_CPU_KERNELS(const EdgeConvKernels&, edge_conv_kernels)

}  // namespace facekernels::cpu
