// The routed backward of edge_conv_max (k > 1), compiled once per SIMD level (FK_CPU_CAPABILITY). The
// driver (edge_conv_cpu.cpp) runs G^T X through torch's BLAS and these for grad_x and w_edge's gradient
// through the gather.
#include <cstdint>

#include "core/cpu_simd.h"
#include "edge_conv/edge_conv_kernels.h"

namespace facekernels::cpu {
namespace {

// ---- the routed gradient -------------------------------------------------------------

// out[r] = g[r] where winner[r] >= 0, else 0 (rows x m, contiguous); bias_grad (nullable) += column sums.
template <typename T>
void edge_mask_gradient(const T* grad, const int32_t* winner, int64_t rows, int64_t m, T* out, double* bias_grad) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* g = grad + r * m;
    const int32_t* w = winner + r * m;
    T* __restrict o = out + r * m;
    for (int64_t i = 0; i < m; ++i) o[i] = w[i] >= 0 ? g[i] : T(0);
    if (bias_grad != nullptr) {
      for (int64_t i = 0; i < m; ++i) bias_grad[i] += static_cast<double>(o[i]);
    }
  }
}

// ---- the routed products ----------------------------------------------------------------------
//
// The max sends each output's gradient to one neighbour, its winner w(c, m) (-1 where the output was
// not active): with G the gradient where active (zero elsewhere), A = w_self - w_edge, E = w_edge and the
// folded weights W_j[m, p] = A[m, p] + sum_{n : idx[n, j] = p} E[m, n] (the forward's),
//   dX[c, p]  = sum_m G[c, m] W_{w(c, m)}[m, p]
//   dE'[m, n] = sum_c G[c, m] X[c, idx[n, w(c, m)]]      (E's gradient through the gathered term)
// and dA = G^T X (torch's BLAS, in the driver). Both sums have the shape of one forward-sized GEMM, not
// k of them: each (c, m) is visited once. They run one output row (c for dX, m for dE') of NR columns
// at a time in registers; step s (m for dX, c for dE') reads its row of the right operand from the
// panel of the output row's own winner: the panels of all k neighbours for a chunk of steps sit side by
// side in L1 ([k][steps][NR]), and a precomputed offset (the winner's panel, the step's row) is the
// address of the loads, so no [k, ...] product is formed (for k up to 8 at AVX2 float32 the panels fit the
// L1 budget; beyond, the chunk stays at 8 steps and they spill to L2). The panels are built transposed, as
// rows along the steps (a copy of the weights' rows plus the scattered rows of w_edge^T for dX; gathered
// rows of X^T for dE'), then turned by register transposes (8 x 8 float, 4 x 4 double; element by element
// below AVX2).

// In the unnamed namespace: each SIMD level has its own (an inline function of external linkage would
// be one definition for every level).
template <typename T>
constexpr int64_t kRoutedCols = 8 * kLanes<T>;
// Bytes of the k panels of one chunk of steps: what stays in L1 while every output row runs over it.
constexpr int64_t kRoutedPanelBytes = 16 * 1024;

template <typename T>
int64_t edge_routed_cols() {
  return kRoutedCols<T>;
}

// Steps per chunk: the k panels within kRoutedPanelBytes, a multiple of 8 (the transposes' tile; not
// necessarily of the lanes), at least 8, so from k = 9 (AVX2 float32) the panels outgrow the budget and
// spill to L2; no more than `total` rounded up to 8.
template <typename T>
int64_t routed_chunk(int64_t k, int64_t total) {
  const int64_t fit = kRoutedPanelBytes / (k * kRoutedCols<T> * static_cast<int64_t>(sizeof(T)));
  return min64(max64(8, fit / 8 * 8), round_up(max64(total, 1), 8));
}

// out[0 .. NR) (+)= sum_{s < steps} coef[s] * panel[off[s] + 0 .. NR): one row of output in registers;
// the offsets (routed_offsets) pick each step's row of the right operand, the output row's winner's.
// One row of NR = 8 vectors (rather than a few rows of fewer vectors) measured fastest: every step
// costs two scalar loads (offset, coefficient) besides its vector loads, whatever the shape.
template <typename T>
inline void routed_row(const T* __restrict panel, const int32_t* off, const T* coef, int64_t steps,
                       T* __restrict out, bool accumulate) {
  using V = Vec<T>;
  constexpr int64_t L = kLanes<T>;
  V a0 = {}, a1 = {}, a2 = {}, a3 = {}, a4 = {}, a5 = {}, a6 = {}, a7 = {};
  if (accumulate) {
    a0 = load(out), a1 = load(out + L), a2 = load(out + 2 * L), a3 = load(out + 3 * L);
    a4 = load(out + 4 * L), a5 = load(out + 5 * L), a6 = load(out + 6 * L), a7 = load(out + 7 * L);
  }
  for (int64_t s = 0; s < steps; ++s) {
    const T* p = panel + off[s];
    const V g = broadcast(coef[s]);
    a0 += g * load(p);
    a1 += g * load(p + L);
    a2 += g * load(p + 2 * L);
    a3 += g * load(p + 3 * L);
    a4 += g * load(p + 4 * L);
    a5 += g * load(p + 5 * L);
    a6 += g * load(p + 6 * L);
    a7 += g * load(p + 7 * L);
  }
  store(out, a0), store(out + L, a1), store(out + 2 * L, a2), store(out + 3 * L, a3);
  store(out + 4 * L, a4), store(out + 5 * L, a5), store(out + 6 * L, a6), store(out + 7 * L, a7);
}

// Rows r < rows: out + r * NR from off / coef + r * ld.
template <typename T>
void routed_rows(const T* panel, const int32_t* off, const T* coef, int64_t ld, int64_t rows, int64_t steps, T* out,
                 bool accumulate) {
  for (int64_t r = 0; r < rows; ++r) {
    routed_row(panel, off + r * ld, coef + r * ld, steps, out + r * kRoutedCols<T>, accumulate);
  }
}

// off[i * steps + s] = max(win[i * steps + s], 0) * chunk * NR + (s % chunk) * NR, i < rows: the element
// offset of step s's row in the panels [k][chunk][NR] of its chunk (G is zero where win is -1).
template <typename T>
void routed_offsets(const int32_t* win, int64_t rows, int64_t steps, int64_t chunk, int32_t* off) {
  constexpr int32_t NR = static_cast<int32_t>(kRoutedCols<T>);
  const int32_t jstride = static_cast<int32_t>(chunk) * NR;
  for (int64_t i = 0; i < rows; ++i) {
    const int32_t* w = win + i * steps;
    int32_t* o = off + i * steps;
    for (int64_t s0 = 0; s0 < steps; s0 += chunk) {
      const int64_t n = min64(chunk, steps - s0);
      for (int64_t s = 0; s < n; ++s) {
        const int32_t v = w[s0 + s];
        o[s0 + s] = (v > 0 ? v : 0) * jstride + static_cast<int32_t>(s) * NR;
      }
    }
  }
}

// dst[c * ldd + r] = src[r * lds + c] for r < rows, c < cols (4- or 8-byte elements): 8 x 8 (4 x 4 for
// 8 bytes) register transposes with AVX2 / AVX-512 over the whole tiles, element by element for the rest
// and at the default level.
template <typename T>
void transpose(const T* __restrict src, int64_t lds, int64_t rows, int64_t cols, T* __restrict dst, int64_t ldd) {
  int64_t rows_t = 0, cols_t = 0;  // the part done by whole tiles
#if defined(FK_CPU_CAPABILITY_AVX2) || defined(FK_CPU_CAPABILITY_AVX512)
  if constexpr (sizeof(T) == 4) {
    rows_t = rows / 8 * 8;
    cols_t = cols / 8 * 8;
    for (int64_t r0 = 0; r0 < rows_t; r0 += 8) {
      for (int64_t c0 = 0; c0 < cols_t; c0 += 8) {
        const float* s = reinterpret_cast<const float*>(src + r0 * lds + c0);
        __m256 v[8], u[8];
        for (int i = 0; i < 8; ++i) v[i] = _mm256_loadu_ps(s + i * lds);
        for (int i = 0; i < 8; i += 2) {
          u[i] = _mm256_unpacklo_ps(v[i], v[i + 1]);
          u[i + 1] = _mm256_unpackhi_ps(v[i], v[i + 1]);
        }
        for (int i = 0; i < 8; i += 4) {
          v[i] = _mm256_shuffle_ps(u[i], u[i + 2], 0x44);
          v[i + 1] = _mm256_shuffle_ps(u[i], u[i + 2], 0xEE);
          v[i + 2] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0x44);
          v[i + 3] = _mm256_shuffle_ps(u[i + 1], u[i + 3], 0xEE);
        }
        float* d = reinterpret_cast<float*>(dst + c0 * ldd + r0);
        for (int i = 0; i < 4; ++i) {
          _mm256_storeu_ps(d + i * ldd, _mm256_permute2f128_ps(v[i], v[i + 4], 0x20));
          _mm256_storeu_ps(d + (i + 4) * ldd, _mm256_permute2f128_ps(v[i], v[i + 4], 0x31));
        }
      }
    }
  } else {
    rows_t = rows / 4 * 4;
    cols_t = cols / 4 * 4;
    for (int64_t r0 = 0; r0 < rows_t; r0 += 4) {
      for (int64_t c0 = 0; c0 < cols_t; c0 += 4) {
        const double* s = reinterpret_cast<const double*>(src + r0 * lds + c0);
        const __m256d a = _mm256_loadu_pd(s), b = _mm256_loadu_pd(s + lds);
        const __m256d c = _mm256_loadu_pd(s + 2 * lds), e = _mm256_loadu_pd(s + 3 * lds);
        const __m256d ab_lo = _mm256_unpacklo_pd(a, b), ab_hi = _mm256_unpackhi_pd(a, b);
        const __m256d ce_lo = _mm256_unpacklo_pd(c, e), ce_hi = _mm256_unpackhi_pd(c, e);
        double* d = reinterpret_cast<double*>(dst + c0 * ldd + r0);
        _mm256_storeu_pd(d, _mm256_permute2f128_pd(ab_lo, ce_lo, 0x20));
        _mm256_storeu_pd(d + ldd, _mm256_permute2f128_pd(ab_hi, ce_hi, 0x20));
        _mm256_storeu_pd(d + 2 * ldd, _mm256_permute2f128_pd(ab_lo, ce_lo, 0x31));
        _mm256_storeu_pd(d + 3 * ldd, _mm256_permute2f128_pd(ab_hi, ce_hi, 0x31));
      }
    }
  }
#endif
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t c = r < rows_t ? cols_t : 0; c < cols; ++c) dst[c * ldd + r] = src[r * lds + c];
  }
}

// The weights for grad_x: per chunk of mc steps (output columns m), (w_self - w_edge)^T then w_edge^T as
// [npad][mc] (zero past N and M): packed [chunks][2][npad][mc].
template <typename T>
int64_t edge_routed_packed_size(int64_t n, int64_t m, int64_t k) {
  const int64_t mc = routed_chunk<T>(k, m);
  return ((m + mc - 1) / mc) * 2 * round_up(n, kRoutedCols<T>) * mc;
}

// Rows p0 .. p1 - 1 (of npad) of every chunk of `packed`, from w_self / w_edge [M, N] with strides.
template <typename T>
void edge_routed_pack_weights(const T* ws, int64_t s0, int64_t s1, const T* we, int64_t e0, int64_t e1, int64_t m,
                              int64_t n, int64_t k, int64_t p0, int64_t p1, T* packed) {
  const int64_t mc = routed_chunk<T>(k, m), npad = round_up(n, kRoutedCols<T>), chunks = (m + mc - 1) / mc;
  for (int64_t ch = 0; ch < chunks; ++ch) {
    T* a = packed + ch * 2 * npad * mc;
    T* e = a + npad * mc;
    for (int64_t p = p0; p < p1; ++p) {
      for (int64_t s = 0; s < mc; ++s) {
        const int64_t r = ch * mc + s;
        const bool in = p < n && r < m;
        const T v = in ? we[r * e0 + p * e1] : T(0);
        a[p * mc + s] = in ? ws[r * s0 + p * s1] - v : T(0);
        e[p * mc + s] = v;
      }
    }
  }
}

template <typename T>
int64_t edge_routed_scratch(int64_t channels, int64_t n, int64_t m, int64_t k) {
  constexpr int64_t NR = kRoutedCols<T>;
  const int64_t blocks = (n + NR - 1) / NR;
  // grad_x: the k panels, a panel transposed [NR][mc], the output blocks [blocks][C][NR], the lists (n, q)
  // by (j, block) as int32 and their ends.
  const int64_t mc = routed_chunk<T>(k, m);
  const int64_t ints_x = channels * m + 2 * k * n + k * blocks + 1;
  const int64_t grad_x = (k + 1) * mc * NR + blocks * channels * NR + (ints_x * 4 + sizeof(T) - 1) / sizeof(T);
  // grad_edge: the k panels, a panel transposed [NR][cc], x^T [N][cpad], G^T and the winners transposed
  // ([M][C]), the block's neighbours [k][NR].
  const int64_t cc = routed_chunk<T>(k, channels), cpad = round_up(channels, cc);
  const int64_t ints_e = m * channels + k * NR;
  const int64_t grad_edge =
      (k + 1) * cc * NR + n * cpad + m * channels + (ints_e * 4 + sizeof(T) - 1) / sizeof(T);
  return max64(grad_x, grad_edge) + 64;
}

// dx_b [C, N] columns of the blocks pb0 .. pb1 - 1 (NR columns each) = sum_m G[c, m] W_{w(c, m)}[m, p];
// g_b (G) and win_b [C, M], idx_b [N, k] contiguous.
template <typename T>
void edge_routed_grad_x(const EdgeRouted<T>& rt, const T* g_b, const int32_t* win_b, const int64_t* idx_b,
                        int64_t pb0, int64_t pb1, T* dx_b, T* scratch) {
  constexpr int64_t NR = kRoutedCols<T>;
  const int64_t C = rt.channels, N = rt.n, M = rt.m, k = rt.k, blocks = (N + NR - 1) / NR;
  const int64_t mc = routed_chunk<T>(k, M), jstride = mc * NR, npad = blocks * NR;
  T* panel = scratch;                  // [k][mc][NR]
  T* rows_t = panel + k * jstride;     // [NR][mc]: a panel transposed
  T* ob = rows_t + NR * mc;            // [pb1 - pb0][C][NR]
  int32_t* off = reinterpret_cast<int32_t*>(ob + (pb1 - pb0) * C * NR);  // [C][M]
  int32_t* end = off + C * M;                                             // [k * blocks + 1]
  int32_t* list_n = end + k * blocks + 1;                                 // [k * N]
  int32_t* list_q = list_n + k * N;                                       // [k * N]
  routed_offsets<T>(win_b, C, M, mc, off);
  // The neighbours by (j, target block): a counting sort of idx[:, j] / NR, n ascending. List i spans
  // [i ? end[i - 1] : 0, end[i]).
  for (int64_t i = 0; i <= k * blocks; ++i) end[i] = 0;
  for (int64_t n = 0; n < N; ++n) {
    for (int64_t j = 0; j < k; ++j) ++end[j * blocks + idx_b[n * k + j] / NR + 1];
  }
  for (int64_t i = 0; i < k * blocks; ++i) end[i + 1] += end[i];
  for (int64_t j = 0; j < k; ++j) {
    for (int64_t n = 0; n < N; ++n) {
      const int64_t p = idx_b[n * k + j], at = end[j * blocks + p / NR]++;
      list_n[at] = static_cast<int32_t>(n);
      list_q[at] = static_cast<int32_t>(p % NR);
    }
  }
  for (int64_t m0 = 0; m0 < M; m0 += mc) {
    const int64_t steps = min64(mc, M - m0);
    const T* a_t = rt.packed + (m0 / mc) * 2 * npad * mc;  // [npad][mc]
    const T* e_t = a_t + npad * mc;
    for (int64_t pb = pb0; pb < pb1; ++pb) {
      for (int64_t j = 0; j < k; ++j) {
        // Panel j transposed, W_j[m0 + s, pb * NR + q] as rows q: A^T's rows plus the rows of w_edge^T
        // whose neighbour j lands on the column.
        __builtin_memcpy(rows_t, a_t + pb * NR * mc, sizeof(T) * NR * mc);
        const int64_t list = j * blocks + pb;
        for (int64_t e = list == 0 ? 0 : end[list - 1]; e < end[list]; ++e) {
          const T* src = e_t + list_n[e] * mc;
          T* dst = rows_t + list_q[e] * mc;
          for (int64_t s = 0; s < mc; ++s) dst[s] += src[s];  // mc: a multiple of 8, not of the lanes
        }
        transpose(rows_t, mc, NR, mc, panel + j * jstride, NR);
      }
      routed_rows(panel, off + m0, g_b + m0, M, C, steps, ob + (pb - pb0) * C * NR, m0 > 0);
    }
  }
  for (int64_t pb = pb0; pb < pb1; ++pb) {
    const int64_t p0 = pb * NR, cols = min64(NR, N - p0);
    for (int64_t c = 0; c < C; ++c) {
      const T* src = ob + ((pb - pb0) * C + c) * NR;
      T* dst = dx_b + c * N + p0;
      for (int64_t q = 0; q < cols; ++q) dst[q] = src[q];
    }
  }
}

// acc [blocks][M][NR] (blocks of NR columns n) += E's gradient through the gather from one batch element,
// the blocks nb0 .. nb1 - 1: sum_c G[c, m] X[c, idx[n, w(c, m)]]; x_b, g_b, win_b, idx_b contiguous.
template <typename T>
void edge_routed_grad_edge(const EdgeRouted<T>& rt, const T* x_b, const T* g_b, const int32_t* win_b,
                           const int64_t* idx_b, int64_t nb0, int64_t nb1, T* acc, T* scratch) {
  constexpr int64_t NR = kRoutedCols<T>;
  const int64_t C = rt.channels, N = rt.n, M = rt.m, k = rt.k;
  const int64_t cc = routed_chunk<T>(k, C), jstride = cc * NR, cpad = round_up(C, cc);
  T* panel = scratch;                                        // [k][cc][NR]
  T* rows_t = panel + k * jstride;                           // [NR][cc]: a panel transposed
  T* x_t = rows_t + NR * cc;                                 // [N][cpad]
  T* g_t = x_t + N * cpad;                                   // [M][C]
  int32_t* win_t = reinterpret_cast<int32_t*>(g_t + M * C);  // [M][C]
  int32_t* targets = win_t + M * C;                          // [k][NR]: idx[n0 + q, j]
  // x, G and the winners with the channels contiguous.
  transpose(x_b, N, C, N, x_t, cpad);
  for (int64_t p = 0; p < N; ++p) {
    for (int64_t c = C; c < cpad; ++c) x_t[p * cpad + c] = T(0);
  }
  transpose(g_b, M, C, M, g_t, C);
  transpose(win_b, M, C, M, win_t, C);
  routed_offsets<T>(win_t, M, C, cc, win_t);  // in place: the winners become offsets
  for (int64_t nb = nb0; nb < nb1; ++nb) {
    const int64_t n0 = nb * NR, cols = min64(NR, N - n0);
    T* out = acc + nb * M * NR;
    for (int64_t j = 0; j < k; ++j) {
      for (int64_t q = 0; q < cols; ++q) targets[j * NR + q] = static_cast<int32_t>(idx_b[(n0 + q) * k + j]);
    }
    for (int64_t c0 = 0; c0 < C; c0 += cc) {
      const int64_t steps = min64(cc, C - c0);
      for (int64_t j = 0; j < k; ++j) {
        // Panel j transposed: rows q = X[c0 .. c0 + cc - 1, idx[n0 + q, j]] (zero past N).
        const int32_t* tj = targets + j * NR;
        for (int64_t q = 0; q < NR; ++q) {
          T* dst = rows_t + q * cc;
          if (q < cols) __builtin_memcpy(dst, x_t + tj[q] * cpad + c0, sizeof(T) * cc);
          else for (int64_t s = 0; s < cc; ++s) dst[s] = T(0);
        }
        transpose(rows_t, cc, NR, cc, panel + j * jstride, NR);
      }
      routed_rows(panel, win_t + c0, g_t + c0, C, M, steps, out, true);
    }
  }
}

template <typename T>
constexpr EdgeRoutedKernels<T> make_table() {
  return {
      .mask_gradient = &edge_mask_gradient<T>,
      .cols = &edge_routed_cols<T>,
      .scratch = &edge_routed_scratch<T>,
      .packed_size = &edge_routed_packed_size<T>,
      .pack_weights = &edge_routed_pack_weights<T>,
      .grad_x = &edge_routed_grad_x<T>,
      .grad_edge = &edge_routed_grad_edge<T>,
  };
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(EdgeRoutedKernels, edge_routed_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(EdgeRoutedKernels, edge_routed_kernels, make_table, double)

}  // namespace facekernels::cpu
