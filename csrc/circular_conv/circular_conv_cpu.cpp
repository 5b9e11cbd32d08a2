// circular_conv: the CPU binding (argument checks shared with the CUDA binding, outputs allocated with
// torch, kernels from circular_conv_kernels.cpp at the CPU's SIMD level), mirroring circular_conv_cuda.cpp.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <tuple>

#include "circular_conv/circular_conv.h"
#include "circular_conv/circular_conv_kernels.h"
#include "core/tensors.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// The problem sizes, common to the forward and backward kernels' arguments.
template <typename Args>
void set_sizes(Args& a, const CircularConvProblem& p) {
  a.batch = p.batch;
  a.channels = p.channels;
  a.height = p.height;
  a.width = p.width;
  a.taps = p.taps;
  a.axis = p.axis;
}

Tensor circular_conv_cpu(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias, int64_t dim) {
  const CircularConvProblem p = check_circular_conv("circular_conv", x, weight, bias, dim);
  const Tensor wc = torch::stable::contiguous(weight);
  const std::optional<Tensor> bc =
      bias.has_value() ? std::optional<Tensor>(torch::stable::contiguous(*bias)) : std::nullopt;
  Tensor y = torch::stable::new_empty(x, x.sizes());
  if (y.numel() == 0) return y;
  const Tensor xc = planes_contiguous(x);
  dispatch_cpu_dtype(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::CircularConvForwardArgs<T> a{.x = data_of<const T>(xc),
                                      .weight = data_of<const T>(wc),
                                      .bias = data_of<const T>(bc),
                                      .y = data_of<T>(y),
                                      .x_stride_b = xc.stride(0),
                                      .x_stride_c = xc.stride(1)};
    set_sizes(a, p);
    FK_CPU_KERNEL_TABLE(cpu::circular_conv_kernels, T).forward(a);
  });
  return y;
}

std::tuple<Tensor, Tensor, Tensor> circular_conv_backward_cpu(const Tensor& grad_out, const Tensor& x,
                                                              const Tensor& weight, int64_t dim, bool need_x,
                                                              bool need_weight, bool need_bias) {
  const CircularConvProblem p = check_circular_conv_backward(grad_out, x, weight, dim);
  const Tensor wc = torch::stable::contiguous(weight);
  CircularConvGradients out = allocate_circular_conv_gradients(x, wc, p, need_x, need_weight, need_bias);
  const Tensor &grad_x = out.grad_x, &grad_w = out.grad_weight, &grad_b = out.grad_bias;
  if (out.done || !(need_x || need_weight || need_bias)) return {grad_x, grad_w, grad_b};
  const Tensor gc = planes_contiguous(grad_out);
  const Tensor xc = planes_contiguous(x);
  dispatch_cpu_dtype(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::CircularConvBackwardArgs<T> a{.grad_y = data_of<const T>(gc),
                                       .x = data_of<const T>(xc),
                                       .weight = data_of<const T>(wc),
                                       .grad_x = need_x ? data_of<T>(grad_x) : nullptr,
                                       .grad_weight = need_weight ? data_of<T>(grad_w) : nullptr,
                                       .grad_bias = need_bias ? data_of<T>(grad_b) : nullptr,
                                       .grad_y_stride_b = gc.stride(0),
                                       .grad_y_stride_c = gc.stride(1),
                                       .x_stride_b = xc.stride(0),
                                       .x_stride_c = xc.stride(1)};
    set_sizes(a, p);
    FK_CPU_KERNEL_TABLE(cpu::circular_conv_kernels, T).backward(a);
  });
  return {grad_x, grad_w, grad_b};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("circular_conv", TORCH_BOX(&facekernels::circular_conv_cpu));
  m.impl("_circular_conv_backward", TORCH_BOX(&facekernels::circular_conv_backward_cpu));
}
