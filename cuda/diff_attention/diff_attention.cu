// CUDA row epilogues of diff_attention (the GEMMs run in the binding through cuBLAS; see
// csrc/diff_attention/diff_attention_cuda.cpp). Everything here is float32.
//
// One warp per tile row: the lanes stride across the row's keys, and warp-shuffle (xor) reductions give
// every lane the row's maxima and sums (cuda/core/device_math.cuh's warp_sum / warp_max). A row is read a
// few times (max, sum, write) from L2, where the tile the preceding GEMM wrote still sits for the row
// sizes this op sees. No atomics: every sum's order depends only on the shape, so results are
// deterministic.
//
// Every logit s * scale is logit(s, scale), the product rounded to float on its own (__fmul_rn is never
// fused into a multiply-add): the row maxima are maxima of these rounded logits and every exponent's
// argument is logit - max or logit - lse (lse = max + log(sum) >= max), so it is <= 0, and exactly 0 at the
// maximum. An fmaf(s, scale, -max) there would use the exact product instead, up to half an ulp of the
// logit above the rounded maximum: for logits near 1e10 that is e^512 = inf, and the row becomes NaN.
#include "diff_attention.h"

#include "cuda/core/device_math.cuh"

#include <cuda_runtime.h>

#include <cstdint>

namespace facekernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarpsPerBlock = kThreads / kWarpSize;

__device__ __forceinline__ float logit(float s, float scale) { return __fmul_rn(s, scale); }

__device__ __forceinline__ int64_t visible_keys(const DiffAttentionTile& t, int64_t r) {
  return t.causal ? min64(t.cols, t.q0 + r + 1) : t.cols;
}

__global__ void __launch_bounds__(kThreads)
    forward_rows_kernel(float* __restrict__ s1, const float* __restrict__ s2, const float* __restrict__ lam,
                        float* __restrict__ lse1, float* __restrict__ lse2, DiffAttentionTile t) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t total = t.batches * t.rows;
  for (int64_t row = grid_warp_index(); row < total; row += grid_warp_count()) {
    const int64_t b = row / t.rows, r = row % t.rows;
    float* a = s1 + row * t.cols;
    const float* c = s2 + row * t.cols;
    const int64_t n = visible_keys(t, r);
    float m1 = -INFINITY, m2 = -INFINITY;
    for (int64_t j = lane; j < n; j += kWarpSize) {
      m1 = fmaxf(m1, logit(a[j], t.scale));
      m2 = fmaxf(m2, logit(c[j], t.scale));
    }
    m1 = warp_max(m1);
    m2 = warp_max(m2);
    float l1 = 0.f, l2 = 0.f;
    for (int64_t j = lane; j < n; j += kWarpSize) {
      l1 += expf(logit(a[j], t.scale) - m1);
      l2 += expf(logit(c[j], t.scale) - m2);
    }
    l1 = warp_sum(l1);
    l2 = warp_sum(l2);
    const float c1 = 1.f / l1, c2 = lam[t.first_bh + b] / l2;
    for (int64_t j = lane; j < t.cols; j += kWarpSize) {
      a[j] = j < n ? expf(logit(a[j], t.scale) - m1) * c1 - expf(logit(c[j], t.scale) - m2) * c2 : 0.f;
    }
    if (lane == 0) {
      const int64_t at = (t.first_bh + b) * t.queries + t.q0 + r;
      lse1[at] = m1 + logf(l1);
      lse2[at] = m2 + logf(l2);
    }
  }
}

__global__ void __launch_bounds__(kThreads)
    backward_rows_kernel(float* __restrict__ s1, float* __restrict__ s2, float* __restrict__ dpv,
                         const float* __restrict__ lam, const float* __restrict__ lse1,
                         const float* __restrict__ lse2, float* __restrict__ row_d2, DiffAttentionTile t) {
  const int lane = threadIdx.x % kWarpSize;
  const int64_t total = t.batches * t.rows;
  for (int64_t row = grid_warp_index(); row < total; row += grid_warp_count()) {
    const int64_t b = row / t.rows, r = row % t.rows;
    float* a = s1 + row * t.cols;
    float* c = s2 + row * t.cols;
    float* g = dpv + row * t.cols;
    const int64_t n = visible_keys(t, r);
    const int64_t at = (t.first_bh + b) * t.queries + t.q0 + r;
    const float e1 = lse1[at], e2 = lse2[at], lm = lam[t.first_bh + b];
    float d1 = 0.f, d2 = 0.f;
    for (int64_t j = lane; j < n; j += kWarpSize) {
      const float gj = g[j];
      d1 += expf(logit(a[j], t.scale) - e1) * gj;
      d2 += expf(logit(c[j], t.scale) - e2) * gj;
    }
    d1 = warp_sum(d1);
    d2 = warp_sum(d2);
    const float c1 = t.scale, c2 = -lm * t.scale;
    for (int64_t j = lane; j < t.cols; j += kWarpSize) {
      if (j < n) {
        const float p1 = expf(logit(a[j], t.scale) - e1), p2 = expf(logit(c[j], t.scale) - e2), gj = g[j];
        a[j] = c1 * p1 * (gj - d1);
        c[j] = c2 * p2 * (gj - d2);
        g[j] = p1 - lm * p2;
      } else {
        a[j] = 0.f;
        c[j] = 0.f;
        g[j] = 0.f;
      }
    }
    if (lane == 0) row_d2[at] = d2;
  }
}

__global__ void __launch_bounds__(kThreads)
    accumulate_kernel(float* __restrict__ dst, int64_t dst_stride, const float* __restrict__ src,
                      int64_t src_stride, int64_t batches, int64_t count) {
  const int64_t total = batches * count;
  for (int64_t i = grid_thread_index(); i < total; i += grid_thread_count()) {
    const int64_t b = i / count, j = i % count;
    dst[b * dst_stride + j] += src[b * src_stride + j];
  }
}

__global__ void __launch_bounds__(kThreads)
    lam_gradient_kernel(const float* __restrict__ row_d2, int64_t pairs, int64_t queries, float* __restrict__ dlam) {
  __shared__ float partial[kWarpsPerBlock];
  for (int64_t bh = blockIdx.x; bh < pairs; bh += gridDim.x) {
    float s = 0.f;
    for (int64_t i = threadIdx.x; i < queries; i += kThreads) s += row_d2[bh * queries + i];
    s = warp_sum(s);
    if (threadIdx.x % kWarpSize == 0) partial[threadIdx.x / kWarpSize] = s;
    __syncthreads();
    if (threadIdx.x == 0) {
      float total = 0.f;
      for (int w = 0; w < kWarpsPerBlock; ++w) total += partial[w];
      dlam[bh] = -total;
    }
    __syncthreads();
  }
}

}  // namespace

cudaError_t diff_attention_forward_rows(float* s1, const float* s2, const float* lam, float* lse1, float* lse2,
                                        const DiffAttentionTile& tile, cudaStream_t stream) {
  if (tile.batches * tile.rows * tile.cols == 0) return cudaSuccess;
  forward_rows_kernel<<<grid_blocks(tile.batches * tile.rows, kWarpsPerBlock), kThreads, 0, stream>>>(
      s1, s2, lam, lse1, lse2, tile);
  return cudaGetLastError();
}

cudaError_t diff_attention_backward_rows(float* s1, float* s2, float* dpv, const float* lam, const float* lse1,
                                         const float* lse2, float* row_d2, const DiffAttentionTile& tile,
                                         cudaStream_t stream) {
  if (tile.batches * tile.rows * tile.cols == 0) return cudaSuccess;
  backward_rows_kernel<<<grid_blocks(tile.batches * tile.rows, kWarpsPerBlock), kThreads, 0, stream>>>(
      s1, s2, dpv, lam, lse1, lse2, row_d2, tile);
  return cudaGetLastError();
}

cudaError_t diff_attention_accumulate(float* dst, int64_t dst_stride, const float* src, int64_t src_stride,
                                      int64_t batches, int64_t count, cudaStream_t stream) {
  if (batches * count == 0) return cudaSuccess;
  accumulate_kernel<<<grid_blocks(batches * count, kThreads), kThreads, 0, stream>>>(dst, dst_stride, src,
                                                                                     src_stride, batches, count);
  return cudaGetLastError();
}

cudaError_t diff_attention_lam_gradient(const float* row_d2, int64_t pairs, int64_t queries, float* dlam,
                                        cudaStream_t stream) {
  if (pairs == 0) return cudaSuccess;
  lam_gradient_kernel<<<grid_blocks(pairs, 1), kThreads, 0, stream>>>(row_d2, pairs, queries, dlam);
  return cudaGetLastError();
}

}  // namespace facekernels::cuda
