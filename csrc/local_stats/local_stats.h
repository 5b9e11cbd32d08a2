// local_stat_transform / local_mean_var: argument checks shared by the CPU and CUDA bindings.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>

namespace facekernels {

struct LocalStatsProblem {
  int64_t batch, channels, height, width;
  int64_t radius;  // kernel_size / 2; windows are clipped at the borders
};

// local_stat_transform(x, guide, kernel_size, eps): rank, shapes, dtypes, devices, kernel_size, eps.
LocalStatsProblem check_local_stat_transform(const char* op, const torch::stable::Tensor& x,
                                             const torch::stable::Tensor& guide, int64_t kernel_size,
                                             double eps);

// local_mean_var(x, kernel_size).
LocalStatsProblem check_local_mean_var(const char* op, const torch::stable::Tensor& x, int64_t kernel_size);

}  // namespace facekernels
