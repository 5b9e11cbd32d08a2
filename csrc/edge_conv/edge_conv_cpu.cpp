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


// ---- edge_conv_max: the sparse backward (larger k) -----------------------------------------------
//
// The max routes each output's gradient to one neighbour, its winner: G_j[c, m] = g[c, m] where
// winner[c, m] = j, else 0, and G = sum_j G_j (g where the output was active). With A = w_self - w_edge
// and E = w_edge (so W_j[p, m] = A[m, p] + sum_{n : idx[n, j] = p} E[m, n]),
//   dX[c, p]  = (G A)[c, p] + sum_j sum_{n : idx[n, j] = p} U_j[c, n]
//   dA[m, p]  = (G^T X)[m, p]
//   dE'[m, n] = sum_j Y_j[m, idx[n, j]]
// with U_j[c, :] = sum_{m : winner[c, m] = j} g[c, m] E[m, :] and Y_j[m, :] = sum_{c : winner[c, m] = j} g[c, m] X[c, :]
// (dE' is E's gradient through the gathered term). The dense products G A and G^T X go to torch's BLAS
// over the whole batch (the binding). U_j and Y_j visit each (c, m) once, where the folded GEMMs
// G_j W_j^T and X^T G_j would visit it once per neighbour: they run here, row by row, as sums of scaled
// rows of E (resp. X) chosen by a bucketing of the row's winners, register-blocked over kSparseChunk
// columns; then the scatter (dX) or gather (dE') through idx.

template <typename T>
constexpr int64_t kSparseChunk = 8 * kLanes<T>;

template <typename T>
int64_t edge_sparse_chunk() {
  return kSparseChunk<T>;
}

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

// out[0 .. npad) = sum_{e < count} coef[e] * src[off[e] + 0 .. npad); npad a multiple of kSparseChunk.
template <typename T>
void edge_sum_rows(const T* src, const int64_t* off, const T* coef, int64_t count, int64_t npad, T* out) {
  using V = Vec<T>;
  constexpr int64_t L = kLanes<T>;
  for (int64_t n0 = 0; n0 < npad; n0 += kSparseChunk<T>) {
    V a0 = {}, a1 = {}, a2 = {}, a3 = {}, a4 = {}, a5 = {}, a6 = {}, a7 = {};
    for (int64_t e = 0; e < count; ++e) {
      const T* row = src + off[e] + n0;
      const V s = broadcast(coef[e]);
      a0 += s * load(row);
      a1 += s * load(row + L);
      a2 += s * load(row + 2 * L);
      a3 += s * load(row + 3 * L);
      a4 += s * load(row + 4 * L);
      a5 += s * load(row + 5 * L);
      a6 += s * load(row + 6 * L);
      a7 += s * load(row + 7 * L);
    }
    T* o = out + n0;
    store(o, a0);
    store(o + L, a1);
    store(o + 2 * L, a2);
    store(o + 3 * L, a3);
    store(o + 4 * L, a4);
    store(o + 5 * L, a5);
    store(o + 6 * L, a6);
    store(o + 7 * L, a7);
  }
}

// A thread's scratch for one row of winners: k + 1 buckets of `cap` entries (the last for inactive
// entries, never read), bucket j holding off[j * cap + e] (a source row's offset) and coef[j * cap + e]
// for e < size[j], then the row sum [npad].
template <typename T>
struct EdgeBuckets {
  int64_t* off;
  int64_t* size;
  T* coef;
  T* sum;
  int64_t cap;
};

template <typename T>
EdgeBuckets<T> edge_buckets_in(T* scratch, int64_t k, int64_t cap) {
  int64_t* off = reinterpret_cast<int64_t*>(scratch);
  int64_t* size = off + (k + 1) * cap;
  T* coef = reinterpret_cast<T*>(size + k + 1);
  return {off, size, coef, coef + (k + 1) * cap, cap};
}

template <typename T>
int64_t edge_sparse_scratch(int64_t channels, int64_t n, int64_t m, int64_t k) {
  const int64_t cap = max64(channels, m);
  return ((k + 1) * cap + k + 1) * 8 / static_cast<int64_t>(sizeof(T)) + (k + 1) * cap + round_up(n, kSparseChunk<T>) +
         64;
}

// One row of winners w[i * step], i < count (gradients g[i * step], source row i at src + i * npad): the
// entries bucketed by winner, in ascending i, then for each neighbour j with entries, visit(j, sum) with
// sum [npad] = the sum of those source rows scaled by their gradients.
template <typename T, typename Visit>
void edge_row_sums(const T* src, const int32_t* w, const T* g, int64_t count, int64_t step, int64_t k, int64_t npad,
                   const EdgeBuckets<T>& b, Visit&& visit) {
  for (int64_t j = 0; j <= k; ++j) b.size[j] = 0;
  for (int64_t i = 0; i < count; ++i) {
    const int32_t j0 = w[i * step];
    const int64_t j = j0 < 0 ? k : j0;
    const int64_t e = j * b.cap + b.size[j]++;
    b.off[e] = i * npad;
    b.coef[e] = g[i * step];
  }
  for (int64_t j = 0; j < k; ++j) {
    if (b.size[j] == 0) continue;
    edge_sum_rows(src, b.off + j * b.cap, b.coef + j * b.cap, b.size[j], npad, b.sum);
    visit(j, b.sum);
  }
}

// dx_b [C, N] rows c0 .. c1 - 1 += the gathered term's gradient; idx_t [k][N] int32.
template <typename T>
void edge_sparse_grad_x(const EdgeSparse<T>& s, const T* grad_b, const int32_t* winner_b, const int32_t* idx_t,
                        int64_t c0, int64_t c1, T* dx_b, T* scratch) {
  const int64_t N = s.n, M = s.m;
  const EdgeBuckets<T> buckets = edge_buckets_in(scratch, s.k, M);
  for (int64_t c = c0; c < c1; ++c) {
    T* __restrict d = dx_b + c * N;
    edge_row_sums(s.edge, winner_b + c * M, grad_b + c * M, M, 1, s.k, s.npad, buckets, [&](int64_t j, const T* u) {
      const int32_t* ij = idx_t + j * N;
      for (int64_t i = 0; i < N; ++i) d[ij[i]] += u[i];
    });
  }
}

// dedge [M, N] rows m0 .. m1 - 1 += E's gradient through the gather; x_pad [C, npad] (zero padded).
template <typename T>
void edge_sparse_grad_edge(const EdgeSparse<T>& s, const T* x_pad, const T* grad_b, const int32_t* winner_b,
                           const int32_t* idx_t, int64_t m0, int64_t m1, T* dedge, T* scratch) {
  const int64_t C = s.channels, N = s.n, M = s.m;
  const EdgeBuckets<T> buckets = edge_buckets_in(scratch, s.k, C);
  for (int64_t r = m0; r < m1; ++r) {
    T* __restrict d = dedge + r * N;
    edge_row_sums(x_pad, winner_b + r, grad_b + r, C, M, s.k, s.npad, buckets, [&](int64_t j, const T* y) {
      const int32_t* ij = idx_t + j * N;
      for (int64_t i = 0; i < N; ++i) d[i] += y[ij[i]];
    });
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
                                     &edge_sparse_chunk<float>,
                                     &edge_sparse_chunk<double>,
                                     &edge_sparse_scratch<float>,
                                     &edge_sparse_scratch<double>,
                                     &edge_sparse_grad_x<float>,
                                     &edge_sparse_grad_x<double>,
                                     &edge_sparse_grad_edge<float>,
                                     &edge_sparse_grad_edge<double>,
                                     &edge_fused_block,
                                     &edge_fused_scratch,
                                     &edge_fused_pack_weights,
                                     &edge_fused_forward,
                                     &gram_self_scratch,
                                     &gram_self};
  return table;
}

}  // namespace facekernels::cpu
