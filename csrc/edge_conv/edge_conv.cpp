// cosine_topk and edge_conv_max (MOL's channel correspondence convolution, issue 5): schemas, argument
// checks, the GEMM helper and the CPU binding.
//
// Both ops are GEMM-bound. Their GEMMs run through torch's BLAS (aten::mm.out through the stable
// dispatcher) on tiles a thread owns, into buffers allocated once per call, and the fused epilogues in
// edge_conv_cpu.cpp work on each tile while it is in the thread's cache. Work is dealt to the threads
// statically (task t to thread t mod threads), so per-thread partial sums are added in a fixed order.
//
// cosine_topk: tasks are (batch element, block of R rows of x); a task walks every column tile of y,
// GEMM then selection, and finishes its rows. Extra memory, whatever N and M: per thread one R x W tile
// (2 MiB) and the rows' candidate buffers, plus O(N + M) inverse norms. No normalised copy of x or y
// is made: the tile holds raw dot products, scaled by the inverse norms in the epilogue.
//
// edge_conv_max: the float32 forward is our own register-blocked GEMM (edge_conv_cpu.cpp) that builds
// the folded weights W_j (edge_conv_kernels.h) panel by panel in L1 and keeps the running max over j,
// with the index of the first maximal j, in its epilogue; float64 builds W_j side by side, [N, kj M],
// per task (batch element, block of channels) and runs one BLAS GEMM per group of neighbours. The
// backward recomputes no forward GEMM: the saved winner routes the gradient. With one neighbour it runs
// as GEMMs; with more, G^T X (shared by all neighbours) goes to BLAS over the whole batch and grad_x and
// w_edge's gradient through the gather run as routed products that visit each (c, m) once, against the
// panel of its winner (edge_conv_cpu.cpp).
#include "edge_conv/edge_conv.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <tuple>
#include <vector>

#include "core/blas.h"
#include "core/checks.h"
#include "core/parallel.h"
#include "edge_conv/edge_conv_kernels.h"

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

CosineTopkProblem check_cosine_topk(const char* op, const Tensor& x, int64_t k, const std::optional<Tensor>& y) {
  check_dim(op, "x", x, 3, "[B, C, N]");
  check_floating_dtype(op, "x", x);
  int64_t m = x.size(2);
  if (y.has_value()) {
    check_dim(op, "y", *y, 3, "[B, C, M]");
    check_same_device(op, "y", *y, "x", x);
    check_same_dtype(op, "y", *y, "x", x);
    FK_CHECK(y->size(0) == x.size(0) && y->size(1) == x.size(1), op, "y must be [B, C, M] with B = ", x.size(0),
             " and C = ", x.size(1), " as x, got ", shape_string(*y));
    m = y->size(2);
  }
  FK_CHECK(k >= 1 && k <= m, op, "k must be in [1, M] = [1, ", m, "], got ", k);
  FK_CHECK(m < (int64_t{1} << 31), op, "y must have fewer than 2^31 columns, got M = ", m);
  return {x.size(0), x.size(1), x.size(2), m, k};
}

EdgeConvProblem check_edge_conv_max(const char* op, const Tensor& x, const Tensor& idx, const Tensor& w_self,
                                    const Tensor& w_edge, const std::optional<Tensor>& bias) {
  check_dim(op, "x", x, 3, "[B, C, N]");
  check_floating_dtype(op, "x", x);
  check_same_device(op, "idx", idx, "x", x);
  FK_CHECK(idx.scalar_type() == ScalarType::Long, op, "idx must be int64, got ", dtype_name(idx.scalar_type()));
  check_dim(op, "idx", idx, 3, "[B, N, k]");
  const int64_t b = x.size(0), n = x.size(2);
  FK_CHECK(idx.size(0) == b && idx.size(1) == n, op, "idx must be [B, N, k] with B = ", b, " and N = ", n,
           " as x, got ", shape_string(idx));
  FK_CHECK(idx.size(2) >= 1, op, "idx must have at least one neighbour (k >= 1), got ", shape_string(idx));
  check_same_device(op, "w_self", w_self, "x", x);
  check_same_dtype(op, "w_self", w_self, "x", x);
  check_dim(op, "w_self", w_self, 2, "[M, N]");
  FK_CHECK(w_self.size(1) == n, op, "w_self must be [M, N] with N = ", n, " as x, got ", shape_string(w_self));
  const int64_t m = w_self.size(0);
  check_same_device(op, "w_edge", w_edge, "x", x);
  check_same_dtype(op, "w_edge", w_edge, "x", x);
  FK_CHECK(w_edge.dim() == 2 && w_edge.size(0) == m && w_edge.size(1) == n, op,
           "w_edge must have the same shape as w_self ", shape_string(w_self), ", got ", shape_string(w_edge));
  if (bias.has_value()) {
    check_same_device(op, "bias", *bias, "x", x);
    check_same_dtype(op, "bias", *bias, "x", x);
    FK_CHECK(bias->dim() == 1 && bias->size(0) == m, op, "bias must be [M] = [", m, "], got ",
             shape_string(*bias));
  }
  FK_CHECK(n < (int64_t{1} << 31), op, "x must have fewer than 2^31 positions, got N = ", n);
  return {b, x.size(1), n, m, idx.size(2), bias.has_value()};
}

EdgeConvProblem check_edge_conv_max_backward(const char* op, const Tensor& grad_out, const Tensor& x,
                                             const Tensor& idx, const Tensor& w_self, const Tensor& w_edge,
                                             const Tensor& winner, bool has_bias) {
  const EdgeConvProblem q = check_edge_conv_max(op, x, idx, w_self, w_edge, std::nullopt);
  const EdgeConvProblem p{q.batch, q.channels, q.n, q.m, q.k, has_bias};
  FK_CHECK(grad_out.dim() == 3 && grad_out.size(0) == p.batch && grad_out.size(1) == p.channels &&
               grad_out.size(2) == p.m,
           op, "grad_out must be [B, C, M] = [", p.batch, ", ", p.channels, ", ", p.m, "], got ",
           shape_string(grad_out));
  check_same_dtype(op, "grad_out", grad_out, "x", x);
  check_same_device(op, "grad_out", grad_out, "x", x);
  check_same_device(op, "winner", winner, "x", x);
  FK_CHECK(winner.scalar_type() == ScalarType::Int && winner.dim() == 3 && winner.size(0) == p.batch &&
               winner.size(1) == p.channels && winner.size(2) == p.m,
           op, "winner must be int32 [B, C, M], got ", dtype_name(winner.scalar_type()), " ", shape_string(winner));
  return p;
}

void fail_edge_index(const char* op, int64_t value, int64_t at, int64_t n, int64_t k) {
  const int64_t j = at % k, i = (at / k) % n, b = at / k / (n > 0 ? n : 1);
  fail(op, "idx must hold positions in [0, N) = [0, ", n, "), got ", value, " at idx[", b, ", ", i, ", ", j, "]");
}

void check_edge_index_range(const char* op, const int64_t* idx, int64_t count, int64_t n, int64_t k) {
  const uint64_t limit = static_cast<uint64_t>(n);
  uint64_t bad = 0;
  for (int64_t i = 0; i < count; ++i) bad |= static_cast<uint64_t>(static_cast<uint64_t>(idx[i]) >= limit);
  if (!bad) return;
  for (int64_t i = 0; i < count; ++i) {
    if (static_cast<uint64_t>(idx[i]) >= limit) fail_edge_index(op, idx[i], i, n, k);
  }
}

void matmul_into(const EdgeMatrixView& out, const EdgeMatrixView& a, const EdgeMatrixView& b, torch::stable::Device device,
                 ScalarType dtype) {
  const bool batched = out.batch != 1;
  auto make = [&](const EdgeMatrixView& v) {
    if (batched) {
      return torch::stable::from_blob(v.data, {v.batch, v.rows, v.cols}, {v.batch_stride, v.row_stride, v.col_stride},
                                      device, dtype);
    }
    return torch::stable::from_blob(v.data, {v.rows, v.cols}, {v.row_stride, v.col_stride}, device, dtype);
  };
  const Tensor out_t = make(out), a_t = make(a), b_t = make(b);
  matmul_out(out_t, a_t, b_t);
}

namespace {

constexpr int64_t kPad = 64;

template <typename T>
T* data_of(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }


// ---- cosine_topk --------------------------------------------------------------------------------

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
  const cpu::EdgeConvKernels& kernels = FK_CPU_DISPATCH(cpu::edge_conv_kernels);
  constexpr bool f32 = sizeof(T) == 4;
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
    if constexpr (f32) kernels.inverse_norms_f32(data_of<const T>(t), B, C, cols, data_of<double>(inv), inv_t, stride);
    else kernels.inverse_norms_f64(data_of<const T>(t), B, C, cols, data_of<double>(inv), inv_t, stride);
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
  const int64_t gram_size = use_gram ? kernels.gram_self_scratch(C, N) : 0;
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
              kernels.gram_self(xb, C, N, tile, gram + t * gram_size);
              kernels.topk_tile_f32(columns, tile, n0, rows, c0, cols, state);
              continue;
            }
          }
          // tile[r, j] = <x[:, n0 + r], y[:, c0 + j]>: x^T rows are columns of x (row stride 1).
          matmul_into({tile, 1, rows, cols, 0, cols, 1},
                      {const_cast<T*>(xb + n0), 1, rows, C, 0, 1, N},
                      {const_cast<T*>(yb + c0), 1, C, cols, 0, M, 1}, device, dtype);
          if constexpr (f32) kernels.topk_tile_f32(columns, tile, n0, rows, c0, cols, state);
          else kernels.topk_tile_f64(columns, tile, n0, rows, c0, cols, state);
        }
        cpu::TopkColumns<T> final_columns = columns;
        if (!transpose_y) {
          if constexpr (f32) kernels.topk_prune_f32(columns, n0, rows, state);
          else kernels.topk_prune_f64(columns, n0, rows, state);
          int32_t* slots = data_of<int32_t>(slot) + t * M;
          gather_candidates(state, rows, yb, C, M, slots, candidates, gathered);
          final_columns.y_rows = gathered.data();
          final_columns.y_slot = slots;
        }
        T* v = data_of<T>(values) + (b * N + n0) * k;
        int64_t* o = data_of<int64_t>(indices) + (b * N + n0) * k;
        if constexpr (f32) kernels.topk_finish_f32(final_columns, n0, rows, state, v, o);
        else kernels.topk_finish_f64(final_columns, n0, rows, state, v, o);
        if (!transpose_y) {
          int32_t* slots = data_of<int32_t>(slot) + t * M;
          for (const int32_t m : candidates) slots[m] = -1;
        }
      }
    }
  });
  return {values, indices};
}

std::tuple<Tensor, Tensor> cosine_topk_cpu(const Tensor& x, int64_t k, const std::optional<Tensor>& y) {
  const CosineTopkProblem p = check_cosine_topk("cosine_topk", x, k, y);
  if (x.scalar_type() == ScalarType::Float) return cosine_topk_run<float>(x, y, p);
  return cosine_topk_run<double>(x, y, p);
}

// ---- edge_conv_max ------------------------------------------------------------------------------

// The work split shared by the forward and the backward.
struct EdgePlan {
  int64_t threads, cb, blocks, tasks, kj;
};

EdgePlan edge_plan(const EdgeConvProblem& p) {
  EdgePlan plan{};
  plan.threads = num_threads();
  // Neighbours per group: the side-by-side weights [N, kj M] within about 4M elements, at least one.
  const int64_t nm = std::max<int64_t>(1, p.n * p.m);
  plan.kj = std::max<int64_t>(1, std::min<int64_t>(p.k, (int64_t{1} << 22) / nm));
  // Channels per task: all of them unless that leaves threads idle; a group's GEMM output [cb, kj M]
  // within about 2M elements.
  int64_t cb = std::max<int64_t>(1, std::min<int64_t>(p.channels, (int64_t{1} << 21) / std::max<int64_t>(1, plan.kj * p.m)));
  while (cb > 32 && p.batch * ceil_div(p.channels, cb) < 2 * plan.threads) cb = ceil_div(cb, 2);
  plan.cb = cb;
  plan.blocks = ceil_div(p.channels, cb);
  plan.tasks = p.batch * plan.blocks;
  return plan;
}

// skip[j] = 1 when idx[b, :, j] equals idx[b, :, j'] for some j' < j: the same pre-activation, which the
// max must attribute to the first (BLAS may round equal columns differently at different positions).
void duplicate_neighbours(const int64_t* idx_b, int64_t n, int64_t k, uint8_t* skip) {
  for (int64_t j = 0; j < k; ++j) {
    skip[j] = 0;
    for (int64_t q = 0; q < j && !skip[j]; ++q) {
      bool same = true;
      for (int64_t i = 0; i < n && same; ++i) same = idx_b[i * k + j] == idx_b[i * k + q];
      if (same) skip[j] = 1;
    }
  }
}

// (w_self - w_edge)^T and w_edge^T, [N, M] contiguous, from weights of any strides.
template <typename T>
void transpose_weights(const Tensor& w_self, const Tensor& w_edge, int64_t m, int64_t n, T* self_minus_edge_t,
                       T* edge_t) {
  const T* ws = data_of<const T>(w_self);
  const T* we = data_of<const T>(w_edge);
  const int64_t s0 = w_self.stride(0), s1 = w_self.stride(1), e0 = w_edge.stride(0), e1 = w_edge.stride(1);
  parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      for (int64_t r = 0; r < m; ++r) {
        const T e = we[r * e0 + i * e1];
        self_minus_edge_t[i * m + r] = ws[r * s0 + i * s1] - e;
        edge_t[i * m + r] = e;
      }
    }
  });
}

// The forward's outputs out [B, C, M] and winner (int32), written by edge_conv_max_run_f64 or
// edge_conv_max_fused (float32) from idx contiguous and checked, bias contiguous, B, C, M > 0.
struct EdgeForward {
  Tensor out, winner, idx;
  std::optional<Tensor> bias;
};

void edge_conv_max_run_f64(const Tensor& x_in, const Tensor& w_self, const Tensor& w_edge, const EdgeForward& fw,
                           const EdgeConvProblem& p) {
  const Tensor& idx = fw.idx;
  const std::optional<Tensor>& bias = fw.bias;
  const cpu::EdgeConvKernels& kernels = FK_CPU_DISPATCH(cpu::edge_conv_kernels);
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m, k = p.k;
  const Tensor x = torch::stable::contiguous(x_in);
  Tensor weights_t = torch::stable::new_empty(x, {2, N, M});
  double* self_minus_edge_t = data_of<double>(weights_t);
  double* edge_t = self_minus_edge_t + N * M;
  transpose_weights<double>(w_self, w_edge, M, N, self_minus_edge_t, edge_t);
  const cpu::EdgeWeights<double> weights{self_minus_edge_t, edge_t, N, M};

  const EdgePlan plan = edge_plan(p);
  const int64_t width = plan.kj * M;
  Tensor wcat = torch::stable::new_empty(x, {plan.threads, N * width + kPad});
  Tensor z = torch::stable::new_empty(x, {plan.threads, plan.cb * width + kPad});
  Tensor skip = torch::stable::new_empty(x, {plan.threads, k}, ScalarType::Byte);
  const torch::stable::Device device = x.device();
  const ScalarType dtype = x.scalar_type();
  const double* bias_data = bias.has_value() ? data_of<const double>(*bias) : nullptr;

  parallel_for(0, plan.threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      double* w = data_of<double>(wcat) + t * (N * width + kPad);
      double* zt = data_of<double>(z) + t * (plan.cb * width + kPad);
      uint8_t* sk = data_of<uint8_t>(skip) + t * k;
      int64_t built_for = -1;  // the batch element whose duplicate flags sk holds
      for (int64_t task = t; task < plan.tasks; task += plan.threads) {
        const int64_t b = task / plan.blocks, c0 = (task % plan.blocks) * plan.cb;
        const int64_t rows = std::min(plan.cb, C - c0);
        const int64_t* idx_b = data_of<const int64_t>(idx) + b * N * k;
        if (built_for != b) {
          duplicate_neighbours(idx_b, N, k, sk);
          built_for = b;
        }
        const double* xb = data_of<const double>(x) + (b * C + c0) * N;
        double* best = data_of<double>(fw.out) + (b * C + c0) * M;
        int32_t* arg = data_of<int32_t>(fw.winner) + (b * C + c0) * M;
        for (int64_t j0 = 0; j0 < k; j0 += plan.kj) {
          const int64_t kj = std::min(plan.kj, k - j0);
          kernels.build_weights_f64(weights, idx_b, k, j0, kj, w);
          matmul_into({zt, 1, rows, kj * M, 0, kj * M, 1}, {const_cast<double*>(xb), 1, rows, N, 0, N, 1},
                      {w, 1, N, kj * M, 0, kj * M, 1}, device, dtype);
          kernels.max_group_f64(zt, rows, M, j0, kj, sk, j0 == 0, best, arg);
        }
        kernels.max_finish_f64(best, arg, bias_data, rows, M);
      }
    }
  });
}

// float32: the fused kernel (edge_conv_cpu.cpp), our own GEMM with the weight building and the max in
// its loops. Tasks are (batch element, group of column blocks); the weights are packed once per call.
void edge_conv_max_fused(const Tensor& x, const Tensor& w_self, const Tensor& w_edge, const EdgeForward& fw,
                         const EdgeConvProblem& p) {
  const cpu::EdgeConvKernels& kernels = FK_CPU_DISPATCH(cpu::edge_conv_kernels);
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m, k = p.k;
  const Tensor& idx = fw.idx;
  const std::optional<Tensor>& bias = fw.bias;
  const int64_t NR = kernels.edge_fused_block(), mblocks = ceil_div(M, NR);
  Tensor packed = torch::stable::new_empty(x, {2, mblocks * N * NR + kPad});
  float* sme = data_of<float>(packed);
  float* edge = sme + mblocks * N * NR + kPad;
  const float* ws = data_of<const float>(w_self);
  const float* we = data_of<const float>(w_edge);
  parallel_for(0, mblocks, 1, [&](int64_t begin, int64_t end) {
    kernels.edge_fused_pack_weights(ws, w_self.stride(0), w_self.stride(1), we, w_edge.stride(0), w_edge.stride(1),
                                    M, N, begin, end, sme, edge);
  });
  const cpu::EdgeFused f{sme, edge, bias.has_value() ? data_of<const float>(*bias) : nullptr, C, N, M, k};

  const int64_t threads = num_threads();
  // Column groups per batch element: one unless the batch leaves threads idle.
  const int64_t groups = std::min(mblocks, B >= 2 * threads ? int64_t{1} : ceil_div(2 * threads, B));
  const int64_t per_group = ceil_div(mblocks, groups), tasks = B * groups;
  const int64_t scratch_size = kernels.edge_fused_scratch(C, N);
  Tensor scratch = torch::stable::new_empty(x, {threads, scratch_size});
  Tensor skip = torch::stable::new_empty(x, {threads, k}, ScalarType::Byte);
  const float* xd = data_of<const float>(x);
  const int64_t sb = x.stride(0), sc = x.stride(1), sn = x.stride(2);
  parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      float* sp = data_of<float>(scratch) + t * scratch_size;
      uint8_t* sk = data_of<uint8_t>(skip) + t * k;
      int64_t built_for = -1;
      for (int64_t task = t; task < tasks; task += threads) {
        const int64_t b = task / groups, mb0 = (task % groups) * per_group;
        const int64_t mb1 = std::min(mblocks, mb0 + per_group);
        if (mb0 >= mb1) continue;
        const int64_t* idx_b = data_of<const int64_t>(idx) + b * N * k;
        if (built_for != b) {
          duplicate_neighbours(idx_b, N, k, sk);
          built_for = b;
        }
        kernels.edge_fused_forward(f, xd + b * sb, sc, sn, idx_b, sk, mb0, mb1, data_of<float>(fw.out) + b * C * M,
                                   data_of<int32_t>(fw.winner) + b * C * M, sp);
      }
    }
  });
}

std::tuple<Tensor, Tensor> edge_conv_max_cpu(const Tensor& x, const Tensor& idx, const Tensor& w_self,
                                             const Tensor& w_edge, const std::optional<Tensor>& bias) {
  const EdgeConvProblem p = check_edge_conv_max("edge_conv_max", x, idx, w_self, w_edge, bias);
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m, k = p.k;
  EdgeForward fw{torch::stable::new_empty(x, {B, C, M}), torch::stable::new_empty(x, {B, C, M}, ScalarType::Int),
                 torch::stable::contiguous(idx),
                 bias.has_value() ? std::optional<Tensor>(torch::stable::contiguous(*bias)) : std::nullopt};
  check_edge_index_range("edge_conv_max", data_of<const int64_t>(fw.idx), B * N * k, N, k);
  if (B == 0 || C == 0 || M == 0) return {fw.out, fw.winner};
  if (x.scalar_type() == ScalarType::Float) edge_conv_max_fused(x, w_self, w_edge, fw, p);
  else edge_conv_max_run_f64(x, w_self, w_edge, fw, p);
  return {fw.out, fw.winner};
}

// Raises unless every winner (count values, [B, C, M] contiguous) is in [-1, k): -1 for an inactive
// output, else the neighbour its max came from.
void check_winner_range(const char* op, const int32_t* winner, int64_t count, int64_t k, int64_t c, int64_t m) {
  const uint32_t limit = static_cast<uint32_t>(k) + 1;
  uint32_t bad = 0;
  for (int64_t i = 0; i < count; ++i) bad |= static_cast<uint32_t>(static_cast<uint32_t>(winner[i]) + 1 >= limit);
  if (!bad) return;
  for (int64_t i = 0; i < count; ++i) {
    if (static_cast<uint32_t>(winner[i]) + 1 >= limit) {
      fail(op, "winner must hold neighbour indices in [-1, k) = [-1, ", k, "), got ", winner[i], " at winner[",
           i / (c * m), ", ", (i / m) % c, ", ", i % m, "]");
    }
  }
}

// out[r] = sum over the threads t (in order) of partial[t * m + r].
template <typename T>
void sum_thread_partials(const double* partial, int64_t threads, int64_t m, T* out) {
  for (int64_t r = 0; r < m; ++r) {
    double sum = 0;
    for (int64_t t = 0; t < threads; ++t) sum += partial[t * m + r];
    out[r] = static_cast<T>(sum);
  }
}

// The backward's inputs (contiguous) and outputs, allocated by edge_conv_max_backward_run, which picks
// edge_conv_max_backward_dense or _routed; they write grad_x, grad_self, grad_edge and grad_bias whole.
struct EdgeBackward {
  Tensor grad, x, idx, winner;
  Tensor grad_x, grad_self, grad_edge, grad_bias;
};

// The backward by GEMMs per group of neighbours (k = 1, see routed_backward): the saved winner routes the gradient
// into dZ [rows, kj M], then dX = dZ W^T and dW = X^T dZ per group (two GEMMs of the forward's size).
template <typename T>
void edge_conv_max_backward_dense(const EdgeBackward& bw, const Tensor& w_self, const Tensor& w_edge,
                                  const EdgeConvProblem& p, bool need_x, bool need_weights) {
  const cpu::EdgeConvKernels& kernels = FK_CPU_DISPATCH(cpu::edge_conv_kernels);
  constexpr bool f32 = sizeof(T) == 4;
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m, k = p.k;
  const Tensor &grad = bw.grad, &x = bw.x, &idx = bw.idx, &winner = bw.winner;
  const Tensor &grad_x = bw.grad_x, &grad_self = bw.grad_self, &grad_edge = bw.grad_edge, &grad_bias = bw.grad_bias;
  Tensor weights_t = torch::stable::new_empty(x, {2, N, M});
  T* self_minus_edge_t = data_of<T>(weights_t);
  T* edge_t = self_minus_edge_t + N * M;
  if (need_x) transpose_weights<T>(w_self, w_edge, M, N, self_minus_edge_t, edge_t);
  const cpu::EdgeWeights<T> weights{self_minus_edge_t, edge_t, N, M};

  const EdgePlan plan = edge_plan(p);
  const int64_t width = plan.kj * M, threads = plan.threads;
  const bool groups = plan.kj < k;
  Tensor wcat = torch::stable::new_empty(x, {need_x ? threads : 0, N * width + kPad});
  Tensor dz = torch::stable::new_empty(x, {threads, plan.cb * width + kPad});
  Tensor dx_part = torch::stable::new_empty(x, {need_x && groups ? threads : 0, plan.cb * N + kPad});
  Tensor dwcat = torch::stable::new_empty(x, {need_weights ? threads : 0, N * width + kPad});
  Tensor accum = torch::stable::new_zeros(x, {need_weights ? threads : 0, 2, N * M});
  Tensor bias_accum = torch::stable::new_zeros(x, {p.has_bias ? threads : 0, M}, ScalarType::Double);
  const torch::stable::Device device = x.device();
  const ScalarType dtype = x.scalar_type();

  parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      T* w = need_x ? data_of<T>(wcat) + t * (N * width + kPad) : nullptr;
      T* d = data_of<T>(dz) + t * (plan.cb * width + kPad);
      T* part = need_x && groups ? data_of<T>(dx_part) + t * (plan.cb * N + kPad) : nullptr;
      T* dw = need_weights ? data_of<T>(dwcat) + t * (N * width + kPad) : nullptr;
      T* acc_self = need_weights ? data_of<T>(accum) + t * 2 * N * M : nullptr;
      T* acc_edge = need_weights ? acc_self + N * M : nullptr;
      double* acc_bias = p.has_bias ? data_of<double>(bias_accum) + t * M : nullptr;
      for (int64_t task = t; task < plan.tasks; task += threads) {
        const int64_t b = task / plan.blocks, c0 = (task % plan.blocks) * plan.cb;
        const int64_t rows = std::min(plan.cb, C - c0);
        const int64_t* idx_b = data_of<const int64_t>(idx) + b * N * k;
        const T* xb = data_of<const T>(x) + (b * C + c0) * N;
        const T* gb = data_of<const T>(grad) + (b * C + c0) * M;
        const int32_t* wb = data_of<const int32_t>(winner) + (b * C + c0) * M;
        T* dxb = need_x ? data_of<T>(grad_x) + (b * C + c0) * N : nullptr;
        for (int64_t j0 = 0; j0 < k; j0 += plan.kj) {
          const int64_t kj = std::min(plan.kj, k - j0);
          if constexpr (f32) kernels.route_gradient_f32(gb, wb, rows, M, j0, kj, d, j0 == 0 ? acc_bias : nullptr);
          else kernels.route_gradient_f64(gb, wb, rows, M, j0, kj, d, j0 == 0 ? acc_bias : nullptr);
          if (!(need_x || need_weights)) break;  // only the bias gradient was wanted
          if (need_x) {
            if constexpr (f32) kernels.build_weights_f32(weights, idx_b, k, j0, kj, w);
            else kernels.build_weights_f64(weights, idx_b, k, j0, kj, w);
            // dX = dZ W^T: [rows, kj M] x [kj M, N].
            T* target = j0 == 0 ? dxb : part;
            matmul_into({target, 1, rows, N, 0, N, 1}, {d, 1, rows, kj * M, 0, kj * M, 1},
                        {w, 1, kj * M, N, 0, 1, kj * M}, device, dtype);
            if (j0 != 0) {
              if constexpr (f32) kernels.add_f32(dxb, part, rows * N);
              else kernels.add_f64(dxb, part, rows * N);
            }
          }
          if (need_weights) {
            // dW = X^T dZ: [N, rows] x [rows, kj M].
            matmul_into({dw, 1, N, kj * M, 0, kj * M, 1}, {const_cast<T*>(xb), 1, N, rows, 0, 1, N},
                        {d, 1, rows, kj * M, 0, kj * M, 1}, device, dtype);
            if constexpr (f32) kernels.accumulate_weight_grads_f32(dw, idx_b, k, j0, kj, N, M, acc_self, acc_edge);
            else kernels.accumulate_weight_grads_f64(dw, idx_b, k, j0, kj, N, M, acc_self, acc_edge);
          }
        }
      }
    }
  });

  if (need_weights) {
    // w_self = D + E, w_edge = E with D = w_self - w_edge: grad_w_self = grad_D, grad_w_edge = grad_E' - grad_D
    // (grad_E' the gradient through the gathered term). The threads' partials are added in thread order.
    const T* acc = data_of<const T>(accum);
    T* gs = data_of<T>(grad_self);
    T* ge = data_of<T>(grad_edge);
    parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t i = 0; i < N; ++i) {
          T sd = 0, se = 0;
          for (int64_t t = 0; t < threads; ++t) {
            sd += acc[(t * 2) * N * M + i * M + r];
            se += acc[(t * 2 + 1) * N * M + i * M + r];
          }
          gs[r * N + i] = sd;
          ge[r * N + i] = se - sd;
        }
      }
    });
  }
  if (p.has_bias) sum_thread_partials(data_of<const double>(bias_accum), threads, M, data_of<T>(grad_bias));
}

// The routed backward (edge_conv_cpu.cpp has the derivation). G, the gradient where the output was
// active, gives the bias gradient and G^T X (grad_w_self) by torch's BLAS over the whole batch; the
// routed kernels write grad_x whole (tasks: batch element, group of column blocks) and add w_edge's
// gradient through the gather into per-thread accumulators (same tasks over blocks of w_edge's columns),
// summed in thread order.
template <typename T>
void edge_conv_max_backward_routed(const EdgeBackward& bw, const Tensor& w_self, const Tensor& w_edge,
                                   const EdgeConvProblem& p, bool need_x, bool need_weights) {
  const cpu::EdgeConvKernels& kernels = FK_CPU_DISPATCH(cpu::edge_conv_kernels);
  constexpr bool f32 = sizeof(T) == 4;
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m, k = p.k;
  const Tensor &grad = bw.grad, &x = bw.x, &idx = bw.idx, &winner = bw.winner;
  const Tensor &grad_x = bw.grad_x, &grad_self = bw.grad_self, &grad_edge = bw.grad_edge, &grad_bias = bw.grad_bias;
  const int64_t threads = num_threads();
  const T* xd = data_of<const T>(x);
  const T* gd = data_of<const T>(grad);
  const int32_t* wd = data_of<const int32_t>(winner);
  const int64_t* id = data_of<const int64_t>(idx);

  // G and the bias gradient (per-thread float64 partial sums, added in thread order).
  Tensor active = torch::stable::new_empty(x, {B, C, M});
  T* g = data_of<T>(active);
  Tensor bias_accum = torch::stable::new_zeros(x, {p.has_bias ? threads : 0, M}, ScalarType::Double);
  parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      double* acc = p.has_bias ? data_of<double>(bias_accum) + t * M : nullptr;
      for (int64_t b = t; b < B; b += threads) {
        const int64_t at = b * C * M;
        if constexpr (f32) kernels.edge_mask_gradient_f32(gd + at, wd + at, C, M, g + at, acc);
        else kernels.edge_mask_gradient_f64(gd + at, wd + at, C, M, g + at, acc);
      }
    }
  });
  if (p.has_bias) sum_thread_partials(data_of<const double>(bias_accum), threads, M, data_of<T>(grad_bias));
  if (!(need_x || need_weights)) return;

  const int64_t nr = f32 ? kernels.edge_routed_cols_f32() : kernels.edge_routed_cols_f64();
  const int64_t blocks = ceil_div(N, nr);
  const int64_t scratch_size =
      f32 ? kernels.edge_routed_scratch_f32(C, N, M, k) : kernels.edge_routed_scratch_f64(C, N, M, k);
  Tensor scratch = torch::stable::new_empty(x, {threads, scratch_size});
  // Groups of column blocks per batch element: one unless the batch leaves threads idle.
  const int64_t splits = B >= 2 * threads ? 1 : std::max<int64_t>(1, std::min(blocks, ceil_div(2 * threads, B)));
  const int64_t per = std::max<int64_t>(1, ceil_div(blocks, splits)), groups = ceil_div(blocks, per), tasks = B * groups;

  if (need_x) {
    const int64_t packed_size =
        f32 ? kernels.edge_routed_packed_size_f32(N, M, k) : kernels.edge_routed_packed_size_f64(N, M, k);
    Tensor packed = torch::stable::new_empty(x, {packed_size});
    T* pw = data_of<T>(packed);
    const T* ws = data_of<const T>(w_self);
    const T* we = data_of<const T>(w_edge);
    const int64_t s0 = w_self.stride(0), s1 = w_self.stride(1), e0 = w_edge.stride(0), e1 = w_edge.stride(1);
    parallel_for(0, blocks * nr, 16, [&](int64_t begin, int64_t end) {
      if constexpr (f32) kernels.edge_routed_pack_weights_f32(ws, s0, s1, we, e0, e1, M, N, k, begin, end, pw);
      else kernels.edge_routed_pack_weights_f64(ws, s0, s1, we, e0, e1, M, N, k, begin, end, pw);
    });
    const cpu::EdgeRouted<T> routed{pw, C, N, M, k};
    parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        T* sp = data_of<T>(scratch) + t * scratch_size;
        for (int64_t task = t; task < tasks; task += threads) {
          const int64_t b = task / groups, pb0 = (task % groups) * per, pb1 = std::min(blocks, pb0 + per);
          const int64_t at = b * C * M;
          T* dxb = data_of<T>(grad_x) + b * C * N;
          if constexpr (f32) kernels.edge_routed_grad_x_f32(routed, g + at, wd + at, id + b * N * k, pb0, pb1, dxb, sp);
          else kernels.edge_routed_grad_x_f64(routed, g + at, wd + at, id + b * N * k, pb0, pb1, dxb, sp);
        }
      }
    });
  }
  if (need_weights) {
    // grad_w_self = G^T X; w_edge's through the gather by the routed kernel into [blocks][M][NR] per thread.
    matmul_into({data_of<T>(grad_self), 1, M, N, 0, N, 1}, {g, 1, M, B * C, 0, 1, M},
                {const_cast<T*>(xd), 1, B * C, N, 0, N, 1}, x.device(), x.scalar_type());
    const cpu::EdgeRouted<T> routed{nullptr, C, N, M, k};
    const int64_t acc_size = blocks * M * nr;
    Tensor edge_accum = torch::stable::new_zeros(x, {threads, acc_size});
    parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        T* sp = data_of<T>(scratch) + t * scratch_size;
        T* acc = data_of<T>(edge_accum) + t * acc_size;
        for (int64_t task = t; task < tasks; task += threads) {
          const int64_t b = task / groups, nb0 = (task % groups) * per, nb1 = std::min(blocks, nb0 + per);
          const int64_t at = b * C * M;
          const T* xb = xd + b * C * N;
          if constexpr (f32) kernels.edge_routed_grad_edge_f32(routed, xb, g + at, wd + at, id + b * N * k, nb0, nb1, acc, sp);
          else kernels.edge_routed_grad_edge_f64(routed, xb, g + at, wd + at, id + b * N * k, nb0, nb1, acc, sp);
        }
      }
    });
    // w_self = D + E, w_edge = E with D = w_self - w_edge: grad_w_self = grad_D, grad_w_edge = grad_E' - grad_D.
    const T* acc = data_of<const T>(edge_accum);
    T* gs = data_of<T>(grad_self);
    T* ge = data_of<T>(grad_edge);
    parallel_for(0, M, 16, [&](int64_t begin, int64_t end) {
      for (int64_t r = begin; r < end; ++r) {
        for (int64_t i = 0; i < N; ++i) {
          const int64_t at = ((i / nr) * M + r) * nr + i % nr;
          T sum = 0;
          for (int64_t t = 0; t < threads; ++t) sum += acc[t * acc_size + at];
          ge[r * N + i] = sum - gs[r * N + i];
        }
      }
    });
  }
}

// Which backward: the GEMMs cost about 2k forward-sized products, the routed one about 3 whatever k
// (G^T X by BLAS, the two routed products at about 60 % of the GEMM rate) plus the panels, which grow
// with k. Measured at MOL's shape (B 32, C 128, N = M = 256; 2 threads, float32), GEMMs against routed:
// k = 1 10.2 against 15.8 ms, k = 2 19.6 / 17.1, k = 4 30 / 17.5, k = 8 61 / 26, k = 16 124 / 29. The
// routed scratch holds the panels of all k neighbours for a chunk of at least 8 steps (k * 8 * NR
// elements per thread, NR up to 128 floats): beyond kRoutedMaxK neighbours (k > N is allowed: repeats),
// the GEMMs, whose memory is bounded by their grouping.
constexpr int64_t kRoutedMaxK = 4096;

bool routed_backward(const EdgeConvProblem& p) { return p.k > 1 && p.k <= kRoutedMaxK; }

template <typename T>
std::tuple<Tensor, Tensor, Tensor, Tensor> edge_conv_max_backward_run(const Tensor& grad_in, const Tensor& x_in,
                                                                     const Tensor& idx_in, const Tensor& w_self,
                                                                     const Tensor& w_edge, const Tensor& winner_in,
                                                                     const EdgeConvProblem& p, bool need_x,
                                                                     bool need_weights) {
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m;
  auto shape = [](bool wanted, std::vector<int64_t> dims) { return wanted ? dims : std::vector<int64_t>{0}; };
  // Written whole by either backward (zeroed only on the early return).
  EdgeBackward bw{grad_in,
                  x_in,
                  idx_in,
                  winner_in,
                  torch::stable::new_empty(x_in, shape(need_x, {B, C, N})),
                  torch::stable::new_empty(x_in, shape(need_weights, {M, N})),
                  torch::stable::new_empty(x_in, shape(need_weights, {M, N})),
                  torch::stable::new_zeros(x_in, {p.has_bias ? M : 0})};
  // N == 0 still has a bias gradient: the forward's output is then ReLU(bias).
  if (B == 0 || C == 0 || M == 0 || !(need_x || need_weights || p.has_bias)) {
    torch::stable::zero_(bw.grad_x);
    torch::stable::zero_(bw.grad_self);
    torch::stable::zero_(bw.grad_edge);
  } else {
    bw.grad = torch::stable::contiguous(grad_in);
    bw.x = torch::stable::contiguous(x_in);
    bw.idx = torch::stable::contiguous(idx_in);
    bw.winner = torch::stable::contiguous(winner_in);
    // The op is callable directly (not only through autograd after the forward): idx and winner index
    // memory in both backwards, so each costs one pass.
    const char* op = "_edge_conv_max_backward";
    check_edge_index_range(op, data_of<const int64_t>(bw.idx), B * N * p.k, N, p.k);
    check_winner_range(op, data_of<const int32_t>(bw.winner), B * C * M, p.k, C, M);
    if (routed_backward(p)) edge_conv_max_backward_routed<T>(bw, w_self, w_edge, p, need_x, need_weights);
    else edge_conv_max_backward_dense<T>(bw, w_self, w_edge, p, need_x, need_weights);
  }
  return {bw.grad_x, bw.grad_self, bw.grad_edge, bw.grad_bias};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> edge_conv_max_backward_cpu(const Tensor& grad_out, const Tensor& x,
                                                                      const Tensor& idx, const Tensor& w_self,
                                                                      const Tensor& w_edge, const Tensor& winner,
                                                                      bool has_bias, bool need_x, bool need_weights) {
  const char* op = "_edge_conv_max_backward";
  const EdgeConvProblem p = check_edge_conv_max_backward(op, grad_out, x, idx, w_self, w_edge, winner, has_bias);
  if (x.scalar_type() == ScalarType::Float) {
    return edge_conv_max_backward_run<float>(grad_out, x, idx, w_self, w_edge, winner, p, need_x, need_weights);
  }
  return edge_conv_max_backward_run<double>(grad_out, x, idx, w_self, w_edge, winner, p, need_x, need_weights);
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def("cosine_topk(Tensor x, int k, Tensor? y=None) -> (Tensor, Tensor)");
  m.def("edge_conv_max(Tensor x, Tensor idx, Tensor w_self, Tensor w_edge, Tensor? bias=None) -> (Tensor, Tensor)");
  m.def(
      "_edge_conv_max_backward(Tensor grad_out, Tensor x, Tensor idx, Tensor w_self, Tensor w_edge, "
      "Tensor winner, bool has_bias, bool need_x, bool need_weights) -> (Tensor, Tensor, Tensor, Tensor)");
}

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("cosine_topk", TORCH_BOX(&facekernels::cosine_topk_cpu));
  m.impl("edge_conv_max", TORCH_BOX(&facekernels::edge_conv_max_cpu));
  m.impl("_edge_conv_max_backward", TORCH_BOX(&facekernels::edge_conv_max_backward_cpu));
}
