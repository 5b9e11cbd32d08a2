// alignment_energy: the CUDA binding (argument checks shared with the CPU binding; tile GEMMs by cuBLAS
// through torch's mm.out into buffers allocated once per call; kernels from cuda/alignment_energy launched
// on the current stream).
//
// inverse_distance walks the strict upper triangle in tiles of kTileRows x kTileCols (every pair once,
// credited to both points); knn walks row blocks against every column tile, each row's heap private to
// one warp. Extra memory, whatever C is: the tile buffers (2 x 64 MiB), the reduction scratch and O(C)
// per-point sums; for knn one tile (up to 128 MiB in float32) and the row block's heaps (about 2^24
// entries, at least 256 rows' worth). Validating the rows (a zero direction, a zero
// point for cosine) needs their norms on the host: the op synchronises the stream once, after the
// preparation kernels. float32 GEMMs follow torch's matmul precision setting (TF32 when allowed, which
// loosens the float32 accuracy).
#include <cuda_runtime_api.h>

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/macros.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <stdexcept>
#include <string>
#include <tuple>

#include "alignment_energy/alignment_energy.h"
#include "core/blas.h"
#include "core/checks.h"
#include "core/cuda_binding.h"
#include "cuda/alignment_energy/alignment_energy.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

constexpr int64_t kTileRows = 2048;
constexpr int64_t kTileColsFloat = 8192;
constexpr int64_t kTileColsDouble = 4096;
// knn: a warp per row, so row blocks are taller (enough warps to fill the GPU) and column tiles
// narrower; the row block shrinks for large k so its heaps stay within about 2^24 entries.
constexpr int64_t kKnnTileRowsMax = 16384;
constexpr int64_t kKnnTileRowsMin = 256;
constexpr int64_t kKnnHeapEntries = int64_t{1} << 24;
constexpr int64_t kKnnTileCols = 2048;

inline int64_t min_of(int64_t a, int64_t b) { return a < b ? a : b; }

std::tuple<Tensor, Tensor> alignment_energy_cuda(const Tensor& points, const Tensor& directions, int64_t mode,
                                                 int64_t k, int64_t metric) {
  const char* op = "alignment_energy";
  const AlignmentEnergyProblem p = check_alignment_energy(op, points, directions, mode, k, metric);
  const torch::stable::accelerator::DeviceGuard guard(points.get_device_index());
  const cudaStream_t stream = current_cuda_stream(points.get_device_index());
  const int64_t n = p.points, dim = p.dim;
  const bool f64 = points.scalar_type() == ScalarType::Double;
  const cuda::RealType type = f64 ? cuda::RealType::Float64 : cuda::RealType::Float32;
  const torch::stable::Device device = points.device();
  const ScalarType dtype = points.scalar_type();

  Tensor unit_directions = torch::stable::new_empty(points, {n, dim});
  Tensor prepared_points = torch::stable::new_empty(points, {n, dim});
  Tensor sq_norms = torch::stable::new_empty(points, {p.euclidean ? n : 0});
  Tensor first_zero = torch::stable::new_empty(points, {2}, ScalarType::Long);
  int64_t* flags = static_cast<int64_t*>(first_zero.data_ptr());
  const cuda::AlignmentPrepareParams prepare_directions{.x = directions.data_ptr(),
                                                        .stride_row = directions.stride(0),
                                                        .stride_col = directions.stride(1),
                                                        .n = n,
                                                        .dim = dim,
                                                        .normalise = true,
                                                        .out = unit_directions.data_ptr(),
                                                        .sq_norms = nullptr,
                                                        .first_zero = flags};
  check_launch(cuda::alignment_prepare(prepare_directions, type, stream), op);
  const cuda::AlignmentPrepareParams prepare_points{.x = points.data_ptr(),
                                                    .stride_row = points.stride(0),
                                                    .stride_col = points.stride(1),
                                                    .n = n,
                                                    .dim = dim,
                                                    .normalise = !p.euclidean,
                                                    .out = prepared_points.data_ptr(),
                                                    .sq_norms = p.euclidean ? sq_norms.data_ptr() : nullptr,
                                                    .first_zero = p.euclidean ? nullptr : flags + 1};
  check_launch(cuda::alignment_prepare(prepare_points, type, stream), op);
  int64_t host_flags[2] = {n, n};
  check_launch(cudaMemcpyAsync(host_flags, flags, sizeof(host_flags[0]) * (p.euclidean ? 1 : 2),
                               cudaMemcpyDeviceToHost, stream),
               op);
  check_launch(cudaStreamSynchronize(stream), op);
  FK_CHECK(host_flags[0] == n, op, "directions[", host_flags[0],
           "] must be a nonzero vector (a curve's direction e(x2) - e(x0)), got a zero vector");
  FK_CHECK(host_flags[1] == n, op, "points[", host_flags[1],
           "] must be a nonzero vector for metric=\"cosine\" (its cosine distance is undefined), got a zero "
           "vector");

  const cuda::AlignmentMetric distance{p.euclidean, p.euclidean ? sq_norms.data_ptr() : nullptr,
                                       alignment_coincidence_tolerance(points.scalar_type(), dim)};
  int64_t tile_rows = min_of(kTileRows, n), tile_cols = min_of(f64 ? kTileColsDouble : kTileColsFloat, n);
  if (p.knn) {
    const int64_t wanted = kKnnHeapEntries / p.k;
    tile_rows = min_of(n, wanted < kKnnTileRowsMin ? kKnnTileRowsMin : min_of(wanted, kKnnTileRowsMax));
    tile_cols = min_of(n, kKnnTileCols);
  }
  Tensor sim_points = torch::stable::new_empty(points, {tile_rows * tile_cols});
  Tensor sums = torch::stable::new_zeros(points, {p.knn ? 0 : 4 * n}, ScalarType::Double);
  Tensor knn_energy = torch::stable::new_empty(points, {p.knn ? n : 0}, ScalarType::Double);

  if (!p.knn) {
    Tensor sim_directions = torch::stable::new_empty(points, {tile_rows * tile_cols});
    Tensor workspace = torch::stable::new_empty(
        points, {cuda::alignment_inverse_distance_workspace(tile_rows, tile_cols)}, ScalarType::Double);
    for (int64_t r0 = 0; r0 < n; r0 += tile_rows) {
      const int64_t rows = min_of(tile_rows, n - r0);
      for (int64_t c0 = r0; c0 < n; c0 += tile_cols) {
        const int64_t cols = min_of(tile_cols, n - c0);
        if (c0 + cols - 1 <= r0) continue;  // no pair above the diagonal (the last single row)
        gemm_into(MatrixView::row_major(sim_points.data_ptr(), rows, cols), rows_of(prepared_points, r0, rows),
                  rows_of(prepared_points, c0, cols).t(), device, dtype);
        gemm_into(MatrixView::row_major(sim_directions.data_ptr(), rows, cols), rows_of(unit_directions, r0, rows),
                  rows_of(unit_directions, c0, cols).t(), device, dtype);
        check_launch(cuda::alignment_inverse_distance_tile(sim_points.data_ptr(), sim_directions.data_ptr(),
                                                           {r0, rows, c0, cols}, distance, n,
                                                           static_cast<double*>(workspace.data_ptr()),
                                                           static_cast<double*>(sums.data_ptr()), type, stream),
                     op);
      }
    }
  } else {
    Tensor margin = torch::stable::new_empty(points, {n});
    check_launch(cuda::alignment_knn_margins(p.euclidean ? sq_norms.data_ptr() : nullptr, n, distance.tolerance,
                                             margin.data_ptr(), type, stream),
                 op);
    Tensor heap_distance = torch::stable::new_empty(points, {tile_rows * p.k}, ScalarType::Double);
    Tensor heap_index = torch::stable::new_empty(points, {tile_rows * p.k}, ScalarType::Int);
    Tensor heap_size = torch::stable::new_empty(points, {tile_rows}, ScalarType::Int);
    const cuda::AlignmentKnnHeaps heaps{p.k, static_cast<double*>(heap_distance.data_ptr()),
                                        static_cast<int32_t*>(heap_index.data_ptr()),
                                        static_cast<int32_t*>(heap_size.data_ptr())};
    for (int64_t r0 = 0; r0 < n; r0 += tile_rows) {
      const int64_t rows = min_of(tile_rows, n - r0);
      check_launch(cudaMemsetAsync(heaps.size, 0, sizeof(int32_t) * rows, stream), op);
      for (int64_t c0 = 0; c0 < n; c0 += tile_cols) {
        const int64_t cols = min_of(tile_cols, n - c0);
        gemm_into(MatrixView::row_major(sim_points.data_ptr(), rows, cols), rows_of(prepared_points, r0, rows),
                  rows_of(prepared_points, c0, cols).t(), device, dtype);
        check_launch(cuda::alignment_knn_tile(sim_points.data_ptr(), {r0, rows, c0, cols}, distance,
                                              prepared_points.data_ptr(), dim, margin.data_ptr(), heaps, type, stream),
                     op);
      }
      check_launch(cuda::alignment_knn_finish(heaps, r0, rows, unit_directions.data_ptr(), dim,
                                              static_cast<double*>(knn_energy.data_ptr()), type, stream),
                   op);
    }
  }

  Tensor per_point = torch::stable::new_empty(points, {n});
  Tensor energy = torch::stable::new_empty(points, {});
  check_launch(cuda::alignment_finish(p.knn ? nullptr : static_cast<const double*>(sums.data_ptr()),
                                      p.knn ? static_cast<const double*>(knn_energy.data_ptr()) : nullptr, n,
                                      per_point.data_ptr(), energy.data_ptr(), type, stream),
               op);
  return {energy, per_point};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CUDA, m) {
  m.impl("alignment_energy", TORCH_BOX(&facekernels::alignment_energy_cuda));
}
