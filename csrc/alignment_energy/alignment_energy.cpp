// alignment_energy (the attribute-invariance energy of issue 8): the schema and the argument checks shared
// by the CPU binding (alignment_energy_cpu.cpp) and the CUDA binding (alignment_energy_cuda.cpp).
#include "alignment_energy/alignment_energy.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include <cmath>

#include "core/checks.h"

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

AlignmentEnergyProblem check_alignment_energy(const char* op, const Tensor& points, const Tensor& directions,
                                              int64_t mode, int64_t k, int64_t metric) {
  FK_CHECK(mode == kInverseDistance || mode == kKnn, op,
           "mode must be 0 (\"inverse_distance\") or 1 (\"knn\"), got ", mode);
  FK_CHECK(metric == kCosine || metric == kEuclidean, op, "metric must be 0 (\"cosine\") or 1 (\"euclidean\"), got ",
           metric);
  check_dim(op, "points", points, 2, "[C, D]");
  check_dim(op, "directions", directions, 2, "[C, D]");
  FK_CHECK(directions.size(0) == points.size(0) && directions.size(1) == points.size(1), op,
           "directions must have the same shape as points ", shape_string(points), ", got ",
           shape_string(directions));
  const ScalarType s = points.scalar_type();
  FK_CHECK(s == ScalarType::Float || s == ScalarType::Double, op, "points must be float32 or float64, got ",
           dtype_name(s));
  check_same_dtype(op, "directions", directions, "points", points);
  check_same_device(op, "directions", directions, "points", points);
  const int64_t n = points.size(0);
  FK_CHECK(n >= 2, op, "points must have at least 2 rows (C >= 2 curves), got C = ", n);
  FK_CHECK(n < (int64_t{1} << 31), op, "points must have fewer than 2^31 rows, got C = ", n);
  const bool knn = mode == kKnn;
  if (knn) {
    FK_CHECK(k >= 1 && k <= n - 1, op, "k must be in [1, C - 1] = [1, ", n - 1, "] for mode=\"knn\", got ", k);
  }
  return {n, points.size(1), k, knn, metric == kEuclidean};
}

double alignment_coincidence_tolerance(ScalarType dtype, int64_t dim) {
  const double unit_roundoff = dtype == ScalarType::Double ? std::ldexp(1.0, -53) : std::ldexp(1.0, -24);
  return static_cast<double>(dim + 8) * unit_roundoff;
}

}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def(
      "alignment_energy(Tensor points, Tensor directions, int mode=0, int k=10, int metric=0) -> (Tensor, Tensor)");
}
