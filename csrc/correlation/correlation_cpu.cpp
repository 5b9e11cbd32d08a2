// correlation: the CPU binding (checks shared with the CUDA binding, outputs allocated with torch, kernels
// from correlation_kernels.cpp at the CPU's SIMD level). Inputs are read in place through their strides.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <tuple>

#include "core/tensors.h"
#include "correlation/correlation.h"
#include "correlation/correlation_kernels.h"

namespace facekernels {
namespace {

using torch::headeronly::IntHeaderOnlyArrayRef;
using torch::stable::Tensor;

template <typename Args>
void set_sizes(Args& a, const CorrelationProblem& p, const Tensor& x1, const Tensor& x2) {
  a.batch = p.batch;
  a.channels = p.channels;
  a.height = p.height;
  a.width = p.width;
  a.patch = p.patch;
  a.dilation = p.dilation;
  for (int64_t i = 0; i < 4; ++i) {
    a.x1_stride[i] = x1.stride(i);
    a.x2_stride[i] = x2.stride(i);
  }
}

Tensor correlation_cpu(const Tensor& x1, const Tensor& x2, int64_t patch_size, int64_t dilation_patch,
                       int64_t kernel_size) {
  const CorrelationProblem p = check_correlation("correlation", x1, x2, patch_size, dilation_patch, kernel_size);
  const int64_t sizes[5] = {p.batch, p.patch, p.patch, p.height, p.width};
  Tensor out = new_cpu_output(x1, IntHeaderOnlyArrayRef(sizes, 5));
  if (out.numel() == 0) return out;
  dispatch_cpu_dtype(x1.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::CorrelationForwardArgs<T> a{.x1 = data_of<const T>(x1), .x2 = data_of<const T>(x2), .out = data_of<T>(out)};
    set_sizes(a, p, x1, x2);
    FK_CPU_KERNEL_TABLE(cpu::correlation_kernels, T).forward(a);
  });
  return out;
}

std::tuple<Tensor, Tensor> correlation_backward_cpu(const Tensor& grad_out, const Tensor& x1, const Tensor& x2,
                                                    int64_t patch_size, int64_t dilation_patch, bool need_x1,
                                                    bool need_x2) {
  const CorrelationProblem p = check_correlation_backward(grad_out, x1, x2, patch_size, dilation_patch);
  Tensor grad_x1 = new_cpu_output(x1, need_x1 ? x1.sizes() : IntHeaderOnlyArrayRef{0});
  Tensor grad_x2 = new_cpu_output(x2, need_x2 ? x2.sizes() : IntHeaderOnlyArrayRef{0});
  if (!(need_x1 || need_x2) || x1.numel() == 0) return {grad_x1, grad_x2};
  dispatch_cpu_dtype(x1.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::CorrelationBackwardArgs<T> a{.grad_out = data_of<const T>(grad_out),
                                      .x1 = data_of<const T>(x1),
                                      .x2 = data_of<const T>(x2),
                                      .grad_x1 = need_x1 ? data_of<T>(grad_x1) : nullptr,
                                      .grad_x2 = need_x2 ? data_of<T>(grad_x2) : nullptr};
    set_sizes(a, p, x1, x2);
    for (int64_t i = 0; i < 5; ++i) a.grad_stride[i] = grad_out.stride(i);
    FK_CPU_KERNEL_TABLE(cpu::correlation_kernels, T).backward(a);
  });
  return {grad_x1, grad_x2};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("correlation", TORCH_BOX(&facekernels::correlation_cpu));
  m.impl("_correlation_backward", TORCH_BOX(&facekernels::correlation_backward_cpu));
}
