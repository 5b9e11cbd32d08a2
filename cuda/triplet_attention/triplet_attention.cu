// CUDA kernels of the triplet_attention family (header: triplet_attention.h).
//
// Every kernel is a grid-stride loop over its outputs with 64-bit indices; each thread reduces one output
// over its axis in a fixed order (float32 accumulation), so results do not depend on scheduling. The
// grad_scale and gate_conv weight reductions, long sums over whole maps, run a warp per output with a
// fixed butterfly (warp_sum). These are plain, correct kernels: the pool reads x once per pooled axis and
// the gate backward once per gradient, not the single fused pass of the CPU kernels (see docs/ops.md).
#include <type_traits>

#include "cuda/core/device_math.cuh"
#include "cuda/triplet_attention/triplet_attention.h"

namespace facekernels::cuda {
namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ bool replaces(float v, float m) { return v > m || (v != v && m == m); }

__device__ __forceinline__ int64_t strided(const Strides4& s, int64_t b, int64_t c, int64_t h, int64_t w) {
  return b * s.b + c * s.c + h * s.h + w * s.w;
}

template <typename T>
__device__ __forceinline__ float load_or(const T* p, int64_t i, float fallback) {
  return p != nullptr ? to_float(p[i]) : fallback;
}

// ---- axis_pool ----------------------------------------------------------------------------------------
// axis 1 (C), 2 (H) or 3 (W). Output o enumerates the other three axes in the map's order:
// over C (b, h, w), over H (b, c, w), over W (b, h, c).
template <typename T, int kAxis>
__global__ void __launch_bounds__(kThreads)
    pool_kernel(const T* __restrict__ x, Strides4 s, TripletShape n, T* __restrict__ pooled,
                int32_t* __restrict__ arg) {
  const int64_t len = kAxis == 1 ? n.channels : kAxis == 2 ? n.height : n.width;
  const int64_t d1 = kAxis == 2 ? n.channels : n.height;  // the map's rows
  const int64_t d2 = kAxis == 3 ? n.channels : n.width;   // the map's columns
  const int64_t step = kAxis == 1 ? s.c : kAxis == 2 ? s.h : s.w;
  const int64_t total = n.batch * d1 * d2;
  for (int64_t o = grid_thread_index(); o < total; o += grid_thread_count()) {
    const int64_t b = o / (d1 * d2), r = (o / d2) % d1, q = o % d2;
    int64_t base;
    if (kAxis == 1) base = strided(s, b, 0, r, q);
    else if (kAxis == 2) base = strided(s, b, r, 0, q);
    else base = strided(s, b, q, r, 0);
    float m = to_float(x[base]), sum = 0.f;
    int64_t am = 0;
    for (int64_t i = 0; i < len; ++i) {
      const float v = to_float(x[base + i * step]);
      if (replaces(v, m)) {
        m = v;
        am = i;
      }
      sum += v;
    }
    const int64_t plane = d1 * d2;
    pooled[b * 2 * plane + r * d2 + q] = from_float<T>(m);
    pooled[b * 2 * plane + plane + r * d2 + q] = from_float<T>(sum / static_cast<float>(len));
    arg[o] = static_cast<int32_t>(am);
  }
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    pool_backward_kernel(const T* __restrict__ gc, const T* __restrict__ gh, const T* __restrict__ gw,
                         const int32_t* __restrict__ ac, const int32_t* __restrict__ ah,
                         const int32_t* __restrict__ aw, T* __restrict__ gx, bool channels_last, TripletShape n) {
  const int64_t C = n.channels, H = n.height, W = n.width;
  const int64_t total = n.batch * C * H * W;
  for (int64_t i = grid_thread_index(); i < total; i += grid_thread_count()) {
    int64_t b, c, h, w;
    if (channels_last) {
      c = i % C;
      w = (i / C) % W;
      h = (i / (C * W)) % H;
      b = i / (C * W * H);
    } else {
      w = i % W;
      h = (i / W) % H;
      c = (i / (W * H)) % C;
      b = i / (W * H * C);
    }
    const int64_t ic = (b * H + h) * W + w, ih = (b * C + c) * W + w, iw = (b * H + h) * C + c;
    float v = to_float(gc[b * 2 * H * W + H * W + h * W + w]) / static_cast<float>(C) +
              to_float(gh[b * 2 * C * W + C * W + c * W + w]) / static_cast<float>(H) +
              to_float(gw[b * 2 * H * C + H * C + h * C + c]) / static_cast<float>(W);
    if (ac[ic] == c) v += to_float(gc[b * 2 * H * W + h * W + w]);
    if (ah[ih] == h) v += to_float(gh[b * 2 * C * W + c * W + w]);
    if (aw[iw] == w) v += to_float(gw[b * 2 * H * C + h * C + c]);
    gx[i] = from_float<T>(v);
  }
}

// ---- triplet_gate -------------------------------------------------------------------------------------

template <typename T>
__device__ __forceinline__ float gate_sum(const T* gc, const T* gh, const T* gw, const TripletShape& n, int64_t b,
                                          int64_t c, int64_t h, int64_t w) {
  return load_or(gc, (b * n.height + h) * n.width + w, 0.f) + load_or(gh, (b * n.channels + c) * n.width + w, 0.f) +
         load_or(gw, (b * n.height + h) * n.channels + c, 0.f);
}

// Decodes output index i of an x-shaped output into (b, c, h, w).
__device__ __forceinline__ void unpack(const TripletShape& n, bool channels_last, int64_t i, int64_t& b, int64_t& c,
                                       int64_t& h, int64_t& w) {
  if (channels_last) {
    c = i % n.channels;
    w = (i / n.channels) % n.width;
    h = (i / (n.channels * n.width)) % n.height;
    b = i / (n.channels * n.width * n.height);
  } else {
    w = i % n.width;
    h = (i / n.width) % n.height;
    c = (i / (n.width * n.height)) % n.channels;
    b = i / (n.width * n.height * n.channels);
  }
}

// y = x * scale * G; also grad_x = grad_y * scale * G (the same product with grad_y in place of x).
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gate_kernel(const T* __restrict__ x, Strides4 s, const T* gc, const T* gh, const T* gw, const T* scale,
                T* __restrict__ y, bool channels_last, TripletShape n) {
  const int64_t total = n.batch * n.channels * n.height * n.width;
  for (int64_t i = grid_thread_index(); i < total; i += grid_thread_count()) {
    int64_t b, c, h, w;
    unpack(n, channels_last, i, b, c, h, w);
    const float g = gate_sum(gc, gh, gw, n, b, c, h, w);
    const float sc = load_or(scale, b * n.channels + c, 1.f);
    y[i] = from_float<T>(to_float(x[strided(s, b, c, h, w)]) * (sc * g));
  }
}

// The three gate gradients: kAxis 1 sums scale * p over C into grad_gate_c[b, h, w]; kAxis 2 sums p over H
// into grad_gate_h[b, c, w] (times scale); kAxis 3 over W into grad_gate_w[b, h, c] (times scale).
template <typename T, int kAxis>
__global__ void __launch_bounds__(kThreads)
    gate_map_grad_kernel(const T* __restrict__ gy, Strides4 sy, const T* __restrict__ x, Strides4 sx,
                         const T* scale, T* __restrict__ out, TripletShape n) {
  const int64_t len = kAxis == 1 ? n.channels : kAxis == 2 ? n.height : n.width;
  const int64_t d1 = kAxis == 2 ? n.channels : n.height;  // the map's rows
  const int64_t d2 = kAxis == 3 ? n.channels : n.width;
  const int64_t total = n.batch * d1 * d2;
  for (int64_t o = grid_thread_index(); o < total; o += grid_thread_count()) {
    const int64_t b = o / (d1 * d2), r = (o / d2) % d1, q = o % d2;
    float acc = 0.f;
    for (int64_t i = 0; i < len; ++i) {
      int64_t c, h, w;
      if (kAxis == 1) c = i, h = r, w = q;
      else if (kAxis == 2) c = r, h = i, w = q;
      else c = q, h = r, w = i;
      const float p = to_float(gy[strided(sy, b, c, h, w)]) * to_float(x[strided(sx, b, c, h, w)]);
      acc += kAxis == 1 ? load_or(scale, b * n.channels + c, 1.f) * p : p;
    }
    if (kAxis != 1) acc *= load_or(scale, b * n.channels + (kAxis == 2 ? r : q), 1.f);
    out[o] = from_float<T>(acc);
  }
}

// grad_scale[b, c] = sum_{h, w} p G: a warp per (b, c), lanes striding over the H x W positions, then a
// fixed butterfly.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    gate_scale_grad_kernel(const T* __restrict__ gy, Strides4 sy, const T* __restrict__ x, Strides4 sx, const T* gc,
                           const T* gh, const T* gw, T* __restrict__ out, TripletShape n) {
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int64_t plane = n.height * n.width;
  for (int64_t o = grid_warp_index(); o < n.batch * n.channels; o += grid_warp_count()) {
    const int64_t b = o / n.channels, c = o % n.channels;
    float acc = 0.f;
    for (int64_t k = lane; k < plane; k += kWarpSize) {
      const int64_t h = k / n.width, w = k % n.width;
      const float p = to_float(gy[strided(sy, b, c, h, w)]) * to_float(x[strided(sx, b, c, h, w)]);
      acc += p * gate_sum(gc, gh, gw, n, b, c, h, w);
    }
    acc = warp_sum(acc);
    if (lane == 0) out[o] = from_float<T>(acc);
  }
}

// ---- gate_conv ----------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv_kernel(const T* __restrict__ x, const T* __restrict__ wt, T* __restrict__ y, int64_t B, int64_t Cin,
                int64_t M, int64_t N, int64_t K) {
  const int64_t P = K / 2;
  for (int64_t o = grid_thread_index(); o < B * M * N; o += grid_thread_count()) {
    const int64_t b = o / (M * N), m = (o / N) % M, nn = o % N;
    float acc = 0.f;
    for (int64_t k = 0; k < Cin; ++k)
      for (int64_t i = 0; i < K; ++i) {
        const int64_t r = m + i - P;
        if (r < 0 || r >= M) continue;
        for (int64_t j = 0; j < K; ++j) {
          const int64_t q = nn + j - P;
          if (q < 0 || q >= N) continue;
          acc += to_float(wt[(k * K + i) * K + j]) * to_float(x[((b * Cin + k) * M + r) * N + q]);
        }
      }
    y[o] = from_float<T>(acc);
  }
}

// grad_x[b, k, r, q] = sum_{i, j} w[k, i, j] grad_y[b, r - i + P, q - j + P]
template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv_grad_x_kernel(const T* __restrict__ gy, const T* __restrict__ wt, T* __restrict__ gx, int64_t B,
                       int64_t Cin, int64_t M, int64_t N, int64_t K) {
  const int64_t P = K / 2;
  for (int64_t o = grid_thread_index(); o < B * Cin * M * N; o += grid_thread_count()) {
    const int64_t b = o / (Cin * M * N), k = (o / (M * N)) % Cin, r = (o / N) % M, q = o % N;
    float acc = 0.f;
    for (int64_t i = 0; i < K; ++i) {
      const int64_t m = r - i + P;
      if (m < 0 || m >= M) continue;
      for (int64_t j = 0; j < K; ++j) {
        const int64_t nn = q - j + P;
        if (nn < 0 || nn >= N) continue;
        acc += to_float(wt[(k * K + i) * K + j]) * to_float(gy[(b * M + m) * N + nn]);
      }
    }
    gx[o] = from_float<T>(acc);
  }
}

// grad_w[k, i, j] = sum_{b, m, n} grad_y[b, m, n] x[b, k, m + i - P, n + j - P]: a warp per tap.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    conv_grad_w_kernel(const T* __restrict__ gy, const T* __restrict__ x, T* __restrict__ gw, int64_t B,
                       int64_t Cin, int64_t M, int64_t N, int64_t K) {
  const int lane = static_cast<int>(threadIdx.x % kWarpSize);
  const int64_t P = K / 2;
  for (int64_t t = grid_warp_index(); t < Cin * K * K; t += grid_warp_count()) {
    const int64_t k = t / (K * K), i = (t / K) % K, j = t % K;
    float acc = 0.f;
    for (int64_t o = lane; o < B * M * N; o += kWarpSize) {
      const int64_t b = o / (M * N), m = (o / N) % M, nn = o % N;
      const int64_t r = m + i - P, q = nn + j - P;
      if (r < 0 || r >= M || q < 0 || q >= N) continue;
      acc += to_float(gy[o]) * to_float(x[((b * Cin + k) * M + r) * N + q]);
    }
    acc = warp_sum(acc);
    if (lane == 0) gw[t] = from_float<T>(acc);
  }
}

// ---- host side -------------------------------------------------------------------------------------

template <typename Kernel, typename... Args>
cudaError_t launch(Kernel kernel, int64_t work, int64_t per_block, cudaStream_t stream, Args... args) {
  kernel<<<grid_blocks(work, per_block), kThreads, 0, stream>>>(args...);
  return cudaGetLastError();
}

int64_t count(const TripletShape& n) { return n.batch * n.channels * n.height * n.width; }

}  // namespace

cudaError_t axis_pool_forward(const AxisPoolParams& p, cudaStream_t stream) {
  const TripletShape& n = p.shape;
  if (n.batch < 0 || n.channels < 1 || n.height < 1 || n.width < 1) return cudaErrorInvalidValue;
  if (n.batch == 0) return cudaSuccess;
  return dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T* x = static_cast<const T*>(p.x);
    cudaError_t err = launch(pool_kernel<T, 1>, n.batch * n.height * n.width, kThreads, stream, x, p.x_strides, n,
                             static_cast<T*>(p.pooled_c), p.arg_c);
    if (err == cudaSuccess)
      err = launch(pool_kernel<T, 2>, n.batch * n.channels * n.width, kThreads, stream, x, p.x_strides, n,
                   static_cast<T*>(p.pooled_h), p.arg_h);
    if (err == cudaSuccess)
      err = launch(pool_kernel<T, 3>, n.batch * n.height * n.channels, kThreads, stream, x, p.x_strides, n,
                   static_cast<T*>(p.pooled_w), p.arg_w);
    return err;
  });
}

cudaError_t axis_pool_backward(const AxisPoolBackwardParams& p, cudaStream_t stream) {
  const TripletShape& n = p.shape;
  if (n.batch < 0 || n.channels < 1 || n.height < 1 || n.width < 1) return cudaErrorInvalidValue;
  if (n.batch == 0) return cudaSuccess;
  return dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return launch(pool_backward_kernel<T>, count(n), kThreads, stream, static_cast<const T*>(p.grad_c),
                  static_cast<const T*>(p.grad_h), static_cast<const T*>(p.grad_w), p.arg_c, p.arg_h, p.arg_w,
                  static_cast<T*>(p.grad_x), p.channels_last, n);
  });
}

cudaError_t triplet_gate_forward(const TripletGateParams& params, cudaStream_t stream) {
  const TripletGateInputs& p = params.in;
  const TripletShape& n = p.shape;
  if (n.batch < 0 || n.channels < 0 || n.height < 0 || n.width < 0) return cudaErrorInvalidValue;
  if (count(n) == 0) return cudaSuccess;
  return dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return launch(gate_kernel<T>, count(n), kThreads, stream, static_cast<const T*>(p.x), p.x_strides,
                  static_cast<const T*>(p.gate_c), static_cast<const T*>(p.gate_h), static_cast<const T*>(p.gate_w),
                  static_cast<const T*>(p.scale), static_cast<T*>(params.y), p.channels_last, n);
  });
}

cudaError_t triplet_gate_backward(const TripletGateBackwardParams& params, cudaStream_t stream) {
  const TripletGateInputs& p = params.in;
  const TripletShape& n = p.shape;
  if (n.batch < 0 || n.channels < 0 || n.height < 0 || n.width < 0) return cudaErrorInvalidValue;
  if (n.batch == 0 || n.channels == 0) return cudaSuccess;
  return dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T *gy = static_cast<const T*>(params.grad_y), *x = static_cast<const T*>(p.x);
    const T *gc = static_cast<const T*>(p.gate_c), *gh = static_cast<const T*>(p.gate_h),
            *gw = static_cast<const T*>(p.gate_w), *sc = static_cast<const T*>(p.scale);
    cudaError_t err = cudaSuccess;
    if (params.grad_x != nullptr && count(n) > 0)
      err = launch(gate_kernel<T>, count(n), kThreads, stream, gy, params.grad_y_strides, gc, gh, gw, sc,
                   static_cast<T*>(params.grad_x), p.channels_last, n);
    if (err == cudaSuccess && params.grad_gate_c != nullptr && n.height * n.width > 0)
      err = launch(gate_map_grad_kernel<T, 1>, n.batch * n.height * n.width, kThreads, stream, gy, params.grad_y_strides,
                   x, p.x_strides, sc, static_cast<T*>(params.grad_gate_c), n);
    if (err == cudaSuccess && params.grad_gate_h != nullptr && n.width > 0)
      err = launch(gate_map_grad_kernel<T, 2>, n.batch * n.channels * n.width, kThreads, stream, gy,
                   params.grad_y_strides, x, p.x_strides, sc, static_cast<T*>(params.grad_gate_h), n);
    if (err == cudaSuccess && params.grad_gate_w != nullptr && n.height > 0)
      err = launch(gate_map_grad_kernel<T, 3>, n.batch * n.height * n.channels, kThreads, stream, gy,
                   params.grad_y_strides, x, p.x_strides, sc, static_cast<T*>(params.grad_gate_w), n);
    if (err == cudaSuccess && params.grad_scale != nullptr)
      err = launch(gate_scale_grad_kernel<T>, n.batch * n.channels * kWarpSize, kThreads, stream, gy,
                   params.grad_y_strides, x, p.x_strides, gc, gh, gw, static_cast<T*>(params.grad_scale), n);
    return err;
  });
}

cudaError_t gate_conv_forward(const GateConvParams& p, cudaStream_t stream) {
  if (p.batch < 0 || p.in_channels < 0 || p.rows < 0 || p.cols < 0 || p.taps < 1 || p.taps % 2 == 0)
    return cudaErrorInvalidValue;
  if (p.batch * p.rows * p.cols == 0) return cudaSuccess;
  return dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return launch(conv_kernel<T>, p.batch * p.rows * p.cols, kThreads, stream, static_cast<const T*>(p.x),
                  static_cast<const T*>(p.weight), static_cast<T*>(p.y), p.batch, p.in_channels, p.rows, p.cols,
                  p.taps);
  });
}

cudaError_t gate_conv_backward(const GateConvParams& p, cudaStream_t stream) {
  if (p.batch < 0 || p.in_channels < 0 || p.rows < 0 || p.cols < 0 || p.taps < 1 || p.taps % 2 == 0)
    return cudaErrorInvalidValue;
  return dispatch_dtype(p.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    const T *gy = static_cast<const T*>(p.grad_y), *x = static_cast<const T*>(p.x),
            *wt = static_cast<const T*>(p.weight);
    cudaError_t err = cudaSuccess;
    if (p.grad_x != nullptr && p.batch * p.in_channels * p.rows * p.cols > 0)
      err = launch(conv_grad_x_kernel<T>, p.batch * p.in_channels * p.rows * p.cols, kThreads, stream, gy, wt,
                   static_cast<T*>(p.grad_x), p.batch, p.in_channels, p.rows, p.cols, p.taps);
    if (err == cudaSuccess && p.grad_weight != nullptr && p.in_channels > 0)
      err = launch(conv_grad_w_kernel<T>, p.in_channels * p.taps * p.taps * kWarpSize, kThreads, stream, gy, x,
                   static_cast<T*>(p.grad_weight), p.batch, p.in_channels, p.rows, p.cols, p.taps);
    return err;
  });
}

}  // namespace facekernels::cuda
