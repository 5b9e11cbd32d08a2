// alignment_energy: the CPU binding and driver (tiling, dealing the tiles to the threads, the tile GEMMs,
// the scratch buffers) and its registration. The schema and the argument checks are in
// alignment_energy.cpp, the SIMD epilogues in alignment_energy_kernels.cpp.
//
// The op never holds a C x C matrix: it walks the strict upper triangle of the pair matrix in tiles of
// kCpuTileRows x kCpuTileCols (row block [r0, r0 + R) against columns [c0, c0 + W), c0 >= r0), so every
// pair is computed once and credited to both of its points. The tiles are dealt to the threads up front;
// a thread computes its tile's dot products with torch's mm.out (BLAS, single-threaded inside the
// parallel region) into its own buffers, allocated once per call, and hands the tile, still in its
// cache, to the fused epilogue (alignment_energy_kernels.cpp). Extra memory, whatever C is: two tile
// buffers per thread (2 x 4 MiB in float32) plus O(C) float64 sums per thread (inverse_distance), or
// O(C k) heaps (knn).
#include "alignment_energy/alignment_energy.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <tuple>
#include <vector>

#include "alignment_energy/alignment_energy_kernels.h"
#include "core/blas.h"
#include "core/checks.h"
#include "core/parallel.h"
#include "core/schedule.h"
#include "core/tensors.h"

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

namespace {

// Tiles of the pair matrix: 512 x 2048 float32 similarity values are 4 MiB, so one tile's two buffers
// stay in the last-level cache between the GEMM that writes them and the epilogue that reads them, and
// the GEMMs (K = D) are still large enough to run BLAS near its peak. float64 keeps the same bytes.
constexpr int64_t kCpuTileRows = 512;
constexpr int64_t kCpuTileRowsMin = 64;
constexpr int64_t kCpuTileColsFloat = 2048;
constexpr int64_t kCpuTileColsDouble = 1024;
// Vector loads at the end of a row, of the squared norms and of the knn thresholds may read up to one
// vector past the data; every buffer they touch has this many spare elements.
constexpr int64_t kPad = 64;

inline int64_t min_of(int64_t a, int64_t b) { return a < b ? a : b; }

// The diagonal tile of each row block computes its lower half for nothing: R / C of all the GEMM work.
// Below C = 16 R, shorter row blocks keep that under 1/16 (and give the threads more, smaller tiles).
int64_t cpu_tile_rows(int64_t n) {
  int64_t rows = n / 16 / kCpuTileRowsMin * kCpuTileRowsMin;
  return rows < kCpuTileRowsMin ? kCpuTileRowsMin : (rows > kCpuTileRows ? kCpuTileRows : rows);
}

struct Tile {
  int64_t r0, rows, c0, cols;
};

// The tiles of the strict upper triangle, dealt to `threads` lists by deal_largest_first (core/schedule.h:
// largest first, each to the least loaded list so far; a static assignment, so sums are added in the
// same order on every call); each list is then walked in (r0, c0) order.
std::vector<std::vector<Tile>> deal_tiles(int64_t n, int64_t tile_rows, int64_t tile_cols, int64_t threads) {
  std::vector<Tile> tiles;
  for (int64_t r0 = 0; r0 < n; r0 += tile_rows) {
    const int64_t rows = min_of(tile_rows, n - r0);
    for (int64_t c0 = r0; c0 < n; c0 += tile_cols) {
      const int64_t cols = min_of(tile_cols, n - c0);
      if (c0 + cols - 1 > r0) tiles.push_back({r0, rows, c0, cols});  // else no pair above the diagonal
    }
  }
  return deal_largest_first(
      std::move(tiles), threads, [](const Tile& t) { return t.rows * t.cols; },
      [](const Tile& x, const Tile& y) { return x.r0 != y.r0 ? x.r0 < y.r0 : x.c0 < y.c0; });
}

// knn's per-point margins: a bound on |tile distance - recomputed distance| (KnnHeaps), with slack for
// the rounding of the compare itself. The tile's error is within the coincidence tolerance tau (on D
// for cosine, on d^2 relative to |p|^2 + |p'|^2 for euclidean) and snapping adds at most as much again:
//   cosine: 2 tau;   euclidean: sqrt(2 tau (|p_c|^2 + max_c' |p_c'|^2)) >= sqrt of the d^2 bound.
template <typename T>
void knn_margins(T* margin, const T* sq_norms, int64_t n, double tolerance) {
  const double u = std::numeric_limits<T>::epsilon() / 2;
  if (sq_norms == nullptr) {
    std::fill_n(margin, n, static_cast<T>(2.02 * tolerance + 24 * u));
    return;
  }
  double largest = 0;
  for (int64_t c = 0; c < n; ++c) largest = std::max(largest, static_cast<double>(sq_norms[c]));
  for (int64_t c = 0; c < n; ++c) {
    const double bound = std::sqrt(2 * tolerance * (static_cast<double>(sq_norms[c]) + largest));
    margin[c] = static_cast<T>(1.01 * bound + 8 * u * std::sqrt(largest));
  }
}

template <typename T>
std::tuple<Tensor, Tensor> run_cpu(const Tensor& points, const Tensor& directions, const AlignmentEnergyProblem& p) {
  const char* op = "alignment_energy";
  const int64_t n = p.points, dim = p.dim;
  const auto& kernels = FK_CPU_KERNEL_TABLE(cpu::alignment_energy_kernels, T);
  constexpr bool f32 = sizeof(T) == 4;

  Tensor unit_directions = torch::stable::new_empty(points, {n, dim});
  Tensor prepared_points = torch::stable::new_empty(points, {n, dim});
  Tensor sq_norms = torch::stable::new_zeros(points, {p.euclidean ? n + kPad : 0});
  const int64_t zero_direction =
      kernels.prepare({data_of<const T>(directions), directions.stride(0), directions.stride(1), n, dim, true,
                       data_of<T>(unit_directions), nullptr});
  FK_CHECK(zero_direction < 0, op, "directions[", zero_direction,
           "] must be a nonzero vector (a curve's direction e(x2) - e(x0)), got a zero vector");
  const int64_t zero_point =
      kernels.prepare({data_of<const T>(points), points.stride(0), points.stride(1), n, dim, !p.euclidean,
                       data_of<T>(prepared_points), p.euclidean ? data_of<T>(sq_norms) : nullptr});
  FK_CHECK(zero_point < 0, op, "points[", zero_point,
           "] must be a nonzero vector for metric=\"cosine\" (its cosine distance is undefined), got a zero "
           "vector");
  const T tolerance = static_cast<T>(alignment_coincidence_tolerance(points.scalar_type(), dim));

  const int64_t tile_rows = cpu_tile_rows(n), tile_cols = f32 ? kCpuTileColsFloat : kCpuTileColsDouble;
  const int64_t threads = num_threads();
  const std::vector<std::vector<Tile>> lists = deal_tiles(n, tile_rows, tile_cols, threads);
  // Per thread: the similarity buffers, and the float64 sums (inverse_distance) or a row of thresholds (knn).
  const int64_t buffer_size = min_of(tile_rows, n) * min_of(tile_cols, n) + kPad;
  Tensor sim_points = torch::stable::new_empty(points, {threads, buffer_size});
  Tensor sim_directions = torch::stable::new_empty(points, {p.knn ? 0 : threads, buffer_size});
  Tensor sums = torch::stable::new_zeros(points, {p.knn ? 0 : threads, 2, n + kPad}, ScalarType::Double);
  Tensor scratch = torch::stable::new_empty(points, {p.knn ? threads : 0, tile_cols + kPad});
  // knn heaps, shared (see KnnHeaps).
  const int64_t heap_entries = p.knn ? n * p.k : 0;
  Tensor heap_distance = torch::stable::new_empty(points, {heap_entries}, ScalarType::Double);
  Tensor heap_index = torch::stable::new_empty(points, {heap_entries}, ScalarType::Int);
  Tensor heap_size = torch::stable::new_zeros(points, {p.knn ? n : 0}, ScalarType::Int);
  Tensor heap_threshold = torch::stable::new_empty(points, {p.knn ? n + kPad : 0});
  Tensor heap_lock = torch::stable::new_zeros(points, {p.knn ? n : 0}, ScalarType::Byte);
  Tensor heap_margin = torch::stable::new_zeros(points, {p.knn ? n + kPad : 0});
  const cpu::KnnHeaps<T> heaps{p.k,
                               data_of<double>(heap_distance),
                               data_of<int32_t>(heap_index),
                               data_of<int32_t>(heap_size),
                               data_of<T>(heap_threshold),
                               data_of<uint8_t>(heap_lock),
                               data_of<const T>(heap_margin)};
  if (p.knn) {
    std::fill_n(heaps.threshold, n + kPad, std::numeric_limits<T>::infinity());
    knn_margins(data_of<T>(heap_margin), p.euclidean ? data_of<const T>(sq_norms) : nullptr, n,
                static_cast<double>(tolerance));
  }

  // One thread per list. Inside the parallel region torch's mm runs BLAS single-threaded.
  const torch::stable::Device device = points.device();
  const ScalarType dtype = points.scalar_type();
  // Typed pointers taken here, on the op's thread (data_of goes through the stable ABI).
  T* const sim_points_data = data_of<T>(sim_points);
  T* const sim_directions_data = data_of<T>(sim_directions);
  double* const sums_data = data_of<double>(sums);
  T* const scratch_data = data_of<T>(scratch);
  const T* const sq_norms_data = p.euclidean ? data_of<const T>(sq_norms) : nullptr;
  const T* const prepared_data = data_of<const T>(prepared_points);
  parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* buffer_points = sim_points_data + t * buffer_size;
      T* buffer_directions = p.knn ? nullptr : sim_directions_data + t * buffer_size;
      double* num = p.knn ? nullptr : sums_data + t * 2 * (n + kPad);
      double* den = p.knn ? nullptr : num + (n + kPad);
      T* thresholds = p.knn ? scratch_data + t * (tile_cols + kPad) : nullptr;
      for (const Tile& tile : lists[static_cast<size_t>(t)]) {
        gemm_into(MatrixView::row_major(buffer_points, tile.rows, tile.cols),
                  rows_of(prepared_points, tile.r0, tile.rows), rows_of(prepared_points, tile.c0, tile.cols).t(),
                  device, dtype);
        cpu::TileArgs<T> args{buffer_points, nullptr, tile.r0, tile.rows, tile.c0, tile.cols,
                              p.euclidean, sq_norms_data, tolerance, prepared_data, dim};
        if (p.knn) {
          kernels.knn_tile(args, heaps, thresholds);
        } else {
          gemm_into(MatrixView::row_major(buffer_directions, tile.rows, tile.cols),
                    rows_of(unit_directions, tile.r0, tile.rows), rows_of(unit_directions, tile.c0, tile.cols).t(),
                    device, dtype);
          args.sim_directions = buffer_directions;
          kernels.inverse_distance_tile(args, num, den);
        }
      }
    }
  });

  std::vector<double> e(static_cast<size_t>(n));
  if (p.knn) {
    kernels.knn_finish(heaps, data_of<const T>(unit_directions), n, dim, e.data());
  } else {
    // E_c = numerator / denominator, the threads' sums added in thread order; 0 / 0 (every other point
    // coincides with c) is NaN, as defined.
    const double* s = data_of<const double>(sums);
    for (int64_t c = 0; c < n; ++c) {
      double num = 0, den = 0;
      for (int64_t t = 0; t < threads; ++t) {
        num += s[t * 2 * (n + kPad) + c];
        den += s[t * 2 * (n + kPad) + (n + kPad) + c];
      }
      e[static_cast<size_t>(c)] = num / den;
    }
  }
  Tensor per_point = torch::stable::new_empty(points, {n});
  Tensor energy = torch::stable::new_empty(points, {});
  T* out = data_of<T>(per_point);
  double total = 0;
  for (int64_t c = 0; c < n; ++c) {
    out[c] = static_cast<T>(e[static_cast<size_t>(c)]);
    total += e[static_cast<size_t>(c)];
  }
  *data_of<T>(energy) = static_cast<T>(total / static_cast<double>(n));
  return {energy, per_point};
}

std::tuple<Tensor, Tensor> alignment_energy_cpu(const Tensor& points, const Tensor& directions, int64_t mode,
                                                int64_t k, int64_t metric) {
  const AlignmentEnergyProblem p = check_alignment_energy("alignment_energy", points, directions, mode, k, metric);
  if (points.scalar_type() == ScalarType::Float) return run_cpu<float>(points, directions, p);
  return run_cpu<double>(points, directions, p);
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("alignment_energy", TORCH_BOX(&facekernels::alignment_energy_cpu));
}
