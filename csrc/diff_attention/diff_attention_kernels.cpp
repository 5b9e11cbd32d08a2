// CPU epilogues of diff_attention, compiled once per SIMD level (FK_CPU_CAPABILITY).
//
// Each kernel walks the rows of one score tile (the driver's GEMM has just written it, so it is in this
// core's cache) and does the softmax arithmetic of both maps in a few vector passes per row: a row of
// a few thousand floats stays in L1 between passes. The exponential is the dominant cost (2 T S of them
// per head), so float32 uses a vectorised exp: Cody-Waite reduction x = n ln2 + r with |r| <= ln2 / 2,
// a degree-7 polynomial for e^r (relative error about 2 ulp), and 2^n added into the exponent bits;
// arguments below -87 (e^x under float32's smallest normal, and the causal mask's -inf) give 0. float64
// uses the C library's exp lane by lane (the reference dtype: exact rather than fast).
//
// Row sums are accumulated in vector lanes of T and added to float64 once per row.
//
// Every logit s * scale goes through logit(), which rounds it to T as an operation of its own: the row
// maxima are maxima of these rounded logits, and every exponent's argument is logit - shift with the same
// rounded value (shift: the row maximum, or the lse = maximum + log(sum) >= maximum). So the argument is
// <= 0, and 0 at the maximum when the shift is the maximum. Written as `s * scale - shift`, GCC (whose default is
// -ffp-contract=fast) fuses it at the FMA levels into one multiply-subtract that uses the exact product:
// up to half an ulp of the logit above the rounded maximum, e^512 = inf for a float32 logit near 1e10
// (e^8192 for float64 near 1e20) and then inf / inf = NaN, where the baseline level and eager softmax are
// finite.
#include <cmath>
#include <cstdint>

#include "core/cpu_exp.h"
#include "core/cpu_simd.h"
#include "diff_attention/diff_attention_kernels.h"

namespace facekernels::cpu {
namespace {

template <typename T>
constexpr int L = kLanes<T>;

template <typename T>
inline T neg_inf() {
  return -__builtin_inf();
}

template <typename T>
inline T scalar_exp(T x) {
  if constexpr (sizeof(T) == 4) {
    Vec<T> v = broadcast<T>(x);
    return vexp<T>(v)[0];
  } else {
    return __builtin_exp(x);
  }
}

template <typename T>
inline T hmax(Vec<T> v) {
  T m = v[0];
  for (int i = 1; i < L<T>; ++i) m = v[i] > m ? v[i] : m;
  return m;
}

template <typename T>
inline Vec<T> vmax(Vec<T> a, Vec<T> b) {
  return a > b ? a : b;
}

// v itself, opaque to the optimiser: an empty asm statement takes v in a register and gives it back, so
// whatever produced v (a product) cannot be fused with what consumes it. Not -ffp-contract=off for the
// file (the exponential's polynomial wants its FMAs), nor GCC 12's __builtin_assoc_barrier (lowered lane by
// lane on 512-bit vectors: twice the epilogue's time); this costs one multiply per vector, a few per cent
// of the epilogue.
template <typename V>
inline V opaque(V v) {
#if defined(__x86_64__) || defined(__i386__)
#if defined(FK_CPU_CAPABILITY_AVX512) && !defined(__AVX512F__)
  constexpr bool fits_register = sizeof(V) <= 32;  // the AVX-512 emulation build: 64-byte vectors, AVX2 registers
#else
  constexpr bool fits_register = true;
#endif
  if constexpr (fits_register) {
    __asm__("" : "+v"(v));
  } else {
    __asm__("" : "+m"(v));
  }
#elif defined(__aarch64__)
  __asm__("" : "+w"(v));
#else
  __asm__("" : "+m"(v));
#endif
  return v;
}

// x * scale rounded to T (per lane) as an operation of its own (the file's comment says why).
template <typename V, typename S>
inline V logit(V x, S scale) {
  return opaque(x * scale);
}

// The number of visible keys of tile row r (keys k0 .. k0 + n - 1 of the tile are visible), clipped to
// [0, cols].
template <typename T>
inline int64_t visible(const DiffTile<T>& t, int64_t r) {
  if (!t.causal) return t.cols;
  const int64_t n = t.q0 + r - t.k0 + 1;
  return n < 0 ? 0 : (n > t.cols ? t.cols : n);
}

// max_j s[j] * scale over j < n.
template <typename T>
inline T row_max(const T* s, int64_t n, T scale) {
  Vec<T> m = broadcast<T>(neg_inf<T>());
  int64_t j = 0;
  for (; j + L<T> <= n; j += L<T>) m = vmax<T>(m, logit(load(s + j), scale));
  T out = hmax<T>(m);
  for (; j < n; ++j) {
    const T x = logit(s[j], scale);
    out = x > out ? x : out;
  }
  return out;
}

// s[j] := exp(s[j] * scale - shift) for j < n (0 for n <= j < cols); returns the sum.
template <typename T>
inline double exp_row(T* s, int64_t n, int64_t cols, T scale, T shift) {
  Vec<T> acc = {};
  const Vec<T> sh = broadcast<T>(shift);
  int64_t j = 0;
  for (; j + L<T> <= n; j += L<T>) {
    const Vec<T> e = vexp<T>(logit(load(s + j), scale) - sh);
    acc += e;
    store(s + j, e);
  }
  double sum = horizontal_sum<T>(acc);
  for (; j < n; ++j) {
    const T e = scalar_exp<T>(logit(s[j], scale) - shift);
    sum += e;
    s[j] = e;
  }
  for (; j < cols; ++j) s[j] = 0;
  return sum;
}

template <typename T>
void forward_single(const DiffTile<T>& t, T* lse1, T* lse2) {
  for (int64_t r = 0; r < t.rows; ++r) {
    T* a = t.s1 + r * t.cols;
    T* b = t.s2 + r * t.cols;
    const int64_t n = visible(t, r);
    const T m1 = row_max(a, n, t.scale), m2 = row_max(b, n, t.scale);
    const double l1 = exp_row(a, n, t.cols, t.scale, m1);
    const double l2 = exp_row(b, n, t.cols, t.scale, m2);
    lse1[r] = static_cast<T>(m1 + std::log(l1));
    lse2[r] = static_cast<T>(m2 + std::log(l2));
    const Vec<T> c1 = broadcast<T>(static_cast<T>(1.0 / l1));
    const Vec<T> c2 = broadcast<T>(static_cast<T>(t.lam / l2));
    int64_t j = 0;
    for (; j + L<T> <= n; j += L<T>) store(a + j, load(a + j) * c1 - load(b + j) * c2);
    for (; j < n; ++j) a[j] = a[j] * c1[0] - b[j] * c2[0];
    // masked entries are already 0 in both rows
  }
}

// Running (m, l) of one map's row updated with the n visible entries of s.
template <typename T>
inline void update_stats(const T* s, int64_t n, T scale, T& m, T& l) {
  if (n == 0) return;
  const T mb = row_max(s, n, scale);
  const T mnew = mb > m ? mb : m;
  Vec<T> acc = {};
  const Vec<T> sh = broadcast<T>(mnew);
  int64_t j = 0;
  for (; j + L<T> <= n; j += L<T>) acc += vexp<T>(logit(load(s + j), scale) - sh);
  double sum = horizontal_sum<T>(acc);
  for (; j < n; ++j) sum += scalar_exp<T>(logit(s[j], scale) - mnew);
  const T rescale = m == neg_inf<T>() ? T(0) : scalar_exp<T>(m - mnew);
  l = static_cast<T>(l * rescale + sum);
  m = mnew;
}

template <typename T>
void forward_stats(const DiffTile<T>& t, T* m1, T* l1, T* m2, T* l2) {
  for (int64_t r = 0; r < t.rows; ++r) {
    const int64_t n = visible(t, r);
    update_stats(t.s1 + r * t.cols, n, t.scale, m1[r], l1[r]);
    update_stats(t.s2 + r * t.cols, n, t.scale, m2[r], l2[r]);
  }
}

template <typename T>
void forward_probs(const DiffTile<T>& t, const T* lse1, const T* lse2) {
  for (int64_t r = 0; r < t.rows; ++r) {
    T* a = t.s1 + r * t.cols;
    const T* b = t.s2 + r * t.cols;
    const int64_t n = visible(t, r);
    const Vec<T> sh1 = broadcast<T>(lse1[r]), sh2 = broadcast<T>(lse2[r]);
    int64_t j = 0;
    for (; j + L<T> <= n; j += L<T>) {
      const Vec<T> p1 = vexp<T>(logit(load(a + j), t.scale) - sh1);
      store(a + j, p1 - t.lam * vexp<T>(logit(load(b + j), t.scale) - sh2));
    }
    for (; j < n; ++j) {
      a[j] = scalar_exp<T>(logit(a[j], t.scale) - lse1[r]) - t.lam * scalar_exp<T>(logit(b[j], t.scale) - lse2[r]);
    }
    for (; j < t.cols; ++j) a[j] = 0;
  }
}

template <typename T>
void backward_rowsums(const DiffTile<T>& t, const T* lse1, const T* lse2, double* d1, double* d2, bool store_p) {
  for (int64_t r = 0; r < t.rows; ++r) {
    T* a = t.s1 + r * t.cols;
    T* b = t.s2 + r * t.cols;
    const T* g = t.dpv + r * t.cols;
    const int64_t n = visible(t, r);
    const Vec<T> sh1 = broadcast<T>(lse1[r]), sh2 = broadcast<T>(lse2[r]);
    Vec<T> acc1 = {}, acc2 = {};
    int64_t j = 0;
    for (; j + L<T> <= n; j += L<T>) {
      const Vec<T> p1 = vexp<T>(logit(load(a + j), t.scale) - sh1);
      const Vec<T> p2 = vexp<T>(logit(load(b + j), t.scale) - sh2);
      const Vec<T> gv = load(g + j);
      acc1 += p1 * gv;
      acc2 += p2 * gv;
      if (store_p) {
        store(a + j, p1);
        store(b + j, p2);
      }
    }
    double s1 = horizontal_sum<T>(acc1), s2 = horizontal_sum<T>(acc2);
    for (; j < n; ++j) {
      const T p1 = scalar_exp<T>(logit(a[j], t.scale) - lse1[r]);
      const T p2 = scalar_exp<T>(logit(b[j], t.scale) - lse2[r]);
      s1 += p1 * g[j];
      s2 += p2 * g[j];
      if (store_p) {
        a[j] = p1;
        b[j] = p2;
      }
    }
    d1[r] += s1;
    d2[r] += s2;
  }
}

template <typename T>
void backward_grads(const DiffTile<T>& t, const T* lse1, const T* lse2, const double* d1, const double* d2,
                    bool stored) {
  for (int64_t r = 0; r < t.rows; ++r) {
    T* a = t.s1 + r * t.cols;
    T* b = t.s2 + r * t.cols;
    T* g = t.dpv + r * t.cols;
    const int64_t n = visible(t, r);
    const Vec<T> sh1 = broadcast<T>(lse1[r]), sh2 = broadcast<T>(lse2[r]);
    const T dd1 = static_cast<T>(d1[r]), dd2 = static_cast<T>(d2[r]);
    const T c1 = t.scale, c2 = -t.lam * t.scale;
    int64_t j = 0;
    for (; j + L<T> <= n; j += L<T>) {
      const Vec<T> p1 = stored ? load(a + j) : vexp<T>(logit(load(a + j), t.scale) - sh1);
      const Vec<T> p2 = stored ? load(b + j) : vexp<T>(logit(load(b + j), t.scale) - sh2);
      const Vec<T> gv = load(g + j);
      store(a + j, c1 * p1 * (gv - dd1));
      store(b + j, c2 * p2 * (gv - dd2));
      store(g + j, p1 - t.lam * p2);
    }
    for (; j < n; ++j) {
      const T p1 = stored ? a[j] : scalar_exp<T>(logit(a[j], t.scale) - lse1[r]);
      const T p2 = stored ? b[j] : scalar_exp<T>(logit(b[j], t.scale) - lse2[r]);
      a[j] = c1 * p1 * (g[j] - dd1);
      b[j] = c2 * p2 * (g[j] - dd2);
      g[j] = p1 - t.lam * p2;
    }
    for (; j < t.cols; ++j) {
      a[j] = 0;
      b[j] = 0;
      g[j] = 0;
    }
  }
}

template <typename T>
void add(T* __restrict__ dst, const T* __restrict__ src, int64_t n) {
  int64_t i = 0;
  for (; i + 4 * L<T> <= n; i += 4 * L<T>) {
    for (int u = 0; u < 4; ++u) store(dst + i + u * L<T>, load(dst + i + u * L<T>) + load(src + i + u * L<T>));
  }
  for (; i < n; ++i) dst[i] += src[i];
}

template <typename T>
constexpr DiffAttentionKernels<T> make_table() {
  return {.forward_single = &forward_single<T>,
          .forward_stats = &forward_stats<T>,
          .forward_probs = &forward_probs<T>,
          .backward_rowsums = &backward_rowsums<T>,
          .backward_grads = &backward_grads<T>,
          .add = &add<T>};
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(DiffAttentionKernels, diff_attention_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(DiffAttentionKernels, diff_attention_kernels, make_table, double)

}  // namespace facekernels::cpu
