// Torch-free CPU kernels of axis_pool and triplet_gate on raw pointers.
//
// x (and grad_y, grad_x, y) is read in one of two layouts: planar, element (b, c, h, w) at
// [b * stride_b + c * stride_c + h * W + w] (NCHW planes, any batch and channel strides), or channels_last,
// at [b * stride_b + (h * W + w) * C + c]. Outputs of x's shape are written in the layout of x with
// stride_b = C * H * W (and stride_c = H * W when planar). The maps (pooled, argmax, gates, scale and their
// gradients) are contiguous: [B, 2, H, W] / [B, H, W] over C, [B, 2, C, W] / [B, C, W] over H,
// [B, 2, H, C] / [B, H, C] over W, [B, C] for the scale.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

struct TripletSizes {
  int64_t batch = 0, channels = 0, height = 0, width = 0;
  bool channels_last = false;
};

template <typename T>
struct AxisPoolArgs {
  TripletSizes n;
  const T* x;
  int64_t x_stride_b, x_stride_c;  // x_stride_c unused when channels_last
  T* pooled_c;                     // [B, 2, H, W]: max, mean over C
  T* pooled_h;                     // [B, 2, C, W]: max, mean over H
  T* pooled_w;                     // [B, 2, H, C]: max, mean over W
  int32_t* arg_c;                  // [B, H, W]: first index of the max over C
  int32_t* arg_h;                  // [B, C, W]
  int32_t* arg_w;                  // [B, H, C]
};

template <typename T>
struct AxisPoolBackwardArgs {
  TripletSizes n;
  const T* grad_c;  // [B, 2, H, W]
  const T* grad_h;  // [B, 2, C, W]
  const T* grad_w;  // [B, 2, H, C]
  const int32_t* arg_c;
  const int32_t* arg_h;
  const int32_t* arg_w;
  T* grad_x;  // [B, C, H, W] in the layout n.channels_last names, batch stride C * H * W
};

template <typename T>
struct TripletGateArgs {
  TripletSizes n;
  const T* x;
  int64_t x_stride_b, x_stride_c;
  const T* gate_c;  // [B, H, W]
  const T* gate_h;  // [B, C, W]
  const T* gate_w;  // [B, H, C]
  const T* scale;   // [B, C]
  T* y;             // x's layout, batch stride C * H * W
};

template <typename T>
struct TripletGateBackwardArgs {
  TripletSizes n;
  const T* grad_y;  // x's layout and strides
  const T* x;
  int64_t x_stride_b, x_stride_c, grad_y_stride_b, grad_y_stride_c;
  const T* gate_c;
  const T* gate_h;
  const T* gate_w;
  const T* scale;
  T* grad_x;       // x's layout, batch stride C * H * W; nullptr: not asked for
  T* grad_gate_c;  // [B, H, W]
  T* grad_gate_h;  // [B, C, W]
  T* grad_gate_w;  // [B, H, C]
  T* grad_scale;   // [B, C]
};

// gate_conv: y[b, 0] = sum_k conv2d(x[b, k], weight[0, k]) with K x K taps (K odd), zero padding K / 2,
// stride 1; every tensor contiguous.
template <typename T>
struct GateConvArgs {
  const T* x;       // [B, Cin, M, N]
  const T* weight;  // [1, Cin, K, K]
  const T* grad_y;  // [B, 1, M, N] (backward)
  T* y;             // [B, 1, M, N] (forward)
  T* grad_x;        // [B, Cin, M, N] or nullptr (backward)
  T* grad_weight;   // [1, Cin, K, K] or nullptr (backward)
  int64_t batch = 0, in_channels = 0, rows = 0, cols = 0, taps = 0;
};

template <typename T>
struct TripletAttentionKernels {
  void (*axis_pool)(const AxisPoolArgs<T>&);
  void (*axis_pool_backward)(const AxisPoolBackwardArgs<T>&);
  void (*gate)(const TripletGateArgs<T>&);
  void (*gate_backward)(const TripletGateBackwardArgs<T>&);
  void (*gate_conv)(const GateConvArgs<T>&);
  void (*gate_conv_backward)(const GateConvArgs<T>&);
};

FK_DECLARE_CPU_KERNEL_TABLE(TripletAttentionKernels, triplet_attention_kernels)

}  // namespace facekernels::cpu
