// correlation: the CUDA binding (argument checks shared with the CPU binding, outputs allocated with torch,
// kernels from cuda/correlation launched on the current stream). Inputs are read in place through their
// strides, as in the CPU binding.
#include <cuda_runtime_api.h>

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/macros.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <tuple>

#include "core/cuda_binding.h"
#include "core/tensors.h"
#include "correlation/correlation.h"
#include "cuda/correlation/correlation.h"

namespace facekernels {
namespace {

using torch::headeronly::IntHeaderOnlyArrayRef;
using torch::stable::Tensor;

cuda::CorrelationShape cuda_shape(const CorrelationProblem& p) {
  return {p.batch, p.channels, p.height, p.width, p.patch, p.dilation};
}

template <int N>
void copy_strides(int64_t (&dst)[N], const Tensor& t) {
  for (int64_t i = 0; i < N; ++i) dst[i] = t.stride(i);
}

Tensor correlation_cuda(const Tensor& x1, const Tensor& x2, int64_t patch_size, int64_t dilation_patch,
                        int64_t kernel_size) {
  const CorrelationProblem p = check_correlation("correlation", x1, x2, patch_size, dilation_patch, kernel_size);
  const torch::stable::accelerator::DeviceGuard guard(x1.get_device_index());
  const int64_t sizes[5] = {p.batch, p.patch, p.patch, p.height, p.width};
  Tensor out = torch::stable::new_empty(x1, IntHeaderOnlyArrayRef(sizes, 5));
  if (out.numel() == 0) return out;
  cuda::CorrelationForwardParams params{.x1 = x1.data_ptr(),
                                        .x2 = x2.data_ptr(),
                                        .out = out.data_ptr(),
                                        .x1_stride = {},
                                        .x2_stride = {},
                                        .out_stride = {},
                                        .shape = cuda_shape(p),
                                        .dtype = cuda_dtype(x1)};
  copy_strides(params.x1_stride, x1);
  copy_strides(params.x2_stride, x2);
  copy_strides(params.out_stride, out);
  check_launch(cuda::correlation_forward(params, current_cuda_stream(x1.get_device_index())), "correlation");
  return out;
}

std::tuple<Tensor, Tensor> correlation_backward_cuda(const Tensor& grad_out, const Tensor& x1, const Tensor& x2,
                                                     int64_t patch_size, int64_t dilation_patch, bool need_x1,
                                                     bool need_x2) {
  const CorrelationProblem p = check_correlation_backward(grad_out, x1, x2, patch_size, dilation_patch);
  const torch::stable::accelerator::DeviceGuard guard(x1.get_device_index());
  Tensor grad_x1 = torch::stable::new_empty(x1, need_x1 ? x1.sizes() : IntHeaderOnlyArrayRef{0});
  Tensor grad_x2 = torch::stable::new_empty(x2, need_x2 ? x2.sizes() : IntHeaderOnlyArrayRef{0});
  if (!(need_x1 || need_x2) || x1.numel() == 0) return {grad_x1, grad_x2};
  cuda::CorrelationBackwardParams params{.grad_out = grad_out.data_ptr(),
                                         .x1 = x1.data_ptr(),
                                         .x2 = x2.data_ptr(),
                                         .grad_x1 = need_x1 ? grad_x1.data_ptr() : nullptr,
                                         .grad_x2 = need_x2 ? grad_x2.data_ptr() : nullptr,
                                         .grad_stride = {},
                                         .x1_stride = {},
                                         .x2_stride = {},
                                         .grad_x1_stride = {},
                                         .grad_x2_stride = {},
                                         .shape = cuda_shape(p),
                                         .dtype = cuda_dtype(x1)};
  copy_strides(params.grad_stride, grad_out);
  copy_strides(params.x1_stride, x1);
  copy_strides(params.x2_stride, x2);
  // A gradient not asked for is a [0] tensor: its strides are never read (its pointer is null).
  if (need_x1) copy_strides(params.grad_x1_stride, grad_x1);
  if (need_x2) copy_strides(params.grad_x2_stride, grad_x2);
  check_launch(cuda::correlation_backward(params, current_cuda_stream(x1.get_device_index())),
               "_correlation_backward");
  return {grad_x1, grad_x2};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CUDA, m) {
  m.impl("correlation", TORCH_BOX(&facekernels::correlation_cuda));
  m.impl("_correlation_backward", TORCH_BOX(&facekernels::correlation_backward_cuda));
}
