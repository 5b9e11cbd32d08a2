// cosine_topk of float32 x against itself: the Gram matrix by edge_tile (edge_tile.h), compiled once per
// SIMD level (FK_CPU_CAPABILITY). The driver (cosine_topk_cpu.cpp) runs it instead of a BLAS GEMM when a
// task holds every row and column of a batch element.
#include <cstdint>

#include "core/cpu_simd.h"
#include "edge_conv/cosine_topk_kernels.h"
#include "edge_conv/edge_tile.h"

namespace facekernels::cpu {
namespace {

// ---- cosine_topk: the float32 Gram matrix of x against itself -----------------------------------
//
// sim[n, m] = <x[:, n], x[:, m]> for x [C, N] contiguous, by edge_tile: panels of kEdgeRows positions
// (K = channels) against blocks of NR positions. Only the tiles that reach the diagonal or beyond are
// computed; each stores its entries with m >= n and mirrors those with m > n, so sim is exactly
// symmetric and about half the multiply-adds of a full GEMM are spent.

int64_t gram_self_scratch(int64_t channels, int64_t n) {
  const int64_t panels = (n + kEdgeRows - 1) / kEdgeRows, blocks = (n + kEdgeCols<float> - 1) / kEdgeCols<float>;
  return round_up(panels * channels * kEdgeRows, 16) + blocks * channels * kEdgeCols<float> +
         kEdgeRows * kEdgeCols<float> + 64;
}

void gram_self(const float* x, int64_t channels, int64_t n, float* sim, float* scratch) {
  using V = Vec<float>;
  constexpr int64_t MR = kEdgeRows, NR = kEdgeCols<float>;
  const int64_t C = channels, panels = (n + MR - 1) / MR, blocks = (n + NR - 1) / NR;
  float* a = scratch;                                  // [panels][C][MR]: positions as rows
  float* b = a + round_up(panels * C * MR, 16);        // [blocks][C][NR]: positions as columns
  float* tile = b + blocks * C * NR;                   // [MR][NR]
  // a[(pi * C + c) * MR + r] = x[c, pi * MR + r], read row by row of x (zero past n).
  for (int64_t i = n; i < panels * MR; ++i) {
    for (int64_t c = 0; c < C; ++c) a[((i / MR) * C + c) * MR + i % MR] = 0.0f;
  }
  for (int64_t c = 0; c < C; ++c) {
    const float* row = x + c * n;
    for (int64_t p = 0; p < n; ++p) a[((p / MR) * C + c) * MR + p % MR] = row[p];
  }
  for (int64_t jb = 0; jb < blocks; ++jb) {
    const int64_t m0 = jb * NR, cols = min64(NR, n - m0);
    float* bp = b + jb * C * NR;
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t q = 0; q < NR; ++q) bp[c * NR + q] = q < cols ? x[c * n + m0 + q] : 0.0f;
    }
  }
  for (int64_t pi = 0; pi < panels; ++pi) {
    const int64_t r0 = pi * MR, rows = min64(MR, n - r0);
    for (int64_t jb = r0 / NR; jb < blocks; ++jb) {  // the blocks with a column m >= r0
      const int64_t m0 = jb * NR, cols = min64(NR, n - m0);
      edge_rows_dispatch(rows, [&](auto rows_c) {
        constexpr int R = decltype(rows_c)::value;
        edge_tile<R>(a + pi * C * MR, b + jb * C * NR, C, [&](int64_t at, V v) { store(tile + at, v); });
      });
      if (m0 >= r0 + rows) {  // wholly right of the diagonal: rows as they are, columns mirrored
        for (int64_t r = 0; r < rows; ++r) {
          for (int64_t q = 0; q < cols; ++q) sim[(r0 + r) * n + m0 + q] = tile[r * NR + q];
        }
        for (int64_t q = 0; q < cols; ++q) {
          for (int64_t r = 0; r < rows; ++r) sim[(m0 + q) * n + r0 + r] = tile[r * NR + q];
        }
        continue;
      }
      for (int64_t r = 0; r < rows; ++r) {
        for (int64_t q = 0; q < cols; ++q) {
          const int64_t row = r0 + r, col = m0 + q;
          if (col < row) continue;
          sim[row * n + col] = tile[r * NR + q];
          sim[col * n + row] = tile[r * NR + q];
        }
      }
    }
  }
}

// In the unnamed namespace: each SIMD level has its own (an inline function of external linkage would
// be one definition for every level).
// float32 only: no double table (the driver runs the Gram kernel for float32 only).
template <typename T>
constexpr CosineGramKernels<T> make_table() {
  return {.gram_self_scratch = &gram_self_scratch, .gram_self = &gram_self};
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(CosineGramKernels, cosine_gram_kernels, make_table, float)

}  // namespace facekernels::cpu
