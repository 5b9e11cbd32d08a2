// The fused float32 forward of edge_conv_max, compiled once per SIMD level (FK_CPU_CAPABILITY); the
// driver (edge_conv_cpu.cpp) deals its tasks to the threads.
//
// Our own register-blocked GEMM, so that the folded weights are built where the GEMM reads them and the
// pre-activations never leave registers. Per batch element the channels are packed once into panels of
// kEdgeRows rows ([panel][p][row], zero padded). Then per block of NR output columns m and neighbour j:
// the packed weight panel W_j[:, block] ([N, NR], in L1) is the block of (w_self - w_edge)^T plus the
// rows of w_edge^T scatter-added by idx[:, j]; every channel panel runs a kEdgeRows x NR micro-kernel
// against it, K = N, and merges its tile into the running max (strictly greater: the first maximal j
// wins) with the winner. After the last neighbour the block gets the bias and the ReLU.
#include <cstdint>

#include "core/cpu_simd.h"
#include "edge_conv/edge_conv_kernels.h"
#include "edge_conv/edge_tile.h"

namespace facekernels::cpu {
namespace {

int64_t edge_fused_block() { return kEdgeCols<float>; }

int64_t edge_fused_scratch(int64_t channels, int64_t n) {
  const int64_t panels = (channels + kEdgeRows - 1) / kEdgeRows;
  return round_up(panels * n * kEdgeRows, 16) + round_up(n * kEdgeCols<float>, 16) +
         2 * panels * kEdgeRows * kEdgeCols<float> + 64;
}

void edge_fused_pack_weights(const float* ws, int64_t s0, int64_t s1, const float* we, int64_t e0, int64_t e1,
                             int64_t m, int64_t n, int64_t mb0, int64_t mb1, float* self_minus_edge_p,
                             float* edge_p) {
  constexpr int64_t NR = kEdgeCols<float>;
  for (int64_t mb = mb0; mb < mb1; ++mb) {
    float* sp = self_minus_edge_p + mb * n * NR;
    float* ep = edge_p + mb * n * NR;
    for (int64_t q = 0; q < NR; ++q) {
      const int64_t r = mb * NR + q;
      if (r >= m) {
        for (int64_t p = 0; p < n; ++p) sp[p * NR + q] = ep[p * NR + q] = 0.0f;
        continue;
      }
      for (int64_t p = 0; p < n; ++p) {
        const float e = we[r * e0 + p * e1];
        sp[p * NR + q] = ws[r * s0 + p * s1] - e;
        ep[p * NR + q] = e;
      }
    }
  }
}

// The tile (its first R rows) merged into the running max best / arg ([kEdgeRows][NR]) of neighbour j.
template <bool First, int R>
inline void edge_micro(const float* __restrict a, const float* __restrict b, int64_t n, float* __restrict best,
                       int32_t* __restrict arg, int32_t j) {
  using V = Vec<float>;
  using I = Vec<int32_t>;
  const I jv = broadcast<int32_t>(j);
  edge_tile<R>(a, b, n, [&](int64_t at, V z) {
    if constexpr (First) {
      store(best + at, z);
      store(arg + at, jv);
    } else {
      const V old = load(best + at);
      const I greater = z > old;
      store(best + at, greater ? z : old);
      store(arg + at, greater ? jv : load(arg + at));
    }
  });
}

// panel[(pi * n + p) * kEdgeRows + r] = src[(pi * kEdgeRows + r) * s_row + p * s_col] (zero past `rows`):
// rows of a strided matrix packed into panels of kEdgeRows for edge_tile's `a`.
inline void edge_pack_rows(const float* src, int64_t rows, int64_t n, int64_t s_row, int64_t s_col, float* panel) {
  constexpr int64_t MR = kEdgeRows;
  const int64_t panels = (rows + MR - 1) / MR;
  for (int64_t pi = 0; pi < panels; ++pi) {
    float* dst = panel + pi * n * MR;
    for (int64_t r = 0; r < MR; ++r) {
      const int64_t c = pi * MR + r;
      if (c >= rows) {
        for (int64_t p = 0; p < n; ++p) dst[p * MR + r] = 0.0f;
        continue;
      }
      const float* row = src + c * s_row;
      for (int64_t p = 0; p < n; ++p) dst[p * MR + r] = row[p * s_col];
    }
  }
}

void edge_fused_forward(const EdgeFused& f, const float* xb, int64_t sc, int64_t sn, const int64_t* idx_b,
                        const uint8_t* skip, int64_t mb0, int64_t mb1, float* out_b, int32_t* win_b,
                        float* scratch) {
  constexpr int64_t NR = kEdgeCols<float>, MR = kEdgeRows;
  const int64_t C = f.channels, N = f.n, M = f.m, k = f.k;
  const int64_t panels = (C + MR - 1) / MR;
  float* xp = scratch;
  float* bp = xp + round_up(panels * N * MR, 16);
  float* best = bp + round_up(N * NR, 16);
  int32_t* arg = reinterpret_cast<int32_t*>(best + panels * MR * NR);
  edge_pack_rows(xb, C, N, sc, sn, xp);
  for (int64_t mb = mb0; mb < mb1; ++mb) {
    const float* sme = f.self_minus_edge_p + mb * N * NR;
    const float* edge = f.edge_p + mb * N * NR;
    bool first = true;
    for (int64_t j = 0; j < k; ++j) {
      if (skip[j]) continue;
      __builtin_memcpy(bp, sme, sizeof(float) * N * NR);
      for (int64_t i = 0; i < N; ++i) {
        float* row = bp + idx_b[i * k + j] * NR;
        const float* e = edge + i * NR;
        for (int64_t q = 0; q < NR; q += kLanes<float>) store(row + q, load(row + q) + load(e + q));
      }
      const int32_t jj = static_cast<int32_t>(j);
      for (int64_t pi = 0; pi < panels; ++pi) {
        float* bt = best + pi * MR * NR;
        int32_t* at = arg + pi * MR * NR;
        const float* ap = xp + pi * N * MR;
        // The last panel's rows past C are not computed (C = 128: 21 panels of 6 and one of 2).
        edge_rows_dispatch(min64(MR, C - pi * MR), [&](auto rows_c) {
          constexpr int R = decltype(rows_c)::value;
          if (first) edge_micro<true, R>(ap, bp, N, bt, at, jj);
          else edge_micro<false, R>(ap, bp, N, bt, at, jj);
        });
      }
      first = false;
    }
    // Bias and ReLU (NaN propagated); winner -1 where the output is not positive.
    const int64_t m0 = mb * NR, cols = min64(NR, M - m0);
    for (int64_t c = 0; c < C; ++c) {
      const float* bt = best + c * NR;
      const int32_t* at = arg + c * NR;
      float* o = out_b + c * M + m0;
      int32_t* w = win_b + c * M + m0;
      for (int64_t q = 0; q < cols; ++q) {
        const float v = bt[q] + (f.bias != nullptr ? f.bias[m0 + q] : 0.0f);
        const bool active = v > 0.0f;
        w[q] = active ? at[q] : -1;
        o[q] = (active || v != v) ? v : 0.0f;
      }
    }
  }
}

// In the unnamed namespace: each SIMD level has its own (an inline function of external linkage would
// be one definition for every level).
// float32 only: no double table.
template <typename T>
constexpr EdgeFusedKernels<T> make_table() {
  return {
      .block = &edge_fused_block,
      .scratch = &edge_fused_scratch,
      .pack_weights = &edge_fused_pack_weights,
      .forward = &edge_fused_forward,
  };
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(EdgeFusedKernels, edge_fused_kernels, make_table, float)

}  // namespace facekernels::cpu
