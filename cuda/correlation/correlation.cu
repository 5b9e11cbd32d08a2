// CUDA kernels of correlation: the forward and the gradients for x1 and x2; float32, float16 and bfloat16
// storage, float32 arithmetic, any strides.
//
// Plain gathers, one thread per output element, in grid-stride loops over 64-bit flat indices whose
// fastest-varying coordinate is w, so a warp reads consecutive pixels of x1/x2/grad_out (coalesced for
// inputs contiguous along W):
//   forward:  a thread owns out[b, i, j, h, w] and runs over the C channels;
//   grad_x1:  a thread owns grad_x1[b, c, h, w] and runs over the P*P displacements;
//   grad_x2:  a thread owns grad_x2[b, c, h, w] and runs over the P*P displacements, reading grad_out and x1
//             at the source pixel (h - dy, w - dx) that displacement (dy, dx) carries onto (h, w): the
//             transpose of the forward written as a gather, so there are no atomics and the summation
//             order is fixed.
// No shared memory: the data a block reuses (x1's pixel across the P*P displacements, x2's neighbourhood)
// stays in L1/L2 at MOL's sizes. A tiled version (x1's channel vector staged per block) is the next step
// if a GPU profile asks for it; correctness and plain indexing come first here.
#include "correlation.h"

#include "cuda/core/device_math.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>
#include <type_traits>

namespace facekernels::cuda {
namespace {

constexpr int kThreads = 256;

struct Strides4 {
  int64_t s0, s1, s2, s3;
};
struct Strides5 {
  int64_t s0, s1, s2, s3, s4;
};

Strides4 strides4(const int64_t* s) { return {s[0], s[1], s[2], s[3]}; }
Strides5 strides5(const int64_t* s) { return {s[0], s[1], s[2], s[3], s[4]}; }

__device__ __forceinline__ int64_t at(const Strides4& s, int64_t b, int64_t c, int64_t h, int64_t w) {
  return b * s.s0 + c * s.s1 + h * s.s2 + w * s.s3;
}
__device__ __forceinline__ int64_t at(const Strides5& s, int64_t b, int64_t i, int64_t j, int64_t h, int64_t w) {
  return b * s.s0 + i * s.s1 + j * s.s2 + h * s.s3 + w * s.s4;
}

bool valid_shape(const CorrelationShape& s) {
  return s.batch >= 0 && s.channels >= 0 && s.height >= 0 && s.width >= 0 && s.patch >= 1 && s.patch % 2 == 1 &&
         s.dilation >= 1;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* __restrict__ x1, const T* __restrict__ x2, T* __restrict__ out, Strides4 s1,
                   Strides4 s2, Strides5 so, CorrelationShape shape) {
  const int64_t H = shape.height, W = shape.width, P = shape.patch, d = shape.dilation, half = P / 2;
  const int64_t n = shape.batch * P * P * H * W;
  for (int64_t idx = grid_thread_index(); idx < n; idx += grid_thread_count()) {
    const int64_t w = idx % W;
    int64_t r = idx / W;
    const int64_t h = r % H;
    r /= H;
    const int64_t j = r % P;
    r /= P;
    const int64_t i = r % P;
    const int64_t b = r / P;
    const int64_t y = h + (i - half) * d, x = w + (j - half) * d;
    float acc = 0.0f;
    if (y >= 0 && y < H && x >= 0 && x < W) {
      const T* p1 = x1 + at(s1, b, 0, h, w);
      const T* p2 = x2 + at(s2, b, 0, y, x);
      for (int64_t c = 0; c < shape.channels; ++c) acc += to_float(p1[c * s1.s1]) * to_float(p2[c * s2.s1]);
    }
    out[at(so, b, i, j, h, w)] = from_float<T>(acc);
  }
}

// grad_x1 (kTransposed false) or grad_x2 (kTransposed true) at every [b, c, h, w] of `dst`: sums over the
// displacements of grad_out times `other` (x2, resp. x1) as in correlation.h.
template <typename T, bool kTransposed>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* __restrict__ grad_out, const T* __restrict__ other, T* __restrict__ dst, Strides5 sg,
                    Strides4 so, Strides4 sd, CorrelationShape shape) {
  const int64_t C = shape.channels, H = shape.height, W = shape.width, P = shape.patch, d = shape.dilation;
  const int64_t half = P / 2;
  const int64_t n = shape.batch * C * H * W;
  for (int64_t idx = grid_thread_index(); idx < n; idx += grid_thread_count()) {
    const int64_t w = idx % W;
    int64_t r = idx / W;
    const int64_t h = r % H;
    r /= H;
    const int64_t c = r % C;
    const int64_t b = r / C;
    float acc = 0.0f;
    for (int64_t i = 0; i < P; ++i) {
      const int64_t dy = (i - half) * d;
      // grad_x1 reads other (x2) at (h + dy, w + dx) and grad_out at (h, w); grad_x2 reads both at the
      // source pixel (h - dy, w - dx).
      const int64_t y = kTransposed ? h - dy : h + dy;
      if (y < 0 || y >= H) continue;
      const int64_t gh = kTransposed ? y : h;
      for (int64_t j = 0; j < P; ++j) {
        const int64_t dx = (j - half) * d;
        const int64_t x = kTransposed ? w - dx : w + dx;
        if (x < 0 || x >= W) continue;
        const int64_t gw = kTransposed ? x : w;
        acc += to_float(grad_out[at(sg, b, i, j, gh, gw)]) * to_float(other[at(so, b, c, y, x)]);
      }
    }
    dst[at(sd, b, c, h, w)] = from_float<T>(acc);
  }
}

}  // namespace

cudaError_t correlation_forward(const CorrelationForwardParams& params, cudaStream_t stream) {
  const CorrelationShape& s = params.shape;
  if (!valid_shape(s)) return cudaErrorInvalidValue;
  const int64_t n = s.batch * s.patch * s.patch * s.height * s.width;
  if (n == 0) return cudaSuccess;
  return dispatch_dtype(params.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    forward_kernel<T><<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(
        static_cast<const T*>(params.x1), static_cast<const T*>(params.x2), static_cast<T*>(params.out),
        strides4(params.x1_stride), strides4(params.x2_stride), strides5(params.out_stride), s);
    return cudaGetLastError();
  });
}

cudaError_t correlation_backward(const CorrelationBackwardParams& params, cudaStream_t stream) {
  const CorrelationShape& s = params.shape;
  if (!valid_shape(s)) return cudaErrorInvalidValue;
  const int64_t n = s.batch * s.channels * s.height * s.width;
  if (n == 0) return cudaSuccess;
  return dispatch_dtype(params.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* grad_out = static_cast<const T*>(params.grad_out);
    if (params.grad_x1 != nullptr) {
      backward_kernel<T, false><<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(
          grad_out, static_cast<const T*>(params.x2), static_cast<T*>(params.grad_x1), strides5(params.grad_stride),
          strides4(params.x2_stride), strides4(params.grad_x1_stride), s);
      const cudaError_t err = cudaGetLastError();
      if (err != cudaSuccess) return err;
    }
    if (params.grad_x2 != nullptr) {
      backward_kernel<T, true><<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(
          grad_out, static_cast<const T*>(params.x1), static_cast<T*>(params.grad_x2), strides5(params.grad_stride),
          strides4(params.x1_stride), strides4(params.grad_x2_stride), s);
      return cudaGetLastError();
    }
    return cudaSuccess;
  });
}

}  // namespace facekernels::cuda
