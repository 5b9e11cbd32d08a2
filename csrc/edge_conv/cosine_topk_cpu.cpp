// cosine_topk: the CPU binding and driver (tiling, scheduling, the GEMMs through torch's BLAS); the
// selection kernels are cosine_topk_kernels.{h,cpp}, the Gram kernel cosine_topk_gram_kernels.cpp.
//
// The op is GEMM-bound. Its GEMMs run through torch's BLAS (core/blas.h's gemm_into) on tiles a thread
// owns, into buffers allocated once per call, and the selection works on each tile while it is in the
// thread's cache. Work is dealt to the threads statically (task t to thread t mod threads).
//
// Tasks are (batch element, block of R rows of x); a task walks every column tile of y, GEMM then
// selection, and finishes its rows. Extra memory, whatever N and M: per thread one R x W tile (2 MiB)
// and the rows' candidate buffers, plus O(N + M) inverse norms. No normalised copy of x or y is made:
// the tile holds raw dot products, scaled by the inverse norms in the epilogue. float32 x against
// itself in one task per batch element runs the symmetric Gram kernel instead of the GEMM.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <vector>

#include "core/blas.h"
#include "core/parallel.h"
#include "core/tensors.h"
#include "edge_conv/cosine_topk_kernels.h"
#include "edge_conv/edge_conv.h"

namespace facekernels {
namespace {

using edge_cpu::ceil_div;
using edge_cpu::kPad;
using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// out[(i - i0) * C + c] = a[c * cols + i] for i in [i0, i0 + count): columns of a [C, cols] as rows.
template <typename T>
void transpose_columns(const T* a, int64_t channels, int64_t cols, int64_t i0, int64_t count, T* out) {
  constexpr int64_t kBlock = 32;
  for (int64_t c0 = 0; c0 < channels; c0 += kBlock) {
    const int64_t c1 = std::min(channels, c0 + kBlock);
    for (int64_t i = 0; i < count; ++i) {
      for (int64_t c = c0; c < c1; ++c) out[i * channels + c] = a[c * cols + i0 + i];
    }
  }
}

// The distinct candidate columns of a row block, ascending, into `candidates`; slot[m] = their position
// (slot holds -1 elsewhere); gathered[slot * C + c] = y[c, m], read row by row of y in column order.
template <typename T>
void gather_candidates(const cpu::TopkState<T>& s, int64_t rows, const T* y, int64_t channels, int64_t m,
                       int32_t* slot, std::vector<int32_t>& candidates, std::vector<T>& gathered) {
  candidates.clear();
  for (int64_t r = 0; r < rows; ++r) {
    const int32_t* index = s.index + r * s.capacity;
    for (int64_t i = 0; i < s.count[r]; ++i) {
      if (slot[index[i]] < 0) {
        slot[index[i]] = 0;
        candidates.push_back(index[i]);
      }
    }
  }
  std::sort(candidates.begin(), candidates.end());
  const int64_t count = static_cast<int64_t>(candidates.size());
  for (int64_t i = 0; i < count; ++i) slot[candidates[static_cast<size_t>(i)]] = static_cast<int32_t>(i);
  gathered.resize(static_cast<size_t>(count * channels));
  constexpr int64_t kBlock = 256;  // candidates per pass: their rows of `gathered` stay in cache
  for (int64_t i0 = 0; i0 < count; i0 += kBlock) {
    const int64_t i1 = std::min(count, i0 + kBlock);
    for (int64_t c = 0; c < channels; ++c) {
      const T* row = y + c * m;
      for (int64_t i = i0; i < i1; ++i) gathered[static_cast<size_t>(i * channels + c)] = row[candidates[static_cast<size_t>(i)]];
    }
  }
}

template <typename T>
std::tuple<Tensor, Tensor> cosine_topk_run(const Tensor& x_in, const std::optional<Tensor>& y_in,
                                           const CosineTopkProblem& p) {
  const cpu::CosineTopkKernels<T>& kernels = FK_CPU_KERNEL_TABLE(cpu::cosine_topk_kernels, T);
  constexpr bool f32 = std::is_same_v<T, float>;
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m, k = p.k;
  Tensor values = torch::stable::new_empty(x_in, {B, N, k});
  Tensor indices = torch::stable::new_empty(x_in, {B, N, k}, ScalarType::Long);
  if (B == 0 || N == 0) return {values, indices};

  const Tensor x = torch::stable::contiguous(x_in);
  const Tensor y = y_in.has_value() ? torch::stable::contiguous(*y_in) : x;
  const bool self = !y_in.has_value();

  Tensor inv_x = torch::stable::new_empty(x, {B * N}, ScalarType::Double);
  Tensor inv_x_t = torch::stable::new_empty(x, {B * N + kPad});
  Tensor inv_y = self ? inv_x : torch::stable::new_empty(x, {B * M}, ScalarType::Double);
  Tensor inv_y_t = torch::stable::new_zeros(x, {B * (M + kPad)});
  auto norms = [&](const Tensor& t, int64_t cols, const Tensor& inv, T* inv_t, int64_t stride) {
    kernels.inverse_norms(data_of<const T>(t), B, C, cols, data_of<double>(inv), inv_t, stride);
  };
  if (self) {
    norms(x, N, inv_x, data_of<T>(inv_y_t), M + kPad);
  } else {
    norms(x, N, inv_x, data_of<T>(inv_x_t), N);
    norms(y, M, inv_y, data_of<T>(inv_y_t), M + kPad);
  }

  // Tiles: W columns of y per GEMM, R rows of x per task (fewer when the candidate buffers of large k
  // would pass about 8 MiB per thread, or to give every thread work).
  const int64_t threads = num_threads();
  const int64_t W = std::min<int64_t>(M, f32 ? 2048 : 1024);
  const int64_t capacity = 2 * k + 64;
  const int64_t row_bytes = (capacity + k) * static_cast<int64_t>(sizeof(T) + sizeof(int32_t));
  int64_t R = std::min<int64_t>({256, N, std::max<int64_t>(8, (int64_t{8} << 20) / row_bytes)});
  while (R > 16 && B * ceil_div(N, R) < 2 * threads) R = ceil_div(R, 2);
  const int64_t blocks = ceil_div(N, R), tasks = B * blocks;

  const int64_t tile_size = R * W + kPad;
  Tensor sim = torch::stable::new_empty(x, {threads, tile_size});
  Tensor approx = torch::stable::new_empty(x, {threads, R * capacity});
  Tensor index = torch::stable::new_empty(x, {threads, R * capacity}, ScalarType::Int);
  Tensor count = torch::stable::new_zeros(x, {threads, R}, ScalarType::Long);
  Tensor threshold = torch::stable::new_empty(x, {threads, R});
  Tensor heap = torch::stable::new_empty(x, {threads, R * k});
  Tensor filled = torch::stable::new_zeros(x, {threads, R}, ScalarType::Long);
  Tensor exact = torch::stable::new_empty(x, {threads, capacity}, ScalarType::Double);
  Tensor order = torch::stable::new_empty(x, {threads, capacity}, ScalarType::Int);
  Tensor select = torch::stable::new_empty(x, {threads, capacity});
  // Transposed copies for the float64 recomputations: the task's rows of x, and all of y when it is
  // small (at most 2^20 elements per batch element; a large gallery is read in place).
  const bool transpose_y = M * C <= (int64_t{1} << 20);
  Tensor x_rows = torch::stable::new_empty(x, {threads, R * C});
  Tensor y_rows = torch::stable::new_empty(x, {transpose_y ? threads : 0, M * C});
  // Otherwise each row block's final candidates are gathered, in column order (a stream over y rather
  // than one cache miss per candidate and channel), into a per-thread buffer; slot maps m to its row.
  Tensor slot = torch::stable::new_empty(x, {transpose_y ? 0 : threads, M}, ScalarType::Int);
  if (!transpose_y) std::fill_n(data_of<int32_t>(slot), threads * M, -1);
  std::fill_n(data_of<T>(threshold), threads * R, -std::numeric_limits<T>::infinity());
  const T u = std::numeric_limits<T>::epsilon() / 2;
  const T margin = static_cast<T>(2.2 * static_cast<double>(C + 8) * static_cast<double>(u)) + 8 * u;

  const torch::stable::Device device = x.device();
  const ScalarType dtype = x.scalar_type();
  // float32 x against itself with one task per batch element: scratch of the symmetric Gram kernel.
  const bool use_gram = f32 && self && R == N && W == M;
  const cpu::CosineGramKernels<float>* gram_kernels =
      use_gram ? &FK_CPU_KERNEL_TABLE(cpu::cosine_gram_kernels, float) : nullptr;
  const int64_t gram_size = use_gram ? gram_kernels->gram_self_scratch(C, N) : 0;
  Tensor gram_scratch = torch::stable::new_empty(x, {use_gram ? threads * gram_size : 0}, ScalarType::Float);
  float* gram = use_gram ? data_of<float>(gram_scratch) : nullptr;
  parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* tile = data_of<T>(sim) + t * tile_size;
      const cpu::TopkState<T> state{k,
                                    capacity,
                                    data_of<T>(approx) + t * R * capacity,
                                    data_of<int32_t>(index) + t * R * capacity,
                                    data_of<int64_t>(count) + t * R,
                                    data_of<T>(threshold) + t * R,
                                    data_of<T>(heap) + t * R * k,
                                    data_of<int64_t>(filled) + t * R,
                                    data_of<double>(exact) + t * capacity,
                                    data_of<int32_t>(order) + t * capacity,
                                    data_of<T>(select) + t * capacity};
      T* xr = data_of<T>(x_rows) + t * R * C;
      T* yr = transpose_y ? data_of<T>(y_rows) + t * M * C : nullptr;
      int64_t transposed_for = -1;
      std::vector<int32_t> candidates;
      std::vector<T> gathered;
      for (int64_t task = t; task < tasks; task += threads) {
        const int64_t b = task / blocks, n0 = (task % blocks) * R, rows = std::min(R, N - n0);
        const T* xb = data_of<const T>(x) + b * C * N;
        const T* yb = data_of<const T>(y) + b * C * M;
        transpose_columns(xb, C, N, n0, rows, xr);
        // Against itself with the task's rows all of x, the transposed rows of x are those of y.
        const bool y_in_x_rows = self && n0 == 0 && rows == N;
        if (transpose_y && !y_in_x_rows && transposed_for != b) {
          transpose_columns(yb, C, M, 0, M, yr);
          transposed_for = b;
        }
        const cpu::TopkColumns<T> columns{xb,
                                          yb,
                                          C,
                                          N,
                                          M,
                                          data_of<const double>(inv_x) + b * N,
                                          data_of<const double>(inv_y) + b * M,
                                          data_of<const T>(inv_y_t) + b * (M + kPad),
                                          margin,
                                          xr,
                                          n0,
                                          y_in_x_rows ? xr : yr,
                                          nullptr};
        for (int64_t c0 = 0; c0 < M; c0 += W) {
          const int64_t cols = std::min(W, M - c0);
          if constexpr (f32) {
            if (gram != nullptr && y_in_x_rows && cols == M) {
              // x against itself, one tile: the symmetric Gram kernel, about half the GEMM.
              gram_kernels->gram_self(xb, C, N, tile, gram + t * gram_size);
              kernels.topk_tile(columns, tile, n0, rows, c0, cols, state);
              continue;
            }
          }
          // tile[r, j] = <x[:, n0 + r], y[:, c0 + j]>: x^T rows are columns of x (row stride 1).
          gemm_into(MatrixView::row_major(tile, rows, cols), MatrixView::row_major(xb + n0, C, rows, N).t(),
                    MatrixView::row_major(yb + c0, C, cols, M), device, dtype);
          kernels.topk_tile(columns, tile, n0, rows, c0, cols, state);
        }
        cpu::TopkColumns<T> final_columns = columns;
        if (!transpose_y) {
          kernels.topk_prune(columns, n0, rows, state);
          int32_t* slots = data_of<int32_t>(slot) + t * M;
          gather_candidates(state, rows, yb, C, M, slots, candidates, gathered);
          final_columns.y_rows = gathered.data();
          final_columns.y_slot = slots;
        }
        T* v = data_of<T>(values) + (b * N + n0) * k;
        int64_t* o = data_of<int64_t>(indices) + (b * N + n0) * k;
        kernels.topk_finish(final_columns, n0, rows, state, v, o);
        if (!transpose_y) {
          int32_t* slots = data_of<int32_t>(slot) + t * M;
          for (const int32_t m : candidates) slots[m] = -1;
        }
      }
    }
  });
  // A row of fewer than k finite similarities (NaN or inf in x or y) is padded with -1: refuse it.
  const int64_t unfilled = first_index_out_of_range(data_of<const int64_t>(indices), B * N * k, M);
  if (unfilled >= 0) fail_cosine_topk_unfilled("cosine_topk", p, self, unfilled);
  return {values, indices};
}

std::tuple<Tensor, Tensor> cosine_topk_cpu(const Tensor& x, int64_t k, const std::optional<Tensor>& y) {
  const CosineTopkProblem p = check_cosine_topk("cosine_topk", x, k, y);
  if (x.scalar_type() == ScalarType::Float) return cosine_topk_run<float>(x, y, p);
  return cosine_topk_run<double>(x, y, p);
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("cosine_topk", TORCH_BOX(&facekernels::cosine_topk_cpu));
}
