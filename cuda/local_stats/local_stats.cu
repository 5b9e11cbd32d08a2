// CUDA kernels of local_stat_transform and local_mean_var: windowed sums over clipped squares at a cost
// per pixel independent of the radius; float32, float16 and bfloat16 storage, float32 arithmetic.
//
// The sweep. Every op is one or two passes of box_sweep_kernel, which computes, for each pixel, the sums
// of F per-pixel quantities over the pixel's clipped window and hands them (with n) to the op's `finish`.
// A block owns a task (plane, band of consecutive rows) at a time. Its threads stride across the columns
// of the whole row and keep the running vertical window sums of their columns ("column sums":
// initialised at the band's first row from the 2r + 1 rows around it, then per row + the row entering
// the window - the row leaving it). Along W, windows up to 2 kNarrowRadius + 1 columns wide (the common
// kernel sizes) add their column sums directly; wider ones use prefixes: a warp-shuffle scan turns each
// 32-column segment of the column sums into an inclusive prefix, one warp per quantity scans the
// segment totals, and the sum over columns [a, b] is
//   head of a's segment + (whole segments between: a difference of two segment prefixes) + tail in b's,
// so every prefix difference spans either at most 32 columns or whole segments of a window at least 32
// wide: float32 rounding stays relative to the window's own sum, not to the row's. Bands are at least
// r + 1 rows tall, so initialising a band costs at most two extra reads per pixel, and at most
// kMaxBandRows tall (when r allows) to bound the drift of the running sums. Either way the cost per
// pixel is bounded independently of r.
//
// Scratch. The column sums, and for wide windows the segment prefixes and totals (F * W, or
// F * (2 W + W / 32) floats) live in shared memory when they fit in kMaxSharedBytes; longer rows use a
// slice of the global workspace per block (the "long-row" path: the same code through a global
// pointer, a grid capped so the workspace stays bounded, grid-stride over the tasks). Every thread
// updates only its own columns of the column sums; the column sums and prefixes are read by other
// threads only between __syncthreads.
//
// Accuracy. Each plane has a shift s (the mean of up to kShiftRows evenly spaced rows, computed once by
// plane_shift_kernel into the workspace and read by every pass), and the sweeps sum x - s and
// (x - s)^2: var = E[(x - s)^2] - (mu - s)^2 (clamped at 0) keeps float32 accuracy when the mean is far
// larger than the spread, and x - s is exact for x within a factor 2 of s.
//
// Backward. By the symmetry q in W(p) <=> p in W(q), the adjoint of a window mean is a box sum of
// (coefficient / n_p). A first sweep recomputes the statistics and writes per-pixel coefficients to
// float32 workspace planes (for grad_x: go * a, c_mx - 2 Bx (mu_x - s_x), Bx; for grad_guide:
// c_mg - 2 Bg (mu_g - s_g), Bg), a second sweep box-sums them and finishes
//   grad_x = go a + box(c_mx - 2 Bx (mu_x - s_x)) + 2 (x - s_x) box(Bx),
// with the same shifts, so (x - s) and (mu - s) are consistent across bands. local_mean_var's backward
// with grad_var does the same (one recomputed statistic); with grad_mean alone it is a single sweep of
// grad_mean / n.
//
// Determinism: no atomics; every sum's order depends only on the shape.
#include "local_stats.h"

#include "cuda/core/device_math.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace facekernels::cuda {
namespace {

constexpr int kThreads = 256;  // the most threads per block of every kernel here
constexpr size_t kMaxSharedBytes = 48 * 1024;  // the default dynamic shared memory limit
// Band heights: aim for about kTargetBlocks tasks, bands of kMinBandRows..kMaxBandRows rows, and never
// fewer than r + 1 rows (the band's initialisation reads 2r + 1 rows).
constexpr int64_t kTargetBlocks = 2048;
constexpr int64_t kMinBandRows = 16;
constexpr int64_t kMaxBandRows = 128;
// The long-row path's grid: as many blocks as kLongRowBudgetFloats of scratch allows, within these bounds.
constexpr int64_t kLongRowBudgetFloats = int64_t{1} << 24;
constexpr int64_t kLongRowMinBlocks = 64;
constexpr int64_t kLongRowMaxBlocks = 1024;
constexpr int64_t kShiftRows = 4;  // rows averaged into a plane's shift
constexpr int64_t kNarrowRadius = 3;  // windows up to 7 columns wide are summed without prefixes
constexpr int64_t kAlignFloats = 64;  // workspace regions start on 256-byte boundaries

// A Hillis-Steele scan with shfl_up (its order of additions is part of the results, so it stays here
// rather than becoming a butterfly).
__device__ __forceinline__ float warp_inclusive_scan(float v, int lane) {
#pragma unroll
  for (int offset = 1; offset < kWarpSize; offset *= 2) {
    const float t = __shfl_up_sync(kFullWarpMask, v, offset);
    if (lane >= offset) v += t;
  }
  return v;
}

// Pixels of the clipped window along one axis of `length` around i.
__host__ __device__ __forceinline__ int64_t window_count(int64_t i, int64_t radius, int64_t length) {
  return min64(length - 1, i + radius) - max64(0, i - radius) + 1;
}

struct Moments {
  float mean;  // minus the plane's shift
  float var;
};

// From the window sums of x - s and (x - s)^2. `var < 0 ? 0 : var` rather than fmaxf, so a nan stays nan.
__device__ __forceinline__ Moments moments(float sum, float sum_sq, float n) {
  const float mean = sum / n;
  const float var = sum_sq / n - mean * mean;
  return {mean, var < 0.f ? 0.f : var};
}

// ---- the sweep -------------------------------------------------------------------------------------

struct BoxGeometry {
  int64_t planes, height, width;
  int64_t row_radius, col_radius;  // the radius clipped to H - 1 and W - 1
  int64_t band_rows, bands, tasks;
  int64_t segments;      // 32-column segments of a row
  bool narrow;           // col_radius <= kNarrowRadius: windows summed along W without prefixes
  int64_t block_floats;  // scratch per block: F * W, or F * (2 W + segments) with prefixes
};

// Sum of columns a..b (a <= b) of the row whose segment-local inclusive prefix is `pre` and whose
// segment totals' inclusive prefix is `seg`.
__device__ __forceinline__ float window_sum(const float* pre, const float* seg, int64_t a, int64_t b) {
  const int64_t sa = a / kWarpSize, sb = b / kWarpSize;
  const float before = a % kWarpSize != 0 ? pre[a - 1] : 0.f;
  if (sa == sb) return pre[b] - before;
  const float head = pre[sa * kWarpSize + kWarpSize - 1] - before;  // segment sa is whole: b lies past it
  const float middle = sb - 1 > sa ? seg[sb - 1] - seg[sa] : 0.f;
  return head + middle + pre[b];
}

// Op supplies kFields, and plane(p) returning a view with
//   values(h, w, v): the kFields quantities summed at pixel (h, w) of the plane;
//   finish(h, w, box, n): given their sums over (h, w)'s window of n pixels, writes the outputs.
// values must return bit-identical numbers for the same pixel every time (it is added when a row enters
// a window and subtracted when it leaves).
template <typename Op, bool kShared>
__global__ void __launch_bounds__(kThreads)
    box_sweep_kernel(const Op op, const BoxGeometry g, float* scratch) {
  constexpr int F = Op::kFields;
  extern __shared__ float4 sweep_shared_storage[];
  float* const buffer = kShared ? reinterpret_cast<float*>(sweep_shared_storage)
                                : scratch + static_cast<int64_t>(blockIdx.x) * g.block_floats;
  const int64_t H = g.height, W = g.width, rr = g.row_radius, rc = g.col_radius, nseg = g.segments;
  float* const col = buffer;              // [F][W] running sums over the window's rows, per column
  float* const pre = buffer + F * W;      // [F][W] inclusive prefix of col within each 32-column segment
  float* const seg = buffer + 2 * F * W;  // [F][segments] inclusive prefix of the segment totals
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % kWarpSize, warp = tid / kWarpSize;
  const int threads = static_cast<int>(blockDim.x), warps = threads / kWarpSize;
  const bool narrow = g.narrow;

  for (int64_t task = blockIdx.x; task < g.tasks; task += gridDim.x) {
    const int64_t plane = task / g.bands;
    const int64_t h0 = (task - plane * g.bands) * g.band_rows;
    const int64_t h1 = min64(H, h0 + g.band_rows);
    const typename Op::Plane view = op.plane(plane);
    __syncthreads();  // (the end-of-row barrier already orders the previous task; kept for clarity)

    // Column sums of row h0's window. Each thread owns columns tid + k * threads, here and below.
    {
      const int64_t lo = max64(0, h0 - rr), hi = min64(H - 1, h0 + rr);
      for (int64_t w = tid; w < W; w += threads) {
        float acc[F] = {};
        for (int64_t h = lo; h <= hi; ++h) {
          float v[F];
          view.values(h, w, v);
#pragma unroll
          for (int f = 0; f < F; ++f) acc[f] += v[f];
        }
#pragma unroll
        for (int f = 0; f < F; ++f) col[f * W + w] = acc[f];
      }
    }

    for (int64_t h = h0; h < h1; ++h) {
      // Slide the column sums to row h's window and, for wide windows, scan each 32-column segment.
      const int64_t enter = h + rr, leave = h - rr - 1;
      for (int64_t c0 = 0; c0 < W; c0 += threads) {
        const int64_t w = c0 + tid;
        float v[F];
        if (w < W) {
#pragma unroll
          for (int f = 0; f < F; ++f) v[f] = col[f * W + w];
          if (h > h0) {
            if (rr == 0) {
              view.values(h, w, v);  // exact: the window is the row itself
            } else {
              if (enter < H) {
                float a[F];
                view.values(enter, w, a);
#pragma unroll
                for (int f = 0; f < F; ++f) v[f] += a[f];
              }
              if (leave >= 0) {
                float a[F];
                view.values(leave, w, a);
#pragma unroll
                for (int f = 0; f < F; ++f) v[f] -= a[f];
              }
            }
#pragma unroll
            for (int f = 0; f < F; ++f) col[f * W + w] = v[f];
          }
        } else {
#pragma unroll
          for (int f = 0; f < F; ++f) v[f] = 0.f;
        }
        if (!narrow) {
          const int64_t segment_start = c0 + static_cast<int64_t>(warp) * kWarpSize;
#pragma unroll
          for (int f = 0; f < F; ++f) {
            const float p = warp_inclusive_scan(v[f], lane);
            if (w < W) pre[f * W + w] = p;
            if (lane == kWarpSize - 1 && segment_start < W) seg[f * nseg + segment_start / kWarpSize] = p;
          }
        }
      }
      __syncthreads();  // col (and pre, seg) of row h are complete
      if (!narrow) {
        // Inclusive prefix of the segment totals, one warp per quantity.
        for (int f = warp; f < F; f += warps) {
          float carry = 0.f;
          for (int64_t s0 = 0; s0 < nseg; s0 += kWarpSize) {
            const int64_t s = s0 + lane;
            float t = s < nseg ? seg[f * nseg + s] : 0.f;
            t = warp_inclusive_scan(t, lane) + carry;
            if (s < nseg) seg[f * nseg + s] = t;
            carry = __shfl_sync(kFullWarpMask, t, kWarpSize - 1);
          }
        }
        __syncthreads();
      }
      const int64_t rows_in_window = window_count(h, rr, H);
      for (int64_t w = tid; w < W; w += threads) {
        const int64_t a = max64(0, w - rc), b = min64(W - 1, w + rc);
        float box[F];
        if (narrow) {
#pragma unroll
          for (int f = 0; f < F; ++f) {
            float acc = 0.f;
            for (int64_t j = a; j <= b; ++j) acc += col[f * W + j];
            box[f] = acc;
          }
        } else {
#pragma unroll
          for (int f = 0; f < F; ++f) box[f] = window_sum(pre + f * W, seg + f * nseg, a, b);
        }
        view.finish(h, w, box, static_cast<float>(rows_in_window * (b - a + 1)));
      }
      __syncthreads();  // col, pre and seg are read; the next row may overwrite them
    }
  }
}

// shifts[t * planes + p] = mean of up to kShiftRows evenly spaced rows of plane p of tensor t (first,
// then second if not nullptr), summed in a fixed order; 0 if that is not finite.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    plane_shift_kernel(const T* __restrict__ first, const T* __restrict__ second, float* __restrict__ shifts,
                       int64_t planes, int64_t height, int64_t width) {
  __shared__ float warp_sums[kThreads / kWarpSize];
  const int64_t rows = min64(kShiftRows, height);
  const int64_t count = rows * width;
  const int64_t plane_size = height * width;
  const int64_t tasks = planes * (second != nullptr ? 2 : 1);
  const int tid = static_cast<int>(threadIdx.x);
  const int lane = tid % kWarpSize, warp = tid / kWarpSize, warps = static_cast<int>(blockDim.x) / kWarpSize;
  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const T* src = task < planes ? first + task * plane_size : second + (task - planes) * plane_size;
    float acc = 0.f;
    for (int64_t k = tid; k < count; k += blockDim.x) {
      const int64_t i = k / width, w = k - i * width;
      const int64_t h = (2 * i + 1) * height / (2 * rows);
      acc += to_float(src[h * width + w]);
    }
    acc = warp_sum(acc);  // lane 0 only: the same pairs in the same order as a shfl_down tree
    if (lane == 0) warp_sums[warp] = acc;
    __syncthreads();
    if (tid == 0) {
      float total = 0.f;
      for (int i = 0; i < warps; ++i) total += warp_sums[i];
      const float s = total / static_cast<float>(count);
      shifts[task] = isfinite(s) ? s : 0.f;
    }
    __syncthreads();  // warp_sums is free again
  }
}

// ---- the ops ---------------------------------------------------------------------------------------

// The four summed quantities of local_stat_transform's sweeps at element i:
// {x - sx, (x - sx)^2, g - sg, (g - sg)^2}.
template <typename T>
__device__ __forceinline__ void pair_values(const T* x, const T* guide, int64_t i, float sx, float sg,
                                            float (&v)[4]) {
  const float a = to_float(x[i]) - sx, b = to_float(guide[i]) - sg;
  v[0] = a;
  v[1] = a * a;
  v[2] = b;
  v[3] = b * b;
}

// A plane of both of local_stat_transform's first sweeps (the forward and the backward's coefficient
// pass): they sum pair_values of x and the guide, and start from the same two window moments.
template <typename T>
struct PairPlane {
  const T* x;
  const T* guide;
  float sx, sg;
  int64_t width;
  float eps;
  __device__ __forceinline__ void values(int64_t h, int64_t w, float (&v)[4]) const {
    pair_values(x, guide, h * width + w, sx, sg, v);
  }
};

// local_stat_transform: out = (x - mu_x) * sqrt(var_g + eps) / sqrt(var_x + eps) + mu_g.
template <typename T>
struct TransformForwardOp {
  static constexpr int kFields = 4;
  const T* x;
  const T* guide;
  T* out;
  const float* shifts;  // [2][planes]: x's, then guide's
  int64_t planes, plane_size, width;
  float eps;

  struct Plane : PairPlane<T> {
    T* out;
    __device__ __forceinline__ void finish(int64_t h, int64_t w, const float (&box)[kFields], float n) const {
      const PairPlane<T>& in = *this;
      const int64_t i = h * in.width + w;
      const Moments mx = moments(box[0], box[1], n), mg = moments(box[2], box[3], n);
      const float scale = sqrtf(mg.var + in.eps) / sqrtf(mx.var + in.eps);
      out[i] = from_float<T>((to_float(in.x[i]) - in.sx - mx.mean) * scale + (in.sg + mg.mean));
    }
  };
  __device__ __forceinline__ Plane plane(int64_t p) const {
    return {{x + p * plane_size, guide + p * plane_size, shifts[p], shifts[planes + p], width, eps},
            out + p * plane_size};
  }
};

// local_stat_transform's backward, first pass: the statistics again, and per pixel p (with
// a = sqrt(var_g + eps) / sqrt(var_x + eps), d = x - mu_x, go = grad_out)
//   Bx = -go d a / (2 (var_x + eps) n),  Bg = go d / (2 sqrt(var_x + eps) sqrt(var_g + eps) n)
//   direct = go a,  x_mean = -go a / n - 2 Bx (mu_x - s_x),  x_var = Bx            (if direct != nullptr)
//   g_mean = go / n - 2 Bg (mu_g - s_g),  g_var = Bg                               (if g_mean != nullptr)
template <typename T>
struct TransformCoefficientsOp {
  static constexpr int kFields = 4;
  const T* grad_out;
  const T* x;
  const T* guide;
  const float* shifts;
  float *direct, *x_mean, *x_var, *g_mean, *g_var;  // float32 [planes, H, W]
  int64_t planes, plane_size, width;
  float eps;

  struct Plane : PairPlane<T> {
    const T* grad_out;
    float *direct, *x_mean, *x_var, *g_mean, *g_var;
    __device__ __forceinline__ void finish(int64_t h, int64_t w, const float (&box)[kFields], float n) const {
      const PairPlane<T>& in = *this;
      const float eps = in.eps;
      const int64_t i = h * in.width + w;
      const Moments mx = moments(box[0], box[1], n), mg = moments(box[2], box[3], n);
      const float sd_x = sqrtf(mx.var + eps), sd_g = sqrtf(mg.var + eps);
      const float a = sd_g / sd_x;
      const float d = to_float(in.x[i]) - in.sx - mx.mean;
      const float go = to_float(grad_out[i]);
      if (direct != nullptr) {
        const float bx = -0.5f * go * d * a / (mx.var + eps) / n;
        direct[i] = go * a;
        x_mean[i] = -go * a / n - 2.f * bx * mx.mean;
        x_var[i] = bx;
      }
      if (g_mean != nullptr) {
        const float bg = 0.5f * go * d / (sd_x * sd_g) / n;
        g_mean[i] = go / n - 2.f * bg * mg.mean;
        g_var[i] = bg;
      }
    }
  };
  __device__ __forceinline__ Plane plane(int64_t p) const {
    const int64_t o = p * plane_size;
    auto at = [o](float* q) { return q != nullptr ? q + o : nullptr; };
    return {{x + o, guide + o, shifts[p], shifts[planes + p], width, eps},
            grad_out + o, at(direct), at(x_mean), at(x_var), at(g_mean), at(g_var)};
  }
};

// Second pass: grad_x = direct + box(x_mean) + 2 (x - s_x) box(x_var),
//              grad_guide = box(g_mean) + 2 (guide - s_g) box(g_var).
template <typename T, bool kX, bool kG>
struct TransformGradientsOp {
  static_assert(kX || kG, "at least one gradient");
  static constexpr int kFields = 2 * (kX ? 1 : 0) + 2 * (kG ? 1 : 0);
  const T* x;
  const T* guide;
  const float* shifts;
  const float *direct, *x_mean, *x_var, *g_mean, *g_var;
  T* grad_x;
  T* grad_guide;
  int64_t planes, plane_size, width;

  struct Plane {
    const T* x;
    const T* guide;
    const float *direct, *x_mean, *x_var, *g_mean, *g_var;
    T* grad_x;
    T* grad_guide;
    float sx, sg;
    int64_t width;
    __device__ __forceinline__ void values(int64_t h, int64_t w, float (&v)[kFields]) const {
      const int64_t i = h * width + w;
      if constexpr (kX) {
        v[0] = x_mean[i];
        v[1] = x_var[i];
      }
      if constexpr (kG) {
        constexpr int k = kX ? 2 : 0;  // the guide's fields follow x's
        v[k] = g_mean[i];
        v[k + 1] = g_var[i];
      }
    }
    __device__ __forceinline__ void finish(int64_t h, int64_t w, const float (&box)[kFields], float) const {
      const int64_t i = h * width + w;
      if constexpr (kX) {
        grad_x[i] = from_float<T>(direct[i] + box[0] + 2.f * (to_float(x[i]) - sx) * box[1]);
      }
      if constexpr (kG) {
        constexpr int k = kX ? 2 : 0;
        grad_guide[i] = from_float<T>(box[k] + 2.f * (to_float(guide[i]) - sg) * box[k + 1]);
      }
    }
  };
  __device__ __forceinline__ Plane plane(int64_t p) const {
    const int64_t o = p * plane_size;
    if constexpr (kX && kG) {
      return {x + o,      guide + o,      direct + o, x_mean + o, x_var + o, g_mean + o, g_var + o,
              grad_x + o, grad_guide + o, shifts[p],  shifts[planes + p],   width};
    } else if constexpr (kX) {
      return {x + o, nullptr, direct + o, x_mean + o, x_var + o, nullptr, nullptr, grad_x + o, nullptr,
              shifts[p], 0.f, width};
    } else {
      return {nullptr, guide + o, nullptr, nullptr, nullptr, g_mean + o, g_var + o, nullptr, grad_guide + o,
              0.f, shifts[planes + p], width};
    }
  }
};

// local_mean_var: mean = s + m, var = E[(x - s)^2] - m^2 with m the window mean of x - s.
template <typename T>
struct MeanVarForwardOp {
  static constexpr int kFields = 2;
  const T* x;
  T* mean;
  T* var;
  const float* shifts;
  int64_t plane_size, width;

  struct Plane {
    const T* x;
    T* mean;
    T* var;
    float s;
    int64_t width;
    __device__ __forceinline__ void values(int64_t h, int64_t w, float (&v)[kFields]) const {
      const float a = to_float(x[h * width + w]) - s;
      v[0] = a;
      v[1] = a * a;
    }
    __device__ __forceinline__ void finish(int64_t h, int64_t w, const float (&box)[kFields], float n) const {
      const int64_t i = h * width + w;
      const Moments m = moments(box[0], box[1], n);
      mean[i] = from_float<T>(s + m.mean);
      var[i] = from_float<T>(m.var);
    }
  };
  __device__ __forceinline__ Plane plane(int64_t p) const {
    const int64_t o = p * plane_size;
    return {x + o, mean + o, var + o, shifts[p], width};
  }
};

// local_mean_var's backward with grad_var, first pass: the window mean again, and per pixel p
//   v_coef = gv / n,  m_coef = gm / n - 2 (gv / n) (mu - s)     (gm = 0 when grad_mean is absent)
template <typename T>
struct MeanVarCoefficientsOp {
  static constexpr int kFields = 1;
  const T* grad_mean;  // may be nullptr
  const T* grad_var;
  const T* x;
  const float* shifts;
  float *m_coef, *v_coef;
  int64_t plane_size, width;

  struct Plane {
    const T* grad_mean;
    const T* grad_var;
    const T* x;
    float *m_coef, *v_coef;
    float s;
    int64_t width;
    __device__ __forceinline__ void values(int64_t h, int64_t w, float (&v)[kFields]) const {
      v[0] = to_float(x[h * width + w]) - s;
    }
    __device__ __forceinline__ void finish(int64_t h, int64_t w, const float (&box)[kFields], float n) const {
      const int64_t i = h * width + w;
      const float mean = box[0] / n;
      const float gm = grad_mean != nullptr ? to_float(grad_mean[i]) : 0.f;
      const float bv = to_float(grad_var[i]) / n;
      m_coef[i] = gm / n - 2.f * bv * mean;
      v_coef[i] = bv;
    }
  };
  __device__ __forceinline__ Plane plane(int64_t p) const {
    const int64_t o = p * plane_size;
    return {grad_mean != nullptr ? grad_mean + o : nullptr, grad_var + o, x + o, m_coef + o, v_coef + o,
            shifts[p], width};
  }
};

// Second pass with grad_var: grad_x = box(m_coef) + 2 (x - s) box(v_coef).
template <typename T>
struct MeanVarGradientsOp {
  static constexpr int kFields = 2;
  const T* x;
  const float *m_coef, *v_coef;
  const float* shifts;
  T* grad_x;
  int64_t plane_size, width;

  struct Plane {
    const T* x;
    const float *m_coef, *v_coef;
    T* grad_x;
    float s;
    int64_t width;
    __device__ __forceinline__ void values(int64_t h, int64_t w, float (&v)[kFields]) const {
      const int64_t i = h * width + w;
      v[0] = m_coef[i];
      v[1] = v_coef[i];
    }
    __device__ __forceinline__ void finish(int64_t h, int64_t w, const float (&box)[kFields], float) const {
      const int64_t i = h * width + w;
      grad_x[i] = from_float<T>(box[0] + 2.f * (to_float(x[i]) - s) * box[1]);
    }
  };
  __device__ __forceinline__ Plane plane(int64_t p) const {
    const int64_t o = p * plane_size;
    return {x + o, m_coef + o, v_coef + o, grad_x + o, shifts[p], width};
  }
};

// The single pass with grad_mean alone: grad_x = box(grad_mean / n).
template <typename T>
struct MeanGradientOp {
  static constexpr int kFields = 1;
  const T* grad_mean;
  T* grad_x;
  int64_t plane_size, height, width, row_radius, col_radius;

  struct Plane {
    const T* grad_mean;
    T* grad_x;
    int64_t height, width, row_radius, col_radius;
    __device__ __forceinline__ void values(int64_t h, int64_t w, float (&v)[kFields]) const {
      const float n =
          static_cast<float>(window_count(h, row_radius, height) * window_count(w, col_radius, width));
      v[0] = to_float(grad_mean[h * width + w]) / n;
    }
    __device__ __forceinline__ void finish(int64_t h, int64_t w, const float (&box)[kFields], float) const {
      grad_x[h * width + w] = from_float<T>(box[0]);
    }
  };
  __device__ __forceinline__ Plane plane(int64_t p) const {
    const int64_t o = p * plane_size;
    return {grad_mean + o, grad_x + o, height, width, row_radius, col_radius};
  }
};

// ---- host side -------------------------------------------------------------------------------------

bool valid_shape(const LocalStatsShape& s) {
  return s.planes >= 0 && s.height >= 0 && s.width >= 0 && s.radius >= 0;
}

bool empty_shape(const LocalStatsShape& s) { return s.planes == 0 || s.height == 0 || s.width == 0; }

int64_t plane_size(const LocalStatsShape& s) { return s.height * s.width; }

BoxGeometry make_geometry(const LocalStatsShape& s, int fields) {
  BoxGeometry g{};
  if (empty_shape(s)) return g;  // no tasks
  g.planes = s.planes;
  g.height = s.height;
  g.width = s.width;
  g.row_radius = min64(s.radius, s.height - 1);
  g.col_radius = min64(s.radius, s.width - 1);
  const int64_t bands_wanted = max64(1, ceil_div(kTargetBlocks, s.planes));
  int64_t band = min64(ceil_div(s.height, bands_wanted), kMaxBandRows);
  band = max64(max64(band, kMinBandRows), g.row_radius + 1);
  g.band_rows = min64(band, s.height);
  g.bands = ceil_div(s.height, g.band_rows);
  g.tasks = s.planes * g.bands;
  g.segments = ceil_div(s.width, kWarpSize);
  g.narrow = g.col_radius <= kNarrowRadius;
  g.block_floats = fields * (g.narrow ? s.width : 2 * s.width + g.segments);
  return g;
}

struct SweepLaunch {
  bool shared;
  int threads;
  int64_t grid;
  size_t shared_bytes;
  int64_t global_floats;  // global scratch the long-row path needs (0 on the shared path)
};

SweepLaunch plan_sweep(const BoxGeometry& g) {
  SweepLaunch l{};
  l.threads = static_cast<int>(min64(kThreads, round_up(g.width, kWarpSize)));
  const int64_t bytes = g.block_floats * static_cast<int64_t>(sizeof(float));
  l.shared = bytes <= static_cast<int64_t>(kMaxSharedBytes);
  if (l.shared) {
    l.grid = min64(g.tasks, kMaxGridBlocks);
    l.shared_bytes = static_cast<size_t>(bytes);
    l.global_floats = 0;
  } else {
    const int64_t cap =
        max64(kLongRowMinBlocks, min64(kLongRowMaxBlocks, kLongRowBudgetFloats / g.block_floats));
    l.grid = min64(g.tasks, cap);
    l.shared_bytes = 0;
    l.global_floats = l.grid * g.block_floats;
  }
  return l;
}

int64_t sweep_scratch_floats(const LocalStatsShape& s, int fields) {
  return plan_sweep(make_geometry(s, fields)).global_floats;
}

// The workspace of one launcher: [shifts | coefficient planes | the long-row path's per-block scratch].
struct Layout {
  int64_t shifts, coefficients, sweep, total;  // offsets in floats, and the size
};

// pass0, pass1: the field counts of the launcher's sweeps (0: no such sweep).
Layout make_layout(const LocalStatsShape& s, int shift_tensors, int coefficient_planes, int pass0,
                   int pass1) {
  Layout l{};
  if (!valid_shape(s) || empty_shape(s)) return l;
  l.shifts = 0;
  l.coefficients = round_up(shift_tensors * s.planes, kAlignFloats);
  l.sweep = l.coefficients + round_up(coefficient_planes * s.planes * plane_size(s), kAlignFloats);
  int64_t scratch = 0;
  if (pass0 > 0) scratch = max64(scratch, sweep_scratch_floats(s, pass0));
  if (pass1 > 0) scratch = max64(scratch, sweep_scratch_floats(s, pass1));
  l.total = scratch > 0 ? l.sweep + scratch : l.sweep;
  return l;
}

Layout transform_forward_layout(const LocalStatsShape& s) { return make_layout(s, 2, 0, 4, 0); }

Layout transform_backward_layout(const LocalStatsShape& s, bool need_x, bool need_guide) {
  if (!need_x && !need_guide) return {};
  const int planes_x = need_x ? 3 : 0, planes_guide = need_guide ? 2 : 0;  // coefficient planes
  return make_layout(s, 2, planes_x + planes_guide, 4, (need_x ? 2 : 0) + (need_guide ? 2 : 0));
}

Layout mean_var_forward_layout(const LocalStatsShape& s) { return make_layout(s, 1, 0, 2, 0); }

Layout mean_var_backward_layout(const LocalStatsShape& s, bool has_grad_mean, bool has_grad_var) {
  if (has_grad_var) return make_layout(s, 1, 2, 1, 2);
  if (has_grad_mean) return make_layout(s, 0, 0, 1, 0);
  return {};
}

template <typename Op>
cudaError_t run_sweep(const Op& op, const LocalStatsShape& s, float* scratch, cudaStream_t stream) {
  const BoxGeometry g = make_geometry(s, Op::kFields);
  const SweepLaunch l = plan_sweep(g);
  if (g.tasks == 0) return cudaSuccess;
  const unsigned grid = static_cast<unsigned>(l.grid);
  if (l.shared) {
    if (l.shared_bytes > kMaxSharedBytes) return cudaErrorInvalidConfiguration;
    box_sweep_kernel<Op, true><<<grid, l.threads, l.shared_bytes, stream>>>(op, g, nullptr);
  } else {
    if (scratch == nullptr) return cudaErrorInvalidValue;
    box_sweep_kernel<Op, false><<<grid, l.threads, 0, stream>>>(op, g, scratch);
  }
  return cudaGetLastError();
}

template <typename T>
cudaError_t run_shifts(const T* first, const T* second, float* shifts, const LocalStatsShape& s,
                       cudaStream_t stream) {
  const int64_t tasks = s.planes * (second != nullptr ? 2 : 1);
  const unsigned grid = static_cast<unsigned>(min64(tasks, kMaxGridBlocks));
  const int64_t count = min64(kShiftRows, s.height) * s.width;  // values averaged per plane
  const int threads = static_cast<int>(min64(kThreads, round_up(count, kWarpSize)));
  plane_shift_kernel<T><<<grid, threads, 0, stream>>>(first, second, shifts, s.planes, s.height, s.width);
  return cudaGetLastError();
}

template <typename T>
cudaError_t transform_forward_typed(const T* x, const T* guide, T* out, float* workspace,
                                    const LocalStatsShape& s, float eps, cudaStream_t stream) {
  const Layout l = transform_forward_layout(s);
  float* const shifts = workspace + l.shifts;
  cudaError_t err = run_shifts<T>(x, guide, shifts, s, stream);
  if (err != cudaSuccess) return err;
  const TransformForwardOp<T> op{x, guide, out, shifts, s.planes, plane_size(s), s.width, eps};
  return run_sweep(op, s, workspace + l.sweep, stream);
}

template <typename T, bool kX, bool kG>
cudaError_t transform_gradients(const T* x, const T* guide, const float* shifts, const float* coefficients,
                                T* grad_x, T* grad_guide, float* scratch, const LocalStatsShape& s,
                                cudaStream_t stream) {
  const int64_t n = s.planes * plane_size(s);
  const float* const direct = kX ? coefficients : nullptr;
  const float* const x_mean = kX ? coefficients + n : nullptr;
  const float* const x_var = kX ? coefficients + 2 * n : nullptr;
  const float* const g_mean = kG ? coefficients + (kX ? 3 : 0) * n : nullptr;
  const float* const g_var = kG ? coefficients + (kX ? 4 : 1) * n : nullptr;
  const TransformGradientsOp<T, kX, kG> op{x,      guide, shifts, direct,   x_mean,        x_var,
                                           g_mean, g_var, grad_x, grad_guide, s.planes, plane_size(s),
                                           s.width};
  return run_sweep(op, s, scratch, stream);
}

template <typename T>
cudaError_t transform_backward_typed(const T* grad_out, const T* x, const T* guide, T* grad_x, T* grad_guide,
                                     float* workspace, const LocalStatsShape& s, float eps,
                                     cudaStream_t stream) {
  const bool need_x = grad_x != nullptr, need_guide = grad_guide != nullptr;
  if (!need_x && !need_guide) return cudaSuccess;
  const Layout l = transform_backward_layout(s, need_x, need_guide);
  float* const shifts = workspace + l.shifts;
  float* const coefficients = workspace + l.coefficients;
  float* const scratch = workspace + l.sweep;
  cudaError_t err = run_shifts<T>(x, guide, shifts, s, stream);
  if (err != cudaSuccess) return err;
  const int64_t n = s.planes * plane_size(s);
  float* const direct = need_x ? coefficients : nullptr;
  float* const x_mean = need_x ? coefficients + n : nullptr;
  float* const x_var = need_x ? coefficients + 2 * n : nullptr;
  float* const g_mean = need_guide ? coefficients + (need_x ? 3 : 0) * n : nullptr;
  float* const g_var = need_guide ? coefficients + (need_x ? 4 : 1) * n : nullptr;
  const TransformCoefficientsOp<T> first{grad_out, x,     guide,    shifts,        direct,  x_mean, x_var,
                                         g_mean,   g_var, s.planes, plane_size(s), s.width, eps};
  err = run_sweep(first, s, scratch, stream);
  if (err != cudaSuccess) return err;
  if (need_x && need_guide) {
    return transform_gradients<T, true, true>(x, guide, shifts, coefficients, grad_x, grad_guide, scratch, s,
                                              stream);
  }
  if (need_x) {
    return transform_gradients<T, true, false>(x, guide, shifts, coefficients, grad_x, grad_guide, scratch, s,
                                               stream);
  }
  return transform_gradients<T, false, true>(x, guide, shifts, coefficients, grad_x, grad_guide, scratch, s,
                                             stream);
}

template <typename T>
cudaError_t mean_var_forward_typed(const T* x, T* mean, T* var, float* workspace, const LocalStatsShape& s,
                                   cudaStream_t stream) {
  const Layout l = mean_var_forward_layout(s);
  float* const shifts = workspace + l.shifts;
  cudaError_t err = run_shifts<T>(x, nullptr, shifts, s, stream);
  if (err != cudaSuccess) return err;
  const MeanVarForwardOp<T> op{x, mean, var, shifts, plane_size(s), s.width};
  return run_sweep(op, s, workspace + l.sweep, stream);
}

template <typename T>
cudaError_t mean_var_backward_typed(const T* grad_mean, const T* grad_var, const T* x, T* grad_x,
                                    float* workspace, const LocalStatsShape& s, cudaStream_t stream) {
  if (grad_mean == nullptr && grad_var == nullptr) {
    return cudaMemsetAsync(grad_x, 0, sizeof(T) * static_cast<size_t>(s.planes * plane_size(s)), stream);
  }
  const Layout l = mean_var_backward_layout(s, grad_mean != nullptr, grad_var != nullptr);
  float* const scratch = workspace + l.sweep;
  if (grad_var == nullptr) {
    const MeanGradientOp<T> op{grad_mean, grad_x, plane_size(s), s.height, s.width,
                               min64(s.radius, s.height - 1), min64(s.radius, s.width - 1)};
    return run_sweep(op, s, scratch, stream);
  }
  float* const shifts = workspace + l.shifts;
  float* const m_coef = workspace + l.coefficients;
  float* const v_coef = m_coef + s.planes * plane_size(s);
  cudaError_t err = run_shifts<T>(x, nullptr, shifts, s, stream);
  if (err != cudaSuccess) return err;
  const MeanVarCoefficientsOp<T> first{grad_mean, grad_var, x,           shifts,
                                       m_coef,    v_coef,   plane_size(s), s.width};
  err = run_sweep(first, s, scratch, stream);
  if (err != cudaSuccess) return err;
  const MeanVarGradientsOp<T> second{x, m_coef, v_coef, shifts, grad_x, plane_size(s), s.width};
  return run_sweep(second, s, scratch, stream);
}

// The launchers' common preamble: cudaErrorInvalidValue for a bad shape or a missing workspace.
cudaError_t check_call(const LocalStatsShape& s, const Layout& l, const float* workspace) {
  if (!valid_shape(s)) return cudaErrorInvalidValue;
  if (l.total > 0 && workspace == nullptr) return cudaErrorInvalidValue;
  return cudaSuccess;
}

}  // namespace

int64_t local_stat_transform_forward_workspace_size(const LocalStatsShape& shape) {
  return transform_forward_layout(shape).total;
}

int64_t local_stat_transform_backward_workspace_size(const LocalStatsShape& shape, bool need_x,
                                                     bool need_guide) {
  return transform_backward_layout(shape, need_x, need_guide).total;
}

int64_t local_mean_var_forward_workspace_size(const LocalStatsShape& shape) {
  return mean_var_forward_layout(shape).total;
}

int64_t local_mean_var_backward_workspace_size(const LocalStatsShape& shape, bool has_grad_mean,
                                               bool has_grad_var) {
  return mean_var_backward_layout(shape, has_grad_mean, has_grad_var).total;
}

cudaError_t local_stat_transform_forward(const LocalStatTransformParams& params, cudaStream_t stream) {
  const LocalStatsShape& shape = params.shape;
  const cudaError_t err = check_call(shape, transform_forward_layout(shape), params.workspace);
  if (err != cudaSuccess || empty_shape(shape)) return err;
  return dispatch_dtype(params.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return transform_forward_typed<T>(static_cast<const T*>(params.x), static_cast<const T*>(params.guide),
                                      static_cast<T*>(params.out), params.workspace, shape, params.eps, stream);
  });
}

cudaError_t local_stat_transform_backward(const LocalStatTransformParams& params, cudaStream_t stream) {
  const LocalStatsShape& shape = params.shape;
  const cudaError_t err = check_call(
      shape, transform_backward_layout(shape, params.grad_x != nullptr, params.grad_guide != nullptr),
      params.workspace);
  if (err != cudaSuccess || empty_shape(shape)) return err;
  return dispatch_dtype(params.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return transform_backward_typed<T>(static_cast<const T*>(params.grad_out), static_cast<const T*>(params.x),
                                       static_cast<const T*>(params.guide), static_cast<T*>(params.grad_x),
                                       static_cast<T*>(params.grad_guide), params.workspace, shape, params.eps,
                                       stream);
  });
}

cudaError_t local_mean_var_forward(const LocalMeanVarParams& params, cudaStream_t stream) {
  const LocalStatsShape& shape = params.shape;
  const cudaError_t err = check_call(shape, mean_var_forward_layout(shape), params.workspace);
  if (err != cudaSuccess || empty_shape(shape)) return err;
  return dispatch_dtype(params.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return mean_var_forward_typed<T>(static_cast<const T*>(params.x), static_cast<T*>(params.mean),
                                     static_cast<T*>(params.var), params.workspace, shape, stream);
  });
}

cudaError_t local_mean_var_backward(const LocalMeanVarParams& params, cudaStream_t stream) {
  const LocalStatsShape& shape = params.shape;
  const cudaError_t err = check_call(
      shape, mean_var_backward_layout(shape, params.grad_mean != nullptr, params.grad_var != nullptr),
      params.workspace);
  if (err != cudaSuccess || empty_shape(shape)) return err;
  return dispatch_dtype(params.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return mean_var_backward_typed<T>(static_cast<const T*>(params.grad_mean),
                                      static_cast<const T*>(params.grad_var), static_cast<const T*>(params.x),
                                      static_cast<T*>(params.grad_x), params.workspace, shape, stream);
  });
}

}  // namespace facekernels::cuda
