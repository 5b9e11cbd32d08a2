// triplet_attention: the CPU binding of axis_pool and triplet_gate (checks shared with the CUDA binding,
// outputs allocated with torch, kernels from triplet_attention_kernels.cpp at the CPU's SIMD level).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <tuple>

#include "core/tensors.h"
#include "triplet_attention/triplet_attention.h"
#include "triplet_attention/triplet_attention_kernels.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

cpu::TripletSizes sizes_of(const TripletProblem& p, bool channels_last) {
  return {p.batch, p.channels, p.height, p.width, channels_last};
}

// An absent gate is a map of zeros, an absent scale a row of ones (the maps are C, H or W times smaller
// than x, so the kernels need no branch for them).
Tensor map_or(const std::optional<Tensor>& t, const Tensor& like, int64_t b, int64_t m, int64_t n, double fill) {
  if (t.has_value()) return torch::stable::contiguous(*t);
  Tensor out = torch::stable::new_empty(like, {b, m, n});
  torch::stable::fill_(out, fill);
  return out;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> axis_pool_cpu(const Tensor& x) {
  const TripletProblem p = check_axis_pool("axis_pool", x);
  const int64_t B = p.batch, C = p.channels, H = p.height, W = p.width;
  Tensor pc = torch::stable::new_empty(x, {B, 2, H, W});
  Tensor ph = torch::stable::new_empty(x, {B, 2, C, W});
  Tensor pw = torch::stable::new_empty(x, {B, 2, H, C});
  Tensor ac = torch::stable::new_empty(x, {B, H, W}, ScalarType::Int);
  Tensor ah = torch::stable::new_empty(x, {B, C, W}, ScalarType::Int);
  Tensor aw = torch::stable::new_empty(x, {B, H, C}, ScalarType::Int);
  if (B == 0) return {pc, ph, pw, ac, ah, aw};
  const Tensor xc = kernel_layout(x);
  const bool cl = !is_planar(xc);
  dispatch_cpu_dtype(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::AxisPoolArgs<T> a{.n = sizes_of(p, cl),
                           .x = data_of<const T>(xc),
                           .x_stride_b = xc.stride(0),
                           .x_stride_c = xc.stride(1),
                           .pooled_c = data_of<T>(pc),
                           .pooled_h = data_of<T>(ph),
                           .pooled_w = data_of<T>(pw),
                           .arg_c = data_of<int32_t>(ac),
                           .arg_h = data_of<int32_t>(ah),
                           .arg_w = data_of<int32_t>(aw)};
    FK_CPU_KERNEL_TABLE(cpu::triplet_attention_kernels, T).axis_pool(a);
  });
  return {pc, ph, pw, ac, ah, aw};
}

Tensor axis_pool_backward_cpu(const Tensor& grad_c, const Tensor& grad_h, const Tensor& grad_w, const Tensor& arg_c,
                              const Tensor& arg_h, const Tensor& arg_w, bool channels_last) {
  const TripletProblem p = check_axis_pool_backward(grad_c, grad_h, grad_w, arg_c, arg_h, arg_w);
  Tensor gx = new_4d_output(grad_c, p.batch, p.channels, p.height, p.width, channels_last);
  if (p.batch == 0) return gx;
  const Tensor gc = torch::stable::contiguous(grad_c), gh = torch::stable::contiguous(grad_h),
               gw = torch::stable::contiguous(grad_w);
  const Tensor ac = torch::stable::contiguous(arg_c), ah = torch::stable::contiguous(arg_h),
               aw = torch::stable::contiguous(arg_w);
  dispatch_cpu_dtype(gc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::AxisPoolBackwardArgs<T> a{.n = sizes_of(p, channels_last),
                                   .grad_c = data_of<const T>(gc),
                                   .grad_h = data_of<const T>(gh),
                                   .grad_w = data_of<const T>(gw),
                                   .arg_c = data_of<const int32_t>(ac),
                                   .arg_h = data_of<const int32_t>(ah),
                                   .arg_w = data_of<const int32_t>(aw),
                                   .grad_x = data_of<T>(gx)};
    FK_CPU_KERNEL_TABLE(cpu::triplet_attention_kernels, T).axis_pool_backward(a);
  });
  return gx;
}

Tensor triplet_gate_cpu(const Tensor& x, const std::optional<Tensor>& gate_c, const std::optional<Tensor>& gate_h,
                        const std::optional<Tensor>& gate_w, const std::optional<Tensor>& scale) {
  const TripletProblem p = check_triplet_gate("triplet_gate", x, gate_c, gate_h, gate_w, scale);
  const Tensor xc = kernel_layout(x);
  const bool cl = !is_planar(xc);
  Tensor y = new_4d_output(x, p.batch, p.channels, p.height, p.width, cl);
  if (y.numel() == 0) return y;
  const int64_t B = p.batch, C = p.channels, H = p.height, W = p.width;
  const Tensor gc = map_or(gate_c, x, B, H, W, 0.0), gh = map_or(gate_h, x, B, C, W, 0.0),
               gw = map_or(gate_w, x, B, H, C, 0.0);
  const Tensor s = scale.has_value() ? torch::stable::contiguous(*scale) : map_or(std::nullopt, x, 1, B, C, 1.0);
  dispatch_cpu_dtype(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::TripletGateArgs<T> a{.n = sizes_of(p, cl),
                              .x = data_of<const T>(xc),
                              .x_stride_b = xc.stride(0),
                              .x_stride_c = xc.stride(1),
                              .gate_c = data_of<const T>(gc),
                              .gate_h = data_of<const T>(gh),
                              .gate_w = data_of<const T>(gw),
                              .scale = data_of<const T>(s),
                              .y = data_of<T>(y)};
    FK_CPU_KERNEL_TABLE(cpu::triplet_attention_kernels, T).gate(a);
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> triplet_gate_backward_cpu(
    const Tensor& grad_y, const Tensor& x, const std::optional<Tensor>& gate_c, const std::optional<Tensor>& gate_h,
    const std::optional<Tensor>& gate_w, const std::optional<Tensor>& scale, bool need_x) {
  const TripletProblem p = check_triplet_gate_backward(grad_y, x, gate_c, gate_h, gate_w, scale);
  const int64_t B = p.batch, C = p.channels, H = p.height, W = p.width;
  const Tensor xc = kernel_layout(x);
  const bool cl = !is_planar(xc);
  const Tensor gyc = in_layout(grad_y, cl);
  Tensor gx = need_x ? new_4d_output(x, B, C, H, W, cl) : torch::stable::new_empty(x, {0});
  // Every map's gradient is computed (they cost registers, not passes); absent ones are returned empty.
  Tensor dgc = torch::stable::new_empty(x, {B, H, W}), dgh = torch::stable::new_empty(x, {B, C, W}),
         dgw = torch::stable::new_empty(x, {B, H, C}), ds = torch::stable::new_empty(x, {B, C});
  const auto result = [&]() -> std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> {
    // Each absent gradient is its own empty tensor (outputs never alias each other).
    const auto none = [&]() { return torch::stable::new_empty(x, {0}); };
    return {gx, gate_c.has_value() ? dgc : none(), gate_h.has_value() ? dgh : none(),
            gate_w.has_value() ? dgw : none(), scale.has_value() ? ds : none()};
  };
  if (B == 0) return result();
  if (C * H * W == 0) {
    torch::stable::zero_(dgc);
    torch::stable::zero_(dgh);
    torch::stable::zero_(dgw);
    torch::stable::zero_(ds);
    return result();
  }
  const Tensor gc = map_or(gate_c, x, B, H, W, 0.0), gh = map_or(gate_h, x, B, C, W, 0.0),
               gw = map_or(gate_w, x, B, H, C, 0.0);
  const Tensor s = scale.has_value() ? torch::stable::contiguous(*scale) : map_or(std::nullopt, x, 1, B, C, 1.0);
  dispatch_cpu_dtype(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::TripletGateBackwardArgs<T> a{.n = sizes_of(p, cl),
                                      .grad_y = data_of<const T>(gyc),
                                      .x = data_of<const T>(xc),
                                      .x_stride_b = xc.stride(0),
                                      .x_stride_c = xc.stride(1),
                                      .grad_y_stride_b = gyc.stride(0),
                                      .grad_y_stride_c = gyc.stride(1),
                                      .gate_c = data_of<const T>(gc),
                                      .gate_h = data_of<const T>(gh),
                                      .gate_w = data_of<const T>(gw),
                                      .scale = data_of<const T>(s),
                                      .grad_x = need_x ? data_of<T>(gx) : nullptr,
                                      .grad_gate_c = data_of<T>(dgc),
                                      .grad_gate_h = data_of<T>(dgh),
                                      .grad_gate_w = data_of<T>(dgw),
                                      .grad_scale = data_of<T>(ds)};
    FK_CPU_KERNEL_TABLE(cpu::triplet_attention_kernels, T).gate_backward(a);
  });
  return result();
}

// Whether to convolve the transposed maps: rows shorter than 32 and the maps taller than wide.
bool transpose_gate_conv(const GateConvProblem& p) { return p.cols < 32 && p.rows > p.cols; }

Tensor contiguous_maybe_transposed(const Tensor& t, bool transposed) {
  return torch::stable::contiguous(transposed ? torch::stable::transpose(t, 2, 3) : t);
}

Tensor gate_conv_cpu(const Tensor& x, const Tensor& weight) {
  const GateConvProblem p = check_gate_conv("gate_conv", x, weight);
  Tensor y = torch::stable::new_empty(x, {p.batch, 1, p.rows, p.cols});
  if (y.numel() == 0) return y;
  if (p.in_channels == 0) {
    torch::stable::zero_(y);
    return y;
  }
  // Narrow maps (triplet attention's [C, W] map at 14x14 is 384 x 14) are convolved transposed: the
  // kernels vectorise along the rows, and a row shorter than a few vectors is mostly scalar tail.
  const bool flip = transpose_gate_conv(p);
  const Tensor xc = contiguous_maybe_transposed(x, flip), wc = contiguous_maybe_transposed(weight, flip);
  Tensor yk = flip ? torch::stable::new_empty(x, {p.batch, 1, p.cols, p.rows}) : y;
  dispatch_cpu_dtype(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::GateConvArgs<T> a{.x = data_of<const T>(xc),
                           .weight = data_of<const T>(wc),
                           .grad_y = nullptr,
                           .y = data_of<T>(yk),
                           .grad_x = nullptr,
                           .grad_weight = nullptr,
                           .batch = p.batch,
                           .in_channels = p.in_channels,
                           .rows = flip ? p.cols : p.rows,
                           .cols = flip ? p.rows : p.cols,
                           .taps = p.taps};
    FK_CPU_KERNEL_TABLE(cpu::triplet_attention_kernels, T).gate_conv(a);
  });
  if (flip) torch::stable::copy_(y, torch::stable::transpose(yk, 2, 3));
  return y;
}

std::tuple<Tensor, Tensor> gate_conv_backward_cpu(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                                                  bool need_x, bool need_weight) {
  const GateConvProblem p = check_gate_conv_backward(grad_y, x, weight);
  Tensor gx = torch::stable::new_empty(x, need_x ? x.sizes() : torch::headeronly::IntHeaderOnlyArrayRef{0});
  Tensor gw =
      torch::stable::new_empty(weight, need_weight ? weight.sizes() : torch::headeronly::IntHeaderOnlyArrayRef{0});
  if (p.batch * p.in_channels * p.rows * p.cols == 0) {
    if (need_x) torch::stable::zero_(gx);
    if (need_weight) torch::stable::zero_(gw);
    return {gx, gw};
  }
  if (!need_x && !need_weight) return {gx, gw};
  const bool flip = transpose_gate_conv(p);
  const Tensor xc = contiguous_maybe_transposed(x, flip), wc = contiguous_maybe_transposed(weight, flip),
               gyc = contiguous_maybe_transposed(grad_y, flip);
  Tensor gxk = flip && need_x ? torch::stable::new_empty(x, {p.batch, p.in_channels, p.cols, p.rows}) : gx;
  Tensor gwk = flip && need_weight ? torch::stable::new_empty(weight, {1, p.in_channels, p.taps, p.taps}) : gw;
  dispatch_cpu_dtype(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::GateConvArgs<T> a{.x = data_of<const T>(xc),
                           .weight = data_of<const T>(wc),
                           .grad_y = data_of<const T>(gyc),
                           .y = nullptr,
                           .grad_x = need_x ? data_of<T>(gxk) : nullptr,
                           .grad_weight = need_weight ? data_of<T>(gwk) : nullptr,
                           .batch = p.batch,
                           .in_channels = p.in_channels,
                           .rows = flip ? p.cols : p.rows,
                           .cols = flip ? p.rows : p.cols,
                           .taps = p.taps};
    FK_CPU_KERNEL_TABLE(cpu::triplet_attention_kernels, T).gate_conv_backward(a);
  });
  if (flip && need_x) torch::stable::copy_(gx, torch::stable::transpose(gxk, 2, 3));
  if (flip && need_weight) torch::stable::copy_(gw, torch::stable::transpose(gwk, 2, 3));
  return {gx, gw};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("axis_pool", TORCH_BOX(&facekernels::axis_pool_cpu));
  m.impl("_axis_pool_backward", TORCH_BOX(&facekernels::axis_pool_backward_cpu));
  m.impl("triplet_gate", TORCH_BOX(&facekernels::triplet_gate_cpu));
  m.impl("_triplet_gate_backward", TORCH_BOX(&facekernels::triplet_gate_backward_cpu));
  m.impl("gate_conv", TORCH_BOX(&facekernels::gate_conv_cpu));
  m.impl("_gate_conv_backward", TORCH_BOX(&facekernels::gate_conv_backward_cpu));
}
