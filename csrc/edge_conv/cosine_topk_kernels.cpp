// The top-k selection of cosine_topk, compiled once per SIMD level (FK_CPU_CAPABILITY). The GEMMs run in
// the driver (cosine_topk_cpu.cpp) through torch's BLAS, one tile per thread at a time; these kernels are
// what happens between them, each on the calling thread unless it says otherwise.
//
// cosine_topk. A tile holds raw dot products <x_n, y_m>; scaled by the two inverse norms they are the
// approximate similarities, within (C + 6) u of the float64 similarity (Cauchy-Schwarz bounds the
// GEMM's error by C u |x| |y|, the scalings add a few u). Each row keeps a buffer of candidates: every
// column whose approximate similarity is at least (the k-th largest approximate similarity seen so
// far, the root of a per-row min-heap of k values) - margin, with margin twice that error bound, so a
// column left out is beaten by k others in exact arithmetic too. When a buffer fills it is compacted
// (the candidates the risen threshold rules out are dropped), and once more at the end of the row;
// then the candidates' similarities are recomputed in float64 from the inputs, and the k best by
// (similarity descending, index ascending) are written: equal columns (duplicate gallery vectors) tie
// exactly whatever rounding the GEMM gave them at their positions, and the smaller index
// wins, as torch.topk on the exact values. If near-ties keep more than half a full buffer within the
// margin, the compaction recomputes those candidates exactly and keeps the k best, so a gallery of
// identical vectors costs one float64 dot product per column and never overflows.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "core/cpu_simd.h"
#include "core/parallel.h"
#include "edge_conv/cosine_topk_kernels.h"

namespace facekernels::cpu {
namespace {

template <typename T>
inline T negative_infinity() {
  return -__builtin_inf();
}

// ---- the selection -----------------------------------------------------------------------------

template <typename T>
void inverse_norms(const T* x, int64_t batch, int64_t channels, int64_t n, double* inv, T* inv_t,
                   int64_t inv_t_stride) {
  constexpr int64_t kChunk = 1024;
  const int64_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for(0, batch * chunks, 1, [&](int64_t begin, int64_t end) {
    for (int64_t task = begin; task < end; ++task) {
      const int64_t b = task / chunks, i0 = (task % chunks) * kChunk, i1 = min64(n, i0 + kChunk);
      double* acc = inv + b * n;
      for (int64_t i = i0; i < i1; ++i) acc[i] = 0;
      for (int64_t c = 0; c < channels; ++c) {
        const T* row = x + (b * channels + c) * n;
        for (int64_t i = i0; i < i1; ++i) {
          const double v = static_cast<double>(row[i]);
          acc[i] += v * v;
        }
      }
      for (int64_t i = i0; i < i1; ++i) {
        const double norm = std::sqrt(acc[i]);
        acc[i] = 1.0 / (norm > 1e-12 ? norm : 1e-12);
        inv_t[b * inv_t_stride + i] = static_cast<T>(acc[i]);
      }
    }
  });
}

// The float64 cosine similarity of x[:, n] and y[:, m]: 16 partial sums (channel c into sum c mod 16),
// added in a fixed tree, whatever the strides or the SIMD level (the contiguous loop vectorises), so
// equal columns give equal values.
template <typename T>
double exact_similarity(const TopkColumns<T>& t, int64_t n, int64_t m) {
  const T* x = t.x_rows != nullptr ? t.x_rows + (n - t.x_row0) * t.channels : t.x + n;
  const T* y = t.y_rows != nullptr ? t.y_rows + (t.y_slot != nullptr ? t.y_slot[m] : m) * t.channels : t.y + m;
  const int64_t sx = t.x_rows != nullptr ? 1 : t.n, sy = t.y_rows != nullptr ? 1 : t.m;
  const int64_t channels = t.channels, full = channels / 16 * 16;
  double acc[16] = {};
  if (sx == 1 && sy == 1) {
    for (int64_t c = 0; c < full; c += 16) {
      for (int i = 0; i < 16; ++i) acc[i] += static_cast<double>(x[c + i]) * static_cast<double>(y[c + i]);
    }
  } else {
    for (int64_t c = 0; c < full; c += 16) {
      for (int i = 0; i < 16; ++i) {
        acc[i] += static_cast<double>(x[(c + i) * sx]) * static_cast<double>(y[(c + i) * sy]);
      }
    }
  }
  for (int64_t c = full; c < channels; ++c) {
    acc[c - full] += static_cast<double>(x[c * sx]) * static_cast<double>(y[c * sy]);
  }
  for (int w = 8; w >= 1; w /= 2) {
    for (int i = 0; i < w; ++i) acc[i] += acc[i + w];
  }
  return acc[0] * t.inv_x[n] * t.inv_y[m];
}

// a ranks before b: larger similarity, then smaller index. NaN ranks last.
inline bool ranks_before(double va, int32_t ia, double vb, int32_t ib) {
  if (va != va) return false;
  if (vb != vb) return true;
  return va > vb || (va == vb && ia < ib);
}

// The indices of the `want` best as order[0 .. want) in rank order, robust to any want <= count.
inline void rank_best(int32_t* order, int64_t count, int64_t want, const double* exact, const int32_t* index) {
  for (int64_t i = 0; i < count; ++i) order[i] = static_cast<int32_t>(i);
  if (count == 0 || want == 0) return;
  // Heap-pop leaves the best `want` at the end in reverse order; copy them out to the front.
  auto better = [&](int32_t a, int32_t b) { return ranks_before(exact[a], index[a], exact[b], index[b]); };
  auto sift_down = [&](int64_t i, int64_t size) {
    while (true) {
      const int64_t l = 2 * i + 1;
      if (l >= size) return;
      int64_t best = l;
      if (l + 1 < size && better(order[l + 1], order[l])) best = l + 1;
      if (!better(order[best], order[i])) return;
      const int32_t t = order[i];
      order[i] = order[best];
      order[best] = t;
      i = best;
    }
  };
  for (int64_t i = count / 2 - 1; i >= 0; --i) sift_down(i, count);
  int64_t size = count;
  for (int64_t p = 0; p < want; ++p) {
    const int32_t t = order[0];
    order[0] = order[size - 1];
    order[size - 1] = t;
    --size;
    sift_down(0, size);
  }
  // order[count - 1] is the best, order[count - want] the want-th: reverse that tail into the front.
  for (int64_t lo = count - want, hi = count - 1; lo < hi; ++lo, --hi) {
    const int32_t t = order[lo];
    order[lo] = order[hi];
    order[hi] = t;
  }
  if (count != want) {
    for (int64_t p = 0; p < want; ++p) order[p] = order[count - want + p];
  }
}

template <typename T>
void compact(const TopkColumns<T>& t, int64_t n, int64_t r, const TopkState<T>& s) {
  T* approx = s.approx + r * s.capacity;
  int32_t* index = s.index + r * s.capacity;
  const int64_t count = s.count[r];
  const T cut = s.threshold[r] - t.margin;
  int64_t kept = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (approx[i] >= cut) {
      approx[kept] = approx[i];
      index[kept] = index[i];
      ++kept;
    }
  }
  if (kept > s.capacity / 2) {
    // Near-ties fill the buffer: rank them exactly and keep the k best (a column dropped here is beaten
    // by k others in exact arithmetic).
    for (int64_t i = 0; i < kept; ++i) s.exact[i] = exact_similarity(t, n, index[i]);
    rank_best(s.order, kept, s.k, s.exact, index);
    // Gather the k best to the front, through scratch (order has capacity >= 2k entries).
    for (int64_t p = 0; p < s.k; ++p) s.select[p] = approx[s.order[p]];
    int32_t* moved = s.order + s.k;  // free room: order holds `kept` <= capacity entries
    for (int64_t p = 0; p < s.k; ++p) moved[p] = index[s.order[p]];
    for (int64_t p = 0; p < s.k; ++p) {
      approx[p] = s.select[p];
      index[p] = moved[p];
    }
    kept = s.k;
  }
  s.count[r] = kept;
}

// Offers v to the row's min-heap of the k largest approximate similarities; returns the k-th largest
// so far (-inf while fewer than k were offered).
template <typename T>
inline T heap_offer(T* heap, int64_t& filled, int64_t k, T v) {
  if (filled < k) {
    int64_t i = filled++;
    while (i > 0) {
      const int64_t parent = (i - 1) / 2;
      if (!(heap[parent] > v)) break;
      heap[i] = heap[parent];
      i = parent;
    }
    heap[i] = v;
    return filled == k ? heap[0] : negative_infinity<T>();
  }
  if (v > heap[0]) {
    int64_t i = 0;
    while (true) {
      const int64_t l = 2 * i + 1;
      if (l >= k) break;
      int64_t c = l;
      if (l + 1 < k && heap[l + 1] < heap[l]) c = l + 1;
      if (!(heap[c] < v)) break;
      heap[i] = heap[c];
      i = c;
    }
    heap[i] = v;
  }
  return heap[0];
}

constexpr int64_t kWholeRow = 4096;

// A row whose every column is in this tile, for small k: the k-th largest approximate similarity by k
// passes of a vector max over a copy of the row (each pass takes out the first position of its max),
// then every column within the margin of it as a candidate, in column order. Returns false, leaving
// the row's count, threshold and heap untouched, when they would not fit the row's buffer (near-ties:
// the heap path compacts).
template <typename T>
bool topk_whole_row(const TopkColumns<T>& t, const T* row, T scale, int64_t cols, const TopkState<T>& s,
                    int64_t r) {
  constexpr int L = kLanes<T>;
  const T* inv_y = t.inv_y_t;
  const int64_t padded = round_up(cols, L);
  T copy[kWholeRow + 64];
  const Vec<T> lowest = broadcast<T>(negative_infinity<T>());
  for (int64_t j = 0; j < padded; j += L) {
    Vec<T> v = load(row + j) * load(inv_y + j) * scale;
    if (j + L > cols) {
      for (int l = static_cast<int>(cols - j); l < L; ++l) v[l] = negative_infinity<T>();
    }
    store(copy + j, v == v ? v : lowest);  // NaN never selected
  }
  T kth = negative_infinity<T>();
  for (int64_t pass = 0; pass < s.k; ++pass) {
    Vec<T> hi = lowest;
    for (int64_t j = 0; j < padded; j += L) {
      const Vec<T> v = load(copy + j);
      hi = v > hi ? v : hi;
    }
    T best = hi[0];
    for (int l = 1; l < L; ++l) best = hi[l] > best ? hi[l] : best;
    kth = best;
    if (!(best > negative_infinity<T>())) break;  // fewer than k finite values: every one is a candidate
    const Vec<T> b = broadcast<T>(best);
    for (int64_t j = 0; j < padded; j += L) {
      const uint32_t bits = lane_bits(load(copy + j) == b);
      if (bits != 0) {
        copy[j + __builtin_ctz(bits)] = negative_infinity<T>();
        break;
      }
    }
  }
  const T cut = kth - t.margin;
  const Vec<T> c = broadcast<T>(cut);
  // The candidates in column order; a row whose near-ties overflow the buffer goes back to the streaming
  // selection, which starts from an empty buffer and overwrites what was written here.
  T* approx = s.approx + r * s.capacity;
  int32_t* index = s.index + r * s.capacity;
  int64_t count = 0;
  for (int64_t j = 0; j < cols; j += L) {
    const Vec<T> v = load(row + j) * load(inv_y + j) * scale;
    uint32_t bits = lane_bits(v >= c);
    if (cols - j < L) bits &= (uint32_t{1} << (cols - j)) - 1;
    if (count + __builtin_popcount(bits) > s.capacity) return false;
    while (bits != 0) {
      const int l = __builtin_ctz(bits);
      bits &= bits - 1;
      approx[count] = v[l];
      index[count] = static_cast<int32_t>(j + l);
      ++count;
    }
  }
  s.count[r] = count;
  s.threshold[r] = kth;
  s.filled[r] = s.k;
  return true;
}

template <typename T>
void topk_tile(const TopkColumns<T>& t, const T* sim, int64_t n0, int64_t rows, int64_t c0, int64_t cols,
               const TopkState<T>& s) {
  constexpr int L = kLanes<T>;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = n0 + r;
    const T* row = sim + r * cols;
    const T* inv_y = t.inv_y_t + c0;
    const T scale = static_cast<T>(t.inv_x[n]);
    T* approx = s.approx + r * s.capacity;
    int32_t* index = s.index + r * s.capacity;
    if (c0 == 0 && cols == t.m && s.filled[r] == 0 && s.k <= 16 && cols <= kWholeRow &&
        topk_whole_row(t, row, scale, cols, s, r)) {
      continue;
    }
    T cut = s.threshold[r] - t.margin;
    T seed = negative_infinity<T>();  // a lower bound of the cut while the heap fills
    if (s.filled[r] < s.k && s.k <= L && cols >= L * s.k) {
      // Before the row holds k values, seed the cut from the tile: the lane maxima are L of its values,
      // so the row's final k-th largest is at least their k-th largest. Without this the first vectors
      // of a row offer every lane to the heap (most of the selection's time for small M).
      const int64_t full = cols / L * L;
      Vec<T> hi = load(row) * load(inv_y) * scale;
      for (int64_t j = L; j < full; j += L) {
        const Vec<T> v = load(row + j) * load(inv_y + j) * scale;
        hi = v > hi ? v : hi;
      }
      T lanes[L];
      store(lanes, hi);
      // The k-th largest lane by k rounds of selection (NaN lanes never chosen: then no seed).
      T kth = negative_infinity<T>();
      for (int64_t round = 0; round < s.k; ++round) {
        int best = -1;
        for (int l = 0; l < L; ++l) {
          if (lanes[l] == lanes[l] && (best < 0 || lanes[l] > lanes[best])) best = l;
        }
        if (best < 0) {
          kth = negative_infinity<T>();
          break;
        }
        kth = lanes[best];
        lanes[best] = static_cast<T>(__builtin_nan(""));
      }
      seed = kth - t.margin;
      if (seed > cut) cut = seed;
    }
    // The row's selection state in registers; written back before a compaction and at the end.
    int64_t count = s.count[r], filled = s.filled[r];
    T threshold = s.threshold[r];
    T* heap = s.heap + r * s.k;
    for (int64_t j = 0; j < cols; j += L) {
      const Vec<T> v = load(row + j) * load(inv_y + j) * scale;
      uint32_t bits = lane_bits(v >= broadcast<T>(cut));
      if (bits == 0) continue;
      if (cols - j < L) bits &= (uint32_t{1} << (cols - j)) - 1;
      while (bits != 0) {
        const int l = __builtin_ctz(bits);
        bits &= bits - 1;
        const T value = v[l];
        if (!(value >= cut)) continue;  // the cut rose within this vector
        approx[count] = value;
        index[count] = static_cast<int32_t>(c0 + j + l);
        ++count;
        threshold = heap_offer(heap, filled, s.k, value);
        cut = threshold - t.margin;
        if (seed > cut) cut = seed;
        if (count == s.capacity) {
          s.count[r] = count;
          s.threshold[r] = threshold;
          compact(t, n, r, s);
          count = s.count[r];
        }
      }
    }
    s.count[r] = count;
    s.filled[r] = filled;
    s.threshold[r] = threshold;
  }
}

template <typename T>
void topk_prune(const TopkColumns<T>& t, int64_t n0, int64_t rows, const TopkState<T>& s) {
  for (int64_t r = 0; r < rows; ++r) {
    if (s.count[r] > s.k) compact(t, n0 + r, r, s);
  }
}

template <typename T>
void topk_finish(const TopkColumns<T>& t, int64_t n0, int64_t rows, const TopkState<T>& s, T* values,
                 int64_t* indices) {
  const int64_t k = s.k;
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t n = n0 + r;
    const int32_t* index = s.index + r * s.capacity;
    // Drop the candidates the final threshold rules out before paying for their float64 similarity.
    if (s.count[r] > k) compact(t, n, r, s);
    const int64_t count = s.count[r];
    for (int64_t i = 0; i < count; ++i) s.exact[i] = exact_similarity(t, n, index[i]);
    const int64_t want = min64(k, count);
    rank_best(s.order, count, want, s.exact, index);
    T* v = values + r * k;
    int64_t* o = indices + r * k;
    for (int64_t p = 0; p < want; ++p) {
      v[p] = static_cast<T>(s.exact[s.order[p]]);
      o[p] = index[s.order[p]];
    }
    // Only NaN similarities leave a row short of k candidates.
    for (int64_t p = want; p < k; ++p) {
      v[p] = static_cast<T>(__builtin_nan(""));
      o[p] = -1;
    }
    s.count[r] = 0;
    s.filled[r] = 0;
    s.threshold[r] = negative_infinity<T>();
  }
}

// In the unnamed namespace: each SIMD level has its own (an inline function of external linkage would
// be one definition for every level).
template <typename T>
constexpr CosineTopkKernels<T> make_table() {
  return {
      .inverse_norms = &inverse_norms<T>,
      .topk_tile = &topk_tile<T>,
      .topk_prune = &topk_prune<T>,
      .topk_finish = &topk_finish<T>
  };
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(CosineTopkKernels, cosine_topk_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(CosineTopkKernels, cosine_topk_kernels, make_table, double)

}  // namespace facekernels::cpu
