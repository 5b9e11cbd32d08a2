// CPU kernels of correlation, compiled once per SIMD level (FK_CPU_CAPABILITY).
//
// With dilation d, position (h, w) of x1 only ever meets positions (h', w') of x2 with h' = h (mod d)
// and w' = w (mod d). So the positions are split into d x d residue classes; in each class the problem is
// a correlation with dilation 1 on a (H/d) x (W/d) grid, radius R = P/2, and every product computed is
// one the output keeps (or one a border tile rounds up to). Per class, the work is GEMM-shaped:
//   forward:  S[u, q] = sum_c x1[c, u] x2[c, q] for the x2 positions q within R rows and columns of u,
//   backward: grad_x1[u, :] = sum_q G[u, q] x2[q, :] and grad_x2[q, :] = sum_u G[u, q] x1[u, :],
// where G holds grad_out's entries on the band |q - u| <= R. Each runs on register tiles of 4 positions
// by 2-4 vectors (outer products, no horizontal sums), over operands packed per class: channel-major for
// the forward (x2's positions contiguous), position-major for the backward (channels contiguous). When a
// class row is no wider than the band (MOL's 16 x 16 maps with P = 21, d = 2: 8 x 8 classes, R = 10),
// the x2 rows a tile meets are contiguous in the packed plane and one long run covers them.
//
// Work is split over (sample, residue row, block of class rows): every task writes its own output rows
// and packs only the rows it reads, so there are no races and no shared scratch.
#include <cstdint>

#include "core/cpu_simd.h"
#include "core/parallel.h"
#include "correlation/correlation_kernels.h"

namespace facekernels::cpu {
namespace {

constexpr int kTile = 4;  // positions per register tile
constexpr int kTileVectors = kVectorBytes == 64 ? 4 : 2;

// The number of positions p in [0, n) with p = r (mod d).
inline int64_t class_size(int64_t n, int64_t d, int64_t r) { return r < n ? (n - r + d - 1) / d : 0; }

struct Geometry {
  int64_t batch, channels, height, width, patch, radius, dilation;
  int64_t residues_h, residues_w;  // min(d, H), min(d, W)
  int64_t block_rows, blocks;      // class rows per task, tasks per (sample, residue row)
};

template <typename Args>
Geometry plan(const Args& a) {
  Geometry g{a.batch, a.channels, a.height, a.width, a.patch, a.patch / 2, a.dilation, 0, 0, 0, 0};
  g.residues_h = min64(a.dilation, a.height);
  g.residues_w = min64(a.dilation, a.width);
  const int64_t rows = class_size(a.height, a.dilation, 0);  // the largest class
  const int64_t outer = g.batch * g.residues_h;
  const int64_t want = 4 * num_threads();
  g.blocks = outer >= want ? 1 : min64(rows, (want + outer - 1) / outer);
  g.blocks = max64(g.blocks, 1);
  g.block_rows = (rows + g.blocks - 1) / g.blocks;
  g.blocks = (rows + g.block_rows - 1) / g.block_rows;
  return g;
}

// The x2 (or x1) positions a tile meets, as runs of consecutive positions of a packed class plane whose
// rows are `row_width` wide and start at plane row `first_row`: rows [row_lo, row_hi), columns
// [col_lo, col_hi). Rows covering the whole width merge into one run.
struct Runs {
  int64_t* start;
  int64_t* count;
  int64_t n = 0;
};

inline void make_runs(Runs& runs, int64_t row_lo, int64_t row_hi, int64_t col_lo, int64_t col_hi,
                      int64_t row_width, int64_t first_row) {
  runs.n = 0;
  if (col_lo == 0 && col_hi == row_width) {
    runs.start[0] = (row_lo - first_row) * row_width;
    runs.count[0] = (row_hi - row_lo) * row_width;
    runs.n = row_hi > row_lo ? 1 : 0;
    return;
  }
  for (int64_t row = row_lo; row < row_hi; ++row) {
    runs.start[runs.n] = (row - first_row) * row_width + col_lo;
    runs.count[runs.n] = col_hi - col_lo;
    ++runs.n;
  }
}

// A row stride of at least n elements that is an odd number of vectors: rows a power of two apart map
// to a few L1 sets and evict each other in the tile loops.
template <typename T>
inline int64_t padded_stride(int64_t n) {
  constexpr int L = kLanes<T>;
  int64_t s = round_up(max64(n, 1), L);
  if ((s / L) % 2 == 0) s += L;
  return s;
}

// ---- forward ----------------------------------------------------------------------------------------

constexpr int64_t kChannelBlock = 64;  // channels per pass over the tiles (the x2 block stays in L1/L2)

// s[u][k] (+)= sum_{c < channels} a[c * as + u] * b[c * bs + k] for u < kTile, k < NV * lanes; s is a
// kTile x span block, `first` starts the sum instead of continuing it.
template <typename T, int NV>
inline void forward_tile(const T* a, int64_t as, const T* b, int64_t bs, int64_t channels, T* s, bool first) {
  constexpr int L = kLanes<T>;
  constexpr int span = kTileVectors * L;
  Vec<T> acc[kTile][NV];
  for (int u = 0; u < kTile; ++u)
    for (int v = 0; v < NV; ++v) acc[u][v] = first ? Vec<T>{} : load<T>(s + u * span + v * L);
  for (int64_t c = 0; c < channels; ++c, a += as, b += bs) {
    Vec<T> bv[NV];
    for (int v = 0; v < NV; ++v) bv[v] = load<T>(b + v * L);
    for (int u = 0; u < kTile; ++u) {
      const Vec<T> av = broadcast<T>(a[u]);
      for (int v = 0; v < NV; ++v) acc[u][v] += av * bv[v];
    }
  }
  for (int u = 0; u < kTile; ++u)
    for (int v = 0; v < NV; ++v) store<T>(s + u * span + v * L, acc[u][v]);
}

template <typename T>
inline void forward_tile_n(int64_t nv, const T* a, int64_t as, const T* b, int64_t bs, int64_t channels, T* s,
                           bool first) {
  if constexpr (kTileVectors == 4) {
    if (nv == 4) return forward_tile<T, 4>(a, as, b, bs, channels, s, first);
    if (nv == 3) return forward_tile<T, 3>(a, as, b, bs, channels, s, first);
  }
  if (nv == 2) return forward_tile<T, 2>(a, as, b, bs, channels, s, first);
  forward_tile<T, 1>(a, as, b, bs, channels, s, first);
}

// dst[k] = src[k * step] for k < n: contiguous and stride-2 rows (dilation 1 and 2 of contiguous maps)
// get loops with a constant stride, which the compiler vectorises; other strides copy element by element.
template <typename T>
inline void gather_row(T* __restrict dst, const T* __restrict src, int64_t n, int64_t step) {
  if (step == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k];
  } else if (step == 2) {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[2 * k];
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k * step];
  }
}

// dst[k * step] = src[k] for k < n (the inverse of gather_row).
template <typename T>
inline void scatter_row(T* __restrict dst, const T* __restrict src, int64_t n, int64_t step) {
  if (step == 1) {
    for (int64_t k = 0; k < n; ++k) dst[k] = src[k];
  } else if (step == 2) {
    for (int64_t k = 0; k < n; ++k) dst[2 * k] = src[k];
  } else {
    for (int64_t k = 0; k < n; ++k) dst[k * step] = src[k];
  }
}

// Packs rows [row_lo, row_hi) of residue class (rh, rw) of sample b channel-major: dst[c * stride + p],
// p = (row - row_lo) * Ws + col; positions from `used` to `stride` are zeroed.
template <typename T>
void pack_channel_major(T* dst, int64_t stride, const T* x, const int64_t* xs, int64_t b, int64_t channels,
                        int64_t d, int64_t rh, int64_t rw, int64_t row_lo, int64_t row_hi, int64_t ws) {
  const int64_t used = (row_hi - row_lo) * ws;
  for (int64_t c = 0; c < channels; ++c) {
    T* out = dst + c * stride;
    const T* plane = x + b * xs[0] + c * xs[1] + rh * xs[2] + rw * xs[3];
    for (int64_t row = row_lo; row < row_hi; ++row, out += ws)
      gather_row(out, plane + row * d * xs[2], ws, d * xs[3]);
    for (int64_t p = used; p < stride; ++p) dst[c * stride + p] = T(0);
  }
}

// One tile's chunk of x2 positions: tile t (x1 row hs, columns u0..u0+kTile-1) against packed x2
// positions [q, q + n), its sums at s_offset of the sums buffer.
struct ForwardJob {
  int64_t hs, u0, q, n, s_offset;
};

template <typename T>
void forward_task(const CorrelationForwardArgs<T>& a, const Geometry& g, int64_t b, int64_t rh, int64_t blk) {
  constexpr int L = kLanes<T>;
  constexpr int span = kTileVectors * L;
  const int64_t d = g.dilation, R = g.radius, P = g.patch, H = g.height, W = g.width, C = g.channels;
  const int64_t hs_count = class_size(H, d, rh);
  const int64_t hs0 = blk * g.block_rows, hs1 = min64(hs_count, hs0 + g.block_rows);
  if (hs0 >= hs1) return;
  const int64_t r0 = max64(0, hs0 - R), r1 = min64(hs_count, hs1 + R);
  const int64_t plane = H * W;
  T* out_b = a.out + b * P * P * plane;
  for (int64_t hs = hs0; hs < hs1; ++hs) {
    const int64_t h = hs * d + rh;
    for (int64_t ij = 0; ij < P * P; ++ij) {
      T* row = out_b + ij * plane + h * W;
      for (int64_t w = 0; w < W; ++w) row[w] = T(0);
    }
  }
  const int64_t ws_max = class_size(W, d, 0);
  const int64_t tiles_max = (ws_max + kTile - 1) / kTile;
  const int64_t s1 = padded_stride<T>((hs1 - hs0) * ws_max + kTile);
  const int64_t s2 = padded_stride<T>((r1 - r0) * ws_max + span);
  Scratch<T> packed1(C * s1), packed2(C * s2);
  Scratch<int64_t> run_start(r1 - r0 + 1), run_count(r1 - r0 + 1);
  Runs runs{run_start.data(), run_count.data()};
  // Jobs: at most (rows met) runs per tile, each split into chunks of `span` positions.
  const int64_t chunks_per_tile = (r1 - r0) * ((min64(ws_max, 2 * R + kTile) + span - 1) / span + 1);
  Scratch<ForwardJob> jobs((hs1 - hs0) * tiles_max * chunks_per_tile);
  for (int64_t rw = 0; rw < g.residues_w; ++rw) {
    const int64_t ws = class_size(W, d, rw);
    pack_channel_major(packed1.data(), s1, a.x1, a.x1_stride, b, C, d, rh, rw, hs0, hs1, ws);
    pack_channel_major(packed2.data(), s2, a.x2, a.x2_stride, b, C, d, rh, rw, r0, r1, ws);
    int64_t njobs = 0;
    for (int64_t hs = hs0; hs < hs1; ++hs) {
      const int64_t lo = max64(r0, hs - R), hi = min64(r1, hs + R + 1);
      for (int64_t u0 = 0; u0 < ws; u0 += kTile) {
        make_runs(runs, lo, hi, max64(0, u0 - R), min64(ws, u0 + kTile + R), ws, r0);
        for (int64_t r = 0; r < runs.n; ++r) {
          const int64_t end = runs.start[r] + runs.count[r];
          for (int64_t q = runs.start[r]; q < end; q += span, ++njobs)
            jobs[njobs] = ForwardJob{hs, u0, q, min64(span, end - q), njobs * kTile * span};
        }
      }
    }
    Scratch<T> sums(njobs * kTile * span);
    for (int64_t c0 = 0; c0 < C || c0 == 0; c0 += kChannelBlock) {
      const int64_t kc = min64(kChannelBlock, C - c0);
      for (int64_t j = 0; j < njobs; ++j) {
        const ForwardJob& job = jobs[j];
        forward_tile_n<T>((job.n + L - 1) / L, packed1.data() + c0 * s1 + (job.hs - hs0) * ws + job.u0, s1,
                          packed2.data() + c0 * s2 + job.q, s2, kc, sums.data() + job.s_offset, c0 == 0);
      }
      if (C == 0) break;
    }
    for (int64_t j = 0; j < njobs; ++j) {
      const ForwardJob& job = jobs[j];
      const T* s = sums.data() + job.s_offset;
      const int64_t h = job.hs * d + rh, us = min64(kTile, ws - job.u0);
      int64_t row = r0 + job.q / ws, v = job.q % ws;
      for (int64_t k = 0; k < job.n; ++k) {
        T* dst = out_b + (row - job.hs + R) * P * plane + h * W + rw;
        for (int64_t u = 0; u < us; ++u) {
          const int64_t dj = v - (job.u0 + u) + R;
          if (dj >= 0 && dj < P) dst[dj * plane + (job.u0 + u) * d] = s[u * span + k];
        }
        if (++v == ws) v = 0, ++row;
      }
    }
  }
}

// Runs task(b, rh, blk) for every (sample, residue row, block of class rows) of the plan, over the threads:
// the split both directions use (each task writes only its own output rows).
template <typename Task>
void for_each_task(const Geometry& g, const Task& task) {
  const int64_t per_sample = g.residues_h * g.blocks;
  parallel_for(0, g.batch * per_sample, 1, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int64_t b = t / per_sample, rest = t % per_sample;
      task(b, rest / g.blocks, rest % g.blocks);
    }
  });
}

template <typename T>
void forward(const CorrelationForwardArgs<T>& a) {
  const Geometry g = plan(a);
  for_each_task(g, [&](int64_t b, int64_t rh, int64_t blk) { forward_task(a, g, b, rh, blk); });
}

// ---- backward ----------------------------------------------------------------------------------------
//
// Per residue class, channel-major throughout: grad_mine[c, p] = sum_q other[c, q] G[q, p] for a tile of
// T = kTileVectors * lanes consecutive "mine" positions p (x1's for grad_x1, x2's for grad_x2) and the
// other side's positions q within R rows and columns of the tile, G[q, p] the grad_out entry linking them
// (zero off the band). The tile's G panel, [q][p], is filled from grad_out rows (contiguous reads) and
// stays in L1 while every block of four channels runs over it.

// out[cc * os + p] = sum_k x[cc * xs + q_k] * gt[k * span + p] for cc < kTile, p < NV * lanes, q_k running
// over the runs in order.
template <typename T, int NV>
inline void backward_tile(const T* gt, const Runs& runs, const T* x, int64_t xs, T* out, int64_t os) {
  constexpr int L = kLanes<T>;
  constexpr int span = kTileVectors * L;
  Vec<T> acc[kTile][NV];
  for (int c = 0; c < kTile; ++c)
    for (int v = 0; v < NV; ++v) acc[c][v] = Vec<T>{};
  for (int64_t r = 0; r < runs.n; ++r) {
    const T* xq = x + runs.start[r];
    for (int64_t n = 0; n < runs.count[r]; ++n, ++xq, gt += span) {
      Vec<T> gv[NV];
      for (int v = 0; v < NV; ++v) gv[v] = load<T>(gt + v * L);
      for (int c = 0; c < kTile; ++c) {
        const Vec<T> xv = broadcast<T>(xq[c * xs]);
        for (int v = 0; v < NV; ++v) acc[c][v] += xv * gv[v];
      }
    }
  }
  for (int c = 0; c < kTile; ++c)
    for (int v = 0; v < NV; ++v) store<T>(out + c * os + v * L, acc[c][v]);
}

template <typename T>
inline void backward_tile_n(int64_t nv, const T* gt, const Runs& runs, const T* x, int64_t xs, T* out, int64_t os) {
  if constexpr (kTileVectors == 4) {
    if (nv == 4) return backward_tile<T, 4>(gt, runs, x, xs, out, os);
    if (nv == 3) return backward_tile<T, 3>(gt, runs, x, xs, out, os);
  }
  if (nv == 2) return backward_tile<T, 2>(gt, runs, x, xs, out, os);
  backward_tile<T, 1>(gt, runs, x, xs, out, os);
}

template <typename T>
void backward_task(const CorrelationBackwardArgs<T>& a, const Geometry& g, int64_t b, int64_t rh, int64_t blk) {
  constexpr int L = kLanes<T>;
  constexpr int64_t span = kTileVectors * L;
  const int64_t d = g.dilation, R = g.radius, P = g.patch, C = g.channels, H = g.height, W = g.width;
  const int64_t hs_count = class_size(H, d, rh);
  const int64_t hs0 = blk * g.block_rows, hs1 = min64(hs_count, hs0 + g.block_rows);
  if (hs0 >= hs1) return;
  const int64_t e0 = max64(0, hs0 - R), e1 = min64(hs_count, hs1 + R);
  const int64_t cr = round_up(C, kTile);  // channel rows, zero rows up to a multiple of the tile
  const int64_t ws_max = class_size(W, d, 0);
  const int64_t so = padded_stride<T>((e1 - e0) * ws_max), sm = padded_stride<T>((hs1 - hs0) * ws_max + span);
  // A tile of `span` positions spans at most span / ws + 2 rows of its side.
  const int64_t rows_met = min64(e1 - e0, span / max64(ws_max, 1) + 2 + 2 * R);
  Scratch<T> packed(cr * so), result(cr * sm), panel(rows_met * ws_max * span);
  Scratch<int64_t> run_start(rows_met + 1), run_count(rows_met + 1);
  Runs runs{run_start.data(), run_count.data()};
  const int64_t* gs = a.grad_stride;
  const T* grad_b = a.grad_out + b * gs[0] + rh * gs[3];
  for (int64_t rw = 0; rw < g.residues_w; ++rw) {
    const int64_t ws = class_size(W, d, rw);
    const int64_t mine_count = (hs1 - hs0) * ws;
    for (int side = 0; side < 2; ++side) {
      // side 0: grad_x1 (mine = x1, other = x2); side 1: grad_x2 (mine = x2, other = x1).
      T* grad = side == 0 ? a.grad_x1 : a.grad_x2;
      if (grad == nullptr) continue;
      pack_channel_major(packed.data(), so, side == 0 ? a.x2 : a.x1, side == 0 ? a.x2_stride : a.x1_stride, b, C,
                         d, rh, rw, e0, e1, ws);
      for (int64_t c = C; c < cr; ++c)
        for (int64_t q = 0; q < so; ++q) packed[c * so + q] = T(0);
      for (int64_t p0 = 0; p0 < mine_count; p0 += span) {
        const int64_t p1 = min64(mine_count, p0 + span);
        const int64_t row_lo = hs0 + p0 / ws, row_hi = hs0 + (p1 - 1) / ws + 1;
        const bool one_row = row_hi - row_lo == 1;
        const int64_t col_lo = one_row ? p0 % ws : 0, col_hi = one_row ? (p1 - 1) % ws + 1 : ws;
        const int64_t orow_lo = max64(0, row_lo - R), orow_hi = min64(hs_count, row_hi + R);
        const int64_t ocol_lo = max64(0, col_lo - R), ocol_hi = min64(ws, col_hi + R);
        const int64_t ocols = ocol_hi - ocol_lo;
        make_runs(runs, orow_lo, orow_hi, ocol_lo, ocol_hi, ws, e0);
        const int64_t nk = (orow_hi - orow_lo) * ocols;
        T* gt = panel.data();
        for (int64_t k = 0; k < nk * span; ++k) gt[k] = T(0);
        // Fill the panel from grad_out: displacement (i, j) outer, so grad_out rows are read in order.
        for (int64_t row = row_lo; row < row_hi; ++row) {
          const int64_t first = max64(p0, (row - hs0) * ws), last = min64(p1, (row - hs0 + 1) * ws);
          const int64_t c_lo = first - (row - hs0) * ws, c_hi = last - (row - hs0) * ws;  // columns of the row
          for (int64_t i = 0; i < P; ++i) {
            // side 0: x2 row = row + (i - R); side 1: x1 row = row - (i - R).
            const int64_t orow = side == 0 ? row + (i - R) : row - (i - R);
            if (orow < 0 || orow >= hs_count) continue;
            const int64_t x1_row = side == 0 ? row : orow;
            for (int64_t j = 0; j < P; ++j) {
              const int64_t shift = side == 0 ? j - R : R - j;  // other column = mine + shift
              const int64_t u_lo = max64(c_lo, -shift), u_hi = min64(c_hi, ws - shift);
              if (u_lo >= u_hi) continue;
              const T* grow = grad_b + i * gs[1] + j * gs[2] + x1_row * d * gs[3] + rw * gs[4];
              T* dst = gt + ((orow - orow_lo) * ocols + (u_lo + shift - ocol_lo)) * span + (row - hs0) * ws + u_lo - p0;
              const int64_t x1_shift = side == 0 ? 0 : shift;  // x1 column = mine + x1_shift
              const T* src = grow + (u_lo + x1_shift) * d * gs[4];
              const int64_t step = d * gs[4];
              for (int64_t u = 0; u < u_hi - u_lo; ++u) dst[u * (span + 1)] = src[u * step];
            }
          }
        }
        const int64_t nv = (p1 - p0 + L - 1) / L;
        for (int64_t c = 0; c < cr; c += kTile)
          backward_tile_n<T>(nv, gt, runs, packed.data() + c * so, so, result.data() + c * sm + p0, sm);
      }
      for (int64_t c = 0; c < C; ++c) {
        T* plane = grad + (b * C + c) * H * W + rh * W + rw;
        const T* src = result.data() + c * sm;
        for (int64_t row = hs0; row < hs1; ++row, src += ws) scatter_row(plane + row * d * W, src, ws, d);
      }
    }
  }
}

template <typename T>
void backward(const CorrelationBackwardArgs<T>& a) {
  const Geometry g = plan(a);
  for_each_task(g, [&](int64_t b, int64_t rh, int64_t blk) { backward_task(a, g, b, rh, blk); });
}

// ---- the whole-class plan's data movement (the GEMMs run in the binding, on the BLAS) --------------------

template <typename T>
inline void zero(T* p, int64_t n) {
  for (int64_t k = 0; k < n; ++k) p[k] = T(0);
}

// dst[rw][ws] = src[(ws d + rw) * step] for the row's column classes (rw < classes): one pass over the row.
// Dilation 2 of a contiguous row, MOL's case, is a plain even/odd split the compiler vectorises.
template <typename T>
inline void split_row(T* const* dst, int64_t at, const T* __restrict src, int64_t width, int64_t d, int64_t step,
                      int64_t classes) {
  if (d == 2 && step == 1 && classes == 2) {
    T* __restrict even = dst[0] + at;
    T* __restrict odd = dst[1] + at;
    const int64_t half = width / 2;
    for (int64_t k = 0; k < half; ++k) {
      even[k] = src[2 * k];
      odd[k] = src[2 * k + 1];
    }
    if (width % 2) even[half] = src[width - 1];
    return;
  }
  for (int64_t rw = 0; rw < classes; ++rw) gather_row(dst[rw] + at, src + rw * step, class_size(width, d, rw), d * step);
}

// The inverse: dst[ws d + rw] = src[rw][ws], dst contiguous.
template <typename T>
inline void merge_row(T* __restrict dst, const T* const* src, int64_t at, int64_t width, int64_t d, int64_t classes) {
  if (d == 2 && classes == 2) {
    const T* __restrict even = src[0] + at;
    const T* __restrict odd = src[1] + at;
    const int64_t half = width / 2;
    for (int64_t k = 0; k < half; ++k) {
      dst[2 * k] = even[k];
      dst[2 * k + 1] = odd[k];
    }
    if (width % 2) dst[width - 1] = even[half];
    return;
  }
  for (int64_t rw = 0; rw < classes; ++rw) scatter_row(dst + rw, src[rw] + at, class_size(width, d, rw), d);
}

constexpr int64_t kMaxClasses = 64;  // column classes per pass (pointer arrays on the stack); more take turns
constexpr int64_t kMaxWholeClasses = 256;  // classes of a sample moved in one pass over its planes

// Runs f(rh, c, rw_first, count, matrices) for every row class rh of the task, channel c and turn of its
// column classes [rw_first, rw_first + count); matrices[r] points at channel c's row of class
// (rh, rw_first + r)'s [C, n] matrix in `packed` (the task's matrices).
template <typename T, typename F>
void for_each_channel_turn(const CorrelationClasses& k, const CorrelationTask& task, T* packed, const F& f) {
  const int64_t n = k.positions();
  for (int64_t rh = task.rh0; rh < task.rh0 + task.rh_count; ++rh) {
    T* first = packed + (rh - task.rh0) * task.rw_count * k.channels * n;
    for (int64_t c = 0; c < k.channels; ++c) {
      for (int64_t r0 = 0; r0 < task.rw_count; r0 += kMaxClasses) {
        const int64_t count = min64(kMaxClasses, task.rw_count - r0);
        T* matrices[kMaxClasses];
        for (int64_t r = 0; r < count; ++r) matrices[r] = first + (r0 + r) * k.channels * n + c * n;
        f(rh, c, task.rw0 + r0, count, matrices);
      }
    }
  }
}

// The one rule for the fast paths: a task owning every class of its sample (so whole planes of the sample
// are its own), with few enough classes for one pass over each plane, moves data plane by plane; other
// tasks move only their own rows and columns.
inline bool whole_sample(const CorrelationClasses& k, const CorrelationTask& task) {
  return task.rh_count == k.residues_h && task.rw_count == k.residues_w &&
         k.residues_h * k.residues_w <= kMaxWholeClasses;
}

template <typename T>
void pack_classes(const CorrelationClasses& k, const CorrelationTask& task, const T* x, const int64_t* xs, T* packed) {
  const int64_t d = k.dilation, n = k.positions(), C = k.channels;
  if (k.ragged()) zero(packed, task.classes() * C * n);  // a smaller class's missing positions
  const T* sample = x + task.b * xs[0];
  if (xs[1] < xs[3]) {
    // Channels vary fastest (channels-last maps): read each position's channels in order.
    for (int64_t rh = task.rh0; rh < task.rh0 + task.rh_count; ++rh) {
      const int64_t rows = class_size(k.height, d, rh);
      for (int64_t hs = 0; hs < rows; ++hs) {
        for (int64_t r = 0; r < task.rw_count; ++r) {
          const int64_t rw = task.rw0 + r, cols = class_size(k.width, d, rw);
          T* dst = packed + ((rh - task.rh0) * task.rw_count + r) * C * n + hs * k.cols;
          for (int64_t ws = 0; ws < cols; ++ws) {
            const T* src = sample + (hs * d + rh) * xs[2] + (ws * d + rw) * xs[3];
            for (int64_t c = 0; c < C; ++c) dst[c * n + ws] = src[c * xs[1]];
          }
        }
      }
    }
    return;
  }
  if (whole_sample(k, task)) {
    // Plane by plane, row by row: every input line read once, in order.
    // dst[rh][rw]: class (rh, rw)'s row of channel c, for the row classes in turn.
    T* dst[kMaxWholeClasses];
    for (int64_t c = 0; c < C; ++c) {
      const T* src = sample + c * xs[1];
      for (int64_t m = 0; m < k.residues_h * k.residues_w; ++m) dst[m] = packed + m * C * n + c * n;
      for (int64_t h = 0, hs = 0, rh = 0; h < k.height; ++h) {
        split_row(dst + rh * k.residues_w, hs * k.cols, src + h * xs[2], k.width, d, xs[3], k.residues_w);
        if (++rh == d) rh = 0, ++hs;
      }
    }
    return;
  }
  for_each_channel_turn(k, task, packed, [&](int64_t rh, int64_t c, int64_t rw_first, int64_t count, T* const* dst) {
    const T* src = sample + c * xs[1] + rh * xs[2] + rw_first * xs[3];
    const int64_t rows = class_size(k.height, d, rh);
    for (int64_t hs = 0; hs < rows; ++hs)
      split_row(dst, hs * k.cols, src + hs * d * xs[2], k.width - rw_first, d, xs[3], count);
  });
}

template <typename T>
void unpack_classes(const CorrelationClasses& k, const CorrelationTask& task, const T* packed, T* x) {
  const int64_t d = k.dilation, H = k.height, W = k.width, n = k.positions(), C = k.channels;
  if (whole_sample(k, task)) {
    // Each plane assembled in L1, then streamed out: the gradient is fresh memory, and plain stores would
    // first read every line of it.
    Scratch<T> plane(H * W);
    const T* src[kMaxWholeClasses];
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t rh = 0; rh < k.residues_h; ++rh) {
        for (int64_t rw = 0; rw < k.residues_w; ++rw) src[rw] = packed + (rh * k.residues_w + rw) * C * n + c * n;
        for (int64_t hs = 0, rows = class_size(H, d, rh); hs < rows; ++hs)
          merge_row(plane.data() + (hs * d + rh) * W, src, hs * k.cols, W, d, k.residues_w);
      }
      stream_copy(x + (task.b * C + c) * H * W, plane.data(), H * W);
    }
    stream_fence();
    return;
  }
  for_each_channel_turn(k, task, packed, [&](int64_t rh, int64_t c, int64_t rw_first, int64_t count,
                                             const T* const* src) {
    T* dst = x + ((task.b * C + c) * H + rh) * W + rw_first;
    const int64_t rows = class_size(H, d, rh);
    for (int64_t hs = 0; hs < rows; ++hs) merge_row(dst + hs * d * W, src, hs * k.cols, W - rw_first, d, count);
  });
}

// The geometry scatter and gather share. Output plane (i, j) (displacement row i, column j) holds, for
// every class, the products of class row hs with class row hs + i - R at column offset j - R: a diagonal
// of each pair of class rows. For each row class rh of the task and class row hs whose partner row exists
// (image row h = hs d + rh), and each column class rw of the task, calls run(h, rw, lo, hi, offset):
// columns ws in [lo, hi) of that row (pixels w = ws d + rw) pair with the task's product at index
// offset + ws (n + 1), the plane's other elements of those rows meet nothing (zero). offset itself may be
// negative (the left displacements); offset + ws (n + 1) >= 0 for ws >= lo.
template <typename Run>
inline void for_each_plane_run(const CorrelationClasses& k, const CorrelationTask& task, int64_t i, int64_t j,
                               const Run& run) {
  const int64_t R = k.patch / 2, d = k.dilation, n = k.positions();
  for (int64_t rh = task.rh0; rh < task.rh0 + task.rh_count; ++rh) {
    const int64_t rows = class_size(k.height, d, rh);
    const int64_t hs_lo = max64(0, R - i), hs_hi = min64(rows, rows + R - i);
    const int64_t first = (rh - task.rh0) * task.rw_count * n * n;
    for (int64_t hs = hs_lo; hs < hs_hi; ++hs) {
      const int64_t pair = hs * k.cols * n + (hs + i - R) * k.cols + (j - R);
      for (int64_t r = 0; r < task.rw_count; ++r) {
        const int64_t cols = class_size(k.width, d, task.rw0 + r);
        const int64_t lo = max64(0, R - j), hi = min64(cols, cols + R - j);
        if (lo < hi) run(hs * d + rh, task.rw0 + r, lo, hi, first + r * n * n + pair);
      }
    }
  }
}

template <typename T>
void scatter_products(const CorrelationClasses& k, const CorrelationTask& task, const T* products, T* out) {
  const int64_t P = k.patch, W = k.width, d = k.dilation, plane = k.height * W, step = k.positions() + 1;
  T* out_b = out + task.b * P * P * plane;
  // A whole sample's planes are zeroed and filled in L1, then streamed out (the output is fresh memory,
  // written once); part of a sample is written in place, its own elements of each plane zeroed first.
  const bool whole = whole_sample(k, task);
  Scratch<T> buffer(whole ? plane : 0);
  for (int64_t ij = 0; ij < P * P; ++ij) {
    T* const target = whole ? buffer.data() : out_b + ij * plane;
    if (whole) {
      zero(target, plane);
    } else {
      for (int64_t rh = task.rh0; rh < task.rh0 + task.rh_count; ++rh)
        for (int64_t h = rh; h < k.height; h += d)
          for (int64_t rw = task.rw0; rw < task.rw0 + task.rw_count; ++rw)
            for (int64_t w = rw; w < W; w += d) target[h * W + w] = T(0);
    }
    for_each_plane_run(k, task, ij / P, ij % P, [&](int64_t h, int64_t rw, int64_t lo, int64_t hi, int64_t offset) {
      T* dst = target + h * W + rw;
      for (int64_t ws = lo; ws < hi; ++ws) dst[ws * d] = products[offset + ws * step];
    });
    if (whole) stream_copy(out_b + ij * plane, target, plane);
  }
  if (whole) stream_fence();
}

template <typename T>
void gather_products(const CorrelationClasses& k, const CorrelationTask& task, const T* grad, const int64_t* gs,
                     T* products) {
  // Every entry of a full class is some output's; a smaller class's missing ones are zeroed first.
  const int64_t P = k.patch, d = k.dilation, step = k.positions() + 1;
  if (k.ragged()) zero(products, task.classes() * (step - 1) * (step - 1));
  const T* grad_b = grad + task.b * gs[0];
  // Plane by plane (i, j), the inverse of scatter_products: a whole sample's grad_out read once, in order.
  for (int64_t i = 0; i < P; ++i) {
    for (int64_t j = 0; j < P; ++j) {
      const T* plane = grad_b + i * gs[1] + j * gs[2];
      for_each_plane_run(k, task, i, j, [&](int64_t h, int64_t rw, int64_t lo, int64_t hi, int64_t offset) {
        const T* src = plane + h * gs[3] + rw * gs[4];
        for (int64_t ws = lo; ws < hi; ++ws) products[offset + ws * step] = src[ws * d * gs[4]];
      });
    }
  }
}

template <typename T>
constexpr CorrelationKernels<T> make_table() {
  return {.forward = &forward<T>,
          .backward = &backward<T>,
          .pack_classes = &pack_classes<T>,
          .unpack_classes = &unpack_classes<T>,
          .scatter_products = &scatter_products<T>,
          .gather_products = &gather_products<T>};
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(CorrelationKernels, correlation_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(CorrelationKernels, correlation_kernels, make_table, double)

}  // namespace facekernels::cpu
