// CUDA kernels of circular_conv: the forward, grad_x (the circular correlation) and the deterministic
// grad_weight / grad_bias reductions; float32, float16 and bfloat16 storage, float32 arithmetic.
//
// Every op is a 1-D circular convolution along one axis of contiguous [B, C, H, W] data, viewed as
// `lines` of [length, inner]: along H a line is a whole [H, W] plane (length H, inner W); along W it is
// one row (length W, inner 1). Line p belongs to channel (p / lines_per_run) % C (a run is the H rows of
// one plane along W, a single plane along H).
//
// Tiles. A block owns a tile of tile_lines lines x tile_rows positions along the axis x tile_cols inner
// columns (tile_cols = inner when inner <= 32, else 32, so a tile row is either whole rows of the line
// or one 128-byte segment). It stages the tile's circular extension (tile_rows + taps - 1 rows) in
// shared memory as float, taps in chunks of at most kTapChunk, together with each line's taps of the
// chunk; each thread then computes kRowsPerThread consecutive positions of one column, sliding a window
// of registers along the extension: per tap, one shared load of x and one (broadcast) load of the tap for
// kRowsPerThread FMAs. A warp covers consecutive columns, then consecutive row groups; with an odd row
// group the strides across a narrow tile fall on distinct banks (along W: 3 * lane mod 32).
//
// Reductions. grad_weight[c, t] and grad_bias[c] are sums over all positions of channel c. A block owns
// (channel, chunk of kTaps taps, split): it walks its split's tiles in a fixed order, each thread
// accumulating its positions' products with kTaps shifted x values in registers, and reduces the
// block with a fixed shuffle tree. The number of splits depends only on the shape; with more than one
// split, the partial sums go to float32 scratch and a second kernel adds them in split order. The
// result is bit-for-bit reproducible: no atomics, no dependence on the device, on timing or on which
// of the gradients are asked for.
#include "circular_conv.h"

#include "cuda/core/device_math.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstddef>
#include <cstdint>
#include <type_traits>

namespace facekernels::cuda {
namespace {

constexpr int kThreads = 256;      // threads per block, and most work items in a tile
constexpr int kRowsPerThread = 3;  // consecutive positions along the axis per work item
constexpr int64_t kTapChunk = 64;  // taps staged per pass by the forward and the correlation
// Blocks the weight/bias reduction aims for (about eight per SM on the largest GPUs); a shape constant,
// not a device query, so the summation order is the same on every GPU.
constexpr int64_t kTargetReductionBlocks = 2048;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // the default dynamic shared memory limit


// i mod n for i >= 0; extensions almost always wrap at most once, so the division is the rare path.
__device__ __forceinline__ int64_t wrap_index(int64_t i, int64_t n) {
  if (i >= n) {
    i -= n;
    if (i >= n) i %= n;
  }
  return i;
}

// The data as lines of [length, inner], and how the tiles cut them.
struct Tiling {
  int64_t lines;          // lines in the tiled domain
  int64_t length, inner;  // positions along the axis, contiguous elements per position
  int64_t taps;
  int tile_lines, tile_rows, tile_cols;  // tile_rows is a multiple of kRowsPerThread
  int items;                             // work items per tile (<= kThreads)
  int threads;                           // block size: items rounded up to a warp
  int64_t tiles_lines, tiles_rows, tiles_cols;
};

Tiling make_tiling(int64_t lines, int64_t length, int64_t inner, int64_t taps) {
  Tiling g{};
  g.lines = lines;
  g.length = length;
  g.inner = inner;
  g.taps = taps;
  g.tile_cols = static_cast<int>(min64(inner, kWarpSize));
  const int64_t groups_per_line = ceil_div(length, kRowsPerThread);
  const int64_t groups = min64(groups_per_line, kThreads / g.tile_cols);
  g.tile_rows = static_cast<int>(groups * kRowsPerThread);
  // Lines shorter than a tile share one: several whole lines per block.
  g.tile_lines = groups == groups_per_line
                     ? static_cast<int>(min64(max64(1, kThreads / (groups * g.tile_cols)), lines))
                     : 1;
  g.items = static_cast<int>(g.tile_lines * groups * g.tile_cols);
  g.threads = static_cast<int>(ceil_div(g.items, kWarpSize) * kWarpSize);
  g.tiles_lines = ceil_div(lines, g.tile_lines);
  g.tiles_rows = ceil_div(length, g.tile_rows);
  g.tiles_cols = ceil_div(inner, g.tile_cols);
  return g;
}

// This thread's work item, the same in every tile: positions row .. row + kRowsPerThread - 1 of column
// col of the tile's line `line`. Columns vary fastest across threads.
struct Item {
  int line, row, col;
  bool valid;
};

__device__ __forceinline__ Item item_of(const Tiling& g) {
  const int per_line = g.tile_rows / kRowsPerThread * g.tile_cols;
  const int k = static_cast<int>(threadIdx.x);
  Item it;
  it.valid = k < g.items;
  it.line = k / per_line;
  const int rest = k - it.line * per_line;
  it.row = rest / g.tile_cols * kRowsPerThread;
  it.col = rest % g.tile_cols;
  return it;
}

struct TileOrigin {
  int64_t line0, row0, col0;
  int lines_here, rows_here, cols_here;  // the tile's extent, smaller at the domain's edges
};

__device__ __forceinline__ TileOrigin tile_origin(const Tiling& g, int64_t tile) {
  const int64_t col_tile = tile % g.tiles_cols;
  const int64_t rest = tile / g.tiles_cols;
  const int64_t row_tile = rest % g.tiles_rows;
  const int64_t line_tile = rest / g.tiles_rows;
  TileOrigin o;
  o.line0 = line_tile * g.tile_lines;
  o.row0 = row_tile * g.tile_rows;
  o.col0 = col_tile * g.tile_cols;
  o.lines_here = static_cast<int>(min64(g.tile_lines, g.lines - o.line0));
  o.rows_here = static_cast<int>(min64(g.tile_rows, g.length - o.row0));
  o.cols_here = static_cast<int>(min64(g.tile_cols, g.inner - o.col0));
  return o;
}

// ext[r * tile_cols + j] = line[((first + r) mod length) * inner + col0 + j] for r < rows, j < cols_here,
// by the whole block.
template <typename T>
__device__ __forceinline__ void load_extension(float* ext, const T* __restrict__ line, const Tiling& g,
                                               int64_t first, int rows, int64_t col0, int cols_here) {
  if (g.tile_cols == g.inner) {
    // Whole rows: the extension is one circular range of the flat line.
    const int64_t line_size = g.length * g.inner;
    const int64_t start = first * g.inner;
    const int count = rows * g.tile_cols;
    for (int k = static_cast<int>(threadIdx.x); k < count; k += static_cast<int>(blockDim.x)) {
      ext[k] = to_float(line[wrap_index(start + k, line_size)]);
    }
  } else {
    // 32-column segments of longer rows.
    const int count = rows * kWarpSize;
    for (int k = static_cast<int>(threadIdx.x); k < count; k += static_cast<int>(blockDim.x)) {
      const int r = k / kWarpSize, j = k % kWarpSize;
      if (j < cols_here) ext[k] = to_float(line[wrap_index(first + r, g.length) * g.inner + col0 + j]);
    }
  }
}

// dst = bias + sum_t tap[t] * src[position + t], with tap[t] = weight[c, t] (the forward) or, when
// kCorrelate, tap[t] = weight[c, L - 1 - t] read from position - (L - 1) + t (grad_x: sum_t weight[c, t]
// * src[position - t]). bias may be nullptr.
template <typename T, bool kCorrelate>
__global__ void __launch_bounds__(kThreads)
    conv_tiles_kernel(const T* __restrict__ src, const T* __restrict__ weight, const T* __restrict__ bias,
                      T* __restrict__ dst, Tiling g, int64_t channels, int64_t lines_per_run) {
  constexpr int R = kRowsPerThread;
  extern __shared__ float4 shared_storage[];
  float* const shared = reinterpret_cast<float*>(shared_storage);
  const int chunk_max = static_cast<int>(min64(g.taps, kTapChunk));
  const int line_stride = (g.tile_rows + chunk_max - 1) * g.tile_cols;
  float* const ext = shared;                                       // [tile_lines][line_stride]
  float* const taps_shared = shared + g.tile_lines * line_stride;  // [tile_lines][chunk_max]
  const Item it = item_of(g);
  const int64_t line_size = g.length * g.inner;
  const int64_t tiles = g.tiles_lines * g.tiles_rows * g.tiles_cols;

  for (int64_t tile = blockIdx.x; tile < tiles; tile += gridDim.x) {
    const TileOrigin o = tile_origin(g, tile);
    const bool active = it.valid && it.line < o.lines_here && it.row < o.rows_here && it.col < o.cols_here;
    float start = 0.f;
    if (active && bias != nullptr) start = to_float(bias[((o.line0 + it.line) / lines_per_run) % channels]);
    float acc[R];
#pragma unroll
    for (int r = 0; r < R; ++r) acc[r] = start;

    for (int64_t tap0 = 0; tap0 < g.taps; tap0 += chunk_max) {
      const int chunk = static_cast<int>(min64(chunk_max, g.taps - tap0));
      // Extension row r holds position row0 + tap0 + r (forward) or row0 + tap0 - (L - 1) + r.
      const int64_t first = wrap_index(o.row0 + tap0 + (kCorrelate ? g.length - (g.taps - 1) : 0), g.length);
      __syncthreads();  // every read of the previous chunk or tile is done
      for (int line = 0; line < o.lines_here; ++line) {
        load_extension(ext + line * line_stride, src + (o.line0 + line) * line_size, g, first,
                       g.tile_rows + chunk - 1, o.col0, o.cols_here);
      }
      for (int k = static_cast<int>(threadIdx.x); k < o.lines_here * chunk;
           k += static_cast<int>(blockDim.x)) {
        const int line = k / chunk, t = k - line * chunk;
        const int64_t c = ((o.line0 + line) / lines_per_run) % channels;
        const int64_t tap = kCorrelate ? g.taps - 1 - (tap0 + t) : tap0 + t;
        taps_shared[line * chunk_max + t] = to_float(weight[c * g.taps + tap]);
      }
      __syncthreads();
      if (active) {
        const float* xs = ext + it.line * line_stride + it.row * g.tile_cols + it.col;
        const float* ws = taps_shared + it.line * chunk_max;
        // window[r] = extension row it.row + t + r of this column.
        float window[R];
#pragma unroll
        for (int r = 0; r < R - 1; ++r) window[r] = xs[r * g.tile_cols];
#pragma unroll 3
        for (int t = 0; t < chunk; ++t) {
          window[R - 1] = xs[(t + R - 1) * g.tile_cols];
          const float w = ws[t];
#pragma unroll
          for (int r = 0; r < R; ++r) acc[r] = fmaf(w, window[r], acc[r]);
#pragma unroll
          for (int r = 0; r < R - 1; ++r) window[r] = window[r + 1];
        }
      }
    }

    if (active) {
      T* out = dst + (o.line0 + it.line) * line_size + (o.row0 + it.row) * g.inner + o.col0 + it.col;
#pragma unroll
      for (int r = 0; r < R; ++r) {
        if (it.row + r < o.rows_here) out[r * g.inner] = from_float<T>(acc[r]);
      }
    }
  }
}

// Block (channel c, chunk of kTaps taps from tap0, split s) over the lines of channel c (line l of the
// channel is global line ((l / lines_per_run) * C + c) * lines_per_run + l % lines_per_run):
//   weight[c, tap0 + t] partial = sum over the split's positions i of grad_y[i] * x[i + tap0 + t]
//   bias[c] partial             = sum over the split's positions of grad_y[i]   (chunk 0 only)
// written as T into grad_weight / grad_bias when there is one split, else as float into the partials
// ([splits, C, L] and [splits, C]).
template <typename T, int kTaps>
__global__ void __launch_bounds__(kThreads)
    weight_bias_grad_kernel(const T* __restrict__ grad_y, const T* __restrict__ x, Tiling g, int64_t channels,
                            int64_t lines_per_run, int64_t chunks, int64_t splits, bool need_weight,
                            bool need_bias, T* __restrict__ grad_weight, T* __restrict__ grad_bias,
                            float* __restrict__ partial_weight, float* __restrict__ partial_bias) {
  constexpr int R = kRowsPerThread;
  extern __shared__ float4 shared_storage[];
  float* const shared = reinterpret_cast<float*>(shared_storage);
  const int line_stride = (g.tile_rows + kTaps - 1) * g.tile_cols;
  float* const ext = shared;  // [tile_lines][line_stride], only when need_weight
  float* const warp_sums = shared + (need_weight ? g.tile_lines * line_stride : 0);  // [warps][kTaps + 1]
  const Item it = item_of(g);
  const int64_t line_size = g.length * g.inner;
  const int64_t units = g.tiles_lines * g.tiles_rows * g.tiles_cols;
  const int64_t tasks = channels * chunks * splits;
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int warps = static_cast<int>(blockDim.x) / kWarpSize;

  for (int64_t task = blockIdx.x; task < tasks; task += gridDim.x) {
    const int64_t split = task % splits;
    const int64_t chunk = (task / splits) % chunks;
    const int64_t c = task / (splits * chunks);
    const int64_t tap0 = chunk * kTaps;
    const bool do_bias = need_bias && chunk == 0;
    float acc[kTaps];
#pragma unroll
    for (int t = 0; t < kTaps; ++t) acc[t] = 0.f;
    float acc_bias = 0.f;

    const int64_t unit_end = units * (split + 1) / splits;
    for (int64_t unit = units * split / splits; unit < unit_end; ++unit) {
      const TileOrigin o = tile_origin(g, unit);
      if (need_weight) {
        const int64_t first = wrap_index(o.row0 + tap0, g.length);
        __syncthreads();  // every read of the previous unit is done
        for (int line = 0; line < o.lines_here; ++line) {
          const int64_t l = o.line0 + line;
          const int64_t p = ((l / lines_per_run) * channels + c) * lines_per_run + l % lines_per_run;
          load_extension(ext + line * line_stride, x + p * line_size, g, first, g.tile_rows + kTaps - 1,
                         o.col0, o.cols_here);
        }
        __syncthreads();
      }
      if (it.valid && it.line < o.lines_here && it.row < o.rows_here && it.col < o.cols_here) {
        const int64_t l = o.line0 + it.line;
        const int64_t p = ((l / lines_per_run) * channels + c) * lines_per_run + l % lines_per_run;
        const T* gy = grad_y + p * line_size + (o.row0 + it.row) * g.inner + o.col0 + it.col;
        const int valid = static_cast<int>(min64(R, o.rows_here - it.row));
        float gv[R];
#pragma unroll
        for (int r = 0; r < R; ++r) gv[r] = r < valid ? to_float(gy[r * g.inner]) : 0.f;
        if (do_bias) {
#pragma unroll
          for (int r = 0; r < R; ++r) {
            if (r < valid) acc_bias += gv[r];
          }
        }
        if (need_weight) {
          // Position row + r meets tap t at extension row row + r + t: each x value is loaded once for
          // the (up to) R taps it feeds. Positions past the tile's edge are skipped rather than zeroed,
          // so an inf or nan in x there cannot leak in as 0 * inf.
          const float* xs = ext + it.line * line_stride + it.row * g.tile_cols + it.col;
#pragma unroll
          for (int i = 0; i < R + kTaps - 1; ++i) {
            const float v = xs[i * g.tile_cols];
#pragma unroll
            for (int r = 0; r < R; ++r) {
              const int t = i - r;
              if (t >= 0 && t < kTaps && r < valid) acc[t] = fmaf(gv[r], v, acc[t]);
            }
          }
        }
      }
    }

    // Fixed-order block reduction: warp_sum per warp (only lane 0's result is read, and lane 0 of the
    // xor butterfly adds the same pairs in the same order as a shfl_down tree), then the warps in order.
    if (need_weight) {
#pragma unroll
      for (int t = 0; t < kTaps; ++t) {
        const float s = warp_sum(acc[t]);
        if (lane == 0) warp_sums[warp * (kTaps + 1) + t] = s;
      }
    }
    if (do_bias) {
      const float s = warp_sum(acc_bias);
      if (lane == 0) warp_sums[warp * (kTaps + 1) + kTaps] = s;
    }
    __syncthreads();
    for (int t = static_cast<int>(threadIdx.x); t <= kTaps; t += static_cast<int>(blockDim.x)) {
      const bool is_bias = t == kTaps;
      if (is_bias ? !do_bias : (!need_weight || tap0 + t >= g.taps)) continue;
      float total = 0.f;
      for (int w = 0; w < warps; ++w) total += warp_sums[w * (kTaps + 1) + t];
      if (is_bias) {
        if (splits == 1) {
          grad_bias[c] = from_float<T>(total);
        } else {
          partial_bias[split * channels + c] = total;
        }
      } else {
        if (splits == 1) {
          grad_weight[c * g.taps + tap0 + t] = from_float<T>(total);
        } else {
          partial_weight[(split * channels + c) * g.taps + tap0 + t] = total;
        }
      }
    }
    __syncthreads();  // warp_sums is free again
  }
}

// out[i] = sum_{s < splits} partial[s * count + i], in split order.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    sum_splits_kernel(const float* __restrict__ partial, T* __restrict__ out, int64_t count, int64_t splits) {
  for (int64_t i = grid_thread_index(); i < count; i += grid_thread_count()) {
    float total = 0.f;
    for (int64_t s = 0; s < splits; ++s) total += partial[s * count + i];
    out[i] = from_float<T>(total);
  }
}

// ---- host side -------------------------------------------------------------------------------------

template <typename Kernel, typename... Args>
cudaError_t launch(Kernel kernel, int64_t blocks, int threads, size_t shared_bytes, cudaStream_t stream,
                   Args... args) {
  if (shared_bytes > kMaxSharedBytes) return cudaErrorInvalidConfiguration;
  const unsigned grid = static_cast<unsigned>(min64(blocks, kMaxGridBlocks));
  kernel<<<grid, threads, shared_bytes, stream>>>(args...);
  return cudaGetLastError();
}

// The data as lines (see the top of the file).
struct LineView {
  int64_t lines, lines_per_run, length, inner;
};

LineView line_view(const CircularConvShape& s) {
  if (s.axis == 2) return {s.batch * s.channels, 1, s.height, s.width};
  return {s.batch * s.channels * s.height, s.height, s.width, 1};
}

bool valid_shape(const CircularConvShape& s) {
  if (s.batch < 0 || s.channels < 0 || s.height < 0 || s.width < 0) return false;
  if (s.axis != 2 && s.axis != 3) return false;
  const int64_t length = s.axis == 2 ? s.height : s.width;
  return s.taps >= 1 && s.taps <= length;
}

int64_t element_count(const CircularConvShape& s) { return s.batch * s.channels * s.height * s.width; }

template <typename T>
cudaError_t run_conv_tiles(const T* src, const T* weight, const T* bias, T* dst, bool correlate,
                           const CircularConvShape& s, cudaStream_t stream) {
  const LineView v = line_view(s);
  const Tiling g = make_tiling(v.lines, v.length, v.inner, s.taps);
  const int64_t chunk_max = min64(s.taps, kTapChunk);
  const size_t shared_bytes =
      sizeof(float) *
      static_cast<size_t>(g.tile_lines * ((g.tile_rows + chunk_max - 1) * g.tile_cols + chunk_max));
  const int64_t tiles = g.tiles_lines * g.tiles_rows * g.tiles_cols;
  if (correlate) {
    return launch(conv_tiles_kernel<T, true>, tiles, g.threads, shared_bytes, stream, src, weight, bias, dst,
                  g, s.channels, v.lines_per_run);
  }
  return launch(conv_tiles_kernel<T, false>, tiles, g.threads, shared_bytes, stream, src, weight, bias, dst,
                g, s.channels, v.lines_per_run);
}

struct ReductionPlan {
  Tiling tiling;  // over the lines of one channel
  int taps_per_block;
  int64_t chunks, splits;
};

ReductionPlan plan_reduction(const CircularConvShape& s, bool need_weight) {
  const LineView v = line_view(s);
  ReductionPlan plan;
  plan.tiling = make_tiling(s.batch * v.lines_per_run, v.length, v.inner, s.taps);
  plan.taps_per_block = s.taps <= 8 ? 8 : s.taps <= 16 ? 16 : 32;
  plan.chunks = need_weight ? ceil_div(s.taps, plan.taps_per_block) : 1;
  const Tiling& g = plan.tiling;
  const int64_t units = g.tiles_lines * g.tiles_rows * g.tiles_cols;
  // From the channel count alone (not the tap chunks), so that grad_bias sums in the same order whether
  // grad_weight is asked for or not.
  plan.splits = max64(1, min64(units, ceil_div(kTargetReductionBlocks, s.channels)));
  return plan;
}

template <typename T, int kTaps>
cudaError_t launch_weight_bias_grad(const T* grad_y, const T* x, T* grad_weight, T* grad_bias,
                                    float* workspace, const CircularConvShape& s, const ReductionPlan& plan,
                                    cudaStream_t stream) {
  const bool need_weight = grad_weight != nullptr, need_bias = grad_bias != nullptr;
  const LineView v = line_view(s);
  const Tiling& g = plan.tiling;
  // With one split the block sums go straight to the gradients and there is no workspace.
  float* partial_weight = plan.splits > 1 ? workspace : nullptr;
  float* partial_bias =
      plan.splits > 1 ? workspace + (need_weight ? plan.splits * s.channels * s.taps : 0) : nullptr;
  const size_t shared_bytes =
      sizeof(float) *
      static_cast<size_t>((need_weight ? g.tile_lines * (g.tile_rows + kTaps - 1) * g.tile_cols : 0) +
                          g.threads / kWarpSize * (kTaps + 1));
  cudaError_t err =
      launch(weight_bias_grad_kernel<T, kTaps>, s.channels * plan.chunks * plan.splits, g.threads,
             shared_bytes, stream, grad_y, x, g, s.channels, v.lines_per_run, plan.chunks, plan.splits,
             need_weight, need_bias, grad_weight, grad_bias, partial_weight, partial_bias);
  if (err != cudaSuccess || plan.splits == 1) return err;
  if (need_weight) {
    const int64_t count = s.channels * s.taps;
    err = launch(sum_splits_kernel<T>, ceil_div(count, kThreads), kThreads, 0, stream, partial_weight,
                 grad_weight, count, plan.splits);
    if (err != cudaSuccess) return err;
  }
  if (need_bias) {
    err = launch(sum_splits_kernel<T>, ceil_div(s.channels, kThreads), kThreads, 0, stream, partial_bias,
                 grad_bias, s.channels, plan.splits);
  }
  return err;
}

template <typename T>
cudaError_t backward_typed(const T* grad_y, const T* x, const T* weight, T* grad_x, T* grad_weight,
                           T* grad_bias, float* workspace, const CircularConvShape& s, cudaStream_t stream) {
  if (element_count(s) == 0) {
    // Sums over nothing.
    cudaError_t err = cudaSuccess;
    if (grad_weight != nullptr && s.channels > 0) {
      err = cudaMemsetAsync(grad_weight, 0, sizeof(T) * static_cast<size_t>(s.channels * s.taps), stream);
    }
    if (err == cudaSuccess && grad_bias != nullptr && s.channels > 0) {
      err = cudaMemsetAsync(grad_bias, 0, sizeof(T) * static_cast<size_t>(s.channels), stream);
    }
    return err;
  }
  if (grad_x != nullptr) {
    const cudaError_t err = run_conv_tiles<T>(grad_y, weight, nullptr, grad_x, true, s, stream);
    if (err != cudaSuccess) return err;
  }
  if (grad_weight == nullptr && grad_bias == nullptr) return cudaSuccess;
  const ReductionPlan plan = plan_reduction(s, grad_weight != nullptr);
  if (plan.splits > 1 && workspace == nullptr) return cudaErrorInvalidValue;
  switch (plan.taps_per_block) {
    case 8:
      return launch_weight_bias_grad<T, 8>(grad_y, x, grad_weight, grad_bias, workspace, s, plan, stream);
    case 16:
      return launch_weight_bias_grad<T, 16>(grad_y, x, grad_weight, grad_bias, workspace, s, plan, stream);
    default:
      return launch_weight_bias_grad<T, 32>(grad_y, x, grad_weight, grad_bias, workspace, s, plan, stream);
  }
}

}  // namespace

cudaError_t circular_conv_forward(const CircularConvForwardParams& params, cudaStream_t stream) {
  const CircularConvShape& shape = params.shape;
  if (!valid_shape(shape)) return cudaErrorInvalidValue;
  if (element_count(shape) == 0) return cudaSuccess;
  return dispatch_dtype(params.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return run_conv_tiles<T>(static_cast<const T*>(params.x), static_cast<const T*>(params.weight),
                             static_cast<const T*>(params.bias), static_cast<T*>(params.y), false, shape,
                             stream);
  });
}

int64_t circular_conv_backward_workspace_size(const CircularConvShape& shape, bool need_weight,
                                              bool need_bias) {
  if (!valid_shape(shape) || element_count(shape) == 0 || !(need_weight || need_bias)) return 0;
  const ReductionPlan plan = plan_reduction(shape, need_weight);
  if (plan.splits == 1) return 0;
  return plan.splits * shape.channels * ((need_weight ? shape.taps : 0) + (need_bias ? 1 : 0));
}

cudaError_t circular_conv_backward(const CircularConvBackwardParams& params, cudaStream_t stream) {
  const CircularConvShape& shape = params.shape;
  if (!valid_shape(shape)) return cudaErrorInvalidValue;
  return dispatch_dtype(params.dtype, [&](auto* tag) {
    using T = std::remove_pointer_t<decltype(tag)>;
    return backward_typed<T>(static_cast<const T*>(params.grad_y), static_cast<const T*>(params.x),
                             static_cast<const T*>(params.weight), static_cast<T*>(params.grad_x),
                             static_cast<T*>(params.grad_weight), static_cast<T*>(params.grad_bias),
                             params.workspace, shape, stream);
  });
}

}  // namespace facekernels::cuda
