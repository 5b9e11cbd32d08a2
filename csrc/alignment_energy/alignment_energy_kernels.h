// Torch-free CPU kernels of alignment_energy: preparing the rows, the fused epilogues over one tile of
// similarity values (the GEMMs themselves run in the binding, through torch's BLAS), and the final
// per-point values. See alignment_energy_kernels.cpp for the algorithm and its accuracy.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

// Rows of a [n, dim] input with any strides: element (c, i) is data[c * stride_row + i * stride_col].
// out is a contiguous [n, dim] copy, each row divided by its Euclidean norm when `normalise`;
// sq_norms (nullptr: not wanted) receives the squared norm of each written row, computed in float64
// and rounded to T. Returns the first row whose norm is zero when `normalise` (nothing is then written
// past it), else -1.
template <typename T>
struct PrepareArgs {
  const T* data;
  int64_t stride_row, stride_col;
  int64_t n, dim;
  bool normalise;
  T* out;
  T* sq_norms;
};

// One tile of the strict upper triangle: rows r0 .. r0 + rows - 1 against columns c0 .. c0 + cols - 1,
// with c0 >= r0. Only pairs with column > row are used, each credited to both points (D and V are
// symmetric). sim_points[r * cols + j] is <p_(r0 + r), p_(c0 + j)> of the prepared points (unit rows
// for cosine, raw rows for euclidean), sim_directions the same for the unit directions (nullptr in knn
// mode).
template <typename T>
struct TileArgs {
  const T* sim_points;
  const T* sim_directions;
  int64_t r0, rows, c0, cols;
  bool euclidean;
  const T* sq_norms;  // euclidean: |p_c|^2 of every point, indexed by point
  T tolerance;        // the coincidence tolerance (alignment_energy_kernels.cpp)
  const T* points;    // knn: the prepared points [n, dim], to recompute candidates' distances
  int64_t dim;
};

// knn state: one max-heap of (distance, index) per point, of at most k entries, ordered
// lexicographically (so among equal distances the larger index is evicted first). Distances in the
// heaps are recomputed in float64 from the prepared rows (position-independent, so identical rows tie
// exactly); the tile's BLAS values only pre-select candidates: a pair is recomputed when its tile
// distance is at most the heap's threshold plus `margin` (per point, >= the tile value's error bound).
//
// Threads working on different tiles share the heaps: a point's heap is read and written only under its
// lock, and its threshold (the heap's largest distance once full, rounded up to T; +inf before; it only
// ever decreases) is read and written atomically, so a stale value read without the lock is an upper
// bound and only lets extra candidates through to the exact comparison under the lock.
template <typename T>
struct KnnHeaps {
  int64_t k;
  double* distance;  // [n, k]
  int32_t* index;    // [n, k]
  int32_t* size;     // [n], zero-initialised
  T* threshold;      // [n + 64], +inf-initialised
  uint8_t* lock;     // [n], zero-initialised
  const T* margin;   // [n + 64]
};

// Every tile kernel is single-threaded: the binding runs one tile per thread at a time (its GEMMs
// included), each thread adding into its own num/den arrays (n + 64 elements) or into the shared heaps.
template <typename T>
struct AlignmentEnergyKernels {
  int64_t (*prepare)(const PrepareArgs<T>&);
  // num[c] += sum w V, den[c] += sum w over the tile's pairs, for its rows and its columns alike
  // (w = 1 / D for D > 0, else 0).
  void (*inverse_distance_tile)(const TileArgs<T>&, double* num, double* den);
  // Offers the tile's pairs to the heaps of both points; scratch holds cols + 64 elements.
  void (*knn_tile)(const TileArgs<T>&, const KnnHeaps<T>&, T* scratch);
  // energy_per_point[c] = mean over the heap of c of 1 - <u_c, u_c'>, u the unit directions [n, dim]
  // (multi-threaded).
  void (*knn_finish)(const KnnHeaps<T>&, const T* unit_directions, int64_t n, int64_t dim, double* energy_per_point);
};

FK_DECLARE_CPU_KERNEL_TABLE(AlignmentEnergyKernels, alignment_energy_kernels)

}  // namespace facekernels::cpu
