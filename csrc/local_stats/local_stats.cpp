// local_stat_transform (a local AdaIN over clipped square windows) and local_mean_var: schemas, argument
// checks and the CPU binding.
#include "local_stats/local_stats.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cmath>
#include <tuple>

#include "core/checks.h"
#include "core/memory.h"
#include "local_stats/local_stats_kernels.h"

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

namespace {

int64_t check_kernel_size(const char* op, int64_t kernel_size) {
  FK_CHECK(kernel_size >= 1 && kernel_size % 2 == 1, op, "kernel_size must be an odd integer >= 1, got ",
           kernel_size);
  return kernel_size / 2;
}

}  // namespace

LocalStatsProblem check_local_mean_var(const char* op, const Tensor& x, int64_t kernel_size) {
  check_dim(op, "x", x, 4, "[B, C, H, W]");
  check_floating_dtype(op, "x", x);
  const int64_t radius = check_kernel_size(op, kernel_size);
  return {x.size(0), x.size(1), x.size(2), x.size(3), radius};
}

LocalStatsProblem check_local_stat_transform(const char* op, const Tensor& x, const Tensor& guide,
                                             int64_t kernel_size, double eps) {
  check_dim(op, "x", x, 4, "[B, C, H, W]");
  check_dim(op, "guide", guide, 4, "[B, C, H, W]");
  bool same = true;
  for (int64_t i = 0; i < 4; ++i) same = same && guide.size(i) == x.size(i);
  FK_CHECK(same, op, "guide must have the same shape as x ", shape_string(x), ", got ", shape_string(guide));
  check_floating_dtype(op, "x", x);
  check_same_dtype(op, "guide", guide, "x", x);
  check_same_device(op, "guide", guide, "x", x);
  FK_CHECK(eps >= 0 && std::isfinite(eps), op, "eps must be a finite number >= 0, got ", eps);
  return check_local_mean_var(op, x, kernel_size);
}

void check_gradient_like(const char* op, const char* arg, const Tensor& grad, const Tensor& x) {
  check_dim(op, arg, grad, 4, "[B, C, H, W]");
  bool same = true;
  for (int64_t i = 0; i < 4; ++i) same = same && grad.size(i) == x.size(i);
  FK_CHECK(same, op, arg, " must have the shape of x ", shape_string(x), ", got ", shape_string(grad));
  check_same_dtype(op, arg, grad, "x", x);
  check_same_device(op, arg, grad, "x", x);
}

namespace {

// The CPU kernels read any B/C strides as long as each [H, W] plane is contiguous.
Tensor planes_contiguous(const Tensor& t) {
  const int64_t h = t.size(2), w = t.size(3);
  const bool ok = (w == 1 || t.stride(3) == 1) && (h == 1 || t.stride(2) == w);
  return ok ? t : torch::stable::contiguous(t);
}

template <typename T>
cpu::Planes<T> planes_of(const std::optional<Tensor>& t) {
  if (!t.has_value()) return {nullptr, 0, 0};
  return {static_cast<const T*>(t->data_ptr()), t->stride(0), t->stride(1)};
}

template <typename T>
T* data_or_null(const Tensor& t, bool wanted) {
  return wanted ? static_cast<T*>(t.data_ptr()) : nullptr;
}

struct CpuInputs {
  std::optional<Tensor> x, guide, grad_out, grad_mean, grad_var;
};

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

// A CPU output tensor, with huge pages requested for large ones (core/memory.h).
Tensor new_output(const Tensor& like, torch::headeronly::IntHeaderOnlyArrayRef sizes) {
  Tensor t = torch::stable::new_empty(like, sizes);
  advise_huge_pages(t.data_ptr(), static_cast<size_t>(t.numel()) * (like.scalar_type() == ScalarType::Double ? 8 : 4));
  return t;
}

std::optional<Tensor> cpu_input(const std::optional<Tensor>& t) {
  return t.has_value() ? std::optional<Tensor>(planes_contiguous(*t)) : std::nullopt;
}

Tensor local_stat_transform_cpu(const Tensor& x, const Tensor& guide, int64_t kernel_size, double eps) {
  const LocalStatsProblem p = check_local_stat_transform("local_stat_transform", x, guide, kernel_size, eps);
  Tensor out = new_output(x, x.sizes());
  if (out.numel() == 0) return out;
  const CpuInputs in{cpu_input(x), cpu_input(guide), std::nullopt, std::nullopt, std::nullopt};
  const cpu::LocalStatsKernels& k = FK_CPU_DISPATCH(cpu::local_stats_kernels);
  if (x.scalar_type() == ScalarType::Float) {
    auto a = make_args<float>(in, p, eps);
    a.out = static_cast<float*>(out.data_ptr());
    k.transform_forward_f32(a);
  } else {
    auto a = make_args<double>(in, p, eps);
    a.out = static_cast<double*>(out.data_ptr());
    k.transform_forward_f64(a);
  }
  return out;
}

std::tuple<Tensor, Tensor> local_stat_transform_backward_cpu(const Tensor& grad_out, const Tensor& x,
                                                             const Tensor& guide, int64_t kernel_size, double eps,
                                                             bool need_x, bool need_guide) {
  const char* op = "_local_stat_transform_backward";
  const LocalStatsProblem p = check_local_stat_transform(op, x, guide, kernel_size, eps);
  check_gradient_like(op, "grad_out", grad_out, x);
  using torch::headeronly::IntHeaderOnlyArrayRef;
  Tensor grad_x = new_output(x, need_x ? x.sizes() : IntHeaderOnlyArrayRef{0});
  Tensor grad_guide = new_output(x, need_guide ? x.sizes() : IntHeaderOnlyArrayRef{0});
  if (x.numel() == 0 || !(need_x || need_guide)) return {grad_x, grad_guide};
  const CpuInputs in{cpu_input(x), cpu_input(guide), cpu_input(grad_out), std::nullopt, std::nullopt};
  const cpu::LocalStatsKernels& k = FK_CPU_DISPATCH(cpu::local_stats_kernels);
  if (x.scalar_type() == ScalarType::Float) {
    auto a = make_args<float>(in, p, eps);
    a.grad_x = data_or_null<float>(grad_x, need_x);
    a.grad_guide = data_or_null<float>(grad_guide, need_guide);
    k.transform_backward_f32(a);
  } else {
    auto a = make_args<double>(in, p, eps);
    a.grad_x = data_or_null<double>(grad_x, need_x);
    a.grad_guide = data_or_null<double>(grad_guide, need_guide);
    k.transform_backward_f64(a);
  }
  return {grad_x, grad_guide};
}

std::tuple<Tensor, Tensor> local_mean_var_cpu(const Tensor& x, int64_t kernel_size) {
  const LocalStatsProblem p = check_local_mean_var("local_mean_var", x, kernel_size);
  Tensor mean = new_output(x, x.sizes());
  Tensor var = new_output(x, x.sizes());
  if (x.numel() == 0) return {mean, var};
  const CpuInputs in{cpu_input(x), std::nullopt, std::nullopt, std::nullopt, std::nullopt};
  const cpu::LocalStatsKernels& k = FK_CPU_DISPATCH(cpu::local_stats_kernels);
  if (x.scalar_type() == ScalarType::Float) {
    auto a = make_args<float>(in, p, 0.0);
    a.out = static_cast<float*>(mean.data_ptr());
    a.out_var = static_cast<float*>(var.data_ptr());
    k.mean_var_forward_f32(a);
  } else {
    auto a = make_args<double>(in, p, 0.0);
    a.out = static_cast<double*>(mean.data_ptr());
    a.out_var = static_cast<double*>(var.data_ptr());
    k.mean_var_forward_f64(a);
  }
  return {mean, var};
}

Tensor local_mean_var_backward_cpu(const std::optional<Tensor>& grad_mean, const std::optional<Tensor>& grad_var,
                                   const Tensor& x, int64_t kernel_size) {
  const char* op = "_local_mean_var_backward";
  const LocalStatsProblem p = check_local_mean_var(op, x, kernel_size);
  if (grad_mean.has_value()) check_gradient_like(op, "grad_mean", *grad_mean, x);
  if (grad_var.has_value()) check_gradient_like(op, "grad_var", *grad_var, x);
  Tensor grad_x = new_output(x, x.sizes());
  if (x.numel() == 0) return grad_x;
  if (!grad_mean.has_value() && !grad_var.has_value()) return torch::stable::zero_(grad_x);
  const CpuInputs in{cpu_input(x), std::nullopt, std::nullopt, cpu_input(grad_mean), cpu_input(grad_var)};
  const cpu::LocalStatsKernels& k = FK_CPU_DISPATCH(cpu::local_stats_kernels);
  if (x.scalar_type() == ScalarType::Float) {
    auto a = make_args<float>(in, p, 0.0);
    a.grad_x = static_cast<float*>(grad_x.data_ptr());
    k.mean_var_backward_f32(a);
  } else {
    auto a = make_args<double>(in, p, 0.0);
    a.grad_x = static_cast<double*>(grad_x.data_ptr());
    k.mean_var_backward_f64(a);
  }
  return grad_x;
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def("local_stat_transform(Tensor x, Tensor guide, int kernel_size=7, float eps=1e-05) -> Tensor");
  m.def(
      "_local_stat_transform_backward(Tensor grad_out, Tensor x, Tensor guide, int kernel_size, float eps, "
      "bool need_x, bool need_guide) -> (Tensor, Tensor)");
  m.def("local_mean_var(Tensor x, int kernel_size=7) -> (Tensor, Tensor)");
  m.def("_local_mean_var_backward(Tensor? grad_mean, Tensor? grad_var, Tensor x, int kernel_size) -> Tensor");
}

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("local_stat_transform", TORCH_BOX(&facekernels::local_stat_transform_cpu));
  m.impl("_local_stat_transform_backward", TORCH_BOX(&facekernels::local_stat_transform_backward_cpu));
  m.impl("local_mean_var", TORCH_BOX(&facekernels::local_mean_var_cpu));
  m.impl("_local_mean_var_backward", TORCH_BOX(&facekernels::local_mean_var_backward_cpu));
}
