// triplet_attention: the CUDA binding (argument checks shared with the CPU binding, outputs allocated with
// torch, kernels from cuda/triplet_attention launched on the current stream). x-shaped inputs are read
// through their strides; x-shaped outputs take the layout the CPU binding gives them (channels_last when
// x is channels_last and not NCHW-planar).
#include <cuda_runtime_api.h>

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <tuple>

#include "core/cuda_binding.h"
#include "core/tensors.h"
#include "cuda/triplet_attention/triplet_attention.h"
#include "triplet_attention/triplet_attention.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

cuda::TripletShape cuda_shape(const TripletProblem& p) { return {p.batch, p.channels, p.height, p.width}; }

cuda::Strides4 strides_of(const Tensor& t) { return {t.stride(0), t.stride(1), t.stride(2), t.stride(3)}; }

bool writes_channels_last(const Tensor& x) { return !is_planar(x) && is_channels_last(x); }

const void* data_or_null(const std::optional<Tensor>& t) { return t.has_value() ? t->data_ptr() : nullptr; }

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> axis_pool_cuda(const Tensor& x) {
  const TripletProblem p = check_axis_pool("axis_pool", x);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const int64_t B = p.batch, C = p.channels, H = p.height, W = p.width;
  Tensor pc = torch::stable::new_empty(x, {B, 2, H, W});
  Tensor ph = torch::stable::new_empty(x, {B, 2, C, W});
  Tensor pw = torch::stable::new_empty(x, {B, 2, H, C});
  Tensor ac = torch::stable::new_empty(x, {B, H, W}, ScalarType::Int);
  Tensor ah = torch::stable::new_empty(x, {B, C, W}, ScalarType::Int);
  Tensor aw = torch::stable::new_empty(x, {B, H, C}, ScalarType::Int);
  if (B == 0) return {pc, ph, pw, ac, ah, aw};
  const cuda::AxisPoolParams params{.x = x.data_ptr(),
                                    .x_strides = strides_of(x),
                                    .pooled_c = pc.data_ptr(),
                                    .pooled_h = ph.data_ptr(),
                                    .pooled_w = pw.data_ptr(),
                                    .arg_c = data_of<int32_t>(ac),
                                    .arg_h = data_of<int32_t>(ah),
                                    .arg_w = data_of<int32_t>(aw),
                                    .shape = cuda_shape(p),
                                    .dtype = cuda_dtype(x)};
  check_launch(cuda::axis_pool_forward(params, current_cuda_stream(x.get_device_index())), "axis_pool");
  return {pc, ph, pw, ac, ah, aw};
}

Tensor axis_pool_backward_cuda(const Tensor& grad_c, const Tensor& grad_h, const Tensor& grad_w, const Tensor& arg_c,
                               const Tensor& arg_h, const Tensor& arg_w, bool channels_last) {
  const TripletProblem p = check_axis_pool_backward(grad_c, grad_h, grad_w, arg_c, arg_h, arg_w);
  const torch::stable::accelerator::DeviceGuard guard(grad_c.get_device_index());
  Tensor gx = new_4d_output(grad_c, p.batch, p.channels, p.height, p.width, channels_last);
  if (p.batch == 0) return gx;
  const Tensor gc = torch::stable::contiguous(grad_c), gh = torch::stable::contiguous(grad_h),
               gw = torch::stable::contiguous(grad_w), ac = torch::stable::contiguous(arg_c),
               ah = torch::stable::contiguous(arg_h), aw = torch::stable::contiguous(arg_w);
  const cuda::AxisPoolBackwardParams params{.grad_c = gc.data_ptr(),
                                            .grad_h = gh.data_ptr(),
                                            .grad_w = gw.data_ptr(),
                                            .arg_c = data_of<const int32_t>(ac),
                                            .arg_h = data_of<const int32_t>(ah),
                                            .arg_w = data_of<const int32_t>(aw),
                                            .grad_x = gx.data_ptr(),
                                            .channels_last = channels_last,
                                            .shape = cuda_shape(p),
                                            .dtype = cuda_dtype(gc)};
  check_launch(cuda::axis_pool_backward(params, current_cuda_stream(gc.get_device_index())), "_axis_pool_backward");
  return gx;
}

// The gate maps and scale made contiguous (kept alive here while a launch reads them) and the inputs
// both gate kernels read.
struct GateOperands {
  std::optional<Tensor> gate_c, gate_h, gate_w, scale;
  cuda::TripletGateInputs inputs;
  GateOperands(const Tensor& x, const std::optional<Tensor>& gc, const std::optional<Tensor>& gh,
               const std::optional<Tensor>& gw, const std::optional<Tensor>& s, bool channels_last,
               const TripletProblem& p)
      : gate_c(contiguous_or_none(gc)),
        gate_h(contiguous_or_none(gh)),
        gate_w(contiguous_or_none(gw)),
        scale(contiguous_or_none(s)),
        inputs{.x = x.data_ptr(),
               .x_strides = strides_of(x),
               .gate_c = data_or_null(gate_c),
               .gate_h = data_or_null(gate_h),
               .gate_w = data_or_null(gate_w),
               .scale = data_or_null(scale),
               .channels_last = channels_last,
               .shape = cuda_shape(p),
               .dtype = cuda_dtype(x)} {}
};

Tensor triplet_gate_cuda(const Tensor& x, const std::optional<Tensor>& gate_c, const std::optional<Tensor>& gate_h,
                         const std::optional<Tensor>& gate_w, const std::optional<Tensor>& scale) {
  const TripletProblem p = check_triplet_gate("triplet_gate", x, gate_c, gate_h, gate_w, scale);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const bool cl = writes_channels_last(x);
  Tensor y = new_4d_output(x, p.batch, p.channels, p.height, p.width, cl);
  if (y.numel() == 0) return y;
  const GateOperands ops(x, gate_c, gate_h, gate_w, scale, cl, p);
  const cuda::TripletGateParams params{.in = ops.inputs, .y = y.data_ptr()};
  check_launch(cuda::triplet_gate_forward(params, current_cuda_stream(x.get_device_index())), "triplet_gate");
  return y;
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor> triplet_gate_backward_cuda(
    const Tensor& grad_y, const Tensor& x, const std::optional<Tensor>& gate_c, const std::optional<Tensor>& gate_h,
    const std::optional<Tensor>& gate_w, const std::optional<Tensor>& scale, bool need_x) {
  const TripletProblem p = check_triplet_gate_backward(grad_y, x, gate_c, gate_h, gate_w, scale);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const int64_t B = p.batch, C = p.channels, H = p.height, W = p.width;
  const bool cl = writes_channels_last(x);
  const auto none = [&]() { return torch::stable::new_empty(x, {0}); };
  Tensor gx = need_x ? new_4d_output(x, B, C, H, W, cl) : none();
  Tensor dgc = gate_c.has_value() ? torch::stable::new_empty(x, {B, H, W}) : none();
  Tensor dgh = gate_h.has_value() ? torch::stable::new_empty(x, {B, C, W}) : none();
  Tensor dgw = gate_w.has_value() ? torch::stable::new_empty(x, {B, H, C}) : none();
  Tensor ds = scale.has_value() ? torch::stable::new_empty(x, {B, C}) : none();
  if (B * C == 0) {
    for (Tensor* t : {&dgc, &dgh, &dgw, &ds}) torch::stable::zero_(*t);
    return {gx, dgc, dgh, dgw, ds};
  }
  const GateOperands ops(x, gate_c, gate_h, gate_w, scale, cl, p);
  const cuda::TripletGateBackwardParams params{.in = ops.inputs,
                                               .grad_y = grad_y.data_ptr(),
                                               .grad_y_strides = strides_of(grad_y),
                                               .grad_x = need_x ? gx.data_ptr() : nullptr,
                                               .grad_gate_c = gate_c.has_value() ? dgc.data_ptr() : nullptr,
                                               .grad_gate_h = gate_h.has_value() ? dgh.data_ptr() : nullptr,
                                               .grad_gate_w = gate_w.has_value() ? dgw.data_ptr() : nullptr,
                                               .grad_scale = scale.has_value() ? ds.data_ptr() : nullptr};
  check_launch(cuda::triplet_gate_backward(params, current_cuda_stream(x.get_device_index())),
               "_triplet_gate_backward");
  return {gx, dgc, dgh, dgw, ds};
}

Tensor gate_conv_cuda(const Tensor& x, const Tensor& weight) {
  const GateConvProblem p = check_gate_conv("gate_conv", x, weight);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  Tensor y = torch::stable::new_empty(x, {p.batch, 1, p.rows, p.cols});
  if (y.numel() == 0) return y;
  const Tensor xc = torch::stable::contiguous(x), wc = torch::stable::contiguous(weight);
  const cuda::GateConvParams params{.x = xc.data_ptr(),
                                    .weight = wc.data_ptr(),
                                    .grad_y = nullptr,
                                    .y = y.data_ptr(),
                                    .grad_x = nullptr,
                                    .grad_weight = nullptr,
                                    .batch = p.batch,
                                    .in_channels = p.in_channels,
                                    .rows = p.rows,
                                    .cols = p.cols,
                                    .taps = p.taps,
                                    .dtype = cuda_dtype(xc)};
  check_launch(cuda::gate_conv_forward(params, current_cuda_stream(xc.get_device_index())), "gate_conv");
  return y;
}

std::tuple<Tensor, Tensor> gate_conv_backward_cuda(const Tensor& grad_y, const Tensor& x, const Tensor& weight,
                                                   bool need_x, bool need_weight) {
  const GateConvProblem p = check_gate_conv_backward(grad_y, x, weight);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  Tensor gx = torch::stable::new_empty(x, need_x ? x.sizes() : torch::headeronly::IntHeaderOnlyArrayRef{0});
  Tensor gw =
      torch::stable::new_empty(weight, need_weight ? weight.sizes() : torch::headeronly::IntHeaderOnlyArrayRef{0});
  if (!need_x && !need_weight) return {gx, gw};
  const Tensor xc = torch::stable::contiguous(x), wc = torch::stable::contiguous(weight),
               gyc = torch::stable::contiguous(grad_y);
  const cuda::GateConvParams params{.x = xc.data_ptr(),
                                    .weight = wc.data_ptr(),
                                    .grad_y = gyc.data_ptr(),
                                    .y = nullptr,
                                    .grad_x = need_x ? gx.data_ptr() : nullptr,
                                    .grad_weight = need_weight ? gw.data_ptr() : nullptr,
                                    .batch = p.batch,
                                    .in_channels = p.in_channels,
                                    .rows = p.rows,
                                    .cols = p.cols,
                                    .taps = p.taps,
                                    .dtype = cuda_dtype(xc)};
  check_launch(cuda::gate_conv_backward(params, current_cuda_stream(xc.get_device_index())), "_gate_conv_backward");
  return {gx, gw};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CUDA, m) {
  m.impl("axis_pool", TORCH_BOX(&facekernels::axis_pool_cuda));
  m.impl("_axis_pool_backward", TORCH_BOX(&facekernels::axis_pool_backward_cuda));
  m.impl("triplet_gate", TORCH_BOX(&facekernels::triplet_gate_cuda));
  m.impl("_triplet_gate_backward", TORCH_BOX(&facekernels::triplet_gate_backward_cuda));
  m.impl("gate_conv", TORCH_BOX(&facekernels::gate_conv_cuda));
  m.impl("_gate_conv_backward", TORCH_BOX(&facekernels::gate_conv_backward_cuda));
}
