// selective_scan: the CUDA binding (argument checks, contiguous inputs and gradient allocation shared with
// the CPU binding; kernels from cuda/selective_scan launched on the current stream).
#include <cuda_runtime_api.h>

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <tuple>

#include "core/cuda_binding.h"
#include "core/tensors.h"
#include "cuda/selective_scan/selective_scan.h"
#include "selective_scan/selective_scan.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

cuda::SelectiveScanShape cuda_shape(const SelectiveScanProblem& p, bool delta_softplus) {
  return {p.batch, p.channels, p.length, p.state, p.groups_b, p.groups_c, delta_softplus};
}

const void* data_or_null(const std::optional<Tensor>& t) { return t.has_value() ? t->data_ptr() : nullptr; }

cuda::SelectiveScanInputs inputs_of(const SelectiveScanTensors& t) {
  return {.u = t.u.data_ptr(),
          .delta = t.delta.data_ptr(),
          .A = t.A.data_ptr(),
          .B = t.B.data_ptr(),
          .C = t.C.data_ptr(),
          .D = data_or_null(t.D),
          .z = data_or_null(t.z),
          .delta_bias = data_or_null(t.delta_bias)};
}

std::tuple<Tensor, Tensor> selective_scan_cuda(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                               const Tensor& C, const std::optional<Tensor>& D,
                                               const std::optional<Tensor>& z,
                                               const std::optional<Tensor>& delta_bias, bool delta_softplus) {
  const SelectiveScanProblem p = check_selective_scan("selective_scan", u, delta, A, B, C, D, z, delta_bias);
  const torch::stable::accelerator::DeviceGuard guard(u.get_device_index());
  const SelectiveScanTensors in = contiguous_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias);
  Tensor out = torch::stable::new_empty(in.u, in.u.sizes());
  Tensor last_state = torch::stable::new_empty(in.u, {p.batch, p.channels, p.state}, ScalarType::Float);
  const cuda::SelectiveScanForwardParams params{.in = inputs_of(in),
                                                .out = out.data_ptr(),
                                                .last_state = data_of<float>(last_state),
                                                .shape = cuda_shape(p, delta_softplus),
                                                .dtype = cuda_dtype(in.u)};
  check_launch(cuda::selective_scan_forward(params, current_cuda_stream(in.u.get_device_index())), "selective_scan");
  return {out, last_state};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> selective_scan_backward_cuda(
    const Tensor& grad_out, const std::optional<Tensor>& grad_last_state, const Tensor& u, const Tensor& delta,
    const Tensor& A, const Tensor& B, const Tensor& C, const std::optional<Tensor>& D, const std::optional<Tensor>& z,
    const std::optional<Tensor>& delta_bias, bool delta_softplus) {
  const SelectiveScanProblem p =
      check_selective_scan_backward(grad_out, grad_last_state, u, delta, A, B, C, D, z, delta_bias);
  const torch::stable::accelerator::DeviceGuard guard(u.get_device_index());
  const SelectiveScanTensors in = contiguous_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias);
  const SelectiveScanGradients g = allocate_selective_scan_gradients(in, p);
  if (g.done) return g.as_tuple();
  const Tensor gc = torch::stable::contiguous(grad_out);
  const std::optional<Tensor> glc = contiguous_or_none(grad_last_state);
  const cuda::SelectiveScanShape shape = cuda_shape(p, delta_softplus);
  // float32 scratch (checkpoints and partial sums) from torch's caching allocator
  const int64_t workspace_size = cuda::selective_scan_backward_workspace_size(shape);
  std::optional<Tensor> workspace;
  if (workspace_size > 0) workspace = torch::stable::new_empty(in.u, {workspace_size}, ScalarType::Float);
  const cuda::SelectiveScanBackwardParams params{.grad_out = gc.data_ptr(),
                                                 .grad_last_state = data_of<const float>(glc),
                                                 .in = inputs_of(in),
                                                 .grad_u = g.u.data_ptr(),
                                                 .grad_delta = g.delta.data_ptr(),
                                                 .grad_A = g.A.data_ptr(),
                                                 .grad_B = g.B.data_ptr(),
                                                 .grad_C = g.C.data_ptr(),
                                                 .grad_D = in.D ? g.D.data_ptr() : nullptr,
                                                 .grad_z = in.z ? g.z.data_ptr() : nullptr,
                                                 .grad_delta_bias = in.delta_bias ? g.delta_bias.data_ptr() : nullptr,
                                                 .workspace = data_of<float>(workspace),
                                                 .shape = shape,
                                                 .dtype = cuda_dtype(in.u)};
  check_launch(cuda::selective_scan_backward(params, current_cuda_stream(in.u.get_device_index())),
               "_selective_scan_backward");
  return g.as_tuple();
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CUDA, m) {
  m.impl("selective_scan", TORCH_BOX(&facekernels::selective_scan_cuda));
  m.impl("_selective_scan_backward", TORCH_BOX(&facekernels::selective_scan_backward_cuda));
}
