// The register-blocked float32 micro-GEMM shared by edge_conv_max's fused forward
// (edge_conv_fused_kernels.cpp) and cosine_topk's Gram kernel (cosine_topk_gram_kernels.cpp): a tile of up to
// kEdgeRows rows of a packed panel [n][kEdgeRows] against a packed block [n][NR], held in registers and
// handed to the caller's epilogue. Like core/cpu_simd.h everything here has internal linkage (an unnamed
// namespace): it is compiled once per SIMD level, into each kernel source that includes it.
#pragma once

#include <cstdint>

#include "core/cpu_simd.h"

namespace facekernels::cpu {
namespace {

constexpr int64_t kEdgeRows = 6;
template <typename T>
constexpr int64_t kEdgeCols = 2 * kLanes<T>;

// The R x NR tile a [n][kEdgeRows] x b [n][NR] (K = n; R <= kEdgeRows, the first R rows of the panel) in
// registers, handed to epi(offset, v) for each of its vectors (offset = row * NR + lane block).
template <int R, typename Epilogue>
inline void edge_tile(const float* __restrict a, const float* __restrict b, int64_t n, Epilogue&& epi) {
  using V = Vec<float>;
  constexpr int64_t L = kLanes<float>, NR = kEdgeCols<float>;
  V lo[R], hi[R];
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) lo[r] = hi[r] = V{};
  for (int64_t p = 0; p < n; ++p) {
    const V b0 = load(b + p * NR), b1 = load(b + p * NR + L);
    const float* ap = a + p * kEdgeRows;
#pragma GCC unroll 6
    for (int r = 0; r < R; ++r) {
      const V v = broadcast(ap[r]);
      lo[r] += v * b0;
      hi[r] += v * b1;
    }
  }
#pragma GCC unroll 6
  for (int r = 0; r < R; ++r) {
    epi(r * NR, lo[r]);
    epi(r * NR + L, hi[r]);
  }
}

// Calls f(EdgeRows<R>{}) with R = rows (1 .. kEdgeRows) as a constant (decltype(arg)::value).
template <int R>
struct EdgeRows {
  static constexpr int value = R;
};

template <typename F>
inline void edge_rows_dispatch(int64_t rows, F&& f) {
  switch (rows) {
    case 1: f(EdgeRows<1>{}); break;
    case 2: f(EdgeRows<2>{}); break;
    case 3: f(EdgeRows<3>{}); break;
    case 4: f(EdgeRows<4>{}); break;
    case 5: f(EdgeRows<5>{}); break;
    default: f(EdgeRows<6>{}); break;
  }
}

}  // namespace
}  // namespace facekernels::cpu
