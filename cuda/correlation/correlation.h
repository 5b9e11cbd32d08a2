// Torch-free CUDA launchers of correlation (FlowNetC's cost volume), called by
// csrc/correlation/correlation_cuda.cpp.
//
// x1, x2 (and grad_x1, grad_x2) are [B, C, H, W] device arrays read or written through their element strides
// (any strides, as the CPU binding accepts them; outputs the binding allocates are contiguous, but the
// launchers do not rely on it); out and grad_out are [B, P, P, H, W], out written through its strides, grad_out
// read through its strides. Every tensor has the same storage dtype; sums accumulate in float32. Work is
// enqueued on `stream`; each launcher returns the first launch error (or cudaSuccess) and never synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/core/dtype.h"

namespace facekernels::cuda {

struct CorrelationShape {
  int64_t batch, channels, height, width;
  int64_t patch;     // P, odd, >= 1
  int64_t dilation;  // d, >= 1
};

// The forward's arguments, filled by name in the binding.
struct CorrelationForwardParams {
  const void* x1;  // [B, C, H, W]
  const void* x2;  // [B, C, H, W]
  void* out;       // [B, P, P, H, W]
  int64_t x1_stride[4], x2_stride[4], out_stride[5];
  CorrelationShape shape;
  DType dtype;  // of every tensor above
};

// out[b, i, j, h, w] = sum_c x1[b, c, h, w] * x2[b, c, h + (i - P/2) d, w + (j - P/2) d], 0 where the displaced
// position falls outside the image.
cudaError_t correlation_forward(const CorrelationForwardParams& params, cudaStream_t stream);

// The backward's arguments, filled by name in the binding. A gradient pointer left nullptr is not computed.
struct CorrelationBackwardParams {
  const void* grad_out;  // [B, P, P, H, W]
  const void* x1;        // [B, C, H, W]
  const void* x2;        // [B, C, H, W]
  void* grad_x1;         // [B, C, H, W] or nullptr
  void* grad_x2;         // [B, C, H, W] or nullptr
  int64_t grad_stride[5], x1_stride[4], x2_stride[4], grad_x1_stride[4], grad_x2_stride[4];
  CorrelationShape shape;
  DType dtype;  // of every tensor above
};

// With (dy, dx) = ((i - P/2) d, (j - P/2) d) and terms only where the displaced position is inside the image:
//   grad_x1[b, c, h, w] = sum_{i, j} grad_out[b, i, j, h, w] * x2[b, c, h + dy, w + dx]
//   grad_x2[b, c, h, w] = sum_{i, j} grad_out[b, i, j, h - dy, w - dx] * x1[b, c, h - dy, w - dx]
// Both are gathers (one thread per gradient element, a fixed summation order over (i, j)): no atomics, the
// result does not depend on scheduling.
cudaError_t correlation_backward(const CorrelationBackwardParams& params, cudaStream_t stream);

}  // namespace facekernels::cuda
