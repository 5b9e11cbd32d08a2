// Helpers shared by the CUDA kernel sources: 64-bit index arithmetic, grid-stride loops and grid sizes,
// warp reductions, the float32 <-> storage-type conversions (float32 arithmetic for every storage dtype)
// and the launchers' dtype dispatch.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/core/dtype.h"

namespace facekernels::cuda {

__host__ __device__ __forceinline__ int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
__host__ __device__ __forceinline__ int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
__host__ __device__ __forceinline__ int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
__host__ __device__ __forceinline__ int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

constexpr int kWarpSize = 32;

// ---- grids ---------------------------------------------------------------------------------------------
// Grids are capped at kMaxGridBlocks blocks; kernels cover the rest with grid-stride loops over 64-bit
// indices (sizes can exceed 2^31 elements).
constexpr int64_t kMaxGridBlocks = int64_t{1} << 20;

// Blocks for `work` items at `per_block` items a block: at least 1, at most kMaxGridBlocks.
inline unsigned grid_blocks(int64_t work, int64_t per_block) {
  return static_cast<unsigned>(min64(kMaxGridBlocks, max64(1, ceil_div(work, per_block))));
}

// The first index and the step of a grid-stride loop over threads:
//   for (int64_t i = grid_thread_index(); i < n; i += grid_thread_count()) ...
__device__ __forceinline__ int64_t grid_thread_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ int64_t grid_thread_count() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

// The same a warp at a time (blockDim.x a multiple of kWarpSize):
//   for (int64_t row = grid_warp_index(); row < rows; row += grid_warp_count()) ...
__device__ __forceinline__ int64_t grid_warp_index() { return grid_thread_index() / kWarpSize; }
__device__ __forceinline__ int64_t grid_warp_count() { return grid_thread_count() / kWarpSize; }

// ---- warps ---------------------------------------------------------------------------------------------
constexpr unsigned kFullWarpMask = 0xffffffffu;

// Butterfly reductions over a whole warp (every lane must take part): every lane gets the result, and
// the order of the additions is fixed, so the result does not depend on scheduling.
template <typename T>
__device__ __forceinline__ T warp_sum(T v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v += __shfl_xor_sync(kFullWarpMask, v, offset);
  return v;
}
// The maximum by fmaxf / fmax: a NaN lane loses to any number (as in CUDA's fmax).
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = fmaxf(v, __shfl_xor_sync(kFullWarpMask, v, offset));
  return v;
}
__device__ __forceinline__ double warp_max(double v) {
#pragma unroll
  for (int offset = kWarpSize / 2; offset > 0; offset /= 2) v = fmax(v, __shfl_xor_sync(kFullWarpMask, v, offset));
  return v;
}

__device__ __forceinline__ float to_float(float v) { return v; }
__device__ __forceinline__ float to_float(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_float(__nv_bfloat16 v) { return __bfloat162float(v); }

template <typename T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) {
  return v;
}
template <>
__device__ __forceinline__ __half from_float<__half>(float v) {
  return __float2half_rn(v);
}
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) {
  return __float2bfloat16_rn(v);
}

// Calls f with a null pointer of the storage type of `dtype`.
template <typename F>
cudaError_t dispatch_dtype(DType dtype, F&& f) {
  switch (dtype) {
    case DType::Float32: return f(static_cast<float*>(nullptr));
    case DType::Float16: return f(static_cast<__half*>(nullptr));
    case DType::BFloat16: return f(static_cast<__nv_bfloat16*>(nullptr));
  }
  return cudaErrorInvalidValue;
}

}  // namespace facekernels::cuda
