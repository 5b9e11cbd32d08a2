// CUDA kernels of st_graph_conv's elementwise steps (the GEMMs run in cuBLAS through torch's mm.out; see
// csrc/st_graph_conv/st_graph_conv_driver.cpp for the algorithm). Float32 buffers, one thread per output
// element with grid-stride loops and 64-bit indices; each reduction is a fixed-order loop in its thread,
// so results are deterministic. Consecutive threads take consecutive nodes w, the contiguous axis of
// every buffer, so loads and stores coalesce.
#include <cuda_runtime.h>

#include <cstdint>

#include "cuda/core/device_math.cuh"
#include "cuda/st_graph_conv/st_graph_conv.h"

namespace facekernels::cuda {
namespace {

constexpr int kThreads = 256;

__global__ void accumulate_kernel(float* __restrict__ dst, const float* __restrict__ src, int64_t n) {
  for (int64_t i = grid_thread_index(); i < n; i += grid_thread_count()) dst[i] += src[i];
}

__global__ void add_to_rows_kernel(float* __restrict__ z, const float* __restrict__ row_values, int64_t rows,
                                   int64_t cols) {
  const int64_t n = rows * cols;
  for (int64_t i = grid_thread_index(); i < n; i += grid_thread_count()) z[i] += row_values[i / cols];
}

__global__ void add_over_time_kernel(float* __restrict__ out, const float* __restrict__ table, int64_t channels,
                                     int64_t frames, int64_t nodes) {
  const int64_t n = channels * frames * nodes;
  for (int64_t i = grid_thread_index(); i < n; i += grid_thread_count()) {
    const int64_t c = i / (frames * nodes), w = i % nodes;
    out[i] += table[c * nodes + w];
  }
}

__global__ void bias_table_kernel(const float* __restrict__ bias, const float* __restrict__ colsum,
                                  int64_t partitions, int64_t channels, int64_t nodes, float* __restrict__ table) {
  const int64_t n = channels * nodes;
  for (int64_t i = grid_thread_index(); i < n; i += grid_thread_count()) {
    const int64_t c = i / nodes, w = i % nodes;
    float s = 0.f;
    for (int64_t k = 0; k < partitions; ++k) s += bias[k * channels + c] * colsum[k * nodes + w];
    table[i] = s;
  }
}

__global__ void sum_over_time_kernel(const float* __restrict__ g, int64_t channels, int64_t frames, int64_t nodes,
                                     float* __restrict__ sums) {
  const int64_t n = channels * nodes;
  for (int64_t i = grid_thread_index(); i < n; i += grid_thread_count()) {
    const int64_t c = i / nodes, w = i % nodes;
    const float* row = g + c * frames * nodes + w;
    float s = 0.f;
    for (int64_t t = 0; t < frames; ++t) s += row[t * nodes];
    sums[i] = s;
  }
}

__global__ void bias_gradient_kernel(const float* __restrict__ sums, const float* __restrict__ colsum,
                                     int64_t partitions, int64_t channels, int64_t nodes,
                                     float* __restrict__ grad_bias) {
  const int64_t n = partitions * channels;
  for (int64_t i = grid_thread_index(); i < n; i += grid_thread_count()) {
    const int64_t k = i / channels, c = i % channels;
    float s = 0.f;
    for (int64_t w = 0; w < nodes; ++w) s += sums[c * nodes + w] * colsum[k * nodes + w];
    grad_bias[i] += s;
  }
}

__global__ void adjacency_bias_gradient_kernel(const float* __restrict__ sums, const float* __restrict__ bias,
                                               int64_t partitions, int64_t channels, int64_t nodes,
                                               float* __restrict__ grad_adjacency) {
  const int64_t n = partitions * nodes * nodes;
  for (int64_t i = grid_thread_index(); i < n; i += grid_thread_count()) {
    const int64_t k = i / (nodes * nodes), w = i % nodes;
    float s = 0.f;
    for (int64_t c = 0; c < channels; ++c) s += bias[k * channels + c] * sums[c * nodes + w];
    grad_adjacency[i] += s;
  }
}

template <typename Kernel, typename... Args>
cudaError_t launch(int64_t n, cudaStream_t stream, Kernel kernel, Args... args) {
  if (n <= 0) return cudaSuccess;
  kernel<<<grid_blocks(n, kThreads), kThreads, 0, stream>>>(args...);
  return cudaGetLastError();
}

}  // namespace

cudaError_t st_graph_conv_accumulate(float* dst, const float* src, int64_t n, cudaStream_t stream) {
  return launch(n, stream, accumulate_kernel, dst, src, n);
}

cudaError_t st_graph_conv_add_to_rows(float* z, const float* row_values, int64_t rows, int64_t cols,
                                      cudaStream_t stream) {
  return launch(rows * cols, stream, add_to_rows_kernel, z, row_values, rows, cols);
}

cudaError_t st_graph_conv_add_over_time(float* out, const float* table, int64_t channels, int64_t frames,
                                        int64_t nodes, cudaStream_t stream) {
  return launch(channels * frames * nodes, stream, add_over_time_kernel, out, table, channels, frames, nodes);
}

cudaError_t st_graph_conv_column_sums(const float* adjacency, int64_t partitions, int64_t nodes, float* colsum,
                                      cudaStream_t stream) {
  // The column sums of each [V, V] partition are its sums over the middle axis: sum_over_time's loop.
  return launch(partitions * nodes, stream, sum_over_time_kernel, adjacency, partitions, nodes, nodes, colsum);
}

cudaError_t st_graph_conv_bias_table(const float* bias, const float* colsum, int64_t partitions, int64_t channels,
                                     int64_t nodes, float* table, cudaStream_t stream) {
  return launch(channels * nodes, stream, bias_table_kernel, bias, colsum, partitions, channels, nodes, table);
}

cudaError_t st_graph_conv_sum_over_time(const float* g, int64_t channels, int64_t frames, int64_t nodes,
                                        float* sums, cudaStream_t stream) {
  return launch(channels * nodes, stream, sum_over_time_kernel, g, channels, frames, nodes, sums);
}

cudaError_t st_graph_conv_bias_gradient(const float* sums, const float* colsum, int64_t partitions,
                                        int64_t channels, int64_t nodes, float* grad_bias, cudaStream_t stream) {
  return launch(partitions * channels, stream, bias_gradient_kernel, sums, colsum, partitions, channels, nodes,
                grad_bias);
}

cudaError_t st_graph_conv_adjacency_bias_gradient(const float* sums, const float* bias, int64_t partitions,
                                                  int64_t channels, int64_t nodes, float* grad_adjacency,
                                                  cudaStream_t stream) {
  return launch(partitions * nodes * nodes, stream, adjacency_bias_gradient_kernel, sums, bias, partitions,
                channels, nodes, grad_adjacency);
}

}  // namespace facekernels::cuda
