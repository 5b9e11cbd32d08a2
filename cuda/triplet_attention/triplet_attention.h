// Torch-free CUDA launchers of the triplet_attention family (axis_pool, triplet_gate, gate_conv), called by
// csrc/triplet_attention/triplet_attention_cuda.cpp.
//
// x-shaped inputs are read through their four element strides (any layout); x-shaped outputs are written
// contiguous in NCHW or, when `channels_last`, in NHWC order. The maps are contiguous: over C [B, 2, H, W] /
// [B, H, W], over H [B, 2, C, W] / [B, C, W], over W [B, 2, H, C] / [B, H, C], the scale [B, C], argmax
// maps int32. Storage is float32, float16 or bfloat16 (`dtype`, every floating tensor alike); arithmetic and
// sums are float32. Work is enqueued on `stream`; each launcher returns the first launch error (or
// cudaSuccess) and never synchronises. Every reduction is deterministic (no atomics).
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/core/dtype.h"

namespace facekernels::cuda {

struct TripletShape {
  int64_t batch, channels, height, width;
};

struct Strides4 {
  int64_t b, c, h, w;
};

// pooled_c[b] = (max_c x, mean_c x), pooled_h[b] = (max_h, mean_h), pooled_w[b] = (max_w, mean_w), and the
// first index of each max (NaN counts as the largest value, the first NaN wins).
struct AxisPoolParams {
  const void* x;
  Strides4 x_strides;
  void* pooled_c;
  void* pooled_h;
  void* pooled_w;
  int32_t* arg_c;
  int32_t* arg_h;
  int32_t* arg_w;
  TripletShape shape;  // C, H, W >= 1
  DType dtype;
};
cudaError_t axis_pool_forward(const AxisPoolParams& params, cudaStream_t stream);

// grad_x = sum over the three pooled axes of grad_mean / n broadcast + grad_max at the recorded argmax.
struct AxisPoolBackwardParams {
  const void* grad_c;
  const void* grad_h;
  const void* grad_w;
  const int32_t* arg_c;
  const int32_t* arg_h;
  const int32_t* arg_w;
  void* grad_x;
  bool channels_last;
  TripletShape shape;
  DType dtype;
};
cudaError_t axis_pool_backward(const AxisPoolBackwardParams& params, cudaStream_t stream);

// What the gate's forward and backward both read: x, the three gate maps and the scale (a null gate counts
// as 0, a null scale as 1), the layout the outputs are written in, the shape and the dtype.
struct TripletGateInputs {
  const void* x;
  Strides4 x_strides;
  const void* gate_c;
  const void* gate_h;
  const void* gate_w;
  const void* scale;
  bool channels_last;  // of the outputs shaped like x
  TripletShape shape;
  DType dtype;
};

// y = x * scale[b, c] * (gate_c[b, h, w] + gate_h[b, c, w] + gate_w[b, h, c]).
struct TripletGateParams {
  TripletGateInputs in;
  void* y;
};
cudaError_t triplet_gate_forward(const TripletGateParams& params, cudaStream_t stream);

// With p = grad_y * x and G the gate sum: grad_x = grad_y * scale * G, grad_gate_c = sum_c scale p,
// grad_gate_h = scale sum_h p, grad_gate_w = scale sum_w p, grad_scale = sum_{h,w} p G; a null output is
// not computed.
struct TripletGateBackwardParams {
  TripletGateInputs in;
  const void* grad_y;
  Strides4 grad_y_strides;
  void* grad_x;
  void* grad_gate_c;
  void* grad_gate_h;
  void* grad_gate_w;
  void* grad_scale;
};
cudaError_t triplet_gate_backward(const TripletGateBackwardParams& params, cudaStream_t stream);

// y[b, 0, m, n] = sum_{k, i, j} weight[0, k, i, j] x[b, k, m + i - K/2, n + j - K/2] (zero padding; K odd),
// and its gradients (grad_x / grad_weight computed where non-null). Every tensor contiguous.
struct GateConvParams {
  const void* x;       // [B, Cin, M, N]
  const void* weight;  // [1, Cin, K, K]
  const void* grad_y;  // [B, 1, M, N] (backward)
  void* y;             // forward
  void* grad_x;
  void* grad_weight;
  int64_t batch, in_channels, rows, cols, taps;
  DType dtype;
};
cudaError_t gate_conv_forward(const GateConvParams& params, cudaStream_t stream);
cudaError_t gate_conv_backward(const GateConvParams& params, cudaStream_t stream);

}  // namespace facekernels::cuda
