// alignment_energy: what the CPU binding (alignment_energy_cpu.cpp) and the CUDA binding
// (alignment_energy_cuda.cpp) share: the problem, its argument checks, the coincidence tolerance and
// the tiles' matrix views.
#pragma once

#include <torch/csrc/stable/device.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <cstdint>

#include "core/blas.h"

namespace facekernels {

struct AlignmentEnergyProblem {
  int64_t points, dim;
  int64_t k;  // knn only
  bool knn, euclidean;
};

// mode and metric cross the op boundary as ints, never strings: torch 2.13's stable-ABI conversion of a
// boxed `str` argument allocates and never frees (two small objects per call; issue 17). The Python
// wrapper (facekernels.ops.alignment_energy) maps the names to these codes.
enum AlignmentMode : int64_t { kInverseDistance = 0, kKnn = 1 };
enum AlignmentMetric : int64_t { kCosine = 0, kEuclidean = 1 };

// points and directions: 2-D [C, D] of one shape, dtype (float32/float64) and device, C >= 2 (and below
// 2^31); mode kInverseDistance or kKnn (then 1 <= k <= C - 1); metric kCosine or kEuclidean.
AlignmentEnergyProblem check_alignment_energy(const char* op, const torch::stable::Tensor& points,
                                              const torch::stable::Tensor& directions, int64_t mode, int64_t k,
                                              int64_t metric);

// The coincidence tolerance (dim + 8) u of the dtype (u = 2^-24 for float32, 2^-53 for float64): a
// computed cosine distance at most this, or a squared Euclidean distance at most this times
// |p|^2 + |p'|^2, is rounding noise around 0 and is snapped to exactly 0.
double alignment_coincidence_tolerance(torch::headeronly::ScalarType dtype, int64_t dim);

// Rows r0 .. r0 + rows - 1 of a row-major 2-D tensor (unit column stride) as a matrix view, for the
// tile GEMMs of both bindings: tile = rows_of(p, r0, R) x rows_of(p, c0, W).t(), by gemm_into (core/blas.h).
inline MatrixView rows_of(const torch::stable::Tensor& t, int64_t r0, int64_t rows) {
  const char* data = static_cast<const char*>(t.data_ptr()) + r0 * t.stride(0) * static_cast<int64_t>(t.element_size());
  return MatrixView::row_major(data, rows, t.size(1), t.stride(0));
}

}  // namespace facekernels
