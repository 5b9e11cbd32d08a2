// Torch-free CUDA launchers of st_graph_conv's elementwise steps, called by
// csrc/st_graph_conv/st_graph_conv_cuda.cpp between the cuBLAS GEMMs (which run through torch's mm.out).
//
// The binding computes in float32 whatever the storage dtype (inputs are converted once, outputs at the
// end), so every launcher takes contiguous float32 device buffers, with the contracts of
// cpu::StGraphConvKernels (csrc/st_graph_conv/st_graph_conv_kernels.h). Work is enqueued on `stream`;
// each launcher returns the launch error (or cudaSuccess) and never synchronises. Empty shapes launch
// nothing. Every reduction is a fixed loop per output element: deterministic, no atomics.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

namespace facekernels::cuda {

// dst[i] += src[i], i < n.
cudaError_t st_graph_conv_accumulate(float* dst, const float* src, int64_t n, cudaStream_t stream);
// z[r, j] += row_values[r] for z [rows, cols].
cudaError_t st_graph_conv_add_to_rows(float* z, const float* row_values, int64_t rows, int64_t cols,
                                      cudaStream_t stream);
// out[c, t, w] += table[c, w] for out [C, T, V].
cudaError_t st_graph_conv_add_over_time(float* out, const float* table, int64_t channels, int64_t frames,
                                        int64_t nodes, cudaStream_t stream);
// colsum[k, w] = sum_v adjacency[k, v, w].
cudaError_t st_graph_conv_column_sums(const float* adjacency, int64_t partitions, int64_t nodes, float* colsum,
                                      cudaStream_t stream);
// table[c, w] = sum_k bias[k, c] colsum[k, w].
cudaError_t st_graph_conv_bias_table(const float* bias, const float* colsum, int64_t partitions, int64_t channels,
                                     int64_t nodes, float* table, cudaStream_t stream);
// sums[c, w] = sum_t g[c, t, w].
cudaError_t st_graph_conv_sum_over_time(const float* g, int64_t channels, int64_t frames, int64_t nodes,
                                        float* sums, cudaStream_t stream);
// grad_bias[k, c] += sum_w sums[c, w] colsum[k, w].
cudaError_t st_graph_conv_bias_gradient(const float* sums, const float* colsum, int64_t partitions,
                                        int64_t channels, int64_t nodes, float* grad_bias, cudaStream_t stream);
// grad_adjacency[k, v, w] += sum_c bias[k, c] sums[c, w] for every v.
cudaError_t st_graph_conv_adjacency_bias_gradient(const float* sums, const float* bias, int64_t partitions,
                                                  int64_t channels, int64_t nodes, float* grad_adjacency,
                                                  cudaStream_t stream);

}  // namespace facekernels::cuda
