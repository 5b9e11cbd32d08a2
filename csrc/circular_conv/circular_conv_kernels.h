// Torch-free CPU kernels of circular_conv: raw pointers to contiguous [B, C, H, W] planes.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

// Inputs may be strided over B and C (channel slices of a larger tensor, say) as long as each [H, W]
// plane is contiguous: element (b, c, h, w) of x is x[b * x_stride_b + c * x_stride_c + h * W + w].
// Outputs are contiguous.
template <typename T>
struct CircularConvForwardArgs {
  const T* x;       // [B, C, H, W], planes contiguous
  const T* weight;  // [C, L]
  const T* bias;    // [C] or nullptr
  T* y;             // [B, C, H, W], contiguous
  int64_t batch = 0, channels = 0, height = 0, width = 0, taps = 0;
  int axis = 2;  // 2: along H, 3: along W
  int64_t x_stride_b, x_stride_c;
};

template <typename T>
struct CircularConvBackwardArgs {
  const T* grad_y;  // [B, C, H, W], planes contiguous
  const T* x;       // [B, C, H, W], planes contiguous
  const T* weight;  // [C, L]
  T* grad_x;        // [B, C, H, W] or nullptr
  T* grad_weight;   // [C, L] or nullptr
  T* grad_bias;     // [C] or nullptr
  int64_t batch = 0, channels = 0, height = 0, width = 0, taps = 0;
  int axis = 2;
  int64_t grad_y_stride_b, grad_y_stride_c, x_stride_b, x_stride_c;
};

// The kernels of one dtype, filled by name in circular_conv_kernels.cpp (one table per SIMD level).
template <typename T>
struct CircularConvKernels {
  void (*forward)(const CircularConvForwardArgs<T>&);
  void (*backward)(const CircularConvBackwardArgs<T>&);
};

FK_DECLARE_CPU_KERNEL_TABLE(CircularConvKernels, circular_conv_kernels)

}  // namespace facekernels::cpu
