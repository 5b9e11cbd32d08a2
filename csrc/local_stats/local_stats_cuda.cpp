// local_stat_transform / local_mean_var: the CUDA binding (argument checks shared with the CPU binding,
// outputs and float32 workspace allocated with torch, kernels from cuda/local_stats launched on the
// current stream). The outputs follow the CPU binding's conventions exactly: a gradient not asked for is
// an empty [0] tensor, and _local_mean_var_backward with neither incoming gradient returns zeros.
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

#include "core/checks.h"
#include "core/cuda_binding.h"
#include "core/tensors.h"
#include "cuda/local_stats/local_stats.h"
#include "local_stats/local_stats.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

cuda::LocalStatsShape cuda_shape(const LocalStatsProblem& p) {
  return {p.batch * p.channels, p.height, p.width, p.radius};
}

// Float32 scratch from torch's caching allocator, on x's device (nullopt for 0 floats).
std::optional<Tensor> workspace_for(const Tensor& x, int64_t floats) {
  if (floats <= 0) return std::nullopt;
  return torch::stable::new_empty(x, {floats}, ScalarType::Float);
}

Tensor local_stat_transform_cuda(const Tensor& x, const Tensor& guide, int64_t kernel_size, double eps) {
  const char* op = "local_stat_transform";
  const LocalStatsProblem p = check_local_stat_transform(op, x, guide, kernel_size, eps);
  const torch::stable::accelerator::DeviceGuard device_guard(x.get_device_index());
  const Tensor xc = torch::stable::contiguous(x);
  const Tensor gc = torch::stable::contiguous(guide);
  Tensor out = torch::stable::new_empty(xc, xc.sizes());
  if (out.numel() == 0) return out;
  const cuda::LocalStatsShape shape = cuda_shape(p);
  const std::optional<Tensor> workspace =
      workspace_for(xc, cuda::local_stat_transform_forward_workspace_size(shape));
  const cuda::LocalStatTransformParams params{.x = xc.data_ptr(),
                                              .guide = gc.data_ptr(),
                                              .out = out.data_ptr(),
                                              .workspace = data_of<float>(workspace),
                                              .shape = shape,
                                              .eps = static_cast<float>(eps),
                                              .dtype = cuda_dtype(xc)};
  check_launch(cuda::local_stat_transform_forward(params, current_cuda_stream(xc.get_device_index())), op);
  return out;
}

std::tuple<Tensor, Tensor> local_stat_transform_backward_cuda(const Tensor& grad_out, const Tensor& x,
                                                              const Tensor& guide, int64_t kernel_size,
                                                              double eps, bool need_x, bool need_guide) {
  const char* op = "_local_stat_transform_backward";
  const LocalStatsProblem p = check_local_stat_transform(op, x, guide, kernel_size, eps);
  check_like(op, "grad_out", grad_out, "x", x, 4, "[B, C, H, W]");
  const torch::stable::accelerator::DeviceGuard device_guard(x.get_device_index());
  using torch::headeronly::IntHeaderOnlyArrayRef;
  Tensor grad_x = torch::stable::new_empty(x, need_x ? x.sizes() : IntHeaderOnlyArrayRef{0});
  Tensor grad_guide = torch::stable::new_empty(x, need_guide ? x.sizes() : IntHeaderOnlyArrayRef{0});
  if (x.numel() == 0 || !(need_x || need_guide)) return {grad_x, grad_guide};
  const Tensor goc = torch::stable::contiguous(grad_out);
  const Tensor xc = torch::stable::contiguous(x);
  const Tensor gc = torch::stable::contiguous(guide);
  const cuda::LocalStatsShape shape = cuda_shape(p);
  const std::optional<Tensor> workspace =
      workspace_for(xc, cuda::local_stat_transform_backward_workspace_size(shape, need_x, need_guide));
  const cuda::LocalStatTransformParams params{.x = xc.data_ptr(),
                                              .guide = gc.data_ptr(),
                                              .grad_out = goc.data_ptr(),
                                              .grad_x = need_x ? grad_x.data_ptr() : nullptr,
                                              .grad_guide = need_guide ? grad_guide.data_ptr() : nullptr,
                                              .workspace = data_of<float>(workspace),
                                              .shape = shape,
                                              .eps = static_cast<float>(eps),
                                              .dtype = cuda_dtype(xc)};
  check_launch(cuda::local_stat_transform_backward(params, current_cuda_stream(xc.get_device_index())), op);
  return {grad_x, grad_guide};
}

std::tuple<Tensor, Tensor> local_mean_var_cuda(const Tensor& x, int64_t kernel_size) {
  const char* op = "local_mean_var";
  const LocalStatsProblem p = check_local_mean_var(op, x, kernel_size);
  const torch::stable::accelerator::DeviceGuard device_guard(x.get_device_index());
  const Tensor xc = torch::stable::contiguous(x);
  Tensor mean = torch::stable::new_empty(xc, xc.sizes());
  Tensor var = torch::stable::new_empty(xc, xc.sizes());
  if (xc.numel() == 0) return {mean, var};
  const cuda::LocalStatsShape shape = cuda_shape(p);
  const std::optional<Tensor> workspace =
      workspace_for(xc, cuda::local_mean_var_forward_workspace_size(shape));
  const cuda::LocalMeanVarParams params{.x = xc.data_ptr(),
                                        .mean = mean.data_ptr(),
                                        .var = var.data_ptr(),
                                        .workspace = data_of<float>(workspace),
                                        .shape = shape,
                                        .dtype = cuda_dtype(xc)};
  check_launch(cuda::local_mean_var_forward(params, current_cuda_stream(xc.get_device_index())), op);
  return {mean, var};
}

Tensor local_mean_var_backward_cuda(const std::optional<Tensor>& grad_mean,
                                    const std::optional<Tensor>& grad_var, const Tensor& x,
                                    int64_t kernel_size) {
  const char* op = "_local_mean_var_backward";
  const LocalStatsProblem p = check_local_mean_var(op, x, kernel_size);
  if (grad_mean.has_value()) check_like(op, "grad_mean", *grad_mean, "x", x, 4, "[B, C, H, W]");
  if (grad_var.has_value()) check_like(op, "grad_var", *grad_var, "x", x, 4, "[B, C, H, W]");
  const torch::stable::accelerator::DeviceGuard device_guard(x.get_device_index());
  Tensor grad_x = torch::stable::new_empty(x, x.sizes());
  if (x.numel() == 0) return grad_x;
  if (!grad_mean.has_value() && !grad_var.has_value()) return torch::stable::zero_(grad_x);
  const Tensor xc = torch::stable::contiguous(x);
  const std::optional<Tensor> gm = contiguous_or_none(grad_mean);
  const std::optional<Tensor> gv = contiguous_or_none(grad_var);
  const cuda::LocalStatsShape shape = cuda_shape(p);
  const std::optional<Tensor> workspace = workspace_for(
      xc, cuda::local_mean_var_backward_workspace_size(shape, gm.has_value(), gv.has_value()));
  const cuda::LocalMeanVarParams params{.x = xc.data_ptr(),
                                        .grad_mean = gm ? gm->data_ptr() : nullptr,
                                        .grad_var = gv ? gv->data_ptr() : nullptr,
                                        .grad_x = grad_x.data_ptr(),
                                        .workspace = data_of<float>(workspace),
                                        .shape = shape,
                                        .dtype = cuda_dtype(xc)};
  check_launch(cuda::local_mean_var_backward(params, current_cuda_stream(xc.get_device_index())), op);
  return grad_x;
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CUDA, m) {
  m.impl("local_stat_transform", TORCH_BOX(&facekernels::local_stat_transform_cuda));
  m.impl("_local_stat_transform_backward", TORCH_BOX(&facekernels::local_stat_transform_backward_cuda));
  m.impl("local_mean_var", TORCH_BOX(&facekernels::local_mean_var_cuda));
  m.impl("_local_mean_var_backward", TORCH_BOX(&facekernels::local_mean_var_backward_cuda));
}
