// Torch-free CPU kernels of circular_conv: raw pointers to contiguous [B, C, H, W] planes.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

template <typename T>
struct CircularConvForwardArgs {
  const T* x;       // [B, C, H, W]
  const T* weight;  // [C, L]
  const T* bias;    // [C] or nullptr
  T* y;             // [B, C, H, W]
  int64_t batch, channels, height, width, taps;
  int axis;  // 2: along H, 3: along W
};

template <typename T>
struct CircularConvBackwardArgs {
  const T* grad_y;  // [B, C, H, W]
  const T* x;       // [B, C, H, W]
  const T* weight;  // [C, L]
  T* grad_x;        // [B, C, H, W] or nullptr
  T* grad_weight;   // [C, L] or nullptr
  T* grad_bias;     // [C] or nullptr
  int64_t batch, channels, height, width, taps;
  int axis;
};

struct CircularConvKernels {
  void (*forward_f32)(const CircularConvForwardArgs<float>&);
  void (*forward_f64)(const CircularConvForwardArgs<double>&);
  void (*backward_f32)(const CircularConvBackwardArgs<float>&);
  void (*backward_f64)(const CircularConvBackwardArgs<double>&);
};

FK_DECLARE_CPU_KERNELS(const CircularConvKernels&, circular_conv_kernels)

}  // namespace facekernels::cpu
