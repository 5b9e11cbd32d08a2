// circular_conv: the CUDA binding (argument checks shared with the CPU binding, outputs allocated with
// torch, kernels from cuda/circular_conv launched on the current stream).
#include <cuda_runtime_api.h>

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/macros.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>

#include "circular_conv/circular_conv.h"
#include "core/cuda_binding.h"
#include "core/tensors.h"
#include "cuda/circular_conv/circular_conv.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

cuda::CircularConvShape cuda_shape(const CircularConvProblem& p) {
  return {p.batch, p.channels, p.height, p.width, p.taps, p.axis};
}

Tensor circular_conv_cuda(const Tensor& x, const Tensor& weight, const std::optional<Tensor>& bias,
                          int64_t dim) {
  const CircularConvProblem p = check_circular_conv("circular_conv", x, weight, bias, dim);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const Tensor xc = torch::stable::contiguous(x);
  const Tensor wc = torch::stable::contiguous(weight);
  const std::optional<Tensor> bc =
      bias.has_value() ? std::optional<Tensor>(torch::stable::contiguous(*bias)) : std::nullopt;
  Tensor y = torch::stable::new_empty(xc, xc.sizes());
  if (y.numel() == 0) return y;
  const cuda::CircularConvForwardParams params{.x = xc.data_ptr(),
                                               .weight = wc.data_ptr(),
                                               .bias = bc ? bc->data_ptr() : nullptr,
                                               .y = y.data_ptr(),
                                               .shape = cuda_shape(p),
                                               .dtype = cuda_dtype(xc)};
  check_launch(cuda::circular_conv_forward(params, current_cuda_stream(xc.get_device_index())), "circular_conv");
  return y;
}

std::tuple<Tensor, Tensor, Tensor> circular_conv_backward_cuda(const Tensor& grad_out, const Tensor& x,
                                                               const Tensor& weight, int64_t dim, bool need_x,
                                                               bool need_weight, bool need_bias) {
  const CircularConvProblem p = check_circular_conv_backward(grad_out, x, weight, dim);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const Tensor gc = torch::stable::contiguous(grad_out);
  const Tensor xc = torch::stable::contiguous(x);
  const Tensor wc = torch::stable::contiguous(weight);
  CircularConvGradients out = allocate_circular_conv_gradients(xc, wc, p, need_x, need_weight, need_bias);
  const Tensor &grad_x = out.grad_x, &grad_w = out.grad_weight, &grad_b = out.grad_bias;
  if (out.done || !(need_x || need_weight || need_bias)) return {grad_x, grad_w, grad_b};
  const cuda::CircularConvShape shape = cuda_shape(p);
  // Float32 scratch for the deterministic two-pass reduction, from torch's caching allocator.
  const int64_t workspace_size = cuda::circular_conv_backward_workspace_size(shape, need_weight, need_bias);
  std::optional<Tensor> workspace;
  if (workspace_size > 0) workspace = torch::stable::new_empty(xc, {workspace_size}, ScalarType::Float);
  const cuda::CircularConvBackwardParams params{.grad_y = gc.data_ptr(),
                                                .x = xc.data_ptr(),
                                                .weight = wc.data_ptr(),
                                                .grad_x = need_x ? grad_x.data_ptr() : nullptr,
                                                .grad_weight = need_weight ? grad_w.data_ptr() : nullptr,
                                                .grad_bias = need_bias ? grad_b.data_ptr() : nullptr,
                                                .workspace = data_of<float>(workspace),
                                                .shape = shape,
                                                .dtype = cuda_dtype(xc)};
  check_launch(cuda::circular_conv_backward(params, current_cuda_stream(xc.get_device_index())),
               "_circular_conv_backward");
  return {grad_x, grad_w, grad_b};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CUDA, m) {
  m.impl("circular_conv", TORCH_BOX(&facekernels::circular_conv_cuda));
  m.impl("_circular_conv_backward", TORCH_BOX(&facekernels::circular_conv_backward_cuda));
}
