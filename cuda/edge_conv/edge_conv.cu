// CUDA kernels of cosine_topk and edge_conv_max (the GEMMs run in the binding, through cuBLAS).
//
// cosine_topk: a warp per row of the tile. Each lane scales one tile value by the two inverse norms
// (float32); lanes within `margin` of the row's current k-th similarity are candidates, taken one at a
// time by the whole warp: the warp recomputes the similarity in float64 from x and y (a strided dot
// product over the channels, reduced in a fixed order, so equal columns get equal values wherever they
// sit) and lane 0 inserts it into the row's sorted list. The list holds exact values, so ties are broken
// by index as torch.topk on the exact values would.
//
// edge_conv_max: the weights of a group of neighbours are built per batch element (the scatter-add over
// idx runs with a thread per (b, j, m) walking n in order: deterministic, no atomics), the binding runs
// one batched GEMM per group, and a thread per output keeps the running max and the first maximal j.
// The backward's weight gradients are reduced over the batch with a thread per (n, m) in a fixed order.
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#include <type_traits>

#include "cuda/core/device_math.cuh"
#include "cuda/edge_conv/edge_conv.h"

namespace facekernels::cuda {
namespace {

constexpr int kThreads = 256;

// Blocks of kThreads for `count` items (grid-stride loops cover the rest). At most 65536 blocks, fewer
// than core's kMaxGridBlocks: kept, so that the launches are those measured.
inline unsigned grid_for(int64_t count) {
  return static_cast<unsigned>(min64(grid_blocks(count, kThreads), int64_t{65536}));
}

#define FK_GRID_STRIDE(i, count) for (int64_t i = grid_thread_index(); i < (count); i += grid_thread_count())

__device__ __forceinline__ bool ranks_before(double va, int64_t ia, double vb, int64_t ib) {
  if (va != va) return false;
  if (vb != vb) return true;
  return va > vb || (va == vb && ia < ib);
}

// ---- cosine_topk --------------------------------------------------------------------------------

template <typename T>
__global__ void inverse_norms_kernel(const T* x, int64_t batch, int64_t channels, int64_t n, double* inv) {
  FK_GRID_STRIDE(t, batch * n) {
    const int64_t b = t / n, i = t % n;
    const T* p = x + b * channels * n + i;
    double s = 0;
    for (int64_t c = 0; c < channels; ++c) {
      const double v = static_cast<double>(to_float(p[c * n]));
      s += v * v;
    }
    const double norm = sqrt(s);
    inv[t] = 1.0 / (norm > 1e-12 ? norm : 1e-12);
  }
}

template <typename T>
__global__ void topk_tile_kernel(const T* sim, TopkColumns columns, int64_t n0, int64_t rows, int64_t c0,
                                 int64_t cols, TopkLists lists) {
  const int lane = threadIdx.x & (kWarpSize - 1);
  const int64_t warps = grid_thread_count() / kWarpSize;
  const T* x = static_cast<const T*>(columns.x);
  const T* y = static_cast<const T*>(columns.y);
  const int64_t k = lists.k, channels = columns.channels, nn = columns.n, mm = columns.m;
  for (int64_t r = grid_thread_index() / kWarpSize; r < rows; r += warps) {
    const int64_t n = n0 + r;
    const double inv_x = columns.inv_x[n];
    const float scale = static_cast<float>(inv_x);
    double* value = lists.value + r * k;
    int32_t* index = lists.index + r * k;
    int32_t size = lists.size[r];
    float cut = size == k ? static_cast<float>(value[k - 1] - static_cast<double>(columns.margin)) : -INFINITY;
    const T* row = sim + r * cols;
    for (int64_t j0 = 0; j0 < cols; j0 += kWarpSize) {
      const int64_t j = j0 + lane;
      float v = -INFINITY;
      if (j < cols) v = to_float(row[j]) * static_cast<float>(columns.inv_y[c0 + j]) * scale;
      // Lanes past the tile never take part (while a list is short, cut is -inf and -inf >= -inf). An
      // infinite tile value is a float16/bfloat16 overflow of a finite similarity: re-rank it in float64.
      unsigned pending = __ballot_sync(kFullWarpMask, j < cols && (v >= cut || isinf(v)));
      while (pending != 0) {
        const int l = __ffs(pending) - 1;
        pending &= pending - 1;
        const float vl = __shfl_sync(kFullWarpMask, v, l);
        if (!(vl >= cut) && !isinf(vl)) continue;  // the cut rose since the ballot
        const int64_t m = c0 + j0 + l;
        double s = 0;
        for (int64_t c = lane; c < channels; c += kWarpSize) {
          s += static_cast<double>(to_float(x[c * nn + n])) * static_cast<double>(to_float(y[c * mm + m]));
        }
        s = warp_sum(s);  // the same xor butterfly (offsets 16 .. 1)
        s = __shfl_sync(kFullWarpMask, s, 0);
        const double e = s * inv_x * columns.inv_y[m];
        if (e != e) continue;  // NaN is never selected
        // Lane 0 decides and the warp follows: it alone writes the list, and a lane reading value[k - 1]
        // after lane 0's shift below would otherwise decide differently and desynchronise the warp.
        const bool enters =
            __shfl_sync(kFullWarpMask, static_cast<int>(size < k || ranks_before(e, m, value[k - 1], index[k - 1])), 0);
        if (!enters) continue;
        if (lane == 0) {
          int64_t p = size < k ? size : k - 1;
          while (p > 0 && ranks_before(e, m, value[p - 1], index[p - 1])) {
            value[p] = value[p - 1];
            index[p] = index[p - 1];
            --p;
          }
          value[p] = e;
          index[p] = static_cast<int32_t>(m);
        }
        if (size < k) ++size;
        __syncwarp();
        if (size == k) cut = static_cast<float>(value[k - 1] - static_cast<double>(columns.margin));
      }
    }
    if (lane == 0) lists.size[r] = size;
  }
}

template <typename T>
__global__ void topk_finish_kernel(TopkLists lists, int64_t rows, T* values, int64_t* indices) {
  const int64_t k = lists.k;
  FK_GRID_STRIDE(t, rows * k) {
    const int64_t r = t / k, p = t % k;
    const bool have = p < lists.size[r];
    values[t] = from_float<T>(have ? static_cast<float>(lists.value[t]) : NAN);
    indices[t] = have ? static_cast<int64_t>(lists.index[t]) : -1;
  }
}

// ---- edge_conv_max ------------------------------------------------------------------------------

__global__ void index_check_kernel(const int64_t* idx, int64_t count, int64_t n, unsigned long long* first_bad) {
  FK_GRID_STRIDE(t, count) {
    const int64_t v = idx[t];
    if (v < 0 || v >= n) atomicMin(first_bad, static_cast<unsigned long long>(t));
  }
}

__global__ void duplicate_kernel(const int64_t* idx, int64_t batch, int64_t n, int64_t k, uint8_t* skip) {
  FK_GRID_STRIDE(t, batch * k) {
    const int64_t b = t / k, j = t % k;
    const int64_t* base = idx + b * n * k;
    uint8_t dup = 0;
    for (int64_t q = 0; q < j && !dup; ++q) {
      bool same = true;
      for (int64_t i = 0; i < n && same; ++i) same = base[i * k + j] == base[i * k + q];
      dup = same ? 1 : 0;
    }
    skip[t] = dup;
  }
}

template <typename T>
__global__ void transpose_weights_kernel(EdgeTransposeParams p) {
  const T* ws = static_cast<const T*>(p.w_self);
  const T* we = static_cast<const T*>(p.w_edge);
  const int64_t m = p.m;
  FK_GRID_STRIDE(t, p.n * m) {
    const int64_t i = t / m, r = t % m;
    const float e = to_float(we[r * p.e0 + i * p.e1]);
    p.self_minus_edge_t[t] = to_float(ws[r * p.s0 + i * p.s1]) - e;
    p.edge_t[t] = e;
  }
}

__global__ void init_weights_kernel(const float* self_minus_edge_t, int64_t bc, int64_t n, int64_t m, int64_t kj,
                                    float* scratch) {
  const int64_t width = kj * m;
  FK_GRID_STRIDE(t, bc * n * width) {
    const int64_t p = (t / width) % n, col = t % width;
    scratch[t] = self_minus_edge_t[p * m + col % m];
  }
}

// A thread per (b, j, m) walks n in order: scratch[b, idx[b, n, j], j m + m] += edge_t[n, m].
__global__ void scatter_weights_kernel(EdgeBuildParams p) {
  const float* edge_t = p.edge_t;
  const int64_t* idx = p.idx;
  const int64_t b0 = p.b0, bc = p.bc, n = p.n, m = p.m, k = p.k, j0 = p.j0, kj = p.kj;
  float* scratch = p.scratch;
  const int64_t width = kj * m;
  FK_GRID_STRIDE(t, bc * kj * m) {
    const int64_t bb = t / (kj * m), jj = (t / m) % kj, col = t % m;
    const int64_t* ib = idx + (b0 + bb) * n * k + j0 + jj;
    float* base = scratch + bb * n * width + jj * m + col;
    for (int64_t i = 0; i < n; ++i) base[ib[i * k] * width] += edge_t[i * m + col];
  }
}

template <typename T>
__global__ void convert_kernel(const float* src, int64_t count, T* dst) {
  FK_GRID_STRIDE(t, count) { dst[t] = from_float<T>(src[t]); }
}

template <typename T>
__global__ void max_group_kernel(EdgeMaxGroupParams p) {
  const T* z = static_cast<const T*>(p.z);
  const int64_t bc = p.bc, c = p.c, m = p.m, k = p.k, j0 = p.j0, kj = p.kj;
  const uint8_t* skip = p.skip;
  float* best = p.best;
  int32_t* arg = p.arg;
  const bool last = p.last;
  const T* bias = static_cast<const T*>(p.bias);
  T* out = static_cast<T*>(p.out);
  const int64_t width = kj * m;
  FK_GRID_STRIDE(t, bc * c * m) {
    const int64_t row = t / m, col = t % m, bb = row / c;
    const T* zr = z + row * width + col;
    float b = 0;
    int32_t a = 0;
    int64_t jj = 0;
    if (j0 == 0) {
      b = to_float(zr[0]);
      a = 0;
      jj = 1;
    } else {
      b = best[t];
      a = arg[t];
    }
    for (; jj < kj; ++jj) {
      const int64_t j = j0 + jj;
      if (skip[bb * k + j]) continue;
      const float v = to_float(zr[jj * m]);
      if (v > b) {
        b = v;
        a = static_cast<int32_t>(j);
      }
    }
    if (last) {
      if (bias != nullptr) b += to_float(bias[col]);
      const bool active = b > 0.0f;
      out[t] = from_float<T>(active || b != b ? b : 0.0f);
      arg[t] = active ? a : -1;
    } else {
      best[t] = b;
      arg[t] = a;
    }
  }
}

template <typename T>
__global__ void route_kernel(const T* grad, const int32_t* winner, int64_t bc, int64_t c, int64_t m, int64_t j0,
                             int64_t kj, T* dz) {
  const int64_t width = kj * m;
  FK_GRID_STRIDE(t, bc * c * width) {
    const int64_t row = t / width, jj = (t % width) / m, col = t % m;
    const int64_t at = row * m + col;
    dz[t] = winner[at] == j0 + jj ? grad[at] : from_float<T>(0.0f);
  }
}

template <typename T>
__global__ void bias_gradient_kernel(const T* grad, const int32_t* winner, int64_t rows, int64_t m, T* grad_bias) {
  FK_GRID_STRIDE(col, m) {
    float s = 0;
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t at = r * m + col;
      if (winner[at] >= 0) s += to_float(grad[at]);
    }
    grad_bias[col] = from_float<T>(s);
  }
}

template <typename T>
__global__ void accumulate_kernel(float* accum, const T* part, int64_t count) {
  FK_GRID_STRIDE(t, count) { accum[t] += to_float(part[t]); }
}

template <typename T>
__global__ void weight_grads_kernel(EdgeWeightGradParams p) {
  const T* dwcat = static_cast<const T*>(p.dwcat);
  const int64_t* idx = p.idx;
  const int64_t b0 = p.b0, bc = p.bc, n = p.n, m = p.m, k = p.k, j0 = p.j0, kj = p.kj;
  float* gd = p.gd;
  float* ge = p.ge;
  const int64_t width = kj * m;
  FK_GRID_STRIDE(t, n * m) {
    const int64_t i = t / m, col = t % m;
    float sd = 0, se = 0;
    for (int64_t bb = 0; bb < bc; ++bb) {
      const T* base = dwcat + bb * n * width + col;
      const int64_t* ib = idx + (b0 + bb) * n * k + i * k + j0;
      for (int64_t jj = 0; jj < kj; ++jj) {
        sd += to_float(base[i * width + jj * m]);
        se += to_float(base[ib[jj] * width + jj * m]);
      }
    }
    gd[t] += sd;
    ge[t] += se;
  }
}

template <typename T>
__global__ void finish_weight_grads_kernel(const float* gd, const float* ge, int64_t n, int64_t m, T* grad_self,
                                           T* grad_edge) {
  FK_GRID_STRIDE(t, m * n) {
    const int64_t r = t / n, i = t % n;
    const float d = gd[i * m + r];
    grad_self[t] = from_float<T>(d);
    grad_edge[t] = from_float<T>(ge[i * m + r] - d);
  }
}

}  // namespace

cudaError_t edge_inverse_norms(const void* x, int64_t batch, int64_t channels, int64_t n, double* inv, DType dtype,
                               cudaStream_t stream) {
  if (batch * n == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    inverse_norms_kernel<T><<<grid_for(batch * n), kThreads, 0, stream>>>(static_cast<const T*>(x), batch, channels,
                                                                           n, inv);
    return cudaGetLastError();
  });
}

cudaError_t cosine_topk_tile(const void* sim, const TopkColumns& columns, int64_t n0, int64_t rows, int64_t c0,
                             int64_t cols, const TopkLists& lists, DType dtype, cudaStream_t stream) {
  if (rows == 0 || cols == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    topk_tile_kernel<T><<<grid_for(rows * kWarpSize), kThreads, 0, stream>>>(static_cast<const T*>(sim), columns, n0,
                                                                              rows, c0, cols, lists);
    return cudaGetLastError();
  });
}

cudaError_t cosine_topk_finish(const TopkLists& lists, int64_t rows, void* values, int64_t* indices, DType dtype,
                               cudaStream_t stream) {
  if (rows * lists.k == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    topk_finish_kernel<T><<<grid_for(rows * lists.k), kThreads, 0, stream>>>(lists, rows, static_cast<T*>(values),
                                                                              indices);
    return cudaGetLastError();
  });
}

cudaError_t edge_index_check(const int64_t* idx, int64_t count, int64_t n, unsigned long long* first_bad,
                             cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  index_check_kernel<<<grid_for(count), kThreads, 0, stream>>>(idx, count, n, first_bad);
  return cudaGetLastError();
}

cudaError_t edge_duplicate_neighbours(const int64_t* idx, int64_t batch, int64_t n, int64_t k, uint8_t* skip,
                                      cudaStream_t stream) {
  if (batch * k == 0) return cudaSuccess;
  duplicate_kernel<<<grid_for(batch * k), kThreads, 0, stream>>>(idx, batch, n, k, skip);
  return cudaGetLastError();
}

cudaError_t edge_transpose_weights(const EdgeTransposeParams& params, DType dtype, cudaStream_t stream) {
  if (params.m * params.n == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    transpose_weights_kernel<T><<<grid_for(params.m * params.n), kThreads, 0, stream>>>(params);
    return cudaGetLastError();
  });
}

cudaError_t edge_build_weights(const EdgeBuildParams& params, DType dtype, cudaStream_t stream) {
  const int64_t bc = params.bc, n = params.n, m = params.m, kj = params.kj;
  const int64_t count = bc * n * kj * m;
  if (count == 0) return cudaSuccess;
  init_weights_kernel<<<grid_for(count), kThreads, 0, stream>>>(params.self_minus_edge_t, bc, n, m, kj, params.scratch);
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  scatter_weights_kernel<<<grid_for(bc * kj * m), kThreads, 0, stream>>>(params);
  err = cudaGetLastError();
  if (err != cudaSuccess || dtype == DType::Float32) return err;
  return edge_convert(params.scratch, count, params.wcat, dtype, stream);
}

cudaError_t edge_max_group(const EdgeMaxGroupParams& params, DType dtype, cudaStream_t stream) {
  const int64_t count = params.bc * params.c * params.m;
  if (count == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    max_group_kernel<T><<<grid_for(count), kThreads, 0, stream>>>(params);
    return cudaGetLastError();
  });
}

cudaError_t edge_route_gradient(const EdgeRouteParams& params, DType dtype, cudaStream_t stream) {
  const int64_t bc = params.bc, c = params.c, m = params.m, kj = params.kj;
  if (bc * c * m * kj == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    route_kernel<T><<<grid_for(bc * c * kj * m), kThreads, 0, stream>>>(static_cast<const T*>(params.grad),
                                                                         params.winner, bc, c, m, params.j0, kj,
                                                                         static_cast<T*>(params.dz));
    return cudaGetLastError();
  });
}

cudaError_t edge_bias_gradient(const void* grad, const int32_t* winner, int64_t batch, int64_t c, int64_t m,
                               void* grad_bias, DType dtype, cudaStream_t stream) {
  if (m == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    bias_gradient_kernel<T><<<grid_for(m), kThreads, 0, stream>>>(static_cast<const T*>(grad), winner, batch * c, m,
                                                                   static_cast<T*>(grad_bias));
    return cudaGetLastError();
  });
}

cudaError_t edge_accumulate(float* accum, const void* part, int64_t count, DType dtype, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    accumulate_kernel<T><<<grid_for(count), kThreads, 0, stream>>>(accum, static_cast<const T*>(part), count);
    return cudaGetLastError();
  });
}

cudaError_t edge_accumulate_weight_grads(const EdgeWeightGradParams& params, DType dtype, cudaStream_t stream) {
  if (params.n * params.m == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    weight_grads_kernel<T><<<grid_for(params.n * params.m), kThreads, 0, stream>>>(params);
    return cudaGetLastError();
  });
}

cudaError_t edge_convert(const float* accum, int64_t count, void* out, DType dtype, cudaStream_t stream) {
  if (count == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    convert_kernel<T><<<grid_for(count), kThreads, 0, stream>>>(accum, count, static_cast<T*>(out));
    return cudaGetLastError();
  });
}

cudaError_t edge_finish_weight_grads(const float* gd, const float* ge, int64_t n, int64_t m, void* grad_self,
                                     void* grad_edge, DType dtype, cudaStream_t stream) {
  if (n * m == 0) return cudaSuccess;
  return dispatch_dtype(dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    finish_weight_grads_kernel<T><<<grid_for(n * m), kThreads, 0, stream>>>(gd, ge, n, m, static_cast<T*>(grad_self),
                                                                             static_cast<T*>(grad_edge));
    return cudaGetLastError();
  });
}

}  // namespace facekernels::cuda
