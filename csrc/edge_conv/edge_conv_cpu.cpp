// edge_conv_max: the CPU binding and driver (tiling, scheduling, the GEMMs through torch's BLAS); the
// kernels are edge_conv_kernels.h (edge_conv_kernels.cpp: around the GEMMs; edge_conv_routed_kernels.cpp:
// the routed backward; edge_conv_fused_kernels.cpp: the fused float32 forward).
//
// The op is GEMM-bound. Work is dealt to the threads statically (task t to thread t mod threads), so
// per-thread partial sums are added in a fixed order; the GEMMs run through torch's BLAS (core/blas.h's
// gemm_into) on tiles a thread owns, into buffers allocated once per call.
//
// The float32 forward is our own register-blocked GEMM (edge_conv_fused_kernels.cpp) that builds the
// folded weights W_j (edge_conv_kernels.h) panel by panel in L1 and keeps the running max over j, with
// the index of the first maximal j, in its epilogue; float64 builds W_j side by side, [N, kj M], per task
// (batch element, block of channels) and runs one BLAS GEMM per group of neighbours. The backward
// recomputes no forward GEMM: the saved winner routes the gradient. With one neighbour it runs as GEMMs;
// with more, G^T X (shared by all neighbours) goes to BLAS over the whole batch and grad_x and w_edge's
// gradient through the gather run as routed products that visit each (c, m) once, against the panel of
// its winner (edge_conv_routed_kernels.cpp).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>
#include <vector>

#include "core/blas.h"
#include "core/parallel.h"
#include "core/tensors.h"
#include "edge_conv/edge_conv.h"
#include "edge_conv/edge_conv_kernels.h"

namespace facekernels {
namespace {

using edge_cpu::ceil_div;
using edge_cpu::kPad;
using torch::headeronly::ScalarType;
using torch::stable::Tensor;

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
  const cpu::EdgeGemmKernels<double>& kernels = FK_CPU_KERNEL_TABLE(cpu::edge_gemm_kernels, double);
  const int64_t C = p.channels, N = p.n, M = p.m, k = p.k;
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
          kernels.build_weights(weights, idx_b, k, j0, kj, w);
          gemm_into(MatrixView::row_major(zt, rows, kj * M), MatrixView::row_major(xb, rows, N),
                    MatrixView::row_major(w, N, kj * M), device, dtype);
          kernels.max_group(zt, rows, M, j0, kj, sk, j0 == 0, best, arg);
        }
        kernels.max_finish(best, arg, bias_data, rows, M);
      }
    }
  });
}

// float32: the fused kernel (edge_conv_fused_kernels.cpp), our own GEMM with the weight building and the max in
// its loops. Tasks are (batch element, group of column blocks); the weights are packed once per call.
void edge_conv_max_fused(const Tensor& x, const Tensor& w_self, const Tensor& w_edge, const EdgeForward& fw,
                         const EdgeConvProblem& p) {
  const cpu::EdgeFusedKernels<float>& kernels = FK_CPU_KERNEL_TABLE(cpu::edge_fused_kernels, float);
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m, k = p.k;
  const Tensor& idx = fw.idx;
  const std::optional<Tensor>& bias = fw.bias;
  const int64_t NR = kernels.block(), mblocks = ceil_div(M, NR);
  Tensor packed = torch::stable::new_empty(x, {2, mblocks * N * NR + kPad});
  float* sme = data_of<float>(packed);
  float* edge = sme + mblocks * N * NR + kPad;
  const float* ws = data_of<const float>(w_self);
  const float* we = data_of<const float>(w_edge);
  parallel_for(0, mblocks, 1, [&](int64_t begin, int64_t end) {
    kernels.pack_weights(ws, w_self.stride(0), w_self.stride(1), we, w_edge.stride(0), w_edge.stride(1), M, N, begin,
                         end, sme, edge);
  });
  const cpu::EdgeFused f{sme, edge, bias.has_value() ? data_of<const float>(*bias) : nullptr, C, N, M, k};

  const int64_t threads = num_threads();
  // Column groups per batch element: one unless the batch leaves threads idle.
  const int64_t groups = std::min(mblocks, B >= 2 * threads ? int64_t{1} : ceil_div(2 * threads, B));
  const int64_t per_group = ceil_div(mblocks, groups), tasks = B * groups;
  const int64_t scratch_size = kernels.scratch(C, N);
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
        kernels.forward(f, xd + b * sb, sc, sn, idx_b, sk, mb0, mb1, data_of<float>(fw.out) + b * C * M,
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
  const cpu::EdgeGemmKernels<T>& kernels = FK_CPU_KERNEL_TABLE(cpu::edge_gemm_kernels, T);
  const int64_t C = p.channels, N = p.n, M = p.m, k = p.k;
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
          kernels.route_gradient(gb, wb, rows, M, j0, kj, d, j0 == 0 ? acc_bias : nullptr);
          if (!(need_x || need_weights)) break;  // only the bias gradient was wanted
          if (need_x) {
            kernels.build_weights(weights, idx_b, k, j0, kj, w);
            // dX = dZ W^T: [rows, kj M] x [kj M, N].
            T* target = j0 == 0 ? dxb : part;
            gemm_into(MatrixView::row_major(target, rows, N), MatrixView::row_major(d, rows, kj * M),
                      MatrixView::row_major(w, N, kj * M).t(), device, dtype);
            if (j0 != 0) kernels.add(dxb, part, rows * N);
          }
          if (need_weights) {
            // dW = X^T dZ: [N, rows] x [rows, kj M].
            gemm_into(MatrixView::row_major(dw, N, kj * M), MatrixView::row_major(xb, rows, N).t(),
                      MatrixView::row_major(d, rows, kj * M), device, dtype);
            kernels.accumulate_weight_grads(dw, idx_b, k, j0, kj, N, M, acc_self, acc_edge);
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

// The routed backward (edge_conv_routed_kernels.cpp has the derivation). G, the gradient where the output was
// active, gives the bias gradient and G^T X (grad_w_self) by torch's BLAS over the whole batch; the
// routed kernels write grad_x whole (tasks: batch element, group of column blocks) and add w_edge's
// gradient through the gather into per-thread accumulators (same tasks over blocks of w_edge's columns),
// summed in thread order.
template <typename T>
void edge_conv_max_backward_routed(const EdgeBackward& bw, const Tensor& w_self, const Tensor& w_edge,
                                   const EdgeConvProblem& p, bool need_x, bool need_weights) {
  const cpu::EdgeRoutedKernels<T>& kernels = FK_CPU_KERNEL_TABLE(cpu::edge_routed_kernels, T);
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
        kernels.mask_gradient(gd + at, wd + at, C, M, g + at, acc);
      }
    }
  });
  if (p.has_bias) sum_thread_partials(data_of<const double>(bias_accum), threads, M, data_of<T>(grad_bias));
  if (!(need_x || need_weights)) return;

  const int64_t nr = kernels.cols();
  const int64_t blocks = ceil_div(N, nr);
  const int64_t scratch_size = kernels.scratch(C, N, M, k);
  Tensor scratch = torch::stable::new_empty(x, {threads, scratch_size});
  // Groups of column blocks per batch element: one unless the batch leaves threads idle.
  const int64_t splits = B >= 2 * threads ? 1 : std::max<int64_t>(1, std::min(blocks, ceil_div(2 * threads, B)));
  const int64_t per = std::max<int64_t>(1, ceil_div(blocks, splits)), groups = ceil_div(blocks, per), tasks = B * groups;

  if (need_x) {
    const int64_t packed_size = kernels.packed_size(N, M, k);
    Tensor packed = torch::stable::new_empty(x, {packed_size});
    T* pw = data_of<T>(packed);
    const T* ws = data_of<const T>(w_self);
    const T* we = data_of<const T>(w_edge);
    const int64_t s0 = w_self.stride(0), s1 = w_self.stride(1), e0 = w_edge.stride(0), e1 = w_edge.stride(1);
    parallel_for(0, blocks * nr, 16, [&](int64_t begin, int64_t end) {
      kernels.pack_weights(ws, s0, s1, we, e0, e1, M, N, k, begin, end, pw);
    });
    const cpu::EdgeRouted<T> routed{pw, C, N, M, k};
    parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        T* sp = data_of<T>(scratch) + t * scratch_size;
        for (int64_t task = t; task < tasks; task += threads) {
          const int64_t b = task / groups, pb0 = (task % groups) * per, pb1 = std::min(blocks, pb0 + per);
          const int64_t at = b * C * M;
          T* dxb = data_of<T>(grad_x) + b * C * N;
          kernels.grad_x(routed, g + at, wd + at, id + b * N * k, pb0, pb1, dxb, sp);
        }
      }
    });
  }
  if (need_weights) {
    // grad_w_self = G^T X; w_edge's through the gather by the routed kernel into [blocks][M][NR] per thread.
    gemm_into(MatrixView::row_major(data_of<T>(grad_self), M, N), MatrixView::row_major(g, B * C, M).t(),
              MatrixView::row_major(xd, B * C, N), x.device(), x.scalar_type());
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
          kernels.grad_edge(routed, xb, g + at, wd + at, id + b * N * k, nb0, nb1, acc, sp);
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

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("edge_conv_max", TORCH_BOX(&facekernels::edge_conv_max_cpu));
  m.impl("_edge_conv_max_backward", TORCH_BOX(&facekernels::edge_conv_max_backward_cpu));
}
