// Torch-free CPU kernels of st_graph_conv: the small elementwise steps around the GEMMs (the GEMMs
// themselves run in the binding, through torch's BLAS). Every kernel is single-threaded: the binding
// calls them from inside its own parallel loop over samples, on one sample's buffers at a time.
//
// Layouts (all contiguous, row-major): a sample's activations [C, T, V]; adjacency [K, V, V];
// bias [K, C]; per-node tables [C, V] or [K, V].
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

template <typename T>
struct StGraphConvKernels {
  // dst[i] += src[i], i < n.
  void (*accumulate)(T* dst, const T* src, int64_t n);
  // z[r, j] += row_values[r] for z [rows, cols].
  void (*add_to_rows)(T* z, const T* row_values, int64_t rows, int64_t cols);
  // out[c, t, w] += table[c, w] for out [C, T, V].
  void (*add_over_time)(T* out, const T* table, int64_t channels, int64_t frames, int64_t nodes);
  // colsum[k, w] = sum_v adjacency[k, v, w].
  void (*column_sums)(const T* adjacency, int64_t partitions, int64_t nodes, T* colsum);
  // table[c, w] = sum_k bias[k, c] colsum[k, w]: the bias term of the output, the same for every t.
  void (*bias_table)(const T* bias, const T* colsum, int64_t partitions, int64_t channels, int64_t nodes,
                     T* table);
  // sums[c, w] = sum_t g[c, t, w].
  void (*sum_over_time)(const T* g, int64_t channels, int64_t frames, int64_t nodes, T* sums);
  // grad_bias[k, c] += sum_w sums[c, w] colsum[k, w].
  void (*bias_gradient)(const T* sums, const T* colsum, int64_t partitions, int64_t channels, int64_t nodes,
                        T* grad_bias);
  // grad_adjacency[k, v, w] += sum_c bias[k, c] sums[c, w] for every v: the bias term of the adjacency's
  // gradient.
  void (*adjacency_bias_gradient)(const T* sums, const T* bias, int64_t partitions, int64_t channels,
                                  int64_t nodes, T* grad_adjacency);
};

FK_DECLARE_CPU_KERNEL_TABLE(StGraphConvKernels, st_graph_conv_kernels)

}  // namespace facekernels::cpu
