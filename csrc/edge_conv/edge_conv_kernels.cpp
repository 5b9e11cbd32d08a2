// CPU kernels of cosine_topk and edge_conv_max, compiled once per SIMD level (FK_CPU_CAPABILITY). The
// GEMMs run in the binding (edge_conv.cpp) through torch's BLAS, one tile per thread at a time; these
// kernels are what happens between them, each on the calling thread unless it says otherwise.
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
//
// edge_conv_max. With X = x[b] as [C, N] rows, z_j = X W_j + bias with
// W_j[p, m] = (w_self - w_edge)[m, p] + sum_{n : idx[b, n, j] = p} w_edge[m, n]: the gather of the
// neighbours is folded into the weights (a scatter-add of rows of w_edge^T, O(N M) per neighbour), so each
// neighbour costs one [C, N] x [N, M] GEMM and the k of a group run as one GEMM against the weights
// laid side by side. The backward uses the same matrices: dX = sum_j dZ_j W_j^T and
// dW_j = X^T dZ_j, from which d(w_self - w_edge)^T = sum_j dW_j and d(w_edge)^T[n] = sum_j dW_j[idx[n, j]].
#include <cmath>
#include <cstdint>

#include "core/cpu_simd.h"
#include "core/parallel.h"
#include "edge_conv/edge_conv_kernels.h"

namespace facekernels::cpu {
namespace {

template <typename T>
using Mask = decltype(Vec<T>{} < Vec<T>{});

template <typename T>
inline T negative_infinity() {
  return -__builtin_inf();
}

// ---- cosine_topk --------------------------------------------------------------------------------

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

// ---- edge_conv_max ------------------------------------------------------------------------------

template <typename T>
inline void add_row(T* __restrict dst, const T* __restrict src, int64_t count) {
  for (int64_t i = 0; i < count; ++i) dst[i] += src[i];
}

template <typename T>
void build_weights(const EdgeWeights<T>& w, const int64_t* idx_b, int64_t k, int64_t j0, int64_t kj, T* wcat) {
  const int64_t n = w.n, m = w.m, width = kj * m;
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t jj = 0; jj < kj; ++jj) __builtin_memcpy(wcat + p * width + jj * m, w.self_minus_edge_t + p * m,
                                                         sizeof(T) * m);
  }
  for (int64_t i = 0; i < n; ++i) {
    const T* src = w.edge_t + i * m;
    for (int64_t jj = 0; jj < kj; ++jj) {
      const int64_t p = idx_b[i * k + j0 + jj];
      add_row(wcat + p * width + jj * m, src, m);
    }
  }
}

template <typename T>
void max_group(const T* z, int64_t rows, int64_t m, int64_t j0, int64_t kj, const uint8_t* skip, bool first,
               T* best, int32_t* arg) {
  const int64_t width = kj * m;
  for (int64_t r = 0; r < rows; ++r) {
    const T* zr = z + r * width;
    T* __restrict b = best + r * m;
    int32_t* __restrict a = arg + r * m;
    int64_t jj = 0;
    if (first) {
      for (int64_t i = 0; i < m; ++i) {
        b[i] = zr[i];
        a[i] = static_cast<int32_t>(j0);
      }
      jj = 1;
    }
    for (; jj < kj; ++jj) {
      const int32_t j = static_cast<int32_t>(j0 + jj);
      if (skip[j]) continue;
      const T* __restrict zj = zr + jj * m;
      for (int64_t i = 0; i < m; ++i) {
        const bool greater = zj[i] > b[i];
        b[i] = greater ? zj[i] : b[i];
        a[i] = greater ? j : a[i];
      }
    }
  }
}

template <typename T>
void max_finish(T* best, int32_t* arg, const T* bias, int64_t rows, int64_t m) {
  for (int64_t r = 0; r < rows; ++r) {
    T* __restrict b = best + r * m;
    int32_t* __restrict a = arg + r * m;
    if (bias != nullptr) add_row(b, bias, m);
    for (int64_t i = 0; i < m; ++i) {
      const T v = b[i];
      const bool active = v > T(0);
      a[i] = active ? a[i] : -1;
      b[i] = (active || v != v) ? v : T(0);  // ReLU, NaN propagated
    }
  }
}

// ---- edge_conv_max: the backward by GEMMs (small k; the binding chooses) ---------------------------

template <typename T>
void route_gradient(const T* grad, const int32_t* winner, int64_t rows, int64_t m, int64_t j0, int64_t kj, T* dz,
                    double* bias_grad) {
  const int64_t width = kj * m;
  for (int64_t r = 0; r < rows; ++r) {
    const T* g = grad + r * m;
    const int32_t* w = winner + r * m;
    for (int64_t jj = 0; jj < kj; ++jj) {
      const int32_t j = static_cast<int32_t>(j0 + jj);
      T* __restrict d = dz + r * width + jj * m;
      for (int64_t i = 0; i < m; ++i) d[i] = w[i] == j ? g[i] : T(0);
    }
    if (bias_grad != nullptr) {
      for (int64_t i = 0; i < m; ++i) bias_grad[i] += w[i] >= 0 ? static_cast<double>(g[i]) : 0.0;
    }
  }
}

template <typename T>
void accumulate_weight_grads(const T* dwcat, const int64_t* idx_b, int64_t k, int64_t j0, int64_t kj, int64_t n,
                             int64_t m, T* grad_self_minus_edge_t, T* grad_edge_t) {
  const int64_t width = kj * m;
  for (int64_t p = 0; p < n; ++p) {
    for (int64_t jj = 0; jj < kj; ++jj) add_row(grad_self_minus_edge_t + p * m, dwcat + p * width + jj * m, m);
  }
  for (int64_t i = 0; i < n; ++i) {
    for (int64_t jj = 0; jj < kj; ++jj) {
      const int64_t p = idx_b[i * k + j0 + jj];
      add_row(grad_edge_t + i * m, dwcat + p * width + jj * m, m);
    }
  }
}

template <typename T>
void add(T* dst, const T* src, int64_t count) {
  add_row(dst, src, count);
}


// ---- edge_conv_max: the backward's routed gradient ----------------------------------------------

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

// ---- edge_conv_max: the routed backward ---------------------------------------------------------
//
// The max sends each output's gradient to one neighbour, its winner w(c, m) (-1 where the output was
// not active): with G the gradient where active (zero elsewhere), A = w_self - w_edge, E = w_edge and the
// folded weights W_j[m, p] = A[m, p] + sum_{n : idx[n, j] = p} E[m, n] (the forward's),
//   dX[c, p]  = sum_m G[c, m] W_{w(c, m)}[m, p]
//   dE'[m, n] = sum_c G[c, m] X[c, idx[n, w(c, m)]]      (E's gradient through the gathered term)
// and dA = G^T X (torch's BLAS, in the binding). Both sums have the shape of one forward-sized GEMM, not
// k of them: each (c, m) is visited once. They run one output row (c for dX, m for dE') of NR columns
// at a time in registers; step s (m for dX, c for dE') reads its row of the right operand from the
// panel of the output row's own winner: the panels of all k neighbours for a chunk of steps sit side by
// side in L1 ([k][steps][NR]), and a precomputed offset (the winner's panel, the step's row) is the
// address of the loads, so no [k, ...] product is formed (for k up to 8 at AVX2 float32 the panels fit the
// L1 budget; beyond, the chunk stays at 8 steps and they spill to L2). The panels are built transposed, as
// rows along the steps (a copy of the weights' rows plus the scattered rows of w_edge^T for dX; gathered
// rows of X^T for dE'), then turned by register transposes (8 x 8 float, 4 x 4 double; element by element
// below AVX2).

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

// ---- edge_conv_max: the fused float32 forward ---------------------------------------------------
//
// Our own register-blocked GEMM, so that the folded weights are built where the GEMM reads them and the
// pre-activations never leave registers. Per batch element the channels are packed once into panels of
// kEdgeRows rows ([panel][p][row], zero padded). Then per block of NR output columns m and neighbour j:
// the packed weight panel W_j[:, block] ([N, NR], in L1) is the block of (w_self - w_edge)^T plus the
// rows of w_edge^T scatter-added by idx[:, j]; every channel panel runs a kEdgeRows x NR micro-kernel
// against it, K = N, and merges its tile into the running max (strictly greater: the first maximal j
// wins) with the winner. After the last neighbour the block gets the bias and the ReLU.

constexpr int64_t kEdgeRows = 6;
template <typename T>
constexpr int64_t kEdgeCols = 2 * kLanes<T>;

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

}  // namespace

const EdgeConvKernels& FK_CONCAT(edge_conv_kernels_, FK_CPU_CAPABILITY)() {
  static const EdgeConvKernels table{&inverse_norms<float>,
                                     &inverse_norms<double>,
                                     &topk_tile<float>,
                                     &topk_tile<double>,
                                     &topk_prune<float>,
                                     &topk_prune<double>,
                                     &topk_finish<float>,
                                     &topk_finish<double>,
                                     &build_weights<float>,
                                     &build_weights<double>,
                                     &max_group<double>,
                                     &max_finish<double>,
                                     &route_gradient<float>,
                                     &route_gradient<double>,
                                     &accumulate_weight_grads<float>,
                                     &accumulate_weight_grads<double>,
                                     &add<float>,
                                     &add<double>,
                                     &edge_mask_gradient<float>,
                                     &edge_mask_gradient<double>,
                                     &edge_routed_cols<float>,
                                     &edge_routed_cols<double>,
                                     &edge_routed_scratch<float>,
                                     &edge_routed_scratch<double>,
                                     &edge_routed_packed_size<float>,
                                     &edge_routed_packed_size<double>,
                                     &edge_routed_pack_weights<float>,
                                     &edge_routed_pack_weights<double>,
                                     &edge_routed_grad_x<float>,
                                     &edge_routed_grad_x<double>,
                                     &edge_routed_grad_edge<float>,
                                     &edge_routed_grad_edge<double>,
                                     &edge_fused_block,
                                     &edge_fused_scratch,
                                     &edge_fused_pack_weights,
                                     &edge_fused_forward,
                                     &gram_self_scratch,
                                     &gram_self};
  return table;
}

}  // namespace facekernels::cpu
