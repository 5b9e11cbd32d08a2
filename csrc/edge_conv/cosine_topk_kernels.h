// Torch-free CPU kernels of cosine_topk, compiled once per SIMD level: the top-k selection on the
// similarity tiles the driver (cosine_topk_cpu.cpp) computes through torch's BLAS
// (cosine_topk_kernels.cpp), and the float32 symmetric Gram matrix of x against itself
// (cosine_topk_gram_kernels.cpp).
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

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
// true top k (by the float64 similarity) are always among them; the driver (cosine_topk_cpu.cpp) sizes
// `capacity` >= 2k + 64.
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

// The selection (cosine_topk_kernels.cpp), float and double.
template <typename T>
struct CosineTopkKernels {
  // inv[b * n + i] = 1 / max(|x[b, :, i]|, 1e-12) in float64 for x [batch, channels, n] contiguous;
  // inv_t (row stride inv_t_stride) receives the same rounded to T.
  void (*inverse_norms)(const T* x, int64_t batch, int64_t channels, int64_t n, double* inv, T* inv_t,
                        int64_t inv_t_stride);
  // Offers the tile sim [rows, cols] (raw dot products of rows n0 .. of x against columns c0 .. of y) to
  // the state's rows 0 .. rows - 1.
  void (*topk_tile)(const TopkColumns<T>&, const T* sim, int64_t n0, int64_t rows, int64_t c0, int64_t cols,
                    const TopkState<T>&);
  // Drops the candidates the rows' final thresholds rule out (before topk_finish).
  void (*topk_prune)(const TopkColumns<T>&, int64_t n0, int64_t rows, const TopkState<T>&);
  // Writes the k best of each row (float64 similarity descending, smaller index first among equals) to
  // values / indices [rows, k] and resets the state.
  void (*topk_finish)(const TopkColumns<T>&, int64_t n0, int64_t rows, const TopkState<T>&, T* values,
                      int64_t* indices);
};

FK_DECLARE_CPU_KERNEL_TABLE(CosineTopkKernels, cosine_topk_kernels)

// x against itself (cosine_topk_gram_kernels.cpp): float32 only, there is no double table.
template <typename T>
struct CosineGramKernels {
  // sim [N, N] = x^T x for x [C, N] contiguous, exactly symmetric, with about half a GEMM's work.
  // Scratch elements a thread needs for it.
  int64_t (*gram_self_scratch)(int64_t channels, int64_t n);
  void (*gram_self)(const T* x, int64_t channels, int64_t n, T* sim, T* scratch);
};

FK_DECLARE_CPU_KERNEL_TABLE(CosineGramKernels, cosine_gram_kernels)

}  // namespace facekernels::cpu
