// local_stat_transform / local_mean_var: the CPU binding (argument checks shared with the CUDA binding,
// outputs allocated with torch, kernels from local_stats_kernels.cpp at the CPU's SIMD level), mirroring
// local_stats_cuda.cpp. The outputs follow the same conventions on both devices: a gradient not asked for
// is an empty [0] tensor, and _local_mean_var_backward with neither incoming gradient returns zeros.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <tuple>

#include "core/checks.h"
#include "core/tensors.h"
#include "local_stats/local_stats.h"
#include "local_stats/local_stats_kernels.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

std::optional<Tensor> cpu_input(const std::optional<Tensor>& t) {
  return t.has_value() ? std::optional<Tensor>(planes_contiguous(*t)) : std::nullopt;
}

template <typename T>
cpu::Planes<T> planes_of(const std::optional<Tensor>& t) {
  if (!t.has_value()) return {nullptr, 0, 0};
  return {data_of<const T>(*t), t->stride(0), t->stride(1)};
}

// The kernels' inputs, each with its [H, W] planes contiguous (absent: not an input of this op).
struct CpuInputs {
  std::optional<Tensor> x, guide, grad_out, grad_mean, grad_var;
};

// The arguments common to every kernel; the caller sets the outputs.
template <typename T>
cpu::LocalStatsArgs<T> make_args(const CpuInputs& in, const LocalStatsProblem& p, double eps) {
  cpu::LocalStatsArgs<T> a{};
  a.x = planes_of<T>(in.x);
  a.guide = planes_of<T>(in.guide);
  a.grad_out = planes_of<T>(in.grad_out);
  a.grad_mean = planes_of<T>(in.grad_mean);
  a.grad_var = planes_of<T>(in.grad_var);
  a.batch = p.batch;
  a.channels = p.channels;
  a.height = p.height;
  a.width = p.width;
  a.radius = p.radius;
  a.eps = eps;
  return a;
}

template <typename T>
const cpu::LocalStatsKernels<T>& kernels() {
  return FK_CPU_KERNEL_TABLE(cpu::local_stats_kernels, T);
}

Tensor local_stat_transform_cpu(const Tensor& x, const Tensor& guide, int64_t kernel_size, double eps) {
  const LocalStatsProblem p = check_local_stat_transform("local_stat_transform", x, guide, kernel_size, eps);
  Tensor out = new_cpu_output(x, x.sizes());
  if (out.numel() == 0) return out;
  const CpuInputs in{cpu_input(x), cpu_input(guide), std::nullopt, std::nullopt, std::nullopt};
  dispatch_cpu_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    auto a = make_args<T>(in, p, eps);
    a.out = data_of<T>(out);
    kernels<T>().transform_forward(a);
  });
  return out;
}

std::tuple<Tensor, Tensor> local_stat_transform_backward_cpu(const Tensor& grad_out, const Tensor& x,
                                                             const Tensor& guide, int64_t kernel_size, double eps,
                                                             bool need_x, bool need_guide) {
  const char* op = "_local_stat_transform_backward";
  const LocalStatsProblem p = check_local_stat_transform(op, x, guide, kernel_size, eps);
  check_like(op, "grad_out", grad_out, "x", x, 4, "[B, C, H, W]");
  using torch::headeronly::IntHeaderOnlyArrayRef;
  Tensor grad_x = new_cpu_output(x, need_x ? x.sizes() : IntHeaderOnlyArrayRef{0});
  Tensor grad_guide = new_cpu_output(x, need_guide ? x.sizes() : IntHeaderOnlyArrayRef{0});
  if (x.numel() == 0 || !(need_x || need_guide)) return {grad_x, grad_guide};
  const CpuInputs in{cpu_input(x), cpu_input(guide), cpu_input(grad_out), std::nullopt, std::nullopt};
  dispatch_cpu_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    auto a = make_args<T>(in, p, eps);
    a.grad_x = need_x ? data_of<T>(grad_x) : nullptr;
    a.grad_guide = need_guide ? data_of<T>(grad_guide) : nullptr;
    kernels<T>().transform_backward(a);
  });
  return {grad_x, grad_guide};
}

std::tuple<Tensor, Tensor> local_mean_var_cpu(const Tensor& x, int64_t kernel_size) {
  const LocalStatsProblem p = check_local_mean_var("local_mean_var", x, kernel_size);
  Tensor mean = new_cpu_output(x, x.sizes());
  Tensor var = new_cpu_output(x, x.sizes());
  if (x.numel() == 0) return {mean, var};
  const CpuInputs in{cpu_input(x), std::nullopt, std::nullopt, std::nullopt, std::nullopt};
  dispatch_cpu_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    auto a = make_args<T>(in, p, 0.0);
    a.out = data_of<T>(mean);
    a.out_var = data_of<T>(var);
    kernels<T>().mean_var_forward(a);
  });
  return {mean, var};
}

Tensor local_mean_var_backward_cpu(const std::optional<Tensor>& grad_mean, const std::optional<Tensor>& grad_var,
                                   const Tensor& x, int64_t kernel_size) {
  const char* op = "_local_mean_var_backward";
  const LocalStatsProblem p = check_local_mean_var(op, x, kernel_size);
  if (grad_mean.has_value()) check_like(op, "grad_mean", *grad_mean, "x", x, 4, "[B, C, H, W]");
  if (grad_var.has_value()) check_like(op, "grad_var", *grad_var, "x", x, 4, "[B, C, H, W]");
  Tensor grad_x = new_cpu_output(x, x.sizes());
  if (x.numel() == 0) return grad_x;
  if (!grad_mean.has_value() && !grad_var.has_value()) return torch::stable::zero_(grad_x);
  const CpuInputs in{cpu_input(x), std::nullopt, std::nullopt, cpu_input(grad_mean), cpu_input(grad_var)};
  dispatch_cpu_dtype(x.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    auto a = make_args<T>(in, p, 0.0);
    a.grad_x = data_of<T>(grad_x);
    kernels<T>().mean_var_backward(a);
  });
  return grad_x;
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("local_stat_transform", TORCH_BOX(&facekernels::local_stat_transform_cpu));
  m.impl("_local_stat_transform_backward", TORCH_BOX(&facekernels::local_stat_transform_backward_cpu));
  m.impl("local_mean_var", TORCH_BOX(&facekernels::local_mean_var_cpu));
  m.impl("_local_mean_var_backward", TORCH_BOX(&facekernels::local_mean_var_backward_cpu));
}
