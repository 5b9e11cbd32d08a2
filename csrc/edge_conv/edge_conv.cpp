// cosine_topk and edge_conv_max (MOL's channel correspondence convolution, issue 5): the schemas and the
// argument checks both bindings share. The CPU bindings and drivers are cosine_topk_cpu.cpp and
// edge_conv_cpu.cpp (kernels: cosine_topk_kernels.h, edge_conv_kernels.h), the CUDA binding
// edge_conv_cuda.cpp (kernels: cuda/edge_conv/); each registers its own implementations.
#include "edge_conv/edge_conv.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>

#include "core/checks.h"

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

int64_t first_index_out_of_range(const int64_t* idx, int64_t count, int64_t n) {
  const uint64_t limit = static_cast<uint64_t>(n);
  uint64_t bad = 0;
  for (int64_t i = 0; i < count; ++i) bad |= static_cast<uint64_t>(static_cast<uint64_t>(idx[i]) >= limit);
  if (!bad) return -1;
  for (int64_t i = 0; i < count; ++i) {
    if (static_cast<uint64_t>(idx[i]) >= limit) return i;
  }
  return -1;
}

void check_edge_index_range(const char* op, const int64_t* idx, int64_t count, int64_t n, int64_t k) {
  const int64_t at = first_index_out_of_range(idx, count, n);
  if (at >= 0) fail_edge_index(op, idx[at], at, n, k);
}

void fail_cosine_topk_unfilled(const char* op, const CosineTopkProblem& p, bool self, int64_t at) {
  const int64_t j = at % p.k, n = (at / p.k) % p.n, b = at / p.k / p.n;
  fail(op, "x and y must be finite (no NaN or inf): x[", b, ", :, ", n, "] has a finite cosine similarity to only ",
       j, " of the ", p.m, " columns of ", self ? "x (y = x)" : "y", ", fewer than k = ", p.k);
}

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

}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def("cosine_topk(Tensor x, int k, Tensor? y=None) -> (Tensor, Tensor)");
  m.def("edge_conv_max(Tensor x, Tensor idx, Tensor w_self, Tensor w_edge, Tensor? bias=None) -> (Tensor, Tensor)");
  m.def(
      "_edge_conv_max_backward(Tensor grad_out, Tensor x, Tensor idx, Tensor w_self, Tensor w_edge, "
      "Tensor winner, bool has_bias, bool need_x, bool need_weights) -> (Tensor, Tensor, Tensor, Tensor)");
}
