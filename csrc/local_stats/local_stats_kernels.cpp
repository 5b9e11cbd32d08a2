// CPU kernels of local_stat_transform and local_mean_var, compiled once per SIMD level
// (FK_CPU_CAPABILITY).
//
// Box sums over clipped windows at a cost per pixel independent of the window: a sweep down each band
// of rows keeps running column sums (add the row entering the window, subtract the one leaving it),
// and per output row a vectorised prefix scan of those column sums gives every window's sum along W
// as a difference of two prefix values. Windows are clipped at the borders: the prefix array is padded
// with its first and last values, so the differences need no branches.
//
// Accuracy: every summed quantity is shifted by a constant s per band (the mean of a few of its rows),
// so the sums see x - s and (x - s)^2 rather than x and x^2, and var = E[(x-s)^2] - (mu-s)^2 stays
// accurate in float32 when the mean is far larger than the spread. The backward kernels use the same
// shifted form: 2 x box(B) - 2 box(B mu) is evaluated as 2 (x - s) box(B) - 2 box(B (mu - s)).
//
// Backward, by the symmetry q in W(p) <=> p in W(q): the adjoint of a window mean is a box sum of
// (coefficient / n_p). A first sweep recomputes the statistics on the band's rows widened by the radius
// and writes per-pixel coefficients; a second sweep box-sums them.
#include <cstdint>

#if defined(FK_CPU_CAPABILITY_AVX2)
#include <immintrin.h>
#endif

#include "core/cpu_simd.h"
#include "core/parallel.h"
#include "local_stats/local_stats_kernels.h"

namespace facekernels::cpu {
namespace {

// The first `count` lanes from p, zeros after.
template <typename T>
inline Vec<T> load_partial(const T* p, int count) {
  Vec<T> v = {};
  for (int i = 0; i < count; ++i) v[i] = p[i];
  return v;
}

template <bool Full, typename T>
inline Vec<T> load_n(const T* p, int count) {
  if constexpr (Full) return load(p);
  else return load_partial(p, count);
}

template <bool Full, typename T>
inline void store_n(T* p, Vec<T> v, int count) {
  if constexpr (Full) {
    __builtin_memcpy(p, &v, sizeof(v));
  } else {
    for (int i = 0; i < count; ++i) p[i] = v[i];
  }
}

template <typename T>
inline Vec<T> vmax0(Vec<T> v) {
  const Vec<T> zero = {};
  return v > zero ? v : zero;
}

// In-register inclusive prefix sum: log2(lanes) shift-and-add steps.
template <int... I>
struct Indices {};
template <int N, int... I>
struct MakeIndices : MakeIndices<N - 1, N - 1, I...> {};
template <int... I>
struct MakeIndices<0, I...> {
  using type = Indices<I...>;
};

template <int S, typename V, int... I>
inline V shift_up(V v, Indices<I...>) {
  constexpr int L = sizeof...(I);
  const V zero = {};
  return __builtin_shufflevector(v, zero, (I >= S ? I - S : L + I)...);
}

template <typename T>
inline Vec<T> prefix_in_vector(Vec<T> v) {
#if defined(FK_CPU_CAPABILITY_AVX2)
  // Within each 128-bit half by byte shifts (one cycle each), then the low half's total into the high
  // half: about half the shuffles of the generic lane-crossing version.
  if constexpr (sizeof(T) == 4) {
    __m256 x = reinterpret_cast<__m256>(v);
    x = _mm256_add_ps(x, _mm256_castsi256_ps(_mm256_slli_si256(_mm256_castps_si256(x), 4)));
    x = _mm256_add_ps(x, _mm256_castsi256_ps(_mm256_slli_si256(_mm256_castps_si256(x), 8)));
    const __m256 top = _mm256_shuffle_ps(x, x, 0xFF);
    return reinterpret_cast<Vec<T>>(_mm256_add_ps(x, _mm256_permute2f128_ps(top, top, 0x08)));
  } else {
    __m256d x = reinterpret_cast<__m256d>(v);
    x = _mm256_add_pd(x, _mm256_castsi256_pd(_mm256_slli_si256(_mm256_castpd_si256(x), 8)));
    const __m256d top = _mm256_shuffle_pd(x, x, 0xF);
    return reinterpret_cast<Vec<T>>(_mm256_add_pd(x, _mm256_permute2f128_pd(top, top, 0x08)));
  }
#else
  using Idx = typename MakeIndices<kLanes<T>>::type;
  v += shift_up<1>(v, Idx{});
  if constexpr (kLanes<T> > 2) v += shift_up<2>(v, Idx{});
  if constexpr (kLanes<T> > 4) v += shift_up<4>(v, Idx{});
  if constexpr (kLanes<T> > 8) v += shift_up<8>(v, Idx{});
  return v;
#endif
}

// Every lane = the last lane of v.
template <typename T>
inline Vec<T> broadcast_last(Vec<T> v) {
#if defined(FK_CPU_CAPABILITY_AVX2)
  if constexpr (sizeof(T) == 4) {
    const __m256 x = reinterpret_cast<__m256>(v);
    const __m256 top = _mm256_shuffle_ps(x, x, 0xFF);
    return reinterpret_cast<Vec<T>>(_mm256_permute2f128_ps(top, top, 0x11));
  } else {
    const __m256d x = reinterpret_cast<__m256d>(v);
    const __m256d top = _mm256_shuffle_pd(x, x, 0xF);
    return reinterpret_cast<Vec<T>>(_mm256_permute2f128_pd(top, top, 0x11));
  }
#else
  return broadcast<T>(v[kLanes<T> - 1]);
#endif
}

template <bool B>
struct BoolConstant {
  static constexpr bool value = B;
};

// Geometry of one plane and the window radius clipped to it (a radius past the image is the whole axis).
//
// Along W the window sums of narrow windows are direct sums of column sums; wider ones are differences
// of prefix sums, taken per segment of `seg` columns: each
// segment's prefix starts `span` columns before its first output, so a window never reaches past it and
// the prefix never grows beyond seg + span columns. Rounding thus stays relative to about a window's
// worth of values whatever the row length (a prefix over a whole 20000-wide row would not).
struct Geometry {
  int64_t H, W, rh, rw, span;
  int64_t Wp;    // W rounded up to whole vectors: the stride of scratch rows
  int64_t seg;   // output columns per prefix segment, a multiple of the vector width
  int64_t clen;  // length of a zero-padded column-sum row: colpad[rw + w] = col[w]
  int64_t plen;  // length of a segment's prefix row
};

template <typename T>
Geometry make_geometry(int64_t H, int64_t W, int64_t radius) {
  constexpr int L = kLanes<T>;
  Geometry g;
  g.H = H;
  g.W = W;
  g.rh = min64(radius, H - 1);
  g.rw = min64(radius, W - 1);
  g.span = 2 * g.rw + 1;
  g.Wp = round_up(W, L);
  g.seg = min64(g.Wp, round_up(max64(128, 4 * g.span), L));
  g.clen = g.Wp + g.span + 2 * L;
  g.plen = round_up(g.seg + g.span, L) + 2 * L;
  return g;
}

// Per-sweep scratch: Q zero-padded rows of running column sums, Q segment prefix rows, and 1 / n_w.
template <typename T>
struct SweepBuffers {
  T* col;     // Q * clen
  T* pre;     // Q * plen
  T* inv_nw;  // Wp
};

template <typename T>
int64_t sweep_buffer_size(const Geometry& g, int q) {
  return q * g.clen + q * g.plen + g.Wp;
}

template <typename T>
SweepBuffers<T> carve_sweep_buffers(const Geometry& g, int q, T* base) {
  return {base, base + q * g.clen, base + q * g.clen + q * g.plen};
}

// Windows at most this many columns wide are summed directly along W rather than by prefix differences.
constexpr int64_t kDirectSpan = 7;

// Lanes [0, count) of v, zeros after.
template <typename T>
inline Vec<T> keep_first(Vec<T> v, int count) {
  Vec<T> r = {};
  for (int i = 0; i < count; ++i) r[i] = v[i];
  return r;
}

// The sweep: for every output row h in [h0, h1), Rows supplies the Q summed quantities of source rows
// (rows.template get<Full>(row, w, count, q)), and Emit receives the Q window sums and 1/n of each
// pixel of row h (emit.template put<Full>(h, w, count, box, inv_n)).
template <typename T, int Q, typename Rows, typename Emit>
void sweep(const Geometry& g, int64_t h0, int64_t h1, const SweepBuffers<T>& buf, const Rows& rows,
           const Emit& emit) {
  constexpr int L = kLanes<T>;
  const int64_t W = g.W, H = g.H, rh = g.rh, rw = g.rw, span = g.span, clen = g.clen, plen = g.plen;
  const int64_t w_full = W / L * L;
  const int tail = static_cast<int>(W - w_full);

  for (int64_t w = 0; w < g.Wp; ++w) {
    const int64_t n = w < W ? min64(w + rw, W - 1) - max64(w - rw, 0) + 1 : 1;
    buf.inv_nw[w] = T(1) / static_cast<T>(n);
  }
  // Zero padding on both sides of every column-sum row stands for the columns outside the image.
  for (int64_t i = 0; i < Q * clen; ++i) buf.col[i] = T(0);

  // col += rows(add) - rows(sub) for whichever of the two exists; lanes past W stay zero.
  auto update = [&](int64_t add, int64_t sub) {
    auto one = [&](auto full, int64_t w, int count) {
      constexpr bool Full = decltype(full)::value;
      Vec<T> qa[Q], qs[Q];
      if (add >= 0) rows.template get<Full>(add, w, count, qa);
      if (sub >= 0) rows.template get<Full>(sub, w, count, qs);
      for (int k = 0; k < Q; ++k) {
        Vec<T> d = {};
        if (add >= 0) d = qa[k];
        if (sub >= 0) d -= qs[k];
        if constexpr (!Full) d = keep_first<T>(d, count);
        T* c = buf.col + k * clen + rw + w;
        store(c, load(c) + d);
      }
    };
    for (int64_t w = 0; w < w_full; w += L) one(BoolConstant<true>{}, w, L);
    if (tail) one(BoolConstant<false>{}, w_full, tail);
  };

  for (int64_t r = max64(0, h0 - rh); r <= min64(H - 1, h0 + rh); ++r) update(r, -1);

  for (int64_t h = h0; h < h1; ++h) {
    if (h > h0) {
      const int64_t add = h + rh <= H - 1 ? h + rh : -1;
      const int64_t sub = h - rh - 1 >= 0 ? h - rh - 1 : -1;
      if (add >= 0 || sub >= 0) update(add, sub);
    }
    const T inv_nh = T(1) / static_cast<T>(min64(h + rh, H - 1) - max64(h - rh, 0) + 1);
    if (span <= kDirectSpan) {
      // Narrow windows: sum the span column sums directly (as cheap as a scan, and exact to a rounding
      // relative to the window itself).
      auto put = [&](auto full, int64_t w, int count) {
        constexpr bool Full = decltype(full)::value;
        Vec<T> box[Q];
        for (int k = 0; k < Q; ++k) {
          const T* c = buf.col + k * clen + w;
          Vec<T> acc = load(c);
          for (int64_t i = 1; i < span; ++i) acc += load(c + i);
          box[k] = acc;
        }
        emit.template put<Full>(h, w, count, box, load(buf.inv_nw + w) * inv_nh);
      };
      for (int64_t w = 0; w < w_full; w += L) put(BoolConstant<true>{}, w, L);
      if (tail) put(BoolConstant<false>{}, w_full, tail);
      continue;
    }
    for (int64_t w0 = 0; w0 < W; w0 += g.seg) {
      const int64_t w1 = min64(W, w0 + g.seg);
      // pre[t] = sum of colpad[w0 .. w0 + t), so the window of output w sums to
      // pre[w - w0 + span] - pre[w - w0].
      const int64_t scan_len = round_up(w1 - w0, L) + span;
      for (int k = 0; k < Q; ++k) {
        T* pre = buf.pre + k * plen;
        const T* col = buf.col + k * clen + w0;
        pre[0] = T(0);
        Vec<T> carry = {};
        for (int64_t t = 0; t < scan_len; t += L) {
          const Vec<T> v = prefix_in_vector<T>(load(col + t)) + carry;
          store(pre + 1 + t, v);
          carry = broadcast_last<T>(v);
        }
      }
      auto put = [&](auto full, int64_t w, int count) {
        constexpr bool Full = decltype(full)::value;
        Vec<T> box[Q];
        for (int k = 0; k < Q; ++k) {
          const T* pre = buf.pre + k * plen + (w - w0);
          box[k] = load(pre + span) - load(pre);
        }
        emit.template put<Full>(h, w, count, box, load(buf.inv_nw + w) * inv_nh);
      };
      const int64_t full_end = min64(w1, w_full);
      for (int64_t w = w0; w < full_end; w += L) put(BoolConstant<true>{}, w, L);
      if (tail && w1 == W) put(BoolConstant<false>{}, w_full, tail);
    }
  }
}

// ---- shifts and work split ------------------------------------------------------------------------

// A value near the data of rows [r0, r1): the mean of up to eight evenly spaced rows. Any constant is
// exact in real arithmetic; one near the data keeps the float32 sums of (x - s)^2 well conditioned.
template <typename T>
T band_shift(const T* plane, int64_t W, int64_t r0, int64_t r1) {
  const int64_t rows = r1 - r0, samples = min64(rows, 8);
  double s = 0;
  for (int64_t i = 0; i < samples; ++i) {
    const T* row = plane + (r0 + (2 * i + 1) * rows / (2 * samples)) * W;
    for (int64_t w = 0; w < W; ++w) s += row[w];
  }
  s /= static_cast<double>(samples * W);
  // A non-finite input poisons the running sums of its band anyway; keep the shift itself finite.
  return s - s == 0 ? static_cast<T>(s) : T(0);
}

// Planes are split into bands of rows only when there are too few planes to keep every thread busy; a
// band repeats the radius's rows at its edges, so bands stay several windows tall.
struct Bands {
  int64_t count, height;
};

Bands choose_bands(int64_t planes, int64_t H, int64_t rh) {
  const int64_t threads = num_threads();
  int64_t count = 1;
  if (planes < 4 * threads) {
    const int64_t want = (4 * threads + planes - 1) / planes;
    const int64_t most = max64(1, H / max64(32, 4 * (2 * rh + 1)));
    count = min64(want, most);
  }
  const int64_t height = (H + count - 1) / count;
  return {(H + height - 1) / height, height};
}

// Runs body(b, c, plane_index, h0, h1) over every band of every plane, with `scratch_size` elements of
// zeroed scratch per worker.
template <typename T, typename Body>
void for_each_band(const LocalStatsArgs<T>& a, const Bands& bands, int64_t scratch_size, const Body& body) {
  const int64_t planes = a.batch * a.channels;
  parallel_for(0, planes * bands.count, 1, [&](int64_t begin, int64_t end) {
    Scratch<T> scratch(scratch_size);
    for (int64_t i = 0; i < scratch_size; ++i) scratch.data()[i] = T(0);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t plane = item / bands.count, band = item % bands.count;
      const int64_t h0 = band * bands.height, h1 = min64(a.height, h0 + bands.height);
      if (h0 < h1) body(plane / a.channels, plane % a.channels, plane, h0, h1, scratch.data());
    }
  });
}

// ---- summed quantities ---------------------------------------------------------------------------

// {x - sx, (x - sx)^2, g - sg, (g - sg)^2}
template <typename T>
struct PairRows {
  const T *x, *g;
  int64_t W;
  T sx, sg;
  template <bool Full>
  void get(int64_t h, int64_t w, int count, Vec<T>* q) const {
    const Vec<T> dx = load_n<Full>(x + h * W + w, count) - sx;
    const Vec<T> dg = load_n<Full>(g + h * W + w, count) - sg;
    q[0] = dx;
    q[1] = dx * dx;
    q[2] = dg;
    q[3] = dg * dg;
  }
};

// {x - s, (x - s)^2}
template <typename T>
struct SingleRows {
  const T* x;
  int64_t W;
  T s;
  template <bool Full>
  void get(int64_t h, int64_t w, int count, Vec<T>* q) const {
    const Vec<T> d = load_n<Full>(x + h * W + w, count) - s;
    q[0] = d;
    q[1] = d * d;
  }
};

// Q coefficient rows of the backward's first sweep, stored with row stride Wp from row e0 on.
template <typename T, int Q>
struct CoefficientRows {
  const T* coef;
  int64_t Wp, e0, array_stride;
  template <bool Full>
  void get(int64_t h, int64_t w, int count, Vec<T>* q) const {
    const T* p = coef + (h - e0) * Wp + w;
    for (int k = 0; k < Q; ++k) q[k] = load(p + k * array_stride);
  }
};

// ---- outputs ---------------------------------------------------------------------------------------

template <typename T>
struct TransformOutput {
  const T* x;
  T* out;
  int64_t W;
  T sx, sg, eps;
  template <bool Full>
  void put(int64_t h, int64_t w, int count, const Vec<T>* box, Vec<T> inv_n) const {
    const Vec<T> mx = box[0] * inv_n, vx = vmax0<T>(box[1] * inv_n - mx * mx);
    const Vec<T> mg = box[2] * inv_n, vg = vmax0<T>(box[3] * inv_n - mg * mg);
    const Vec<T> xv = load_n<Full>(x + h * W + w, count);
    const Vec<T> o = (xv - sx - mx) * vsqrt<T>((vg + eps) / (vx + eps)) + (mg + sg);
    store_n<Full>(out + h * W + w, o, count);
  }
};

template <typename T>
struct MeanVarOutput {
  T *mean, *var;
  int64_t W;
  T s;
  template <bool Full>
  void put(int64_t h, int64_t w, int count, const Vec<T>* box, Vec<T> inv_n) const {
    const Vec<T> m = box[0] * inv_n;
    store_n<Full>(mean + h * W + w, m + s, count);
    store_n<Full>(var + h * W + w, vmax0<T>(box[1] * inv_n - m * m), count);
  }
};

// First backward sweep of local_stat_transform, at every pixel p of the widened rows (a = sd_g / sd_x,
// d = x - mu_x, go = grad_out):
//   x:     c = -go a / n,  B = -go d a / (2 (var_x + eps) n),  C = B (mu_x - sx);  and go a itself
//   guide: c =  go / n,    B =  go d / (2 sd_x sd_g n),        C = B (mu_g - sg)
template <typename T, bool NeedX, bool NeedG>
struct TransformCoefficients {
  const T *x, *g, *go;
  T* coef;    // [3 (x) + 3 (guide)] arrays of rows e0.., stride Wp
  T* direct;  // go * a on rows h0 .. h1
  int64_t W, Wp, e0, h0, h1, array_stride;
  T sx, sg, eps;
  template <bool Full>
  void put(int64_t h, int64_t w, int count, const Vec<T>* box, Vec<T> inv_n) const {
    const Vec<T> mx = box[0] * inv_n, vx = vmax0<T>(box[1] * inv_n - mx * mx);
    const Vec<T> mg = box[2] * inv_n, vg = vmax0<T>(box[3] * inv_n - mg * mg);
    const Vec<T> ex = vx + eps, eg = vg + eps;
    const Vec<T> sdx = vsqrt<T>(ex), sdg = vsqrt<T>(eg);
    const Vec<T> a = sdg / sdx;
    const Vec<T> gov = load_n<Full>(go + h * W + w, count);
    const Vec<T> d = load_n<Full>(x + h * W + w, count) - sx - mx;
    T* p = coef + (h - e0) * Wp + w;
    int k = 0;
    if constexpr (NeedX) {
      const Vec<T> ga = gov * a;
      const Vec<T> bx = (T(-0.5) * inv_n) * ga * d / ex;
      store_n<true>(p, -ga * inv_n, L());
      store_n<true>(p + array_stride, bx, L());
      store_n<true>(p + 2 * array_stride, bx * mx, L());
      if (h >= h0 && h < h1) store_n<true>(direct + (h - h0) * Wp + w, ga, L());
      k = 3;
    }
    if constexpr (NeedG) {
      const Vec<T> bg = (T(0.5) * inv_n) * gov * d / (sdx * sdg);
      store_n<true>(p + k * array_stride, gov * inv_n, L());
      store_n<true>(p + (k + 1) * array_stride, bg, L());
      store_n<true>(p + (k + 2) * array_stride, bg * mg, L());
    }
  }
  static constexpr int L() { return kLanes<T>; }
};

//   grad_x = go a + box(c) + 2 (x - sx) box(B) - 2 box(C), likewise grad_guide (without the direct term)
template <typename T, bool NeedX, bool NeedG>
struct TransformGradients {
  const T *x, *g, *direct;
  T *grad_x, *grad_g;
  int64_t W, Wp, h0;
  T sx, sg;
  template <bool Full>
  void put(int64_t h, int64_t w, int count, const Vec<T>* box, Vec<T>) const {
    int k = 0;
    if constexpr (NeedX) {
      const Vec<T> dx = load_n<Full>(x + h * W + w, count) - sx;
      const Vec<T> r = load(direct + (h - h0) * Wp + w) + box[0] + T(2) * (dx * box[1] - box[2]);
      store_n<Full>(grad_x + h * W + w, r, count);
      k = 3;
    }
    if constexpr (NeedG) {
      const Vec<T> dg = load_n<Full>(g + h * W + w, count) - sg;
      const Vec<T> r = box[k] + T(2) * (dg * box[k + 1] - box[k + 2]);
      store_n<Full>(grad_g + h * W + w, r, count);
    }
  }
};

// First backward sweep of local_mean_var: c = gm / n, B = gv / n, C = B (mu - s).
template <typename T>
struct MeanVarCoefficients {
  const T *gm, *gv;  // either may be nullptr
  T* coef;
  int64_t W, Wp, e0, array_stride;
  template <bool Full>
  void put(int64_t h, int64_t w, int count, const Vec<T>* box, Vec<T> inv_n) const {
    const Vec<T> m = box[0] * inv_n;
    const Vec<T> zero = {};
    const Vec<T> c = gm ? load_n<Full>(gm + h * W + w, count) * inv_n : zero;
    const Vec<T> b = gv ? load_n<Full>(gv + h * W + w, count) * inv_n : zero;
    T* p = coef + (h - e0) * Wp + w;
    store_n<true>(p, c, kLanes<T>);
    store_n<true>(p + array_stride, b, kLanes<T>);
    store_n<true>(p + 2 * array_stride, b * m, kLanes<T>);
  }
};

// grad_x = box(c) + 2 (x - s) box(B) - 2 box(C)
template <typename T>
struct MeanVarGradient {
  const T* x;
  T* grad_x;
  int64_t W;
  T s;
  template <bool Full>
  void put(int64_t h, int64_t w, int count, const Vec<T>* box, Vec<T>) const {
    const Vec<T> d = load_n<Full>(x + h * W + w, count) - s;
    store_n<Full>(grad_x + h * W + w, box[0] + T(2) * (d * box[1] - box[2]), count);
  }
};

// ---- kernels ---------------------------------------------------------------------------------------

template <typename T>
void transform_forward(const LocalStatsArgs<T>& a) {
  const Geometry g = make_geometry<T>(a.height, a.width, a.radius);
  const Bands bands = choose_bands(a.batch * a.channels, g.H, g.rh);
  const int64_t HW = g.H * g.W;
  for_each_band(a, bands, sweep_buffer_size<T>(g, 4),
                [&](int64_t b, int64_t c, int64_t plane, int64_t h0, int64_t h1, T* scratch) {
                  const T* x = a.x.plane(b, c);
                  const T* gd = a.guide.plane(b, c);
                  const int64_t r0 = max64(0, h0 - g.rh), r1 = min64(g.H, h1 + g.rh);
                  const T sx = band_shift(x, g.W, r0, r1), sg = band_shift(gd, g.W, r0, r1);
                  sweep<T, 4>(g, h0, h1, carve_sweep_buffers(g, 4, scratch), PairRows<T>{x, gd, g.W, sx, sg},
                              TransformOutput<T>{x, a.out + plane * HW, g.W, sx, sg, static_cast<T>(a.eps)});
                });
}

template <typename T, bool NeedX, bool NeedG>
void transform_backward_impl(const LocalStatsArgs<T>& a) {
  constexpr int Q = (NeedX ? 3 : 0) + (NeedG ? 3 : 0);
  const Geometry g = make_geometry<T>(a.height, a.width, a.radius);
  const Bands bands = choose_bands(a.batch * a.channels, g.H, g.rh);
  const int64_t HW = g.H * g.W;
  const int64_t wide_rows = min64(g.H, bands.height + 2 * g.rh);
  const int64_t array_stride = wide_rows * g.Wp;
  const int64_t sweep_size = sweep_buffer_size<T>(g, Q > 4 ? Q : 4);
  const int64_t scratch_size = sweep_size + Q * array_stride + (NeedX ? bands.height * g.Wp : 0);
  for_each_band(a, bands, scratch_size, [&](int64_t b, int64_t c, int64_t plane, int64_t h0, int64_t h1, T* scratch) {
    const T* x = a.x.plane(b, c);
    const T* gd = a.guide.plane(b, c);
    const T* go = a.grad_out.plane(b, c);
    const int64_t e0 = max64(0, h0 - g.rh), e1 = min64(g.H, h1 + g.rh);
    const T sx = band_shift(x, g.W, e0, e1), sg = band_shift(gd, g.W, e0, e1);
    T* coef = scratch + sweep_size;
    T* direct = coef + Q * array_stride;
    sweep<T, 4>(g, e0, e1, carve_sweep_buffers(g, 4, scratch), PairRows<T>{x, gd, g.W, sx, sg},
                TransformCoefficients<T, NeedX, NeedG>{x, gd, go, coef, direct, g.W, g.Wp, e0, h0, h1, array_stride,
                                                       sx, sg, static_cast<T>(a.eps)});
    sweep<T, Q>(g, h0, h1, carve_sweep_buffers(g, Q, scratch),
                CoefficientRows<T, Q>{coef, g.Wp, e0, array_stride},
                TransformGradients<T, NeedX, NeedG>{x, gd, direct, NeedX ? a.grad_x + plane * HW : nullptr,
                                                    NeedG ? a.grad_guide + plane * HW : nullptr, g.W, g.Wp, h0, sx,
                                                    sg});
  });
}

template <typename T>
void transform_backward(const LocalStatsArgs<T>& a) {
  if (a.grad_x && a.grad_guide) transform_backward_impl<T, true, true>(a);
  else if (a.grad_x) transform_backward_impl<T, true, false>(a);
  else if (a.grad_guide) transform_backward_impl<T, false, true>(a);
}

template <typename T>
void mean_var_forward(const LocalStatsArgs<T>& a) {
  const Geometry g = make_geometry<T>(a.height, a.width, a.radius);
  const Bands bands = choose_bands(a.batch * a.channels, g.H, g.rh);
  const int64_t HW = g.H * g.W;
  for_each_band(a, bands, sweep_buffer_size<T>(g, 2),
                [&](int64_t b, int64_t c, int64_t plane, int64_t h0, int64_t h1, T* scratch) {
                  const T* x = a.x.plane(b, c);
                  const T s = band_shift(x, g.W, max64(0, h0 - g.rh), min64(g.H, h1 + g.rh));
                  sweep<T, 2>(g, h0, h1, carve_sweep_buffers(g, 2, scratch), SingleRows<T>{x, g.W, s},
                              MeanVarOutput<T>{a.out + plane * HW, a.out_var + plane * HW, g.W, s});
                });
}

template <typename T>
void mean_var_backward(const LocalStatsArgs<T>& a) {
  const Geometry g = make_geometry<T>(a.height, a.width, a.radius);
  const Bands bands = choose_bands(a.batch * a.channels, g.H, g.rh);
  const int64_t HW = g.H * g.W;
  const int64_t wide_rows = min64(g.H, bands.height + 2 * g.rh);
  const int64_t array_stride = wide_rows * g.Wp;
  const int64_t sweep_size = sweep_buffer_size<T>(g, 3);
  for_each_band(a, bands, sweep_size + 3 * array_stride,
                [&](int64_t b, int64_t c, int64_t plane, int64_t h0, int64_t h1, T* scratch) {
                  const T* x = a.x.plane(b, c);
                  const T* gm = a.grad_mean.data ? a.grad_mean.plane(b, c) : nullptr;
                  const T* gv = a.grad_var.data ? a.grad_var.plane(b, c) : nullptr;
                  const int64_t e0 = max64(0, h0 - g.rh), e1 = min64(g.H, h1 + g.rh);
                  const T s = band_shift(x, g.W, e0, e1);
                  T* coef = scratch + sweep_size;
                  sweep<T, 2>(g, e0, e1, carve_sweep_buffers(g, 2, scratch), SingleRows<T>{x, g.W, s},
                              MeanVarCoefficients<T>{gm, gv, coef, g.W, g.Wp, e0, array_stride});
                  sweep<T, 3>(g, h0, h1, carve_sweep_buffers(g, 3, scratch),
                              CoefficientRows<T, 3>{coef, g.Wp, e0, array_stride},
                              MeanVarGradient<T>{x, a.grad_x + plane * HW, g.W, s});
                });
}

template <typename T>
constexpr LocalStatsKernels<T> make_table() {
  return {.transform_forward = &transform_forward<T>,
          .transform_backward = &transform_backward<T>,
          .mean_var_forward = &mean_var_forward<T>,
          .mean_var_backward = &mean_var_backward<T>};
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(LocalStatsKernels, local_stats_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(LocalStatsKernels, local_stats_kernels, make_table, double)

}  // namespace facekernels::cpu
