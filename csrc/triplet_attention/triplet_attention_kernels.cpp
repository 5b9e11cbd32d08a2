// CPU kernels of axis_pool and triplet_gate, compiled once per SIMD level (FK_CPU_CAPABILITY).
//
// Every kernel makes one pass over x (and grad_y) per batch element, whatever the layout: planar rows
// (b, c, h, :) are reduced along W in registers and accumulated into the over-C map (a [H, W] plane) and
// the over-H map (a [C, W] row per channel); channels_last pixels (b, h, w, :) are reduced along C in
// registers and accumulated into the over-W map (a [H, C] row) and a [W, C] scratch for the over-H map,
// transposed at the end. The maps of one batch element stay in L1/L2 while x streams through once, so no
// permuted copy of x is ever made. Work is split over the batch.
#include <cstdint>

#include "core/cpu_simd.h"
#include "core/parallel.h"
#include "triplet_attention/triplet_attention_kernels.h"

namespace facekernels::cpu {
namespace {

// The max keeps the first NaN (as torch.max does, NaN wins), else the first largest value.
template <typename T>
inline bool replaces(T v, T m) {
  return v > m || (v != v && m == m);
}

// max, sum and first argmax of row[0 .. n), n >= 1.
template <typename T>
inline void row_stats(const T* row, int64_t n, T& max_out, T& sum_out, int32_t& arg_out) {
  constexpr int V = kLanes<T>;
  int64_t i = 0;
  T m = row[0], s = 0;
  if (n >= V) {
    Vec<T> vm = load<T>(row), vs = {};
    for (; i + V <= n; i += V) {
      const Vec<T> v = load<T>(row + i);
      vm = ((v > vm) | (v != v)) ? v : vm;
      vs += v;
    }
    m = vm[0];
    for (int l = 1; l < V; ++l)
      if (vm[l] > m || vm[l] != vm[l]) m = vm[l];
    s = horizontal_sum<T>(vs);
  }
  for (; i < n; ++i) {
    const T v = row[i];
    if (v > m || v != v) m = v;
    s += v;
  }
  int64_t a = 0;
  if (m != m) {
    while (row[a] == row[a]) ++a;
  } else {
    while (!(row[a] == m)) ++a;
  }
  max_out = m;
  sum_out = s;
  arg_out = static_cast<int32_t>(a);
}

template <typename T>
inline void start_running(T* __restrict mx, T* __restrict sum, int32_t* __restrict arg, const T* __restrict v,
                          int64_t n) {
  for (int64_t i = 0; i < n; ++i) {
    mx[i] = v[i];
    sum[i] = v[i];
    arg[i] = 0;
  }
}

template <typename T>
inline void update_running(T* __restrict mx, T* __restrict sum, int32_t* __restrict arg, const T* __restrict v,
                           int64_t n, int32_t index) {
  for (int64_t i = 0; i < n; ++i) {
    const T x = v[i], m = mx[i];
    const bool r = replaces(x, m);
    mx[i] = r ? x : m;
    arg[i] = r ? index : arg[i];
    sum[i] += x;
  }
}

template <typename T>
inline void divide(T* v, int64_t n, int64_t d) {
  const T dd = static_cast<T>(d);
  for (int64_t i = 0; i < n; ++i) v[i] /= dd;
}

// dst[j * rows + i] = src[i * cols + j]: a [rows, cols] block transposed.
template <typename S>
inline void transpose(S* __restrict dst, const S* __restrict src, int64_t rows, int64_t cols) {
  constexpr int64_t kBlock = 16;
  for (int64_t i0 = 0; i0 < rows; i0 += kBlock)
    for (int64_t j0 = 0; j0 < cols; j0 += kBlock)
      for (int64_t i = i0; i < min64(i0 + kBlock, rows); ++i)
        for (int64_t j = j0; j < min64(j0 + kBlock, cols); ++j) dst[j * rows + i] = src[i * cols + j];
}

// ---- axis_pool ------------------------------------------------------------------------------------------

template <typename T>
void axis_pool_batch(const AxisPoolArgs<T>& a, int64_t b, T* hmax_t, T* hsum_t, int32_t* harg_t) {
  const int64_t C = a.n.channels, H = a.n.height, W = a.n.width;
  const T* xb = a.x + b * a.x_stride_b;
  T* cmax = a.pooled_c + b * 2 * H * W;
  T* csum = cmax + H * W;
  int32_t* carg = a.arg_c + b * H * W;
  T* hmax = a.pooled_h + b * 2 * C * W;
  T* hsum = hmax + C * W;
  int32_t* harg = a.arg_h + b * C * W;
  T* wmax = a.pooled_w + b * 2 * H * C;
  T* wsum = wmax + H * C;
  int32_t* warg = a.arg_w + b * H * C;
  if (!a.n.channels_last) {
    for (int64_t c = 0; c < C; ++c) {
      const T* plane = xb + c * a.x_stride_c;
      // The over-C map takes the whole plane at once (short rows would pay a call each).
      if (c == 0) start_running(cmax, csum, carg, plane, H * W);
      else update_running(cmax, csum, carg, plane, H * W, static_cast<int32_t>(c));
      for (int64_t h = 0; h < H; ++h) {
        const T* row = plane + h * W;
        if (h == 0) start_running(hmax + c * W, hsum + c * W, harg + c * W, row, W);
        else update_running(hmax + c * W, hsum + c * W, harg + c * W, row, W, static_cast<int32_t>(h));
        row_stats(row, W, wmax[h * C + c], wsum[h * C + c], warg[h * C + c]);
      }
    }
  } else {
    // hmax_t, hsum_t, harg_t: [W, C] scratch of the over-H map, transposed into [C, W] at the end.
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t w = 0; w < W; ++w) {
        const T* pix = xb + (h * W + w) * C;
        row_stats(pix, C, cmax[h * W + w], csum[h * W + w], carg[h * W + w]);
        if (h == 0) start_running(hmax_t + w * C, hsum_t + w * C, harg_t + w * C, pix, C);
        else update_running(hmax_t + w * C, hsum_t + w * C, harg_t + w * C, pix, C, static_cast<int32_t>(h));
        if (w == 0) start_running(wmax + h * C, wsum + h * C, warg + h * C, pix, C);
        else update_running(wmax + h * C, wsum + h * C, warg + h * C, pix, C, static_cast<int32_t>(w));
      }
    }
    transpose(hmax, hmax_t, W, C);
    transpose(hsum, hsum_t, W, C);
    transpose(harg, harg_t, W, C);
  }
  divide(csum, H * W, C);
  divide(hsum, C * W, H);
  divide(wsum, H * C, W);
}

template <typename T>
void axis_pool(const AxisPoolArgs<T>& a) {
  const int64_t scratch = a.n.channels_last ? a.n.width * a.n.channels : 0;
  parallel_for(0, a.n.batch, 1, [&](int64_t b0, int64_t b1) {
    Scratch<T> mx(scratch), sum(scratch);
    Scratch<int32_t> arg(scratch);
    for (int64_t b = b0; b < b1; ++b) axis_pool_batch(a, b, mx.data(), sum.data(), arg.data());
  });
}

// grad_x = grad_mean / n broadcast along each pooled axis + grad_max routed to the recorded argmax.
template <typename T>
void axis_pool_backward_batch(const AxisPoolBackwardArgs<T>& a, int64_t b, T* ghm_t, T* ghs_t, int32_t* harg_t) {
  const int64_t C = a.n.channels, H = a.n.height, W = a.n.width;
  const T inv_c = T(1) / static_cast<T>(C), inv_h = T(1) / static_cast<T>(H), inv_w = T(1) / static_cast<T>(W);
  const T* gcm = a.grad_c + b * 2 * H * W;
  const T* gcs = gcm + H * W;
  const int32_t* carg = a.arg_c + b * H * W;
  const T* ghm = a.grad_h + b * 2 * C * W;
  const T* ghs = ghm + C * W;
  const int32_t* harg = a.arg_h + b * C * W;
  const T* gwm = a.grad_w + b * 2 * H * C;
  const T* gws = gwm + H * C;
  const int32_t* warg = a.arg_w + b * H * C;
  T* gx = a.grad_x + b * C * H * W;
  if (!a.n.channels_last) {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t h = 0; h < H; ++h) {
        T* __restrict out = gx + (c * H + h) * W;
        const T* __restrict gcm_r = gcm + h * W;
        const T* __restrict gcs_r = gcs + h * W;
        const int32_t* __restrict carg_r = carg + h * W;
        const T* __restrict ghm_r = ghm + c * W;
        const T* __restrict ghs_r = ghs + c * W;
        const int32_t* __restrict harg_r = harg + c * W;
        const T base = gws[h * C + c] * inv_w;
        const int32_t ci = static_cast<int32_t>(c), hi = static_cast<int32_t>(h);
        for (int64_t w = 0; w < W; ++w) {
          T v = base + gcs_r[w] * inv_c + ghs_r[w] * inv_h;
          v += carg_r[w] == ci ? gcm_r[w] : T(0);
          v += harg_r[w] == hi ? ghm_r[w] : T(0);
          out[w] = v;
        }
        out[warg[h * C + c]] += gwm[h * C + c];
      }
    }
  } else {
    transpose(ghm_t, ghm, C, W);
    transpose(ghs_t, ghs, C, W);
    transpose(harg_t, harg, C, W);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t w = 0; w < W; ++w) {
        T* __restrict out = gx + (h * W + w) * C;
        const T* __restrict ghm_r = ghm_t + w * C;
        const T* __restrict ghs_r = ghs_t + w * C;
        const int32_t* __restrict harg_r = harg_t + w * C;
        const T* __restrict gwm_r = gwm + h * C;
        const T* __restrict gws_r = gws + h * C;
        const int32_t* __restrict warg_r = warg + h * C;
        const T base = gcs[h * W + w] * inv_c;
        const int32_t hi = static_cast<int32_t>(h), wi = static_cast<int32_t>(w);
        for (int64_t c = 0; c < C; ++c) {
          T v = base + ghs_r[c] * inv_h + gws_r[c] * inv_w;
          v += harg_r[c] == hi ? ghm_r[c] : T(0);
          v += warg_r[c] == wi ? gwm_r[c] : T(0);
          out[c] = v;
        }
        out[carg[h * W + w]] += gcm[h * W + w];
      }
    }
  }
}

template <typename T>
void axis_pool_backward(const AxisPoolBackwardArgs<T>& a) {
  const int64_t scratch = a.n.channels_last ? a.n.width * a.n.channels : 0;
  parallel_for(0, a.n.batch, 1, [&](int64_t b0, int64_t b1) {
    Scratch<T> m(scratch), s(scratch);
    Scratch<int32_t> arg(scratch);
    for (int64_t b = b0; b < b1; ++b) axis_pool_backward_batch(a, b, m.data(), s.data(), arg.data());
  });
}

// ---- triplet_gate ---------------------------------------------------------------------------------------
// y = x * scale[b, c] * (gate_c[b, h, w] + gate_h[b, c, w] + gate_w[b, h, c])

template <typename T>
void gate_batch(const TripletGateArgs<T>& a, int64_t b, T* gh_t) {
  const int64_t C = a.n.channels, H = a.n.height, W = a.n.width;
  const T* xb = a.x + b * a.x_stride_b;
  const T* gc = a.gate_c + b * H * W;
  const T* gh = a.gate_h + b * C * W;
  const T* gw = a.gate_w + b * H * C;
  const T* s = a.scale + b * C;
  T* yb = a.y + b * C * H * W;
  if (!a.n.channels_last) {
    for (int64_t c = 0; c < C; ++c) {
      for (int64_t h = 0; h < H; ++h) {
        const T* __restrict xr = xb + c * a.x_stride_c + h * W;
        const T* __restrict gc_r = gc + h * W;
        const T* __restrict gh_r = gh + c * W;
        T* __restrict yr = yb + (c * H + h) * W;
        const T k = gw[h * C + c], sc = s[c];
        for (int64_t w = 0; w < W; ++w) yr[w] = xr[w] * (sc * (gc_r[w] + gh_r[w] + k));
      }
    }
  } else {
    transpose(gh_t, gh, C, W);
    for (int64_t h = 0; h < H; ++h) {
      for (int64_t w = 0; w < W; ++w) {
        const T* __restrict xr = xb + (h * W + w) * C;
        const T* __restrict gh_r = gh_t + w * C;
        const T* __restrict gw_r = gw + h * C;
        T* __restrict yr = yb + (h * W + w) * C;
        const T k = gc[h * W + w];
        for (int64_t c = 0; c < C; ++c) yr[c] = xr[c] * (s[c] * (k + gh_r[c] + gw_r[c]));
      }
    }
  }
}

template <typename T>
void gate(const TripletGateArgs<T>& a) {
  const int64_t scratch = a.n.channels_last ? a.n.width * a.n.channels : 0;
  parallel_for(0, a.n.batch, 1, [&](int64_t b0, int64_t b1) {
    Scratch<T> gh_t(scratch);
    for (int64_t b = b0; b < b1; ++b) gate_batch(a, b, gh_t.data());
  });
}

// With p = grad_y * x and G = gate_c + gate_h + gate_w:
//   grad_x = grad_y * scale * G, grad_gate_c = sum_c scale p, grad_gate_h = scale sum_h p,
//   grad_gate_w = scale sum_w p, grad_scale = sum_{h,w} p G.
template <typename T>
void gate_backward_batch(const TripletGateBackwardArgs<T>& a, int64_t b, T* gh_t, T* dgh_t, double* dscale) {
  constexpr int V = kLanes<T>;
  const int64_t C = a.n.channels, H = a.n.height, W = a.n.width;
  const T* xb = a.x + b * a.x_stride_b;
  const T* gyb = a.grad_y + b * a.grad_y_stride_b;
  const T* gc = a.gate_c + b * H * W;
  const T* gh = a.gate_h + b * C * W;
  const T* gw = a.gate_w + b * H * C;
  const T* s = a.scale + b * C;
  T* gxb = a.grad_x ? a.grad_x + b * C * H * W : nullptr;
  T* dgc = a.grad_gate_c + b * H * W;
  T* dgh = a.grad_gate_h + b * C * W;
  T* dgw = a.grad_gate_w + b * H * C;
  T* ds = a.grad_scale + b * C;
  if (!a.n.channels_last) {
    for (int64_t i = 0; i < H * W; ++i) dgc[i] = 0;
    for (int64_t c = 0; c < C; ++c) {
      const T sc = s[c];
      T* __restrict dgh_r = dgh + c * W;
      for (int64_t w = 0; w < W; ++w) dgh_r[w] = 0;
      double scale_sum = 0;
      for (int64_t h = 0; h < H; ++h) {
        const T* __restrict xr = xb + c * a.x_stride_c + h * W;
        const T* __restrict gyr = gyb + c * a.grad_y_stride_c + h * W;
        const T* __restrict gc_r = gc + h * W;
        const T* __restrict gh_r = gh + c * W;
        T* __restrict dgc_r = dgc + h * W;
        const T k = gw[h * C + c];
        T* __restrict gxr = gxb ? gxb + (c * H + h) * W : nullptr;
        Vec<T> vp = {}, vpg = {};
        int64_t w = 0;
        for (; w + V <= W; w += V) {
          const Vec<T> gy = load<T>(gyr + w);
          const Vec<T> g = load<T>(gc_r + w) + load<T>(gh_r + w) + k;
          const Vec<T> p = gy * load<T>(xr + w);
          if (gxr) store<T>(gxr + w, gy * (sc * g));
          store<T>(dgc_r + w, load<T>(dgc_r + w) + sc * p);
          store<T>(dgh_r + w, load<T>(dgh_r + w) + p);
          vp += p;
          vpg += p * g;
        }
        T sp = horizontal_sum<T>(vp), spg = horizontal_sum<T>(vpg);
        for (; w < W; ++w) {
          const T gy = gyr[w], g = gc_r[w] + gh_r[w] + k, p = gy * xr[w];
          if (gxr) gxr[w] = gy * (sc * g);
          dgc_r[w] += sc * p;
          dgh_r[w] += p;
          sp += p;
          spg += p * g;
        }
        dgw[h * C + c] = sc * sp;
        scale_sum += static_cast<double>(spg);
      }
      for (int64_t w = 0; w < W; ++w) dgh_r[w] *= sc;
      ds[c] = static_cast<T>(scale_sum);
    }
  } else {
    transpose(gh_t, gh, C, W);
    for (int64_t i = 0; i < W * C; ++i) dgh_t[i] = 0;
    for (int64_t i = 0; i < H * C; ++i) dgw[i] = 0;
    for (int64_t c = 0; c < C; ++c) dscale[c] = 0;
    for (int64_t h = 0; h < H; ++h) {
      // grad_scale: a row's W terms summed in T, rows summed in double.
      T* __restrict ds_row = ds;
      for (int64_t c = 0; c < C; ++c) ds_row[c] = 0;
      T* __restrict dgw_r = dgw + h * C;
      const T* __restrict gw_r = gw + h * C;
      for (int64_t w = 0; w < W; ++w) {
        const T* __restrict xr = xb + (h * W + w) * C;
        const T* __restrict gyr = gyb + (h * W + w) * C;
        const T* __restrict gh_r = gh_t + w * C;
        T* __restrict dgh_r = dgh_t + w * C;
        T* __restrict gxr = gxb ? gxb + (h * W + w) * C : nullptr;
        const T k = gc[h * W + w];
        Vec<T> vsp = {};
        int64_t c = 0;
        for (; c + V <= C; c += V) {
          const Vec<T> gy = load<T>(gyr + c), sv = load<T>(s + c);
          const Vec<T> g = load<T>(gh_r + c) + load<T>(gw_r + c) + k;
          const Vec<T> p = gy * load<T>(xr + c), q = sv * p;
          if (gxr) store<T>(gxr + c, gy * (sv * g));
          store<T>(dgh_r + c, load<T>(dgh_r + c) + q);
          store<T>(dgw_r + c, load<T>(dgw_r + c) + q);
          vsp += q;
          store<T>(ds_row + c, load<T>(ds_row + c) + p * g);
        }
        T ssp = horizontal_sum<T>(vsp);
        for (; c < C; ++c) {
          const T gy = gyr[c], g = gh_r[c] + gw_r[c] + k, p = gy * xr[c], q = s[c] * p;
          if (gxr) gxr[c] = gy * (s[c] * g);
          dgh_r[c] += q;
          dgw_r[c] += q;
          ssp += q;
          ds_row[c] += p * g;
        }
        dgc[h * W + w] = ssp;
      }
      for (int64_t c = 0; c < C; ++c) dscale[c] += static_cast<double>(ds_row[c]);
    }
    transpose(dgh, dgh_t, W, C);
    for (int64_t c = 0; c < C; ++c) ds[c] = static_cast<T>(dscale[c]);
  }
}

template <typename T>
void gate_backward(const TripletGateBackwardArgs<T>& a) {
  const int64_t scratch = a.n.channels_last ? a.n.width * a.n.channels : 0;
  parallel_for(0, a.n.batch, 1, [&](int64_t b0, int64_t b1) {
    Scratch<T> gh_t(scratch), dgh_t(scratch);
    Scratch<double> dscale(a.n.channels_last ? a.n.channels : 0);
    for (int64_t b = b0; b < b1; ++b) gate_backward_batch(a, b, gh_t.data(), dgh_t.data(), dscale.data());
  });
}

// ---- gate_conv ----------------------------------------------------------------------------------------
// A K x K convolution of a few maps (triplet attention's 7x7 conv of the two pooled maps) to one, written
// as one shifted multiply-add of a whole row per tap: out row m gets w[k, i, j] * in row (m + i - P) of
// map k shifted by (j - P), zero padding handled by clipping each row's range. torch's CPU convolution
// runs this shape (2 channels in, 1 out) through im2col buffers 49 times the size of the maps and its
// weight gradient through slow paths, which made it the larger part of the original block's cost.

struct TapRange {
  int64_t begin, end;  // the outputs n whose input n + shift lies inside [0, cols)
};

inline TapRange tap_range(int64_t shift, int64_t cols) { return {max64(0, -shift), min64(cols, cols - shift)}; }

template <typename T>
inline T dot(const T* __restrict a, const T* __restrict b, int64_t n) {
  constexpr int V = kLanes<T>;
  Vec<T> acc0 = {}, acc1 = {};
  int64_t i = 0;
  for (; i + 2 * V <= n; i += 2 * V) {
    acc0 += load<T>(a + i) * load<T>(b + i);
    acc1 += load<T>(a + i + V) * load<T>(b + i + V);
  }
  for (; i + V <= n; i += V) acc0 += load<T>(a + i) * load<T>(b + i);
  T s = horizontal_sum<T>(acc0 + acc1);
  for (; i < n; ++i) s += a[i] * b[i];
  return s;
}

template <typename T>
void gate_conv(const GateConvArgs<T>& a) {
  const int64_t Cin = a.in_channels, M = a.rows, N = a.cols, K = a.taps, P = K / 2;
  parallel_for(0, a.batch * M, 16, [&](int64_t begin, int64_t end) {
    for (int64_t bm = begin; bm < end; ++bm) {
      const int64_t b = bm / M, m = bm % M;
      T* __restrict out = a.y + bm * N;
      for (int64_t n = 0; n < N; ++n) out[n] = 0;
      for (int64_t k = 0; k < Cin; ++k) {
        for (int64_t i = 0; i < K; ++i) {
          const int64_t r = m + i - P;
          if (r < 0 || r >= M) continue;
          const T* __restrict in = a.x + ((b * Cin + k) * M + r) * N;
          const T* w = a.weight + (k * K + i) * K;
          for (int64_t j = 0; j < K; ++j) {
            const int64_t shift = j - P;
            const TapRange t = tap_range(shift, N);
            if (t.end <= t.begin) continue;  // a tap wider than the map
            const T wv = w[j];
            for (int64_t n = t.begin; n < t.end; ++n) out[n] += wv * in[n + shift];
          }
        }
      }
    }
  });
}

template <typename T>
void gate_conv_backward(const GateConvArgs<T>& a) {
  const int64_t B = a.batch, Cin = a.in_channels, M = a.rows, N = a.cols, K = a.taps, P = K / 2;
  const int64_t taps = Cin * K * K;
  // Per-sample partial sums of the weight gradient, reduced over the batch in a fixed order afterwards.
  Scratch<double> partial(a.grad_weight ? B * taps : 0);
  parallel_for(0, B, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      double* part = a.grad_weight ? partial.data() + b * taps : nullptr;
      if (part)
        for (int64_t t = 0; t < taps; ++t) part[t] = 0;
      T* gx = a.grad_x ? a.grad_x + b * Cin * M * N : nullptr;
      if (gx)
        for (int64_t i = 0; i < Cin * M * N; ++i) gx[i] = 0;
      for (int64_t m = 0; m < M; ++m) {
        const T* __restrict gy = a.grad_y + (b * M + m) * N;
        for (int64_t k = 0; k < Cin; ++k) {
          for (int64_t i = 0; i < K; ++i) {
            const int64_t r = m + i - P;
            if (r < 0 || r >= M) continue;
            const T* w = a.weight + (k * K + i) * K;
            const int64_t row = ((b * Cin + k) * M + r) * N;
            for (int64_t j = 0; j < K; ++j) {
              const int64_t shift = j - P;
              const TapRange t = tap_range(shift, N);
              if (t.end <= t.begin) continue;
              if (gx) {
                T* __restrict g = gx + (k * M + r) * N + shift;
                const T wv = w[j];
                for (int64_t n = t.begin; n < t.end; ++n) g[n] += wv * gy[n];
              }
              if (part)
                part[(k * K + i) * K + j] +=
                    static_cast<double>(dot(gy + t.begin, a.x + row + t.begin + shift, t.end - t.begin));
            }
          }
        }
      }
    }
  });
  if (a.grad_weight) {
    for (int64_t t = 0; t < taps; ++t) {
      double s = 0;
      for (int64_t b = 0; b < B; ++b) s += partial[b * taps + t];
      a.grad_weight[t] = static_cast<T>(s);
    }
  }
}

template <typename T>
constexpr TripletAttentionKernels<T> make_table() {
  return {.axis_pool = &axis_pool<T>,
          .axis_pool_backward = &axis_pool_backward<T>,
          .gate = &gate<T>,
          .gate_backward = &gate_backward<T>,
          .gate_conv = &gate_conv<T>,
          .gate_conv_backward = &gate_conv_backward<T>};
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(TripletAttentionKernels, triplet_attention_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(TripletAttentionKernels, triplet_attention_kernels, make_table, double)

}  // namespace facekernels::cpu
