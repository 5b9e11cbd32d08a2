// CPU kernels of circular_conv, compiled once per SIMD level (FK_CPU_CAPABILITY) and written as plain
// fixed-width loops that the compiler turns into vector code for that level.
//
// Each [H, W] plane is first extended circularly by L - 1 along the convolved axis (a copy in L1), so
// every tap reads a contiguous shifted window: along H the extension is a flat array in which tap t of
// output j sits at j + t * W (contiguous in j whatever W is); along W, float rows a multiple of 8 wide
// are transposed eight rows at a time so that taps read aligned column vectors, other rows are extended
// one by one. The sums run over register tiles with eight vector accumulators; the weight gradient
// takes eight taps per pass. docs/design.md has the whole story.
#include <cstdint>

#include "circular_conv/circular_conv_kernels.h"
#include "core/cpu_simd.h"
#include "core/parallel.h"

namespace facekernels::cpu {
namespace {

// Short row copies inline (a libc call per row costs as much as the row here): whole vectors, then one
// last vector overlapping the previous one instead of a scalar tail. The kernel sources build with
// -fno-tree-loop-distribute-patterns so the scalar loop is not turned back into a memcpy call.
template <typename T>
inline void copy_n(T* __restrict dst, const T* __restrict src, int64_t n) {
  constexpr int V = kLanes<T>;
  if (n < V) {
    for (int64_t i = 0; i < n; ++i) dst[i] = src[i];
    return;
  }
  int64_t i = 0;
  for (; i + V <= n; i += V) store<T>(dst + i, load<T>(src + i));
  if (i < n) store<T>(dst + n - V, load<T>(src + n - V));
}

// A register tile of R rows x M vectors:
//   out[r * os + i] = b + sum_{t<L} k[t] * e[r * es + t * ts + i].
template <typename T, int R, int M>
inline void conv_tile(T* out, int64_t os, const T* e, int64_t es, int64_t ts, const T* k, int64_t taps, T b) {
  constexpr int V = kLanes<T>;
  Vec<T> acc[R][M];
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) acc[r][m] = Vec<T>{} + b;
  for (int64_t t = 0; t < taps; ++t) {
    const T kt = k[t];
    const T* src = e + t * ts;
    for (int r = 0; r < R; ++r)
      for (int m = 0; m < M; ++m) acc[r][m] += kt * load<T>(src + r * es + m * V);
  }
  for (int r = 0; r < R; ++r)
    for (int m = 0; m < M; ++m) store<T>(out + r * os + m * V, acc[r][m]);
}

// The same for a single column (the ragged edge of rows shorter than a vector).
template <typename T, int R>
inline void conv_column(T* out, int64_t os, const T* e, int64_t es, int64_t ts, const T* k, int64_t taps,
                        T b) {
  T acc[R];
  for (int r = 0; r < R; ++r) acc[r] = b;
  for (int64_t t = 0; t < taps; ++t)
    for (int r = 0; r < R; ++r) acc[r] += k[t] * e[r * es + t * ts];
  for (int r = 0; r < R; ++r) out[r * os] = acc[r];
}

// The sum over `rows` rows of `len` outputs. Tiles keep eight vector accumulators in flight (FMA latency
// times throughput), as 4 rows x 2 vectors or 1 row x 8 vectors.
template <typename T>
void conv_rows(T* out, int64_t os, const T* e, int64_t es, int64_t ts, int64_t rows, int64_t len,
               const T* k, int64_t taps, T b) {
  constexpr int V = kLanes<T>;
  int64_t r = 0;
  for (; r + 4 <= rows && len < 8 * V; r += 4) {
    T* o = out + r * os;
    const T* x = e + r * es;
    int64_t j = 0;
    for (; j + 2 * V <= len; j += 2 * V) conv_tile<T, 4, 2>(o + j, os, x + j, es, ts, k, taps, b);
    for (; j + V <= len; j += V) conv_tile<T, 4, 1>(o + j, os, x + j, es, ts, k, taps, b);
    for (; j < len; ++j) conv_column<T, 4>(o + j, os, x + j, es, ts, k, taps, b);
  }
  for (; r < rows; ++r) {
    T* o = out + r * os;
    const T* x = e + r * es;
    int64_t j = 0;
    for (; j + 8 * V <= len; j += 8 * V) conv_tile<T, 1, 8>(o + j, os, x + j, es, ts, k, taps, b);
    for (; j + 2 * V <= len; j += 2 * V) conv_tile<T, 1, 2>(o + j, os, x + j, es, ts, k, taps, b);
    for (; j + V <= len; j += V) conv_tile<T, 1, 1>(o + j, os, x + j, es, ts, k, taps, b);
    for (; j < len; ++j) conv_column<T, 1>(o + j, os, x + j, es, ts, k, taps, b);
  }
}

// Q taps at once of the weight gradient:
//   out[q] = sum_{r < rows, i < len} a[r * as + i] * e[r * es + q * ts + i],
// one accumulator per tap, each vector of `a` loaded once for all Q taps. The (row, vector) pairs run as
// one flat loop so the accumulators stay in registers across rows (short rows, as 16-wide planes have,
// would otherwise spill and reload them every row). UnitTap: ts == 1, so tap offsets are immediates.
template <typename T, int Q, bool UnitTap>
inline void dot_taps_block(const T* a, int64_t as, const T* e, int64_t es, int64_t ts_runtime, int64_t rows,
                           int64_t len, double* out) {
  constexpr int V = kLanes<T>;
  const int64_t ts = UnitTap ? 1 : ts_runtime;
  Vec<T> acc[Q];
  for (int q = 0; q < Q; ++q) acc[q] = Vec<T>{};
  const int64_t row_vectors = len / V;
  const int64_t full = row_vectors * V;
  if (row_vectors >= 8 || rows == 1) {
    // Long rows: the plain row loop (its inner trip count amortises the row change).
    for (int64_t r = 0; r < rows; ++r) {
      const T* ar = a + r * as;
      const T* er = e + r * es;
      for (int64_t i = 0; i < full; i += V) {
        const Vec<T> av = load<T>(ar + i);
        for (int q = 0; q < Q; ++q) acc[q] += av * load<T>(er + q * ts + i);
      }
    }
  } else if (row_vectors > 0) {
    const T* ar = a;
    const T* er = e;
    int64_t i = 0;
    for (int64_t k = rows * row_vectors; k > 0; --k) {
      const Vec<T> av = load<T>(ar + i);
      for (int q = 0; q < Q; ++q) acc[q] += av * load<T>(er + q * ts + i);
      i += V;
      if (i == full) {
        i = 0;
        ar += as;
        er += es;
      }
    }
  }
  T tail[Q];
  for (int q = 0; q < Q; ++q) tail[q] = 0;
  if (full < len) {
    for (int64_t r = 0; r < rows; ++r)
      for (int64_t i = full; i < len; ++i)
        for (int q = 0; q < Q; ++q) tail[q] += a[r * as + i] * e[r * es + q * ts + i];
  }
  for (int q = 0; q < Q; ++q) out[q] = static_cast<double>(horizontal_sum<T>(acc[q]) + tail[q]);
}

template <typename T, bool UnitTap>
void dot_taps_impl(const T* a, int64_t as, const T* e, int64_t es, int64_t ts, int64_t rows, int64_t len,
                   int64_t taps, double* out) {
  int64_t t = 0;
  for (; t + 8 <= taps; t += 8) dot_taps_block<T, 8, UnitTap>(a, as, e + t * ts, es, ts, rows, len, out + t);
  for (; t + 4 <= taps; t += 4) dot_taps_block<T, 4, UnitTap>(a, as, e + t * ts, es, ts, rows, len, out + t);
  for (; t < taps; ++t) dot_taps_block<T, 1, UnitTap>(a, as, e + t * ts, es, ts, rows, len, out + t);
}

template <typename T>
void dot_taps(const T* a, int64_t as, const T* e, int64_t es, int64_t ts, int64_t rows, int64_t len,
              int64_t taps, double* out) {
  if (ts == 1) dot_taps_impl<T, true>(a, as, e, es, ts, rows, len, taps, out);
  else dot_taps_impl<T, false>(a, as, e, es, ts, rows, len, taps, out);
}

// Circular extensions of a [H, W] plane by L - 1, starting at `offset` (0 for the forward, -(L-1) for
// the correlation in the backward):
//   along H: ext[r][w] = src[(r + offset) mod H][w], r < H + L - 1 (the flat form: tap t of output j
//            sits at ext_flat[j + t * W], contiguous in j)
//   along W: ext[h][j] = src[h][(j + offset) mod W], j < W + L - 1
template <typename T>
void extend_along_h(T* ext, const T* src, int64_t height, int64_t width, int64_t taps, int64_t offset) {
  int64_t r_src = ((offset % height) + height) % height;
  for (int64_t r = 0; r < height + taps - 1; ++r) {
    copy_n(ext + r * width, src + r_src * width, width);
    if (++r_src == height) r_src = 0;
  }
}

template <typename T>
void extend_along_w(T* ext, const T* src, int64_t height, int64_t width, int64_t taps, int64_t offset,
                    int64_t ext_stride) {
  const int64_t ext_width = width + taps - 1;
  const int64_t start = ((offset % width) + width) % width;
  for (int64_t h = 0; h < height; ++h) {
    const T* row = src + h * width;
    T* dst = ext + h * ext_stride;
    int64_t j = 0, c = start;
    while (j < ext_width) {
      const int64_t n = min64(width - c, ext_width - j);
      copy_n(dst + j, row + c, n);
      j += n;
      c = 0;
    }
  }
}

// One plane's geometry in the extended layout, for either axis.
struct Layout {
  int64_t ext_size;    // elements of the extended plane
  int64_t rows, len;   // outputs are `rows` rows of `len`, row stride `len`
  int64_t ext_stride;  // row stride of the extension
  int64_t tap_stride;  // distance between taps in the extension
};

// Along W each extended row starts on a cache line, so only the tap offset misaligns a load.
template <typename T>
inline Layout layout(int axis, int64_t height, int64_t width, int64_t taps) {
  if (axis == 2) return {(height + taps - 1) * width, 1, height * width, height * width, width};
  constexpr int64_t line = 64 / sizeof(T);
  const int64_t stride = (width + taps - 1 + line - 1) / line * line;
  return {height * stride, height, width, stride, 1};
}

template <typename T>
void extend(int axis, const Layout& g, T* ext, const T* src, int64_t height, int64_t width, int64_t taps,
            int64_t offset) {
  if (axis == 2) extend_along_h(ext, src, height, width, taps, offset);
  else extend_along_w(ext, src, height, width, taps, offset, g.ext_stride);
}

// Along W with float rows a multiple of 8 wide (AVX2 and AVX-512 builds): eight rows at a time are
// transposed in registers so that a vector holds one column of the eight rows. Every tap then reads an
// aligned vector (the row-wise kernel reads each tap at an unaligned offset, half of them split across
// cache lines), the circular extension is a copy of whole vectors, and an 8x8 output tile transposes
// back on the way out. Returns false where it does not apply; the row-wise kernel then runs.
template <typename T>
inline bool conv_along_w_transposed(T*, const T*, int64_t, int64_t, const T*, int64_t, T, int64_t, T*, T*) {
  return false;
}

// The backward along W in the same transposed form, for 8-aligned float rows: grad_x (if asked) with
// reversed taps, and the weight gradient's per-plane sums (if asked) against the same transposed
// extension of grad_y: partial[t] = sum x[h][w] E[h][w + L-1-t]. Returns false where it does not apply.
template <typename T>
inline bool backward_along_w_transposed(T*, double*, const T*, const T*, int64_t, int64_t, const T*, int64_t,
                                        T*, T*, T*, double*) {
  return false;
}

#if defined(FK_CPU_CAPABILITY_AVX2) || defined(FK_CPU_CAPABILITY_AVX512)
typedef float Float8 __attribute__((vector_size(32)));

inline Float8 load8(const float* p) {
  Float8 v;
  __builtin_memcpy(&v, p, sizeof(v));
  return v;
}

inline void store8(float* p, Float8 v) {
  __builtin_memcpy(p, &v, sizeof(v));
}

// r[i][j] -> r[j][i] for an 8x8 block (unpack, shuffle, then swap 128-bit halves).
inline void transpose8(Float8 (&r)[8]) {
  const Float8 t0 = __builtin_shufflevector(r[0], r[1], 0, 8, 1, 9, 4, 12, 5, 13);
  const Float8 t1 = __builtin_shufflevector(r[0], r[1], 2, 10, 3, 11, 6, 14, 7, 15);
  const Float8 t2 = __builtin_shufflevector(r[2], r[3], 0, 8, 1, 9, 4, 12, 5, 13);
  const Float8 t3 = __builtin_shufflevector(r[2], r[3], 2, 10, 3, 11, 6, 14, 7, 15);
  const Float8 t4 = __builtin_shufflevector(r[4], r[5], 0, 8, 1, 9, 4, 12, 5, 13);
  const Float8 t5 = __builtin_shufflevector(r[4], r[5], 2, 10, 3, 11, 6, 14, 7, 15);
  const Float8 t6 = __builtin_shufflevector(r[6], r[7], 0, 8, 1, 9, 4, 12, 5, 13);
  const Float8 t7 = __builtin_shufflevector(r[6], r[7], 2, 10, 3, 11, 6, 14, 7, 15);
  const Float8 u0 = __builtin_shufflevector(t0, t2, 0, 1, 8, 9, 4, 5, 12, 13);
  const Float8 u1 = __builtin_shufflevector(t0, t2, 2, 3, 10, 11, 6, 7, 14, 15);
  const Float8 u2 = __builtin_shufflevector(t1, t3, 0, 1, 8, 9, 4, 5, 12, 13);
  const Float8 u3 = __builtin_shufflevector(t1, t3, 2, 3, 10, 11, 6, 7, 14, 15);
  const Float8 u4 = __builtin_shufflevector(t4, t6, 0, 1, 8, 9, 4, 5, 12, 13);
  const Float8 u5 = __builtin_shufflevector(t4, t6, 2, 3, 10, 11, 6, 7, 14, 15);
  const Float8 u6 = __builtin_shufflevector(t5, t7, 0, 1, 8, 9, 4, 5, 12, 13);
  const Float8 u7 = __builtin_shufflevector(t5, t7, 2, 3, 10, 11, 6, 7, 14, 15);
  r[0] = __builtin_shufflevector(u0, u4, 0, 1, 2, 3, 8, 9, 10, 11);
  r[4] = __builtin_shufflevector(u0, u4, 4, 5, 6, 7, 12, 13, 14, 15);
  r[1] = __builtin_shufflevector(u1, u5, 0, 1, 2, 3, 8, 9, 10, 11);
  r[5] = __builtin_shufflevector(u1, u5, 4, 5, 6, 7, 12, 13, 14, 15);
  r[2] = __builtin_shufflevector(u2, u6, 0, 1, 2, 3, 8, 9, 10, 11);
  r[6] = __builtin_shufflevector(u2, u6, 4, 5, 6, 7, 12, 13, 14, 15);
  r[3] = __builtin_shufflevector(u3, u7, 0, 1, 2, 3, 8, 9, 10, 11);
  r[7] = __builtin_shufflevector(u3, u7, 4, 5, 6, 7, 12, 13, 14, 15);
}

// columns[j] = rows h0..h0+7 of column (j + offset) mod W, for j < W + L - 1 (L = 1: no extension).
inline void transpose_columns(float* columns, const float* src, int64_t h0, int64_t width, int64_t taps,
                              int64_t offset) {
  const int64_t start = ((offset % width) + width) % width;
  for (int64_t c0 = 0; c0 < width; c0 += 8) {
    Float8 r[8];
    for (int i = 0; i < 8; ++i) r[i] = load8(src + (h0 + i) * width + c0);
    transpose8(r);
    for (int j = 0; j < 8; ++j) {
      int64_t at = c0 + j - start;
      if (at < 0) at += width;
      store8(columns + at * 8, r[j]);
    }
  }
  for (int64_t j = 0; j + 1 < taps; ++j) store8(columns + (width + j) * 8, load8(columns + j * 8));
}

// out rows h0..h0+7: b + sum_t k[t] columns[w + t], 8x8 tiles transposed back to rows.
inline void conv_columns(float* out, const float* columns, int64_t h0, int64_t width, const float* k,
                         int64_t taps, float b) {
  for (int64_t w0 = 0; w0 < width; w0 += 8) {
    Float8 acc[8];
    for (int i = 0; i < 8; ++i) acc[i] = Float8{} + b;
    const float* e = columns + w0 * 8;
    for (int64_t t = 0; t < taps; ++t) {
      const float kt = k[t];
      for (int i = 0; i < 8; ++i) acc[i] += kt * load8(e + (t + i) * 8);
    }
    transpose8(acc);
    for (int i = 0; i < 8; ++i) store8(out + (h0 + i) * width + w0, acc[i]);
  }
}

// out[h][w] = b + sum_t k[t] src[h][(w + t + offset) mod W] for a [H, W] plane. `columns` holds
// (W + L - 1) * 8 floats; `rest` the row-wise extension of the last H mod 8 rows.
template <>
inline bool conv_along_w_transposed<float>(float* out, const float* src, int64_t height, int64_t width,
                                           const float* k, int64_t taps, float b, int64_t offset,
                                           float* columns, float* rest) {
  if (width % 8 != 0 || height < 8) return false;
  const int64_t full_rows = height / 8 * 8;
  for (int64_t h0 = 0; h0 < full_rows; h0 += 8) {
    transpose_columns(columns, src, h0, width, taps, offset);
    conv_columns(out, columns, h0, width, k, taps, b);
  }
  const int64_t left = height - full_rows;
  if (left > 0) {
    const int64_t stride = layout<float>(3, left, width, taps).ext_stride;  // as the row-wise path
    extend_along_w(rest, src + full_rows * width, left, width, taps, offset, stride);
    conv_rows(out + full_rows * width, width, rest, stride, int64_t(1), left, width, k, taps, b);
  }
  return true;
}

// Scratch: `columns` (W + L - 1) * 8 floats, `xcols` W * 8 + L * 8 floats, `rest` the row-wise
// extension of the last H mod 8 rows, `shifted` L doubles.
template <>
inline bool backward_along_w_transposed<float>(float* grad_x, double* partial, const float* gy, const float* x,
                                               int64_t height, int64_t width, const float* k_reversed,
                                               int64_t taps, float* columns, float* xcols, float* rest,
                                               double* shifted) {
  if (width % 8 != 0 || height < 8) return false;
  const int64_t full_rows = height / 8 * 8;
  float* sums = xcols + width * 8;  // per-shift vector sums of the weight gradient, L x 8
  for (int64_t i = 0; i < taps * 8; ++i) sums[i] = 0.0f;
  for (int64_t h0 = 0; h0 < full_rows; h0 += 8) {
    transpose_columns(columns, gy, h0, width, taps, -(taps - 1));
    if (grad_x) conv_columns(grad_x, columns, h0, width, k_reversed, taps, 0.0f);
    if (partial) {
      transpose_columns(xcols, x, h0, width, 1, 0);
      int64_t s0 = 0;
      for (; s0 + 8 <= taps; s0 += 8) {
        Float8 acc[8];
        for (int q = 0; q < 8; ++q) acc[q] = load8(sums + (s0 + q) * 8);
        for (int64_t w = 0; w < width; ++w) {
          const Float8 xv = load8(xcols + w * 8);
          const float* e = columns + (w + s0) * 8;
          for (int q = 0; q < 8; ++q) acc[q] += xv * load8(e + q * 8);
        }
        for (int q = 0; q < 8; ++q) store8(sums + (s0 + q) * 8, acc[q]);
      }
      for (; s0 < taps; ++s0) {
        Float8 acc = load8(sums + s0 * 8);
        for (int64_t w = 0; w < width; ++w) acc += load8(xcols + w * 8) * load8(columns + (w + s0) * 8);
        store8(sums + s0 * 8, acc);
      }
    }
  }
  if (partial) {
    for (int64_t s = 0; s < taps; ++s) {
      float total = 0.0f;
      for (int i = 0; i < 8; ++i) total += sums[s * 8 + i];
      partial[taps - 1 - s] = static_cast<double>(total);
    }
  }
  const int64_t left = height - full_rows;
  if (left > 0) {
    const int64_t stride = layout<float>(3, left, width, taps).ext_stride;  // as the row-wise path
    extend_along_w(rest, gy + full_rows * width, left, width, taps, -(taps - 1), stride);
    if (grad_x) {
      conv_rows(grad_x + full_rows * width, width, rest, stride, int64_t(1), left, width, k_reversed, taps,
                0.0f);
    }
    if (partial) {
      dot_taps(x + full_rows * width, width, rest, stride, int64_t(1), left, width, taps, shifted);
      for (int64_t t = 0; t < taps; ++t) partial[t] += shifted[taps - 1 - t];
    }
  }
  return true;
}
#endif

// One plane of the forward (or of grad_x, with reversed taps and offset -(L-1)).
template <typename T>
void conv_plane(int axis, const Layout& g, T* ext, T* out, const T* src, int64_t height, int64_t width,
                const T* k, int64_t taps, T b, int64_t offset) {
  if (axis == 3 && conv_along_w_transposed<T>(out, src, height, width, k, taps, b, offset,
                                              ext, ext + (width + taps - 1) * 8)) {
    return;
  }
  extend(axis, g, ext, src, height, width, taps, offset);
  conv_rows(out, g.len, ext, g.ext_stride, g.tap_stride, g.rows, g.len, k, taps, b);
}

template <typename T>
void forward(const CircularConvForwardArgs<T>& a) {
  const int64_t H = a.height, W = a.width, L = a.taps, plane = H * W;
  const Layout g = layout<T>(a.axis, H, W, L);
  parallel_for(0, a.batch * a.channels, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> ext(g.ext_size + (W + L - 1) * 8);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t c = p % a.channels;
      const T* x = a.x + (p / a.channels) * a.x_stride_b + c * a.x_stride_c;
      conv_plane(a.axis, g, ext.data(), a.y + p * plane, x, H, W, a.weight + c * L, L,
                 a.bias ? a.bias[c] : T(0), 0);
    }
  });
}

template <typename T>
void backward(const CircularConvBackwardArgs<T>& a) {
  const int64_t H = a.height, W = a.width, L = a.taps, plane = H * W, C = a.channels;
  const int64_t planes = a.batch * C;
  const Layout g = layout<T>(a.axis, H, W, L);
  const bool need_w = a.grad_weight != nullptr, need_b = a.grad_bias != nullptr;

  // grad_x is the circular correlation sum_t w[t] gy[i - t] = sum_s w[L-1-s] gy[i - (L-1) + s]: the
  // forward kernel with reversed taps on an extension starting at -(L-1).
  Scratch<T> reversed(a.grad_x ? C * L : 0);
  for (int64_t c = 0; c < (a.grad_x ? C : 0); ++c)
    for (int64_t t = 0; t < L; ++t) reversed[c * L + t] = a.weight[c * L + L - 1 - t];

  // Per-plane partial sums of grad_weight (L) and grad_bias (1), reduced over the batch afterwards in
  // double and in a fixed order, so results do not depend on the thread count.
  const int64_t stride = L + 1;
  Scratch<double> partial((need_w || need_b) ? planes * stride : 0);

  parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> ext(g.ext_size);
    Scratch<T> columns(a.axis == 3 ? (W + L - 1) * 8 + W * 8 + L * 8 + g.ext_size : 0);
    Scratch<double> shifted(need_w ? L : 0);
    for (int64_t p = begin; p < end; ++p) {
      const int64_t c = p % C;
      const int64_t b = p / C;
      const T* gy = a.grad_y + b * a.grad_y_stride_b + c * a.grad_y_stride_c;
      const T* x = a.x + b * a.x_stride_b + c * a.x_stride_c;
      double* part = (need_w || need_b) ? partial.data() + p * stride : nullptr;
      // Along W with 8-aligned float rows both gradients take the transposed kernel; otherwise one
      // extension of grad_y serves both: E[i + s] = gy[i - (L-1) + s].
      const bool transposed =
          a.axis == 3 && (a.grad_x || need_w) &&
          backward_along_w_transposed<T>(a.grad_x ? a.grad_x + p * plane : nullptr, need_w ? part : nullptr, gy,
                                         x, H, W, a.grad_x ? reversed.data() + c * L : nullptr, L, columns.data(),
                                         columns.data() + (W + L - 1) * 8,
                                         columns.data() + (W + L - 1) * 8 + W * 8 + L * 8, shifted.data());
      if (!transposed && (a.grad_x || need_w)) extend(a.axis, g, ext.data(), gy, H, W, L, -(L - 1));
      if (a.grad_x && !transposed) {
        conv_rows(a.grad_x + p * plane, g.len, ext.data(), g.ext_stride, g.tap_stride, g.rows, g.len,
                  reversed.data() + c * L, L, T(0));
      }
      if (need_w && !transposed) {
        // grad_w[t] = sum_i gy[i] x[i + t] = sum_i x[i] gy[i - t] = sum_i x[i] E[i + (L-1-t)]: x read in
        // place against the same extension at shift s = L-1-t.
        dot_taps(x, g.len, ext.data(), g.ext_stride, g.tap_stride, g.rows, g.len, L,
                 shifted.data());
        for (int64_t t = 0; t < L; ++t) part[t] = shifted[L - 1 - t];
      }
      if (need_b) {
        constexpr int V = kLanes<T>;
        T s[4 * V] = {};
        int64_t j = 0;
        for (; j + 4 * V <= plane; j += 4 * V)
          for (int i = 0; i < 4 * V; ++i) s[i] += gy[j + i];
        double total = 0;
        for (; j < plane; ++j) total += gy[j];
        for (int i = 0; i < 4 * V; ++i) total += s[i];
        part[L] = total;
      }
    }
  });

  if (need_w || need_b) {
    parallel_for(0, C, 16, [&](int64_t c_begin, int64_t c_end) {
      for (int64_t c = c_begin; c < c_end; ++c) {
        for (int64_t t = 0; t < (need_w ? L : 0); ++t) {
          double s = 0;
          for (int64_t b = 0; b < a.batch; ++b) s += partial[(b * C + c) * stride + t];
          a.grad_weight[c * L + t] = static_cast<T>(s);
        }
        if (need_b) {
          double s = 0;
          for (int64_t b = 0; b < a.batch; ++b) s += partial[(b * C + c) * stride + L];
          a.grad_bias[c] = static_cast<T>(s);
        }
      }
    });
  }
}

template <typename T>
constexpr CircularConvKernels<T> make_table() {
  return {.forward = &forward<T>, .backward = &backward<T>};
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(CircularConvKernels, circular_conv_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(CircularConvKernels, circular_conv_kernels, make_table, double)

}  // namespace facekernels::cpu
