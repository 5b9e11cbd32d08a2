// CPU kernels of alignment_energy, compiled once per SIMD level (FK_CPU_CAPABILITY).
//
// The binding walks the strict upper triangle of the C x C pair matrix in tiles and computes each
// tile's similarity values with torch's BLAS into buffers it reuses; these kernels are the epilogues
// that turn one tile into per-point sums in a single pass, crediting every pair (c, c') with c < c' to
// both c and c' (D and V are symmetric, so the lower triangle is never computed).
//
// Distances. For metric "cosine" the prepared points are unit rows and D = 1 - s with s the dot
// product; for "euclidean" they are the raw rows and D = sqrt(|p|^2 + |p'|^2 - 2 s). Rounding makes D
// of coincident points (exact duplicates, or for cosine, points with the same direction) a small
// number of either sign instead of 0, which 1 / D would blow up, so a computed D is *snapped to 0*
// when it is within the rounding bound of the computation:
//   cosine:     D <= tol                        with tol = (dim + 8) u
//   euclidean:  d^2 <= tol (|p|^2 + |p'|^2)     with the same tol
// (u the unit roundoff of the dtype: 2^-24 for float32, 2^-53 for float64; dim u bounds the error of a
// dim-term dot product, the 8 covers the normalisation and the subtraction). The definitions
// then apply to the snapped D as written: inverse_distance skips D == 0 ("D > 0"), and knn sees every
// coincident neighbour at exactly distance 0, where ties go to the smaller index.
//
// Threads. The binding gives each thread whole tiles, GEMMs included (BLAS runs single-threaded inside
// the parallel region), so a tile's similarity values are written and read by one core while they are
// in its cache, and no barrier separates a GEMM from its epilogue. Every kernel here handles one tile
// on the calling thread.
//
// inverse_distance: per element w = D > 0 ? 1 / D : 0 and w (1 - s_v); each tile row accumulates both
// in vector registers (float32: flushed into float64 every kFlush vectors, so no float32 partial sum
// has more than kFlush terms), and each column gets the float sum over a group of kGroup rows, added
// into the thread's float64 sums. The binding adds the threads' sums in a fixed order: for a given
// thread count the result is deterministic.
//
// knn: a max-heap of k (D, index) pairs per point, ordered lexicographically, so the smaller index wins
// among equal distances whatever the order candidates arrive in. Each element of the tile is compared
// (a vector at a time) with the largest distance in the heaps of its row and of its column (held per
// tile in a thread-local copy for the columns), so once the heaps are full almost every element costs
// two compares. A pair that may enter a heap has its D recomputed in float64 from the prepared rows,
// and that value is what the heaps hold: BLAS does not promise bitwise-equal results for equal rows at
// different positions of a GEMM, so tile values alone would break ties between duplicates by rounding
// noise instead of by index. The compare against the heap therefore allows a margin (KnnHeaps) that
// covers the tile value's error. The heaps are shared by the threads (see KnnHeaps for the locking);
// the final heaps hold the k smallest keys of every point whatever the order of the offers, so the
// result is deterministic. V is computed only for the k neighbours found, at the end, as float64 dot
// products of the unit directions.
#include <cmath>
#include <cstdint>

#include "alignment_energy/alignment_energy_kernels.h"
#include "core/cpu_simd.h"
#include "core/parallel.h"

namespace facekernels::cpu {
namespace {

constexpr int kGroup = 4;         // rows processed together (their column sums are added in T first)

template <typename T>
constexpr int kFlush = sizeof(T) == 4 ? 16 : (1 << 30);  // vectors per float32 row partial sum

template <typename T>
using Mask = decltype(Vec<T>{} < Vec<T>{});

template <typename T>
inline Vec<T> lane_offsets() {
  Vec<T> v;
  for (int i = 0; i < kLanes<T>; ++i) v[i] = static_cast<T>(i);
  return v;
}

// Half of a float vector, as many lanes as a double vector.
typedef float HalfFloat __attribute__((vector_size(kVectorBytes / 2)));

// v's lanes added into dst[0 .. lanes) in float64.
template <typename T>
inline void add_to_double(double* dst, Vec<T> v) {
  if constexpr (sizeof(T) == 8) {
    store(dst, load(dst) + v);
  } else {
    HalfFloat lo, hi;
    __builtin_memcpy(&lo, &v, sizeof(lo));
    __builtin_memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
    constexpr int D = kLanes<double>;
    store(dst, load(dst) + __builtin_convertvector(lo, Vec<double>));
    store(dst + D, load(dst + D) + __builtin_convertvector(hi, Vec<double>));
  }
}

// The snapped distance D of one row against a vector of columns (see the header comment).
template <typename T, bool Euclidean>
struct Distance {
  T tolerance;
  inline Vec<T> operator()(Vec<T> s, T row_sq_norm, Vec<T> col_sq_norms) const {
    const Vec<T> zero = {};
    if constexpr (Euclidean) {
      const Vec<T> sum = col_sq_norms + row_sq_norm;
      const Vec<T> d2 = sum - (s + s);
      const Mask<T> snap = d2 <= sum * tolerance;  // false for NaN, which stays NaN
      return snap ? zero : vsqrt<T>(snap ? zero : d2);
    } else {
      const Vec<T> d = T(1) - s;
      return d <= broadcast<T>(tolerance) ? zero : d;
    }
  }
};

// The first column of the tile a row uses: columns are used only past the row (strict upper triangle).
inline int64_t first_column(int64_t r0, int64_t r, int64_t c0) {
  const int64_t j = r0 + r + 1 - c0;
  return j > 0 ? j : 0;
}

// ---- prepare --------------------------------------------------------------------------------------

template <typename T>
int64_t prepare(const PrepareArgs<T>& a) {
  const int64_t n = a.n, dim = a.dim;
  Scratch<double> sq(n);
  parallel_for(0, n, 64, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const T* x = a.data + c * a.stride_row;
      T* out = a.out + c * dim;
      double s = 0;
      for (int64_t i = 0; i < dim; ++i) {
        const double v = static_cast<double>(x[i * a.stride_col]);
        s += v * v;
      }
      sq[c] = s;
      if (a.normalise) {
        const double inv = s > 0 ? 1.0 / std::sqrt(s) : 0.0;
        for (int64_t i = 0; i < dim; ++i) out[i] = static_cast<T>(static_cast<double>(x[i * a.stride_col]) * inv);
        if (a.sq_norms) {
          double t = 0;
          for (int64_t i = 0; i < dim; ++i) t += static_cast<double>(out[i]) * static_cast<double>(out[i]);
          a.sq_norms[c] = static_cast<T>(t);
        }
      } else {
        for (int64_t i = 0; i < dim; ++i) out[i] = x[i * a.stride_col];
        if (a.sq_norms) a.sq_norms[c] = static_cast<T>(s);
      }
    }
  });
  if (a.normalise) {
    for (int64_t c = 0; c < n; ++c) {
      if (sq[c] == 0) return c;  // (a NaN row is not zero: its NaN propagates to the results)
    }
  }
  return -1;
}

// ---- inverse_distance -----------------------------------------------------------------------------

template <typename T, bool Euclidean>
void inverse_distance_tile(const TileArgs<T>& a, double* num, double* den) {
  constexpr int L = kLanes<T>;
  const int64_t rows = a.rows, cols = a.cols, r0 = a.r0, c0 = a.c0;
  const Distance<T, Euclidean> distance{a.tolerance};
  const Vec<T> offsets = lane_offsets<T>();
  const Vec<T> zero = {};
  double* col_num = num + c0;
  double* col_den = den + c0;

  for (int64_t rfirst = 0; rfirst < rows; rfirst += kGroup) {
    const int count = static_cast<int>(min64(kGroup, rows - rfirst));
    const T* sp[kGroup];
    const T* sv[kGroup];
    T row_sq[kGroup];
    T row_index[kGroup];  // the row's point minus c0, as T (exact: tiles are far below 2^24)
    for (int q = 0; q < kGroup; ++q) {
      const int64_t r = rfirst + (q < count ? q : 0);
      sp[q] = a.sim_points + r * cols;
      sv[q] = a.sim_directions + r * cols;
      row_sq[q] = Euclidean ? a.sq_norms[r0 + r] : T(0);
      // A missing row (the last group) is masked out entirely: every column is "below" it.
      row_index[q] = q < count ? static_cast<T>(r0 + r - c0) : static_cast<T>(cols + L);
    }
    const int64_t j_lo = first_column(r0, rfirst, c0) / L * L;
    const int64_t j_hi = count == kGroup ? first_column(r0, rfirst + kGroup - 1, c0) : cols + L;
    double row_num[kGroup] = {}, row_den[kGroup] = {};
    Vec<T> acc_num[kGroup], acc_den[kGroup];
    for (int q = 0; q < kGroup; ++q) acc_num[q] = acc_den[q] = zero;
    int pending = 0;
    for (int64_t j = j_lo; j < cols; j += L) {
      const bool full = j >= j_hi && j + L <= cols;
      const Vec<T> col_sq = Euclidean ? load(a.sq_norms + c0 + j) : zero;
      Vec<T> sum_num = zero, sum_den = zero;
      for (int q = 0; q < kGroup; ++q) {
        const Vec<T> d = distance(load(sp[q] + j), row_sq[q], col_sq);
        Mask<T> keep = ~(d <= zero);  // D > 0, or NaN (propagated, not hidden)
        if (!full) {
          const Vec<T> column = offsets + static_cast<T>(j);
          keep = keep & (column > row_index[q]) & (column < static_cast<T>(cols));
        }
        // Lanes not kept are exact zeros even where the buffer holds garbage past a row's end.
        const Vec<T> w = keep ? T(1) / (keep ? d : broadcast<T>(1)) : zero;
        const Vec<T> wv = keep ? w * (T(1) - load(sv[q] + j)) : zero;
        acc_num[q] += wv;
        acc_den[q] += w;
        sum_num += wv;
        sum_den += w;
      }
      add_to_double<T>(col_num + j, sum_num);
      add_to_double<T>(col_den + j, sum_den);
      if (++pending == kFlush<T>) {
        for (int q = 0; q < kGroup; ++q) {
          row_num[q] += horizontal_sum<T, double>(acc_num[q]);
          row_den[q] += horizontal_sum<T, double>(acc_den[q]);
          acc_num[q] = acc_den[q] = zero;
        }
        pending = 0;
      }
    }
    for (int q = 0; q < count; ++q) {
      num[r0 + rfirst + q] += row_num[q] + horizontal_sum<T, double>(acc_num[q]);
      den[r0 + rfirst + q] += row_den[q] + horizontal_sum<T, double>(acc_den[q]);
    }
  }
}

template <typename T>
void inverse_distance_tile_dispatch(const TileArgs<T>& a, double* num, double* den) {
  if (a.euclidean) inverse_distance_tile<T, true>(a, num, den);
  else inverse_distance_tile<T, false>(a, num, den);
}

// ---- knn ------------------------------------------------------------------------------------------

inline bool key_less(double d1, int32_t i1, double d2, int32_t i2) {
  return d1 < d2 || (d1 == d2 && i1 < i2);
}

template <typename T>
inline T atomic_read(const T* p) {
  T v;
  __atomic_load(p, &v, __ATOMIC_RELAXED);
  return v;
}

template <typename T>
inline void atomic_write(T* p, T v) {
  __atomic_store(p, &v, __ATOMIC_RELAXED);
}

// The smallest T >= x.
template <typename T>
inline T round_up_to(double x) {
  T t = static_cast<T>(x);
  if (static_cast<double>(t) < x) {
    if constexpr (sizeof(T) == 4) t = __builtin_nextafterf(t, __builtin_inff());
    else t = __builtin_nextafter(t, __builtin_inf());
  }
  return t;
}

// Offers (d, index) to point p's heap; returns the heap's threshold afterwards.
template <typename T>
T heap_offer(const KnnHeaps<T>& h, int64_t p, double d, int32_t index) {
  while (__atomic_test_and_set(h.lock + p, __ATOMIC_ACQUIRE)) {
  }
  const int64_t k = h.k;
  double* hd = h.distance + p * k;
  int32_t* hi = h.index + p * k;
  const int64_t n = h.size[p];
  T threshold = atomic_read(h.threshold + p);
  if (n < k) {
    int64_t i = n;
    while (i > 0) {
      const int64_t parent = (i - 1) / 2;
      if (!key_less(hd[parent], hi[parent], d, index)) break;
      hd[i] = hd[parent];
      hi[i] = hi[parent];
      i = parent;
    }
    hd[i] = d;
    hi[i] = index;
    h.size[p] = static_cast<int32_t>(n + 1);
    if (n + 1 == k) threshold = round_up_to<T>(hd[0]);
  } else if (key_less(d, index, hd[0], hi[0])) {
    int64_t i = 0;
    while (true) {
      const int64_t left = 2 * i + 1;
      if (left >= k) break;
      int64_t child = left;
      if (left + 1 < k && key_less(hd[left], hi[left], hd[left + 1], hi[left + 1])) child = left + 1;
      if (!key_less(d, index, hd[child], hi[child])) break;
      hd[i] = hd[child];
      hi[i] = hi[child];
      i = child;
    }
    hd[i] = d;
    hi[i] = index;
    threshold = round_up_to<T>(hd[0]);
  }
  atomic_write(h.threshold + p, threshold);
  __atomic_clear(h.lock + p, __ATOMIC_RELEASE);
  return threshold;
}

// <x, y> and |x - y|^2 in float64.
template <typename T>
double dot_double(const T* x, const T* y, int64_t dim);
template <typename T>
double squared_distance_double(const T* x, const T* y, int64_t dim);

// D of points a and b recomputed in float64 from the prepared rows, snapped like the tile values.
template <typename T, bool Euclidean>
inline double exact_distance(const TileArgs<T>& t, int64_t a, int64_t b) {
  const T* x = t.points + a * t.dim;
  const T* y = t.points + b * t.dim;
  const double tolerance = static_cast<double>(t.tolerance);
  if constexpr (Euclidean) {
    const double d2 = squared_distance_double(x, y, t.dim);
    const double sum = static_cast<double>(t.sq_norms[a]) + static_cast<double>(t.sq_norms[b]);
    return d2 <= tolerance * sum ? 0.0 : __builtin_sqrt(d2);
  } else {
    const double d = 1.0 - dot_double(x, y, t.dim);
    return d <= tolerance ? 0.0 : d;
  }
}

template <typename T, bool Euclidean>
void knn_tile(const TileArgs<T>& a, const KnnHeaps<T>& h, T* column_threshold) {
  constexpr int L = kLanes<T>;
  const int64_t rows = a.rows, cols = a.cols, r0 = a.r0, c0 = a.c0;
  const Distance<T, Euclidean> distance{a.tolerance};
  const Vec<T> offsets = lane_offsets<T>();
  const Vec<T> zero = {};
  for (int64_t j = 0; j < cols; ++j) column_threshold[j] = atomic_read(h.threshold + c0 + j);
  for (int64_t j = cols; j < cols + L; ++j) column_threshold[j] = T(0);

  for (int64_t r = 0; r < rows; ++r) {
    const int64_t p = r0 + r;
    const T* sp = a.sim_points + r * cols;
    const T row_sq = Euclidean ? a.sq_norms[p] : T(0);
    const T row_margin = h.margin[p];
    const int64_t j_first = first_column(r0, r, c0);
    const T row_index = static_cast<T>(p - c0);
    T row_threshold = atomic_read(h.threshold + p);
    for (int64_t j = j_first / L * L; j < cols; j += L) {
      const Vec<T> col_sq = Euclidean ? load(a.sq_norms + c0 + j) : zero;
      const Vec<T> d = distance(load(sp + j), row_sq, col_sq);
      Mask<T> row_hit = d <= broadcast<T>(row_threshold + row_margin);
      Mask<T> col_hit = d <= load(column_threshold + j) + load(h.margin + c0 + j);
      if (j < j_first || j + L > cols) {
        const Vec<T> column = offsets + static_cast<T>(j);
        const Mask<T> valid = (column > row_index) & (column < static_cast<T>(cols));
        row_hit &= valid;
        col_hit &= valid;
      }
      if (!any_lane(row_hit | col_hit)) continue;
      for (int l = 0; l < L; ++l) {
        const int64_t q = c0 + j + l;
        const bool to_row = row_hit[l] && d[l] <= row_threshold + row_margin;
        const bool to_column = col_hit[l] && d[l] <= column_threshold[j + l] + h.margin[q];
        if (!(to_row || to_column)) continue;
        const double exact = exact_distance<T, Euclidean>(a, p, q);
        if (to_row) row_threshold = heap_offer(h, p, exact, static_cast<int32_t>(q));
        if (to_column) column_threshold[j + l] = heap_offer(h, q, exact, static_cast<int32_t>(p));
      }
    }
  }
}

template <typename T>
void knn_tile_dispatch(const TileArgs<T>& a, const KnnHeaps<T>& h, T* scratch) {
  if (a.euclidean) knn_tile<T, true>(a, h, scratch);
  else knn_tile<T, false>(a, h, scratch);
}

// Two float64 vectors from x[i ..]: as many lanes each as a double vector.
template <typename T>
inline void load_double_pair(const T* x, Vec<double>& lo, Vec<double>& hi) {
  constexpr int D = kLanes<double>;
  if constexpr (sizeof(T) == 8) {
    lo = load(x);
    hi = load(x + D);
  } else {
    HalfFloat a, b;
    __builtin_memcpy(&a, x, sizeof(a));
    __builtin_memcpy(&b, x + D, sizeof(b));
    lo = __builtin_convertvector(a, Vec<double>);
    hi = __builtin_convertvector(b, Vec<double>);
  }
}

// sum_i x[i] y[i] (Difference = false) or sum_i (x[i] - y[i])^2 (true), in float64.
template <bool Difference, typename T>
double pair_sum_double(const T* x, const T* y, int64_t dim) {
  constexpr int D = kLanes<double>;
  auto term = [](Vec<double> a, Vec<double> b) {
    if constexpr (Difference) return (a - b) * (a - b);
    else return a * b;
  };
  Vec<double> acc0 = {}, acc1 = {};
  int64_t i = 0;
  for (; i + 2 * D <= dim; i += 2 * D) {
    Vec<double> xa, xb, ya, yb;
    load_double_pair(x + i, xa, xb);
    load_double_pair(y + i, ya, yb);
    acc0 += term(xa, ya);
    acc1 += term(xb, yb);
  }
  const Vec<double> acc = acc0 + acc1;
  double s = 0;
  for (int l = 0; l < D; ++l) s += acc[l];
  for (; i < dim; ++i) {
    const double a = static_cast<double>(x[i]), b = static_cast<double>(y[i]);
    s += Difference ? (a - b) * (a - b) : a * b;
  }
  return s;
}

template <typename T>
double dot_double(const T* x, const T* y, int64_t dim) {
  return pair_sum_double<false>(x, y, dim);
}

template <typename T>
double squared_distance_double(const T* x, const T* y, int64_t dim) {
  return pair_sum_double<true>(x, y, dim);
}

template <typename T>
void knn_finish(const KnnHeaps<T>& h, const T* unit_directions, int64_t n, int64_t dim, double* energy) {
  parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t size = h.size[c];
      const int32_t* hi = h.index + c * h.k;
      double s = 0;
      for (int64_t e = 0; e < size; ++e) {
        s += 1.0 - dot_double(unit_directions + c * dim, unit_directions + static_cast<int64_t>(hi[e]) * dim, dim);
      }
      // A heap short of k entries only happens with NaN distances: the result is then NaN too.
      energy[c] = size == h.k ? s / static_cast<double>(size) : __builtin_nan("");
    }
  });
}

template <typename T>
AlignmentEnergyKernels<T> make_table() {
  return {.prepare = &prepare<T>,
          .inverse_distance_tile = &inverse_distance_tile_dispatch<T>,
          .knn_tile = &knn_tile_dispatch<T>,
          .knn_finish = &knn_finish<T>};
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(AlignmentEnergyKernels, alignment_energy_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(AlignmentEnergyKernels, alignment_energy_kernels, make_table, double)

}  // namespace facekernels::cpu
