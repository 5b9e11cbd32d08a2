// diff_attention (the Differential Transformer's attention, MMDA's MD2A): the schemas and the argument
// checks both bindings share.
//
//   P_i = softmax(q_i k_i^T * scale + M)      out = (P_1 - lam P_2) v
//
// The CPU binding and driver are in diff_attention_cpu.cpp (the algorithm is described there), the CUDA
// binding in diff_attention_cuda.cpp; each registers its own kernels.
#include "diff_attention/diff_attention.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <optional>
#include <sstream>
#include <utility>

#include "core/checks.h"

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

namespace {

constexpr int64_t kMaxHeadDim = 256;

void check_shape(const char* op, const char* arg, const Tensor& t, std::initializer_list<int64_t> expected,
                 const char* layout) {
  bool same = true;
  int64_t i = 0;
  for (int64_t e : expected) {
    if (e >= 0 && t.size(i) != e) same = false;
    ++i;
  }
  if (same) return;
  std::ostringstream want;
  want << layout << " = [";
  i = 0;
  for (int64_t e : expected) {
    want << (i++ ? ", " : "");
    if (e >= 0) want << e;
    else want << "*";
  }
  want << "]";
  fail(op, arg, " must have shape ", want.str(), ", got ", shape_string(t));
}

}  // namespace

ScalarType diff_attention_stats_dtype(ScalarType s) {
  return s == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

DiffAttentionProblem check_diff_attention(const char* op, const Tensor& q1, const Tensor& k1, const Tensor& q2,
                                          const Tensor& k2, const Tensor& v, const Tensor& lam, bool causal,
                                          std::optional<double> scale) {
  check_dim(op, "q1", q1, 4, "[B, H, T, D]");
  check_dim(op, "k1", k1, 4, "[B, H, S, D]");
  check_dim(op, "q2", q2, 4, "[B, H, T, D]");
  check_dim(op, "k2", k2, 4, "[B, H, S, D]");
  check_dim(op, "v", v, 4, "[B, H, S, Dv]");
  check_floating_dtype(op, "q1", q1);
  check_same_dtype(op, "k1", k1, "q1", q1);
  check_same_dtype(op, "q2", q2, "q1", q1);
  check_same_dtype(op, "k2", k2, "q1", q1);
  check_same_dtype(op, "v", v, "q1", q1);
  check_same_dtype(op, "lam", lam, "q1", q1);
  check_same_device(op, "k1", k1, "q1", q1);
  check_same_device(op, "q2", q2, "q1", q1);
  check_same_device(op, "k2", k2, "q1", q1);
  check_same_device(op, "v", v, "q1", q1);
  check_same_device(op, "lam", lam, "q1", q1);
  const int64_t b = q1.size(0), h = q1.size(1), t = q1.size(2), d = q1.size(3);
  const int64_t s = k1.size(2), dv = v.size(3);
  check_shape(op, "k1", k1, {b, h, -1, d}, "[B, H, S, D]");
  check_shape(op, "q2", q2, {b, h, t, d}, "[B, H, T, D]");
  check_shape(op, "k2", k2, {b, h, s, d}, "[B, H, S, D]");
  check_shape(op, "v", v, {b, h, s, -1}, "[B, H, S, Dv]");
  FK_CHECK(lam.dim() == 2 && lam.size(0) == b && lam.size(1) == h, op, "lam must have shape [B, H] = [", b, ", ",
           h, "] (facekernels.ops.diff_attention broadcasts it), got ", shape_string(lam));
  FK_CHECK(d >= 1 && d <= kMaxHeadDim, op, "q1 must have a head dimension D in [1, ", kMaxHeadDim, "], got D = ", d);
  FK_CHECK(dv >= 1 && dv <= kMaxHeadDim, op, "v must have a head dimension Dv in [1, ", kMaxHeadDim,
           "], got Dv = ", dv);
  FK_CHECK(s >= 1 || b * h * t == 0, op, "k1 must have at least one key (S >= 1), got S = 0");
  FK_CHECK(!causal || t == s, op, "q1 must have as many queries as k1 has keys for causal=True (T == S), got T = ",
           t, " and S = ", s);
  double sc = 1.0 / std::sqrt(static_cast<double>(d));
  if (scale.has_value()) {
    FK_CHECK(std::isfinite(*scale), op, "scale must be a finite number, got ", *scale);
    sc = *scale;
  }
  return {b, h, t, s, d, dv, causal, sc};
}

void check_diff_attention_backward(const char* op, const DiffAttentionProblem& p, const Tensor& q1,
                                   const Tensor& grad_out, const Tensor& lse1, const Tensor& lse2) {
  check_dim(op, "grad_out", grad_out, 4, "[B, H, T, Dv]");
  check_shape(op, "grad_out", grad_out, {p.batch, p.heads, p.queries, p.value_dim}, "[B, H, T, Dv]");
  check_same_dtype(op, "grad_out", grad_out, "q1", q1);
  check_same_device(op, "grad_out", grad_out, "q1", q1);
  const ScalarType stats = diff_attention_stats_dtype(q1.scalar_type());
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"lse1", &lse1}, {"lse2", &lse2}}) {
    check_dim(op, name, *t, 3, "[B, H, T]");
    check_shape(op, name, *t, {p.batch, p.heads, p.queries}, "[B, H, T]");
    FK_CHECK(t->scalar_type() == stats, op, name, " must be ", dtype_name(stats),
             " (the forward's row statistics), got ",
             dtype_name(t->scalar_type()));
    check_same_device(op, name, *t, "q1", q1);
  }
}

Tensor diff_attention_rows_unit_stride(const Tensor& t) {
  const bool unit_columns = t.size(3) <= 1 || t.stride(3) == 1;
  const bool distinct_rows = t.size(2) <= 1 || t.stride(2) >= 1;
  return unit_columns && distinct_rows ? t : torch::stable::contiguous(t);
}

}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def(
      "_diff_attention_forward(Tensor q1, Tensor k1, Tensor q2, Tensor k2, Tensor v, Tensor lam, bool causal=False, "
      "float? scale=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_diff_attention_backward(Tensor grad_out, Tensor q1, Tensor k1, Tensor q2, Tensor k2, Tensor v, Tensor lam, "
      "Tensor lse1, Tensor lse2, bool causal, float? scale) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

