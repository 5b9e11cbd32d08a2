// selective_scan: the CPU binding (argument checks, contiguous inputs and gradient allocation shared with
// the CUDA binding; kernels from selective_scan_kernels.cpp at the CPU's SIMD level).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <tuple>

#include "core/tensors.h"
#include "selective_scan/selective_scan.h"
#include "selective_scan/selective_scan_kernels.h"

namespace facekernels {
namespace {

using torch::stable::Tensor;

cpu::SelectiveScanSizes sizes_of(const SelectiveScanProblem& p, bool delta_softplus) {
  return {.batch = p.batch,
          .channels = p.channels,
          .length = p.length,
          .state = p.state,
          .groups_b = p.groups_b,
          .groups_c = p.groups_c,
          .delta_softplus = delta_softplus};
}

template <typename T>
cpu::SelectiveScanInputs<T> inputs_of(const SelectiveScanTensors& t) {
  return {.u = data_of<const T>(t.u),
          .delta = data_of<const T>(t.delta),
          .A = data_of<const T>(t.A),
          .B = data_of<const T>(t.B),
          .C = data_of<const T>(t.C),
          .D = data_of<const T>(t.D),
          .z = data_of<const T>(t.z),
          .delta_bias = data_of<const T>(t.delta_bias)};
}

std::tuple<Tensor, Tensor> selective_scan_cpu(const Tensor& u, const Tensor& delta, const Tensor& A, const Tensor& B,
                                              const Tensor& C, const std::optional<Tensor>& D,
                                              const std::optional<Tensor>& z, const std::optional<Tensor>& delta_bias,
                                              bool delta_softplus) {
  const SelectiveScanProblem p = check_selective_scan("selective_scan", u, delta, A, B, C, D, z, delta_bias);
  Tensor out = new_cpu_output(u, u.sizes());
  Tensor last_state = torch::stable::new_empty(u, {p.batch, p.channels, p.state});
  if (p.batch * p.channels == 0) return {out, last_state};
  if (p.length == 0) {
    torch::stable::zero_(last_state);
    return {out, last_state};
  }
  const SelectiveScanTensors in = contiguous_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias);
  dispatch_cpu_dtype(in.u.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const cpu::SelectiveScanForwardArgs<T> args{.in = inputs_of<T>(in),
                                                .out = data_of<T>(out),
                                                .last_state = data_of<T>(last_state),
                                                .sizes = sizes_of(p, delta_softplus)};
    FK_CPU_KERNEL_TABLE(cpu::selective_scan_kernels, T).forward(args);
  });
  return {out, last_state};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> selective_scan_backward_cpu(
    const Tensor& grad_out, const std::optional<Tensor>& grad_last_state, const Tensor& u, const Tensor& delta,
    const Tensor& A, const Tensor& B, const Tensor& C, const std::optional<Tensor>& D, const std::optional<Tensor>& z,
    const std::optional<Tensor>& delta_bias, bool delta_softplus) {
  const SelectiveScanProblem p =
      check_selective_scan_backward(grad_out, grad_last_state, u, delta, A, B, C, D, z, delta_bias);
  const SelectiveScanTensors in = contiguous_selective_scan_inputs(u, delta, A, B, C, D, z, delta_bias);
  const SelectiveScanGradients g = allocate_selective_scan_gradients(in, p);
  if (g.done) return g.as_tuple();
  const Tensor gc = torch::stable::contiguous(grad_out);
  const std::optional<Tensor> glc = contiguous_or_none(grad_last_state);
  dispatch_cpu_dtype(in.u.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    const cpu::SelectiveScanBackwardArgs<T> args{.grad_out = data_of<const T>(gc),
                                                 .grad_last_state = data_of<const T>(glc),
                                                 .in = inputs_of<T>(in),
                                                 .grad_u = data_of<T>(g.u),
                                                 .grad_delta = data_of<T>(g.delta),
                                                 .grad_A = data_of<T>(g.A),
                                                 .grad_B = data_of<T>(g.B),
                                                 .grad_C = data_of<T>(g.C),
                                                 .grad_D = in.D ? data_of<T>(g.D) : nullptr,
                                                 .grad_z = in.z ? data_of<T>(g.z) : nullptr,
                                                 .grad_delta_bias = in.delta_bias ? data_of<T>(g.delta_bias) : nullptr,
                                                 .sizes = sizes_of(p, delta_softplus)};
    FK_CPU_KERNEL_TABLE(cpu::selective_scan_kernels, T).backward(args);
  });
  return g.as_tuple();
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("selective_scan", TORCH_BOX(&facekernels::selective_scan_cpu));
  m.impl("_selective_scan_backward", TORCH_BOX(&facekernels::selective_scan_backward_cpu));
}
