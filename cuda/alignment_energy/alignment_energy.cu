// CUDA kernels of alignment_energy: row preparation, the inverse_distance tile reduction, the knn heaps,
// and the final per-point values; float32 or float64, with float64 sums.
//
// inverse_distance. The binding walks the strict upper triangle of the pair matrix in tiles (c0 >= r0),
// so every pair is computed once and credited to both points. A block owns a strip of kStripRows tile
// rows x kColsPerBlock columns (kColsPerThread per thread, a warp's loads coalesced): each thread
// accumulates its columns' sums over the strip in float64 registers, and each row's sum over the block
// goes through a warp shuffle tree and a fixed pass over the warps in shared memory. Both kinds of
// partial sums go to scratch, and a second kernel adds them, in strip (block) order, into the per-point
// sums: rows into sums[0..1], columns into sums[2..3], so no two threads ever add into one element and
// the result does not depend on scheduling.
//
// knn. A warp owns a row of a row block and scans every column tile (no symmetry here: a row's heap is
// then private to its warp, with no locking). Lanes take consecutive columns; a column whose tile
// distance is within its margin of the heap's largest distance is a candidate, and candidates are
// handled one at a time in lane order: the warp recomputes the distance in float64 from the prepared
// rows (a strided dot product and a shuffle tree, so d(p, q) == d(q, p) bitwise and identical rows tie
// exactly), lane 0 offers it to the heap, and the new largest distance is broadcast to re-filter the
// remaining candidates.
#include "alignment_energy.h"

#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/core/device_math.cuh"

namespace facekernels::cuda {
namespace {

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / kWarpSize;
constexpr int kColsPerThread = 4;
constexpr int64_t kColsPerBlock = int64_t{kThreads} * kColsPerThread;
constexpr int kStripRows = 16;
constexpr int kFinishThreads = 1024;

__device__ __forceinline__ float root(float v) { return sqrtf(v); }
__device__ __forceinline__ double root(double v) { return sqrt(v); }

// The snapped distance of a tile value s (rounding noise around 0 is 0; see
// csrc/alignment_energy/alignment_energy_kernels.cpp).
template <typename T, bool Euclidean>
__device__ __forceinline__ T snapped_distance(T s, T row_sq, T col_sq, T tolerance) {
  if constexpr (Euclidean) {
    const T sum = row_sq + col_sq;
    const T d2 = sum - (s + s);
    return d2 <= tolerance * sum ? T(0) : root(d2);  // NaN stays NaN
  }
  const T d = T(1) - s;
  return d <= tolerance ? T(0) : d;
}

// ---- prepare --------------------------------------------------------------------------------------

__global__ void set_value_kernel(int64_t* target, int64_t value) { *target = value; }

// A warp per row.
template <typename T>
__global__ void __launch_bounds__(kThreads)
    prepare_kernel(const T* __restrict__ x, int64_t stride_row, int64_t stride_col, int64_t n, int64_t dim,
                   bool normalise, T* __restrict__ out, T* __restrict__ sq_norms, int64_t* first_zero) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t row = static_cast<int64_t>(blockIdx.x) * kWarps + static_cast<int64_t>(threadIdx.x) / kWarpSize;
  if (row >= n) return;
  const T* in = x + row * stride_row;
  T* o = out + row * dim;
  double s = 0;
  for (int64_t i = lane; i < dim; i += kWarpSize) {
    const double v = static_cast<double>(in[i * stride_col]);
    s += v * v;
  }
  s = warp_sum(s);
  if (normalise) {
    const double inv = s > 0 ? 1.0 / sqrt(s) : 0.0;
    double t = 0;
    for (int64_t i = lane; i < dim; i += kWarpSize) {
      const T v = static_cast<T>(static_cast<double>(in[i * stride_col]) * inv);
      o[i] = v;
      t += static_cast<double>(v) * static_cast<double>(v);
    }
    t = warp_sum(t);
    if (lane == 0) {
      if (sq_norms != nullptr) sq_norms[row] = static_cast<T>(t);
      if (s == 0 && first_zero != nullptr) {  // (a NaN row is not zero: its NaN propagates)
        atomicMin(reinterpret_cast<unsigned long long*>(first_zero), static_cast<unsigned long long>(row));
      }
    }
  } else {
    for (int64_t i = lane; i < dim; i += kWarpSize) o[i] = in[i * stride_col];
    if (lane == 0 && sq_norms != nullptr) sq_norms[row] = static_cast<T>(s);
  }
}

// ---- inverse_distance -----------------------------------------------------------------------------

struct TileScratch {
  double *row_num, *row_den;  // [rows, col_blocks]
  double *col_num, *col_den;  // [strips, cols]
};

TileScratch carve_scratch(double* workspace, int64_t rows, int64_t cols) {
  const int64_t row_part = rows * ceil_div(cols, kColsPerBlock);
  const int64_t col_part = ceil_div(rows, kStripRows) * cols;
  return {workspace, workspace + row_part, workspace + 2 * row_part, workspace + 2 * row_part + col_part};
}

template <typename T, bool Euclidean>
__global__ void __launch_bounds__(kThreads)
    inverse_distance_kernel(const T* __restrict__ sim_points, const T* __restrict__ sim_directions,
                            const T* __restrict__ sq_norms, AlignmentTile tile, T tolerance, TileScratch scratch) {
  __shared__ double shared_num[kStripRows][kWarps];
  __shared__ double shared_den[kStripRows][kWarps];
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int warp = static_cast<int>(threadIdx.x) / kWarpSize;
  const int64_t col_blocks = gridDim.x;
  const int64_t strip = blockIdx.y;
  const int64_t rfirst = strip * kStripRows;
  const int64_t jbase = static_cast<int64_t>(blockIdx.x) * kColsPerBlock + threadIdx.x;

  T col_sq[kColsPerThread];
  double col_num[kColsPerThread], col_den[kColsPerThread];
#pragma unroll
  for (int q = 0; q < kColsPerThread; ++q) {
    const int64_t j = jbase + q * kThreads;
    col_sq[q] = Euclidean && j < tile.cols ? sq_norms[tile.c0 + j] : T(0);
    col_num[q] = col_den[q] = 0;
  }
  for (int rr = 0; rr < kStripRows; ++rr) {
    const int64_t r = rfirst + rr;
    T row_num = 0, row_den = 0;  // this thread's (at most kColsPerThread) terms of row r
    if (r < tile.rows) {
      const int64_t point = tile.r0 + r;
      const T row_sq = Euclidean ? sq_norms[point] : T(0);
      const T* sp = sim_points + r * tile.cols;
      const T* sv = sim_directions + r * tile.cols;
#pragma unroll
      for (int q = 0; q < kColsPerThread; ++q) {
        const int64_t j = jbase + q * kThreads;
        if (j < tile.cols && tile.c0 + j > point) {
          const T d = snapped_distance<T, Euclidean>(sp[j], row_sq, col_sq[q], tolerance);
          if (!(d <= T(0))) {  // D > 0, or NaN (propagated, not hidden)
            const T w = T(1) / d;
            const T wv = w * (T(1) - sv[j]);
            row_num += wv;
            row_den += w;
            col_num[q] += static_cast<double>(wv);
            col_den[q] += static_cast<double>(w);
          }
        }
      }
    }
    const double sn = warp_sum(static_cast<double>(row_num));
    const double sd = warp_sum(static_cast<double>(row_den));
    if (lane == 0) {
      shared_num[rr][warp] = sn;
      shared_den[rr][warp] = sd;
    }
  }
  __syncthreads();
  if (static_cast<int>(threadIdx.x) < kStripRows) {
    const int64_t r = rfirst + static_cast<int>(threadIdx.x);
    if (r < tile.rows) {
      double sn = 0, sd = 0;
      for (int w = 0; w < kWarps; ++w) {
        sn += shared_num[threadIdx.x][w];
        sd += shared_den[threadIdx.x][w];
      }
      scratch.row_num[r * col_blocks + blockIdx.x] = sn;
      scratch.row_den[r * col_blocks + blockIdx.x] = sd;
    }
  }
#pragma unroll
  for (int q = 0; q < kColsPerThread; ++q) {
    const int64_t j = jbase + q * kThreads;
    if (j < tile.cols) {
      scratch.col_num[strip * tile.cols + j] = col_num[q];
      scratch.col_den[strip * tile.cols + j] = col_den[q];
    }
  }
}

// Thread i < rows adds row i's partial sums (over the column blocks, in order) into sums[0..1]; thread
// rows + j adds column j's (over the strips, in order) into sums[2..3].
__global__ void __launch_bounds__(kThreads)
    reduce_tile_kernel(AlignmentTile tile, int64_t col_blocks, int64_t strips, int64_t n, TileScratch scratch,
                       double* __restrict__ sums) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * kThreads + threadIdx.x;
  if (i < tile.rows) {
    double sn = 0, sd = 0;
    for (int64_t b = 0; b < col_blocks; ++b) {
      sn += scratch.row_num[i * col_blocks + b];
      sd += scratch.row_den[i * col_blocks + b];
    }
    sums[tile.r0 + i] += sn;
    sums[n + tile.r0 + i] += sd;
  } else if (i - tile.rows < tile.cols) {
    const int64_t j = i - tile.rows;
    double sn = 0, sd = 0;
    for (int64_t s = 0; s < strips; ++s) {
      sn += scratch.col_num[s * tile.cols + j];
      sd += scratch.col_den[s * tile.cols + j];
    }
    sums[2 * n + tile.c0 + j] += sn;
    sums[3 * n + tile.c0 + j] += sd;
  }
}

// ---- knn ------------------------------------------------------------------------------------------

__device__ __forceinline__ bool key_less(double d1, int32_t i1, double d2, int32_t i2) {
  return d1 < d2 || (d1 == d2 && i1 < i2);
}

// One thread: offers (d, index) to a max-heap of at most k entries holding `size`; returns the new size.
__device__ int32_t heap_offer(double* hd, int32_t* hi, int32_t size, int64_t k, double d, int32_t index) {
  if (size < k) {
    int64_t i = size;
    while (i > 0) {
      const int64_t parent = (i - 1) / 2;
      if (!key_less(hd[parent], hi[parent], d, index)) break;
      hd[i] = hd[parent];
      hi[i] = hi[parent];
      i = parent;
    }
    hd[i] = d;
    hi[i] = index;
    return size + 1;
  }
  if (!key_less(d, index, hd[0], hi[0])) return size;
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
  return size;
}

template <typename T>
__global__ void knn_margins_kernel(const T* __restrict__ sq_norms, int64_t n, double tolerance, double unit_roundoff,
                                   T* __restrict__ margin) {
  __shared__ double shared[kFinishThreads];
  double largest = 0;
  if (sq_norms != nullptr) {
    for (int64_t c = threadIdx.x; c < n; c += kFinishThreads) largest = fmax(largest, static_cast<double>(sq_norms[c]));
  }
  shared[threadIdx.x] = largest;
  __syncthreads();
  for (int width = kFinishThreads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) {
      shared[threadIdx.x] = fmax(shared[threadIdx.x], shared[threadIdx.x + width]);
    }
    __syncthreads();
  }
  largest = shared[0];
  for (int64_t c = threadIdx.x; c < n; c += kFinishThreads) {
    if (sq_norms == nullptr) {
      margin[c] = static_cast<T>(2.02 * tolerance + 24 * unit_roundoff);
    } else {
      const double bound = sqrt(2 * tolerance * (static_cast<double>(sq_norms[c]) + largest));
      margin[c] = static_cast<T>(1.01 * bound + 8 * unit_roundoff * sqrt(largest));
    }
  }
}

// A warp per row of the row block.
template <typename T, bool Euclidean>
__global__ void __launch_bounds__(kThreads)
    knn_kernel(const T* __restrict__ sim_points, AlignmentTile tile, const T* __restrict__ sq_norms, T tolerance,
               const T* __restrict__ points, int64_t dim, const T* __restrict__ margin, AlignmentKnnHeaps heaps) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + static_cast<int64_t>(threadIdx.x) / kWarpSize;
  if (r >= tile.rows) return;
  const int64_t point = tile.r0 + r;
  const int64_t k = heaps.k;
  double* hd = heaps.distance + r * k;
  int32_t* hi = heaps.index + r * k;
  int32_t size = heaps.size[r];
  double threshold = size < k ? __longlong_as_double(0x7ff0000000000000LL) : hd[0];
  const T row_sq = Euclidean ? sq_norms[point] : T(0);
  const double row_margin = static_cast<double>(margin[point]);
  const T* row_point = points + point * dim;
  const T* sp = sim_points + r * tile.cols;
  const double tol = static_cast<double>(tolerance);

  for (int64_t base = 0; base < tile.cols; base += kWarpSize) {
    const int64_t j = base + lane;
    const int64_t q = tile.c0 + j;
    double d = 0;
    bool candidate = false;
    if (j < tile.cols && q != point) {
      d = static_cast<double>(
          snapped_distance<T, Euclidean>(sp[j], row_sq, Euclidean ? sq_norms[q] : T(0), tolerance));
      candidate = d <= threshold + row_margin;
    }
    unsigned pending = __ballot_sync(kFullWarpMask, candidate);
    while (pending != 0) {
      const int source = __ffs(static_cast<int>(pending)) - 1;
      const int64_t other_index = tile.c0 + base + source;
      const T* other = points + other_index * dim;
      double acc = 0;
      for (int64_t i = lane; i < dim; i += kWarpSize) {
        if constexpr (Euclidean) {
          const double diff = static_cast<double>(row_point[i]) - static_cast<double>(other[i]);
          acc += diff * diff;
        } else {
          acc += static_cast<double>(row_point[i]) * static_cast<double>(other[i]);
        }
      }
      acc = warp_sum(acc);
      double exact;
      if constexpr (Euclidean) {
        const double sum = static_cast<double>(row_sq) + static_cast<double>(sq_norms[other_index]);
        exact = acc <= tol * sum ? 0.0 : sqrt(acc);
      } else {
        const double one_minus = 1.0 - acc;
        exact = one_minus <= tol ? 0.0 : one_minus;
      }
      double top = 0;
      if (lane == 0) {
        size = heap_offer(hd, hi, size, k, exact, static_cast<int32_t>(other_index));
        top = hd[0];
      }
      size = __shfl_sync(kFullWarpMask, size, 0);
      top = __shfl_sync(kFullWarpMask, top, 0);
      if (size >= k) threshold = top;
      pending &= pending - 1;
      pending &= __ballot_sync(kFullWarpMask, candidate && d <= threshold + row_margin);
    }
  }
  if (lane == 0) heaps.size[r] = size;
}

template <typename T>
__global__ void __launch_bounds__(kThreads)
    knn_finish_kernel(AlignmentKnnHeaps heaps, int64_t r0, int64_t rows, const T* __restrict__ unit_directions,
                      int64_t dim, double* __restrict__ energy) {
  const int lane = static_cast<int>(threadIdx.x) % kWarpSize;
  const int64_t r = static_cast<int64_t>(blockIdx.x) * kWarps + static_cast<int64_t>(threadIdx.x) / kWarpSize;
  if (r >= rows) return;
  const int64_t point = r0 + r;
  const int32_t size = heaps.size[r];
  const T* u = unit_directions + point * dim;
  double s = 0;
  for (int32_t e = 0; e < size; ++e) {
    const T* other = unit_directions + static_cast<int64_t>(heaps.index[r * heaps.k + e]) * dim;
    double acc = 0;
    for (int64_t i = lane; i < dim; i += kWarpSize) acc += static_cast<double>(u[i]) * static_cast<double>(other[i]);
    s += 1.0 - warp_sum(acc);
  }
  // A heap short of k entries only happens with NaN distances: the result is then NaN too.
  if (lane == 0) energy[point] = size == heaps.k ? s / static_cast<double>(size) : __longlong_as_double(0x7ff8000000000000LL);
}

// ---- finish -----------------------------------------------------------------------------------------

template <typename T>
__global__ void __launch_bounds__(kFinishThreads)
    finish_kernel(const double* __restrict__ sums, const double* __restrict__ knn_energy, int64_t n,
                  T* __restrict__ per_point, T* __restrict__ energy) {
  __shared__ double shared[kFinishThreads];
  double acc = 0;
  for (int64_t c = threadIdx.x; c < n; c += kFinishThreads) {
    const double e = knn_energy != nullptr ? knn_energy[c] : (sums[c] + sums[2 * n + c]) / (sums[n + c] + sums[3 * n + c]);
    per_point[c] = static_cast<T>(e);
    acc += e;
  }
  shared[threadIdx.x] = acc;
  __syncthreads();
  for (int width = kFinishThreads / 2; width > 0; width /= 2) {
    if (static_cast<int>(threadIdx.x) < width) shared[threadIdx.x] += shared[threadIdx.x + width];
    __syncthreads();
  }
  if (threadIdx.x == 0) *energy = static_cast<T>(shared[0] / static_cast<double>(n));
}

// ---- launch helpers ---------------------------------------------------------------------------------

unsigned blocks_for_warps(int64_t rows) { return static_cast<unsigned>(ceil_div(rows, kWarps)); }

template <typename T>
cudaError_t prepare(const AlignmentPrepareParams& p, cudaStream_t stream) {
  if (p.first_zero != nullptr) {
    set_value_kernel<<<1, 1, 0, stream>>>(p.first_zero, p.n);
    const cudaError_t err = cudaGetLastError();
    if (err != cudaSuccess) return err;
  }
  if (p.n == 0) return cudaSuccess;
  prepare_kernel<T><<<blocks_for_warps(p.n), kThreads, 0, stream>>>(
      static_cast<const T*>(p.x), p.stride_row, p.stride_col, p.n, p.dim, p.normalise, static_cast<T*>(p.out),
      static_cast<T*>(p.sq_norms), p.first_zero);
  return cudaGetLastError();
}

template <typename T>
cudaError_t inverse_distance(const void* sim_points, const void* sim_directions, const AlignmentTile& tile,
                             const AlignmentMetric& metric, int64_t n, double* workspace, double* sums,
                             cudaStream_t stream) {
  if (tile.rows <= 0 || tile.cols <= 0) return cudaSuccess;
  const int64_t col_blocks = ceil_div(tile.cols, kColsPerBlock);
  const int64_t strips = ceil_div(tile.rows, kStripRows);
  if (strips > 65535) return cudaErrorInvalidConfiguration;
  const TileScratch scratch = carve_scratch(workspace, tile.rows, tile.cols);
  const dim3 grid(static_cast<unsigned>(col_blocks), static_cast<unsigned>(strips));
  const T* sp = static_cast<const T*>(sim_points);
  const T* sv = static_cast<const T*>(sim_directions);
  const T* sq = static_cast<const T*>(metric.sq_norms);
  const T tolerance = static_cast<T>(metric.tolerance);
  if (metric.euclidean) {
    inverse_distance_kernel<T, true><<<grid, kThreads, 0, stream>>>(sp, sv, sq, tile, tolerance, scratch);
  } else {
    inverse_distance_kernel<T, false><<<grid, kThreads, 0, stream>>>(sp, sv, sq, tile, tolerance, scratch);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) return err;
  reduce_tile_kernel<<<static_cast<unsigned>(ceil_div(tile.rows + tile.cols, kThreads)), kThreads, 0, stream>>>(
      tile, col_blocks, strips, n, scratch, sums);
  return cudaGetLastError();
}

template <typename T>
cudaError_t knn_tile(const void* sim_points, const AlignmentTile& tile, const AlignmentMetric& metric,
                     const void* points, int64_t dim, const void* margin, const AlignmentKnnHeaps& heaps,
                     cudaStream_t stream) {
  if (tile.rows <= 0 || tile.cols <= 0) return cudaSuccess;
  const T* sp = static_cast<const T*>(sim_points);
  const T* sq = static_cast<const T*>(metric.sq_norms);
  const T* p = static_cast<const T*>(points);
  const T* m = static_cast<const T*>(margin);
  const T tolerance = static_cast<T>(metric.tolerance);
  if (metric.euclidean) {
    knn_kernel<T, true><<<blocks_for_warps(tile.rows), kThreads, 0, stream>>>(sp, tile, sq, tolerance, p, dim, m, heaps);
  } else {
    knn_kernel<T, false><<<blocks_for_warps(tile.rows), kThreads, 0, stream>>>(sp, tile, sq, tolerance, p, dim, m, heaps);
  }
  return cudaGetLastError();
}

double unit_roundoff(RealType type) { return type == RealType::Float64 ? 0x1p-53 : 0x1p-24; }

}  // namespace

cudaError_t alignment_prepare(const AlignmentPrepareParams& params, RealType type, cudaStream_t stream) {
  if (type == RealType::Float64) return prepare<double>(params, stream);
  return prepare<float>(params, stream);
}

int64_t alignment_inverse_distance_workspace(int64_t rows, int64_t cols) {
  return 2 * rows * ceil_div(cols, kColsPerBlock) + 2 * ceil_div(rows, kStripRows) * cols;
}

cudaError_t alignment_inverse_distance_tile(const void* sim_points, const void* sim_directions,
                                            const AlignmentTile& tile, const AlignmentMetric& metric, int64_t n,
                                            double* workspace, double* sums, RealType type, cudaStream_t stream) {
  if (type == RealType::Float64) {
    return inverse_distance<double>(sim_points, sim_directions, tile, metric, n, workspace, sums, stream);
  }
  return inverse_distance<float>(sim_points, sim_directions, tile, metric, n, workspace, sums, stream);
}

cudaError_t alignment_knn_margins(const void* sq_norms, int64_t n, double tolerance, void* margin, RealType type,
                                  cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (type == RealType::Float64) {
    knn_margins_kernel<double><<<1, kFinishThreads, 0, stream>>>(static_cast<const double*>(sq_norms), n, tolerance,
                                                                unit_roundoff(type), static_cast<double*>(margin));
  } else {
    knn_margins_kernel<float><<<1, kFinishThreads, 0, stream>>>(static_cast<const float*>(sq_norms), n, tolerance,
                                                               unit_roundoff(type), static_cast<float*>(margin));
  }
  return cudaGetLastError();
}

cudaError_t alignment_knn_tile(const void* sim_points, const AlignmentTile& tile, const AlignmentMetric& metric,
                               const void* points, int64_t dim, const void* margin, const AlignmentKnnHeaps& heaps,
                               RealType type, cudaStream_t stream) {
  if (type == RealType::Float64) return knn_tile<double>(sim_points, tile, metric, points, dim, margin, heaps, stream);
  return knn_tile<float>(sim_points, tile, metric, points, dim, margin, heaps, stream);
}

cudaError_t alignment_knn_finish(const AlignmentKnnHeaps& heaps, int64_t r0, int64_t rows,
                                 const void* unit_directions, int64_t dim, double* energy, RealType type,
                                 cudaStream_t stream) {
  if (rows <= 0) return cudaSuccess;
  if (type == RealType::Float64) {
    knn_finish_kernel<double><<<blocks_for_warps(rows), kThreads, 0, stream>>>(
        heaps, r0, rows, static_cast<const double*>(unit_directions), dim, energy);
  } else {
    knn_finish_kernel<float><<<blocks_for_warps(rows), kThreads, 0, stream>>>(
        heaps, r0, rows, static_cast<const float*>(unit_directions), dim, energy);
  }
  return cudaGetLastError();
}

cudaError_t alignment_finish(const double* sums, const double* knn_energy, int64_t n, void* per_point,
                             void* energy_out, RealType type, cudaStream_t stream) {
  if (n == 0) return cudaSuccess;
  if (type == RealType::Float64) {
    finish_kernel<double><<<1, kFinishThreads, 0, stream>>>(sums, knn_energy, n, static_cast<double*>(per_point),
                                                            static_cast<double*>(energy_out));
  } else {
    finish_kernel<float><<<1, kFinishThreads, 0, stream>>>(sums, knn_energy, n, static_cast<float*>(per_point),
                                                           static_cast<float*>(energy_out));
  }
  return cudaGetLastError();
}

}  // namespace facekernels::cuda
