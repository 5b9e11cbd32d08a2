// Torch-free CUDA launchers of alignment_energy, called by csrc/alignment_energy/alignment_energy_cuda.cpp.
//
// The binding computes the tiles' similarity values with cuBLAS (torch's mm.out) into buffers it
// reuses; these kernels prepare the rows, reduce a tile to per-point sums (inverse_distance) or offer it
// to per-row heaps (knn), and finish. Every pointer is to device memory; work is enqueued on `stream`,
// each launcher returns the first launch error (or cudaSuccess) and none synchronises. Sums are float64
// and deterministic: no atomics on values, a summation order that depends only on the shapes.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace facekernels::cuda {

// alignment_energy takes float32 or float64 (cuda/core/dtype.h has no float64: its ops never take it).
enum class RealType : int { Float32, Float64 };

// Rows of a [n, dim] input with any strides (element (c, i) at x[c * stride_row + i * stride_col]) into a
// contiguous [n, dim] `out`, divided by their norm when `normalise`; sq_norms (nullable) receives the
// squared norm of each written row (float64 sums, stored in the dtype). When `normalise`, *first_zero
// (one int64) receives the first row whose norm is zero, or n.
struct AlignmentPrepareParams {
  const void* x;
  int64_t stride_row, stride_col;
  int64_t n, dim;
  bool normalise;
  void* out;
  void* sq_norms;
  int64_t* first_zero;
};
cudaError_t alignment_prepare(const AlignmentPrepareParams& params, RealType type, cudaStream_t stream);

// A tile of similarity values: sim[r * cols + j] = <p_(r0 + r), p_(c0 + j)>.
struct AlignmentTile {
  int64_t r0, rows, c0, cols;
};

struct AlignmentMetric {
  bool euclidean;
  const void* sq_norms;  // euclidean: |p|^2 of every point (the dtype), else nullptr
  double tolerance;      // coincidence tolerance (dim + 8) u: D (or d^2 / (|p|^2 + |p'|^2)) at most it is 0
};

// float64 elements of scratch alignment_inverse_distance_tile needs for tiles up to rows x cols.
int64_t alignment_inverse_distance_workspace(int64_t rows, int64_t cols);

// Pairs of the tile with column > row (c0 >= r0): w = D > 0 ? 1 / D : 0 and w (1 - s_v) are summed
// per row into sums[0 * n + row] (numerator) and sums[1 * n + row] (denominator), and per column into
// sums[2 * n + column] and sums[3 * n + column]. sums is [4, n], zeroed before the first tile.
cudaError_t alignment_inverse_distance_tile(const void* sim_points, const void* sim_directions,
                                            const AlignmentTile& tile, const AlignmentMetric& metric, int64_t n,
                                            double* workspace, double* sums, RealType type, cudaStream_t stream);

// knn heaps of the rows r0 .. r0 + rows - 1 of one row block: [rows, k] (distance, index) max-heaps in
// lexicographic order, and their sizes (zeroed at the start of the block).
struct AlignmentKnnHeaps {
  int64_t k;
  double* distance;
  int32_t* index;
  int32_t* size;
};

// margin[c] for knn: a bound on |tile distance - recomputed distance| of any pair of point c (the CPU
// kernels' formula: 2 tau for cosine, sqrt(2 tau (|p_c|^2 + max |p|^2)) for euclidean, plus rounding
// slack), from the squared norms (nullptr for cosine). One block.
cudaError_t alignment_knn_margins(const void* sq_norms, int64_t n, double tolerance, void* margin, RealType type,
                                  cudaStream_t stream);

// Offers every pair (row, column != row) of the tile to the row's heap. The tile value pre-selects: a
// pair whose tile distance is within `margin` (>= the tile's error bound, per point: [n]) of the heap's
// largest gets its distance recomputed in float64 from the prepared points [n, dim] (snapped like the
// tile values), and that is what the heap holds.
cudaError_t alignment_knn_tile(const void* sim_points, const AlignmentTile& tile, const AlignmentMetric& metric,
                               const void* points, int64_t dim, const void* margin, const AlignmentKnnHeaps& heaps,
                               RealType type, cudaStream_t stream);

// energy[r0 + r] = mean over the heap of row r of 1 - <u_r, u_q>, u the unit directions [n, dim], in
// float64, for r < rows.
cudaError_t alignment_knn_finish(const AlignmentKnnHeaps& heaps, int64_t r0, int64_t rows,
                                 const void* unit_directions, int64_t dim, double* energy, RealType type,
                                 cudaStream_t stream);

// per_point[c] = E_c in the dtype and *energy_out = mean_c E_c, with E_c = knn_energy[c] when knn_energy
// is not null, else (sums[0, c] + sums[2, c]) / (sums[1, c] + sums[3, c]). One block: the mean's order
// of summation is fixed.
cudaError_t alignment_finish(const double* sums, const double* knn_energy, int64_t n, void* per_point,
                             void* energy_out, RealType type, cudaStream_t stream);

}  // namespace facekernels::cuda
