// alignment_energy: argument checks and the tile helpers shared by the CPU and CUDA bindings.
#pragma once

#include <torch/csrc/stable/device.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <cstdint>
#include <string>

namespace facekernels {

struct AlignmentEnergyProblem {
  int64_t points, dim;
  int64_t k;  // knn only
  bool knn, euclidean;
};

// points and directions: 2-D [C, D] of one shape, dtype (float32/float64) and device, C >= 2 (and below
// 2^31); mode "inverse_distance" or "knn" (then 1 <= k <= C - 1); metric "cosine" or "euclidean".
AlignmentEnergyProblem check_alignment_energy(const char* op, const torch::stable::Tensor& points,
                                              const torch::stable::Tensor& directions, const std::string& mode,
                                              int64_t k, const std::string& metric);

// The coincidence tolerance (dim + 8) u of the dtype (u = 2^-24 for float32, 2^-53 for float64): a
// computed cosine distance at most this, or a squared Euclidean distance at most this times
// |p|^2 + |p'|^2, is rounding noise around 0 and is snapped to exactly 0.
double alignment_coincidence_tolerance(torch::headeronly::ScalarType dtype, int64_t dim);

// out[r * cols + j] = <a_r, b_j> for the contiguous rows a [rows, dim] and b [cols, dim] (raw pointers
// to `dtype` on `device`), by torch's mm.out: BLAS on CPU, cuBLAS on the current stream on CUDA. out is a
// buffer the caller reuses across tiles, so no tile allocates. The tensors handed to mm are made here,
// with from_blob, on the calling thread: tensors made on the op's own thread would be inference tensors
// under torch.inference_mode(), which a worker thread (outside that thread-local mode) may not write.
void similarity_tile(void* out, const void* a, const void* b, int64_t rows, int64_t cols, int64_t dim,
                     torch::stable::Device device, torch::headeronly::ScalarType dtype);

// The address of row `row` of a row-major tensor.
void* row_pointer(const torch::stable::Tensor& t, int64_t row);

}  // namespace facekernels
