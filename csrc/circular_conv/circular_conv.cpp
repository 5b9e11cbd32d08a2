// circular_conv (MOL's "fully-connected convolution"): schema and argument checks, shared by the CPU
// binding (circular_conv_cpu.cpp) and the CUDA binding (circular_conv_cuda.cpp), each of which registers
// its own kernels.
#include "circular_conv/circular_conv.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "core/checks.h"

namespace facekernels {

using torch::stable::Tensor;

CircularConvProblem check_circular_conv(const char* op, const Tensor& x, const Tensor& weight,
                                        const std::optional<Tensor>& bias, int64_t dim) {
  check_dim(op, "x", x, 4, "[B, C, H, W]");
  check_dim(op, "weight", weight, 2, "[C, L]");
  FK_CHECK(dim == 2 || dim == 3 || dim == -2 || dim == -1, op, "dim must be one of 2, 3, -2, -1 (H or W), got ",
           dim);
  const int axis = dim < 0 ? static_cast<int>(dim + 4) : static_cast<int>(dim);
  check_floating_dtype(op, "x", x);
  check_same_dtype(op, "weight", weight, "x", x);
  check_same_device(op, "weight", weight, "x", x);
  const int64_t channels = x.size(1), length = x.size(axis), taps = weight.size(1);
  FK_CHECK(weight.size(0) == channels, op, "weight must have shape [C, L] with C = x.size(1) = ", channels,
           ", got ", shape_string(weight));
  FK_CHECK(taps >= 1 && taps <= length, op, "weight must have 1 <= L <= x.size(", axis, ") = ", length,
           " taps, got L = ", taps, " (weight shape ", shape_string(weight), ", x shape ", shape_string(x), ")");
  if (bias.has_value()) {
    const Tensor& b = *bias;
    FK_CHECK(b.dim() == 1 && b.size(0) == channels, op, "bias must have shape [", channels, "] (C of x), got ",
             shape_string(b));
    check_same_dtype(op, "bias", b, "x", x);
    check_same_device(op, "bias", b, "x", x);
  }
  return {x.size(0), channels, x.size(2), x.size(3), taps, axis};
}

CircularConvProblem check_circular_conv_backward(const Tensor& grad_out, const Tensor& x, const Tensor& weight,
                                                 int64_t dim) {
  const char* op = "_circular_conv_backward";
  CircularConvProblem p = check_circular_conv(op, x, weight, std::nullopt, dim);
  check_like(op, "grad_out", grad_out, "x", x, 4, "[B, C, H, W]");
  return p;
}

CircularConvGradients allocate_circular_conv_gradients(const Tensor& x, const Tensor& weight,
                                                       const CircularConvProblem& p, bool need_x,
                                                       bool need_weight, bool need_bias) {
  using torch::headeronly::IntHeaderOnlyArrayRef;
  CircularConvGradients g{torch::stable::new_empty(x, need_x ? x.sizes() : IntHeaderOnlyArrayRef{0}),
                          torch::stable::new_empty(weight, need_weight ? weight.sizes() : IntHeaderOnlyArrayRef{0}),
                          torch::stable::new_empty(weight, {need_bias ? p.channels : 0}), false};
  if (p.batch * p.channels * p.height * p.width == 0) {
    if (need_weight) torch::stable::zero_(g.grad_weight);
    if (need_bias) torch::stable::zero_(g.grad_bias);
    g.done = true;
  }
  return g;
}

}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def("circular_conv(Tensor x, Tensor weight, Tensor? bias=None, int dim=2) -> Tensor");
  m.def(
      "_circular_conv_backward(Tensor grad_out, Tensor x, Tensor weight, int dim, bool need_x, "
      "bool need_weight, bool need_bias) -> (Tensor, Tensor, Tensor)");
}
