// Torch-free CUDA launchers of circular_conv, called by csrc/circular_conv/circular_conv_cuda.cpp.
//
// Every pointer is to contiguous device memory of the given dtype: x, y, grad_y, grad_x are
// [B, C, H, W], weight and grad_weight [C, L], bias and grad_bias [C]. Sums accumulate in float32 for
// every dtype. Work is enqueued on `stream`; each launcher returns the first launch error (or
// cudaSuccess) and never synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/core/dtype.h"

namespace facekernels::cuda {

struct CircularConvShape {
  int64_t batch, channels, height, width, taps;
  int axis;  // 2: along H, 3: along W
};

// The forward's arguments, filled by name in the binding.
struct CircularConvForwardParams {
  const void* x;       // [B, C, H, W]
  const void* weight;  // [C, L]
  const void* bias;    // [C], or nullptr: no bias
  void* y;             // [B, C, H, W]
  CircularConvShape shape;
  DType dtype;  // of every tensor above
};

// y[b, c, h, w] = bias[c] + sum_{t<L} weight[c, t] * x[b, c, (h + t) mod H, w] (axis 2; likewise along W
// for axis 3).
cudaError_t circular_conv_forward(const CircularConvForwardParams& params, cudaStream_t stream);

// float32 elements of scratch memory circular_conv_backward needs for these arguments (0: none, and
// `workspace` may then be nullptr).
int64_t circular_conv_backward_workspace_size(const CircularConvShape& shape, bool need_weight,
                                              bool need_bias);

// The backward's arguments, filled by name in the binding. A gradient pointer left nullptr is not
// computed.
struct CircularConvBackwardParams {
  const void* grad_y;  // [B, C, H, W]
  const void* x;       // [B, C, H, W]
  const void* weight;  // [C, L]
  void* grad_x;        // [B, C, H, W] or nullptr
  void* grad_weight;   // [C, L] or nullptr
  void* grad_bias;     // [C] or nullptr
  // circular_conv_backward_workspace_size(shape, grad_weight != nullptr, grad_bias != nullptr) floats
  float* workspace;
  CircularConvShape shape;
  DType dtype;  // of every tensor above but the workspace
};

// The gradients whose pointers are non-null:
//   grad_x[b, c, h, w] = sum_{t<L} weight[c, t] * grad_y[b, c, (h - t) mod H, w]
//   grad_weight[c, t]  = sum_{b, h, w} grad_y[b, c, h, w] * x[b, c, (h + t) mod H, w]
//   grad_bias[c]       = sum_{b, h, w} grad_y[b, c, h, w]
// (axis 2; likewise along W). The reductions are deterministic: no atomics, and a summation order
// that depends only on the shape (not on the device, nor on which gradients are asked for).
cudaError_t circular_conv_backward(const CircularConvBackwardParams& params, cudaStream_t stream);

}  // namespace facekernels::cuda
