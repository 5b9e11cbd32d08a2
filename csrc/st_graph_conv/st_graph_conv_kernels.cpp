// CPU kernels of st_graph_conv, compiled once per SIMD level (FK_CPU_CAPABILITY): the elementwise steps
// between the driver's GEMMs (st_graph_conv_driver.cpp has the algorithm). They touch O(C T V) elements per
// sample against the GEMMs' O(C T V (V + C)) multiply-adds, so plain loops the compiler vectorises are
// enough; rows are walked innermost so every inner loop is a contiguous vector pass.
#include <cstdint>

#include "core/cpu_simd.h"
#include "st_graph_conv/st_graph_conv_kernels.h"

namespace facekernels::cpu {
namespace {

template <typename T>
void accumulate(T* __restrict dst, const T* __restrict src, int64_t n) {
  for (int64_t i = 0; i < n; ++i) dst[i] += src[i];
}

template <typename T>
void add_to_rows(T* __restrict z, const T* __restrict row_values, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) {
    const T b = row_values[r];
    T* row = z + r * cols;
    for (int64_t j = 0; j < cols; ++j) row[j] += b;
  }
}

template <typename T>
void add_over_time(T* __restrict out, const T* __restrict table, int64_t channels, int64_t frames,
                   int64_t nodes) {
  for (int64_t c = 0; c < channels; ++c) {
    const T* b = table + c * nodes;
    for (int64_t t = 0; t < frames; ++t) {
      T* row = out + (c * frames + t) * nodes;
      for (int64_t w = 0; w < nodes; ++w) row[w] += b[w];
    }
  }
}

template <typename T>
void bias_table(const T* __restrict bias, const T* __restrict colsum, int64_t partitions, int64_t channels,
                int64_t nodes, T* __restrict table) {
  for (int64_t c = 0; c < channels; ++c) {
    T* row = table + c * nodes;
    for (int64_t w = 0; w < nodes; ++w) row[w] = T(0);
    for (int64_t k = 0; k < partitions; ++k) {
      const T b = bias[k * channels + c];
      const T* s = colsum + k * nodes;
      for (int64_t w = 0; w < nodes; ++w) row[w] += b * s[w];
    }
  }
}

template <typename T>
void sum_over_time(const T* __restrict g, int64_t channels, int64_t frames, int64_t nodes, T* __restrict sums) {
  for (int64_t c = 0; c < channels; ++c) {
    T* s = sums + c * nodes;
    for (int64_t w = 0; w < nodes; ++w) s[w] = T(0);
    for (int64_t t = 0; t < frames; ++t) {
      const T* row = g + (c * frames + t) * nodes;
      for (int64_t w = 0; w < nodes; ++w) s[w] += row[w];
    }
  }
}

// The column sums of each [V, V] partition are its sums over the middle axis: the same loop.
template <typename T>
void column_sums(const T* __restrict adjacency, int64_t partitions, int64_t nodes, T* __restrict colsum) {
  sum_over_time(adjacency, partitions, nodes, nodes, colsum);
}

template <typename T>
void bias_gradient(const T* __restrict sums, const T* __restrict colsum, int64_t partitions, int64_t channels,
                   int64_t nodes, T* __restrict grad_bias) {
  for (int64_t k = 0; k < partitions; ++k) {
    const T* s = colsum + k * nodes;
    for (int64_t c = 0; c < channels; ++c) {
      const T* g = sums + c * nodes;
      T acc = T(0);
      for (int64_t w = 0; w < nodes; ++w) acc += g[w] * s[w];
      grad_bias[k * channels + c] += acc;
    }
  }
}

template <typename T>
void adjacency_bias_gradient(const T* __restrict sums, const T* __restrict bias, int64_t partitions,
                             int64_t channels, int64_t nodes, T* __restrict grad_adjacency) {
  Scratch<T> r(nodes);
  for (int64_t k = 0; k < partitions; ++k) {
    for (int64_t w = 0; w < nodes; ++w) r[w] = T(0);
    for (int64_t c = 0; c < channels; ++c) {
      const T b = bias[k * channels + c];
      const T* g = sums + c * nodes;
      for (int64_t w = 0; w < nodes; ++w) r[w] += b * g[w];
    }
    for (int64_t v = 0; v < nodes; ++v) {
      T* row = grad_adjacency + (k * nodes + v) * nodes;
      for (int64_t w = 0; w < nodes; ++w) row[w] += r[w];
    }
  }
}

template <typename T>
StGraphConvKernels<T> make_table() {
  return {.accumulate = &accumulate<T>,
          .add_to_rows = &add_to_rows<T>,
          .add_over_time = &add_over_time<T>,
          .column_sums = &column_sums<T>,
          .bias_table = &bias_table<T>,
          .sum_over_time = &sum_over_time<T>,
          .bias_gradient = &bias_gradient<T>,
          .adjacency_bias_gradient = &adjacency_bias_gradient<T>};
}

}  // namespace

FK_DEFINE_CPU_KERNEL_TABLE(StGraphConvKernels, st_graph_conv_kernels, make_table, float)
FK_DEFINE_CPU_KERNEL_TABLE(StGraphConvKernels, st_graph_conv_kernels, make_table, double)

}  // namespace facekernels::cpu
