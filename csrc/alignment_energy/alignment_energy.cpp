// alignment_energy (the attribute-invariance energy of issue 8): schema, argument checks, the tile helpers
// and the CPU binding.
//
// The op never holds a C x C matrix: it walks the strict upper triangle of the pair matrix in tiles of
// kCpuTileRows x kCpuTileCols (row block [r0, r0 + R) against columns [c0, c0 + W), c0 >= r0), so every
// pair is computed once and credited to both of its points. The tiles are dealt to the threads up front;
// a thread computes its tile's dot products with torch's mm.out (BLAS, single-threaded inside the
// parallel region) into its own buffers, allocated once per call, and hands the tile, still in its
// cache, to the fused epilogue (alignment_energy_cpu.cpp). Extra memory, whatever C is: two tile
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

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

AlignmentEnergyProblem check_alignment_energy(const char* op, const Tensor& points, const Tensor& directions,
                                              const std::string& mode, int64_t k, const std::string& metric) {
  FK_CHECK(mode == "inverse_distance" || mode == "knn", op,
           "mode must be \"inverse_distance\" or \"knn\", got \"", mode, "\"");
  FK_CHECK(metric == "cosine" || metric == "euclidean", op, "metric must be \"cosine\" or \"euclidean\", got \"",
           metric, "\"");
  check_dim(op, "points", points, 2, "[C, D]");
  check_dim(op, "directions", directions, 2, "[C, D]");
  FK_CHECK(directions.size(0) == points.size(0) && directions.size(1) == points.size(1), op,
           "directions must have the same shape as points ", shape_string(points), ", got ",
           shape_string(directions));
  const ScalarType s = points.scalar_type();
  FK_CHECK(s == ScalarType::Float || s == ScalarType::Double, op, "points must be float32 or float64, got ",
           dtype_name(s));
  check_same_dtype(op, "directions", directions, "points", points);
  check_same_device(op, "directions", directions, "points", points);
  const int64_t n = points.size(0);
  FK_CHECK(n >= 2, op, "points must have at least 2 rows (C >= 2 curves), got C = ", n);
  FK_CHECK(n < (int64_t{1} << 31), op, "points must have fewer than 2^31 rows, got C = ", n);
  const bool knn = mode == "knn";
  if (knn) {
    FK_CHECK(k >= 1 && k <= n - 1, op, "k must be in [1, C - 1] = [1, ", n - 1, "] for mode=\"knn\", got ", k);
  }
  return {n, points.size(1), k, knn, metric == "euclidean"};
}

double alignment_coincidence_tolerance(ScalarType dtype, int64_t dim) {
  const double unit_roundoff = dtype == ScalarType::Double ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
  return static_cast<double>(dim + 8) * unit_roundoff;
}

void* row_pointer(const Tensor& t, int64_t row) {
  return static_cast<char*>(t.data_ptr()) + row * t.stride(0) * static_cast<int64_t>(t.element_size());
}

void similarity_tile(void* out, const void* a, const void* b, int64_t rows, int64_t cols, int64_t dim,
                     torch::stable::Device device, ScalarType dtype) {
  const Tensor out_t = torch::stable::from_blob(out, {rows, cols}, {cols, 1}, device, dtype);
  const Tensor a_t = torch::stable::from_blob(const_cast<void*>(a), {rows, dim}, {dim, 1}, device, dtype);
  const Tensor b_transposed = torch::stable::from_blob(const_cast<void*>(b), {dim, cols}, {1, dim}, device, dtype);
  matmul_out(out_t, a_t, b_transposed);
}

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

template <typename T>
T* data_of(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

struct Tile {
  int64_t r0, rows, c0, cols;
};

// The tiles of the strict upper triangle, dealt to `threads` lists: largest first, each to the least
// loaded list so far (a static assignment, so sums are added in the same order on every call); each
// list is then walked in (r0, c0) order.
std::vector<std::vector<Tile>> deal_tiles(int64_t n, int64_t tile_rows, int64_t tile_cols, int64_t threads) {
  std::vector<Tile> tiles;
  for (int64_t r0 = 0; r0 < n; r0 += tile_rows) {
    const int64_t rows = min_of(tile_rows, n - r0);
    for (int64_t c0 = r0; c0 < n; c0 += tile_cols) {
      const int64_t cols = min_of(tile_cols, n - c0);
      if (c0 + cols - 1 > r0) tiles.push_back({r0, rows, c0, cols});  // else no pair above the diagonal
    }
  }
  std::stable_sort(tiles.begin(), tiles.end(),
                   [](const Tile& x, const Tile& y) { return x.rows * x.cols > y.rows * y.cols; });
  std::vector<std::vector<Tile>> lists(static_cast<size_t>(threads));
  std::vector<int64_t> load(static_cast<size_t>(threads), 0);
  for (const Tile& t : tiles) {
    const size_t least = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    lists[least].push_back(t);
    load[least] += t.rows * t.cols;
  }
  for (auto& list : lists) {
    std::sort(list.begin(), list.end(),
              [](const Tile& x, const Tile& y) { return x.r0 != y.r0 ? x.r0 < y.r0 : x.c0 < y.c0; });
  }
  return lists;
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
  const cpu::AlignmentEnergyKernels& kernels = FK_CPU_DISPATCH(cpu::alignment_energy_kernels);
  constexpr bool f32 = sizeof(T) == 4;

  Tensor unit_directions = torch::stable::new_empty(points, {n, dim});
  Tensor prepared_points = torch::stable::new_empty(points, {n, dim});
  Tensor sq_norms = torch::stable::new_zeros(points, {p.euclidean ? n + kPad : 0});
  auto prepare = [&](const cpu::PrepareArgs<T>& a) -> int64_t {
    if constexpr (f32) return kernels.prepare_f32(a);
    else return kernels.prepare_f64(a);
  };
  const int64_t zero_direction =
      prepare({data_of<const T>(directions), directions.stride(0), directions.stride(1), n, dim, true,
               data_of<T>(unit_directions), nullptr});
  FK_CHECK(zero_direction < 0, op, "directions[", zero_direction,
           "] must be a nonzero vector (a curve's direction e(x2) - e(x0)), got a zero vector");
  const int64_t zero_point =
      prepare({data_of<const T>(points), points.stride(0), points.stride(1), n, dim, !p.euclidean,
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
  parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* buffer_points = data_of<T>(sim_points) + t * buffer_size;
      T* buffer_directions = p.knn ? nullptr : data_of<T>(sim_directions) + t * buffer_size;
      double* num = p.knn ? nullptr : data_of<double>(sums) + t * 2 * (n + kPad);
      double* den = p.knn ? nullptr : num + (n + kPad);
      T* thresholds = p.knn ? data_of<T>(scratch) + t * (tile_cols + kPad) : nullptr;
      for (const Tile& tile : lists[static_cast<size_t>(t)]) {
        similarity_tile(buffer_points, row_pointer(prepared_points, tile.r0), row_pointer(prepared_points, tile.c0),
                        tile.rows, tile.cols, dim, device, dtype);
        cpu::TileArgs<T> args{buffer_points, nullptr, tile.r0, tile.rows, tile.c0, tile.cols,
                              p.euclidean, p.euclidean ? data_of<const T>(sq_norms) : nullptr, tolerance,
                              data_of<const T>(prepared_points), dim};
        if (p.knn) {
          if constexpr (f32) kernels.knn_tile_f32(args, heaps, thresholds);
          else kernels.knn_tile_f64(args, heaps, thresholds);
        } else {
          similarity_tile(buffer_directions, row_pointer(unit_directions, tile.r0),
                          row_pointer(unit_directions, tile.c0), tile.rows, tile.cols, dim, device, dtype);
          args.sim_directions = buffer_directions;
          if constexpr (f32) kernels.inverse_distance_tile_f32(args, num, den);
          else kernels.inverse_distance_tile_f64(args, num, den);
        }
      }
    }
  });

  std::vector<double> e(static_cast<size_t>(n));
  if (p.knn) {
    if constexpr (f32) kernels.knn_finish_f32(heaps, data_of<const T>(unit_directions), n, dim, e.data());
    else kernels.knn_finish_f64(heaps, data_of<const T>(unit_directions), n, dim, e.data());
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

std::tuple<Tensor, Tensor> alignment_energy_cpu(const Tensor& points, const Tensor& directions, std::string mode,
                                                int64_t k, std::string metric) {
  const AlignmentEnergyProblem p = check_alignment_energy("alignment_energy", points, directions, mode, k, metric);
  if (points.scalar_type() == ScalarType::Float) return run_cpu<float>(points, directions, p);
  return run_cpu<double>(points, directions, p);
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def(
      "alignment_energy(Tensor points, Tensor directions, str mode=\"inverse_distance\", int k=10, "
      "str metric=\"cosine\") -> (Tensor, Tensor)");
}

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("alignment_energy", TORCH_BOX(&facekernels::alignment_energy_cpu));
}
