// correlation: the CPU binding (checks shared with the CUDA binding, outputs allocated with torch, kernels
// from correlation_kernels.cpp at the CPU's SIMD level). Inputs are read in place through their strides.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <array>
#include <tuple>

#include "core/blas.h"
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

cpu::CorrelationClasses classes_of(const CorrelationProblem& p) {
  return cpu::correlation_classes(p.batch, p.channels, p.height, p.width, p.patch, p.dilation);
}

// The class matrices [count, C, n] as GEMM operands, and the products [count, n, n].
MatrixView class_operand(const Tensor& t, const cpu::CorrelationClasses& k) {
  return MatrixView::row_major(t.data_ptr(), k.channels, k.positions()).batched(k.count(), k.channels * k.positions());
}
MatrixView class_products(const Tensor& t, const cpu::CorrelationClasses& k) {
  const int64_t n = k.positions();
  return MatrixView::row_major(t.data_ptr(), n, n).batched(k.count(), n * n);
}

std::array<int64_t, 4> strides_of(const Tensor& x) { return {x.stride(0), x.stride(1), x.stride(2), x.stride(3)}; }

// The whole-class plan runs over blocks of samples whose class matrices (x1's, x2's and their products)
// total about 2 M elements: that bounds its scratch memory. Smaller blocks (down to one sample, whose
// matrices would stay in L2) measured slower on 2 threads at MOL's shape: each block is five parallel
// regions and a BLAS call, and their start-up costs outweighed the cache misses saved (forward 0.84 ms
// with a block per sample, 0.68 ms with the whole batch of 8).
int64_t samples_per_block(const cpu::CorrelationClasses& k) {
  const int64_t n = k.positions();
  const int64_t per_sample = k.residues_h * k.residues_w * (2 * k.channels * n + n * n);
  return std::min(k.batch, std::max<int64_t>(1, (int64_t{1} << 21) / std::max<int64_t>(per_sample, 1)));
}

// The whole-class plan (correlation_kernels.h): S = A^T B per class on the BLAS, scattered into out.
template <typename T>
void forward_by_classes(const cpu::CorrelationClasses& k, const Tensor& x1, const Tensor& x2, const Tensor& out) {
  const auto& kernels = FK_CPU_KERNEL_TABLE(cpu::correlation_kernels, T);
  cpu::CorrelationClasses block = k;
  block.batch = samples_per_block(k);
  const int64_t n = k.positions(), out_sample = k.patch * k.patch * k.height * k.width;
  const Tensor a = torch::stable::new_empty(x1, {block.count(), k.channels, n});
  const Tensor b = torch::stable::new_empty(x1, {block.count(), k.channels, n});
  const Tensor products = torch::stable::new_empty(x1, {block.count(), n, n});
  const auto s1 = strides_of(x1), s2 = strides_of(x2);
  for (int64_t b0 = 0; b0 < k.batch; b0 += block.batch) {
    block.batch = std::min(block.batch, k.batch - b0);
    kernels.pack_classes(block, data_of<const T>(x1) + b0 * s1[0], s1.data(), data_of<T>(a));
    kernels.pack_classes(block, data_of<const T>(x2) + b0 * s2[0], s2.data(), data_of<T>(b));
    gemm_into(class_products(products, block), class_operand(a, block).t(), class_operand(b, block), x1.device(),
              x1.scalar_type());
    kernels.scatter_products(block, data_of<const T>(products), data_of<T>(out) + b0 * out_sample);
  }
}

// dA = B dS^T and dB = A dS per class, dS gathered from grad_out; the same blocks as the forward.
template <typename T>
void backward_by_classes(const cpu::CorrelationClasses& k, const Tensor& grad_out, const Tensor& x1, const Tensor& x2,
                         Tensor& grad_x1, Tensor& grad_x2, bool need_x1, bool need_x2) {
  const auto& kernels = FK_CPU_KERNEL_TABLE(cpu::correlation_kernels, T);
  cpu::CorrelationClasses block = k;
  block.batch = samples_per_block(k);
  const int64_t n = k.positions(), in_sample = k.channels * k.height * k.width;
  const Tensor grad_products = torch::stable::new_empty(x1, {block.count(), n, n});
  const Tensor packed = torch::stable::new_empty(x1, {block.count(), k.channels, n});
  const Tensor grad_packed = torch::stable::new_empty(x1, {block.count(), k.channels, n});
  const int64_t gs[5] = {grad_out.stride(0), grad_out.stride(1), grad_out.stride(2), grad_out.stride(3),
                         grad_out.stride(4)};
  // side 0: grad_x1 = unpack(B dS^T); side 1: grad_x2 = unpack(A dS).
  const Tensor* other[2] = {&x2, &x1};
  Tensor* grads[2] = {need_x1 ? &grad_x1 : nullptr, need_x2 ? &grad_x2 : nullptr};
  for (int64_t b0 = 0; b0 < k.batch; b0 += block.batch) {
    block.batch = std::min(block.batch, k.batch - b0);
    kernels.gather_products(block, data_of<const T>(grad_out) + b0 * gs[0], gs, data_of<T>(grad_products));
    const MatrixView ds = class_products(grad_products, block);
    for (int side = 0; side < 2; ++side) {
      if (grads[side] == nullptr) continue;
      const auto so = strides_of(*other[side]);
      kernels.pack_classes(block, data_of<const T>(*other[side]) + b0 * so[0], so.data(), data_of<T>(packed));
      gemm_into(class_operand(grad_packed, block), class_operand(packed, block), side == 0 ? ds.t() : ds, x1.device(),
                x1.scalar_type());
      kernels.unpack_classes(block, data_of<const T>(grad_packed), data_of<T>(*grads[side]) + b0 * in_sample);
    }
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
    if (const cpu::CorrelationClasses k = classes_of(p); k.fits_window()) return forward_by_classes<T>(k, x1, x2, out);
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
    if (const cpu::CorrelationClasses k = classes_of(p); k.fits_window())
      return backward_by_classes<T>(k, grad_out, x1, x2, grad_x1, grad_x2, need_x1, need_x2);
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
