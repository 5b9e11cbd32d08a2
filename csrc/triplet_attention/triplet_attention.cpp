// triplet_attention: the schemas of axis_pool and triplet_gate and the argument checks every backend
// shares (triplet_attention_cpu.cpp and triplet_attention_cuda.cpp register the kernels).
#include "triplet_attention/triplet_attention.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include "core/checks.h"

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

bool is_planar(const Tensor& t) {
  const int64_t h = t.size(2), w = t.size(3);
  return (w == 1 || t.stride(3) == 1) && (h == 1 || t.stride(2) == w);
}

bool is_channels_last(const Tensor& t) {
  const int64_t c = t.size(1), h = t.size(2), w = t.size(3);
  return (c == 1 || t.stride(1) == 1) && (w == 1 || t.stride(3) == c) && (h == 1 || t.stride(2) == w * c);
}

Tensor new_4d_output(const Tensor& like, int64_t b, int64_t c, int64_t h, int64_t w, bool channels_last) {
  if (!channels_last) return torch::stable::new_empty(like, {b, c, h, w});
  // [B, H, W, C] storage seen as [B, C, H, W]: transpose(1, 3) gives [B, C, W, H], transpose(2, 3) [B, C, H, W].
  Tensor nhwc = torch::stable::new_empty(like, {b, h, w, c});
  return torch::stable::transpose(torch::stable::transpose(nhwc, 1, 3), 2, 3);
}

Tensor kernel_layout(const Tensor& t) {
  if (is_planar(t) || is_channels_last(t)) return t;
  return torch::stable::contiguous(t);
}

Tensor in_layout(const Tensor& t, bool channels_last) {
  if (channels_last ? is_channels_last(t) : is_planar(t)) return t;
  Tensor out = new_4d_output(t, t.size(0), t.size(1), t.size(2), t.size(3), channels_last);
  torch::stable::copy_(out, t);
  return out;
}

TripletProblem check_axis_pool(const char* op, const Tensor& x) {
  check_dim(op, "x", x, 4, "[B, C, H, W]");
  check_floating_dtype(op, "x", x);
  FK_CHECK(x.size(1) >= 1 && x.size(2) >= 1 && x.size(3) >= 1, op,
           "x must have C, H and W >= 1 (the max over an empty axis is undefined), got shape ", shape_string(x));
  FK_CHECK(x.size(1) < (int64_t{1} << 31) && x.size(2) < (int64_t{1} << 31) && x.size(3) < (int64_t{1} << 31), op,
           "x must have C, H and W < 2^31 (argmax indices are int32), got shape ", shape_string(x));
  return {x.size(0), x.size(1), x.size(2), x.size(3)};
}

namespace {

void check_map(const char* op, const char* arg, const Tensor& t, int64_t planes, int64_t b, int64_t m, int64_t n,
               const char* layout) {
  const bool ok = planes == 0 ? t.dim() == 3 && t.size(0) == b && t.size(1) == m && t.size(2) == n
                              : t.dim() == 4 && t.size(0) == b && t.size(1) == planes && t.size(2) == m &&
                                    t.size(3) == n;
  if (planes == 0) {
    FK_CHECK(ok, op, arg, " must have shape ", layout, " = [", b, ", ", m, ", ", n, "], got ", shape_string(t));
  } else {
    FK_CHECK(ok, op, arg, " must have shape ", layout, " = [", b, ", ", planes, ", ", m, ", ", n, "], got ",
             shape_string(t));
  }
}

void check_index_map(const char* op, const char* arg, const Tensor& t, int64_t b, int64_t m, int64_t n,
                     const char* layout, const Tensor& ref) {
  check_map(op, arg, t, 0, b, m, n, layout);
  FK_CHECK(t.scalar_type() == ScalarType::Int, op, arg, " must be int32, got ", dtype_name(t.scalar_type()));
  check_same_device(op, arg, t, "grad_c", ref);
}

}  // namespace

TripletProblem check_axis_pool_backward(const Tensor& grad_c, const Tensor& grad_h, const Tensor& grad_w,
                                        const Tensor& arg_c, const Tensor& arg_h, const Tensor& arg_w) {
  const char* op = "_axis_pool_backward";
  check_dim(op, "grad_c", grad_c, 4, "[B, 2, H, W]");
  check_dim(op, "grad_h", grad_h, 4, "[B, 2, C, W]");
  check_floating_dtype(op, "grad_c", grad_c);
  const int64_t b = grad_c.size(0), h = grad_c.size(2), w = grad_c.size(3), c = grad_h.size(2);
  check_map(op, "grad_c", grad_c, 2, b, h, w, "[B, 2, H, W]");
  check_map(op, "grad_h", grad_h, 2, b, c, w, "[B, 2, C, W]");
  check_map(op, "grad_w", grad_w, 2, b, h, c, "[B, 2, H, C]");
  check_same_dtype(op, "grad_h", grad_h, "grad_c", grad_c);
  check_same_dtype(op, "grad_w", grad_w, "grad_c", grad_c);
  check_same_device(op, "grad_h", grad_h, "grad_c", grad_c);
  check_same_device(op, "grad_w", grad_w, "grad_c", grad_c);
  check_index_map(op, "arg_c", arg_c, b, h, w, "[B, H, W]", grad_c);
  check_index_map(op, "arg_h", arg_h, b, c, w, "[B, C, W]", grad_c);
  check_index_map(op, "arg_w", arg_w, b, h, c, "[B, H, C]", grad_c);
  FK_CHECK(c >= 1 && h >= 1 && w >= 1, op, "the pooled maps must have C, H and W >= 1, got grad_c ",
           shape_string(grad_c), " and grad_h ", shape_string(grad_h));
  return {b, c, h, w};
}

TripletProblem check_triplet_gate(const char* op, const Tensor& x, const std::optional<Tensor>& gate_c,
                                  const std::optional<Tensor>& gate_h, const std::optional<Tensor>& gate_w,
                                  const std::optional<Tensor>& scale) {
  check_dim(op, "x", x, 4, "[B, C, H, W]");
  check_floating_dtype(op, "x", x);
  const int64_t b = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  FK_CHECK(gate_c.has_value() || gate_h.has_value() || gate_w.has_value(), op,
           "at least one of gate_c, gate_h, gate_w must be given, got none");
  const struct {
    const char* name;
    const std::optional<Tensor>& t;
    int64_t m, n;
    const char* layout;
  } gates[] = {{"gate_c", gate_c, h, w, "[B, H, W]"}, {"gate_h", gate_h, c, w, "[B, C, W]"},
               {"gate_w", gate_w, h, c, "[B, H, C]"}};
  for (const auto& g : gates) {
    if (!g.t.has_value()) continue;
    check_map(op, g.name, *g.t, 0, b, g.m, g.n, g.layout);
    check_same_dtype(op, g.name, *g.t, "x", x);
    check_same_device(op, g.name, *g.t, "x", x);
  }
  if (scale.has_value()) {
    const Tensor& s = *scale;
    FK_CHECK(s.dim() == 2 && s.size(0) == b && s.size(1) == c, op, "scale must have shape [B, C] = [", b, ", ", c,
             "], got ", shape_string(s));
    check_same_dtype(op, "scale", s, "x", x);
    check_same_device(op, "scale", s, "x", x);
  }
  return {b, c, h, w};
}

TripletProblem check_triplet_gate_backward(const Tensor& grad_y, const Tensor& x, const std::optional<Tensor>& gate_c,
                                           const std::optional<Tensor>& gate_h, const std::optional<Tensor>& gate_w,
                                           const std::optional<Tensor>& scale) {
  const char* op = "_triplet_gate_backward";
  TripletProblem p = check_triplet_gate(op, x, gate_c, gate_h, gate_w, scale);
  check_like(op, "grad_y", grad_y, "x", x, 4, "[B, C, H, W]");
  return p;
}

GateConvProblem check_gate_conv(const char* op, const Tensor& x, const Tensor& weight) {
  check_dim(op, "x", x, 4, "[B, Cin, M, N]");
  check_dim(op, "weight", weight, 4, "[1, Cin, K, K]");
  check_floating_dtype(op, "x", x);
  check_same_dtype(op, "weight", weight, "x", x);
  check_same_device(op, "weight", weight, "x", x);
  const int64_t k = weight.size(2);
  FK_CHECK(weight.size(0) == 1 && weight.size(1) == x.size(1) && weight.size(3) == k && k % 2 == 1, op,
           "weight must have shape [1, Cin, K, K] with Cin = x.size(1) = ", x.size(1), " and K odd, got ",
           shape_string(weight));
  return {x.size(0), x.size(1), x.size(2), x.size(3), k};
}

GateConvProblem check_gate_conv_backward(const Tensor& grad_y, const Tensor& x, const Tensor& weight) {
  const char* op = "_gate_conv_backward";
  GateConvProblem p = check_gate_conv(op, x, weight);
  check_dim(op, "grad_y", grad_y, 4, "[B, 1, M, N]");
  FK_CHECK(grad_y.size(0) == p.batch && grad_y.size(1) == 1 && grad_y.size(2) == p.rows && grad_y.size(3) == p.cols,
           op, "grad_y must have shape [B, 1, M, N] = [", p.batch, ", 1, ", p.rows, ", ", p.cols, "], got ",
           shape_string(grad_y));
  check_same_dtype(op, "grad_y", grad_y, "x", x);
  check_same_device(op, "grad_y", grad_y, "x", x);
  return p;
}

}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def("axis_pool(Tensor x) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def(
      "_axis_pool_backward(Tensor grad_c, Tensor grad_h, Tensor grad_w, Tensor arg_c, Tensor arg_h, "
      "Tensor arg_w, bool channels_last) -> Tensor");
  m.def(
      "triplet_gate(Tensor x, Tensor? gate_c=None, Tensor? gate_h=None, Tensor? gate_w=None, "
      "Tensor? scale=None) -> Tensor");
  m.def(
      "_triplet_gate_backward(Tensor grad_y, Tensor x, Tensor? gate_c, Tensor? gate_h, Tensor? gate_w, "
      "Tensor? scale, bool need_x) -> (Tensor, Tensor, Tensor, Tensor, Tensor)");
  m.def("gate_conv(Tensor x, Tensor weight) -> Tensor");
  m.def("_gate_conv_backward(Tensor grad_y, Tensor x, Tensor weight, bool need_x, bool need_weight) -> (Tensor, Tensor)");
}
