// correlation (FlowNetC's cost volume, as MOL computes it): schema and argument checks, shared by the CPU
// binding (correlation_cpu.cpp) and the CUDA binding (correlation_cuda.cpp).
#include "correlation/correlation.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include "core/checks.h"

namespace facekernels {

using torch::stable::Tensor;

CorrelationProblem check_correlation(const char* op, const Tensor& x1, const Tensor& x2, int64_t patch_size,
                                     int64_t dilation_patch, int64_t kernel_size) {
  check_dim(op, "x1", x1, 4, "[B, C, H, W]");
  check_dim(op, "x2", x2, 4, "[B, C, H, W]");
  check_floating_dtype(op, "x1", x1);
  check_same_dtype(op, "x2", x2, "x1", x1);
  check_same_device(op, "x2", x2, "x1", x1);
  bool same = true;
  for (int64_t i = 0; i < 4; ++i) same = same && x2.size(i) == x1.size(i);
  FK_CHECK(same, op, "x2 must have the shape of x1 ", shape_string(x1), ", got ", shape_string(x2));
  FK_CHECK(kernel_size == 1, op, "kernel_size must be 1 (only single-pixel windows are implemented), got ",
           kernel_size);
  FK_CHECK(patch_size >= 1 && patch_size % 2 == 1, op, "patch_size must be an odd number >= 1, got ",
           patch_size);
  FK_CHECK(dilation_patch >= 1, op, "dilation_patch must be >= 1, got ", dilation_patch);
  return {x1.size(0), x1.size(1), x1.size(2), x1.size(3), patch_size, dilation_patch};
}

CorrelationProblem check_correlation_backward(const Tensor& grad_out, const Tensor& x1, const Tensor& x2,
                                              int64_t patch_size, int64_t dilation_patch) {
  const char* op = "_correlation_backward";
  const CorrelationProblem p = check_correlation(op, x1, x2, patch_size, dilation_patch, 1);
  check_dim(op, "grad_out", grad_out, 5, "[B, P, P, H, W]");
  const int64_t want[5] = {p.batch, p.patch, p.patch, p.height, p.width};
  bool same = true;
  for (int64_t i = 0; i < 5; ++i) same = same && grad_out.size(i) == want[i];
  FK_CHECK(same, op, "grad_out must have shape ", shape_string(torch::headeronly::IntHeaderOnlyArrayRef(want, 5)), ", got ", shape_string(grad_out));
  check_same_dtype(op, "grad_out", grad_out, "x1", x1);
  check_same_device(op, "grad_out", grad_out, "x1", x1);
  return p;
}

}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def("correlation(Tensor x1, Tensor x2, int patch_size=21, int dilation_patch=2, int kernel_size=1) -> Tensor");
  m.def(
      "_correlation_backward(Tensor grad_out, Tensor x1, Tensor x2, int patch_size, int dilation_patch, "
      "bool need_x1, bool need_x2) -> (Tensor, Tensor)");
}
