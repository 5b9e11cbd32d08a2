// Torch-free CPU kernels of correlation: raw pointers with element strides, so any input layout is read
// in place.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

// out[b, i, j, h, w] = sum_c x1[b, c, h, w] * x2[b, c, h + (i - P/2) * d, w + (j - P/2) * d], zero where
// the displaced position is outside the image. Element (b, c, h, w) of x1 is
// x1[b * x1_stride[0] + c * x1_stride[1] + h * x1_stride[2] + w * x1_stride[3]]; out is contiguous.
template <typename T>
struct CorrelationForwardArgs {
  const T* x1;
  const T* x2;
  T* out;  // [B, P, P, H, W], contiguous
  int64_t batch = 0, channels = 0, height = 0, width = 0, patch = 1, dilation = 1;
  int64_t x1_stride[4] = {}, x2_stride[4] = {};
};

// grad_x1 / grad_x2 (contiguous [B, C, H, W], or nullptr when not asked for) from grad_out (any strides).
template <typename T>
struct CorrelationBackwardArgs {
  const T* grad_out;
  const T* x1;
  const T* x2;
  T* grad_x1;
  T* grad_x2;
  int64_t batch = 0, channels = 0, height = 0, width = 0, patch = 1, dilation = 1;
  int64_t grad_stride[5] = {}, x1_stride[4] = {}, x2_stride[4] = {};
};

template <typename T>
struct CorrelationKernels {
  void (*forward)(const CorrelationForwardArgs<T>&);
  void (*backward)(const CorrelationBackwardArgs<T>&);
};

FK_DECLARE_CPU_KERNEL_TABLE(CorrelationKernels, correlation_kernels)

}  // namespace facekernels::cpu
