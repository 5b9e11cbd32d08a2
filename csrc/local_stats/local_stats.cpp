// local_stat_transform (a local AdaIN over clipped square windows) and local_mean_var: schemas and
// argument checks, shared by the CPU binding (local_stats_cpu.cpp) and the CUDA binding
// (local_stats_cuda.cpp), each of which registers its own kernels.
#include "local_stats/local_stats.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cmath>

#include "core/checks.h"

namespace facekernels {

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

}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def("local_stat_transform(Tensor x, Tensor guide, int kernel_size=7, float eps=1e-05) -> Tensor");
  m.def(
      "_local_stat_transform_backward(Tensor grad_out, Tensor x, Tensor guide, int kernel_size, float eps, "
      "bool need_x, bool need_guide) -> (Tensor, Tensor)");
  m.def("local_mean_var(Tensor x, int kernel_size=7) -> (Tensor, Tensor)");
  m.def("_local_mean_var_backward(Tensor? grad_mean, Tensor? grad_var, Tensor x, int kernel_size) -> Tensor");
}
