// Torch-free CPU kernels of local_stat_transform and local_mean_var.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

// A [B, C, H, W] input whose [H, W] planes are contiguous; B and C may be strided (channel slices of a
// larger tensor need no copy): element (b, c, h, w) is data[b * stride_b + c * stride_c + h * W + w].
template <typename T>
struct Planes {
  const T* data;
  int64_t stride_b, stride_c;
  const T* plane(int64_t b, int64_t c) const { return data + b * stride_b + c * stride_c; }
};

// Every output is a contiguous [B, C, H, W] tensor; a nullptr output is not computed.
template <typename T>
struct LocalStatsArgs {
  Planes<T> x, guide;           // guide: local_stat_transform only
  Planes<T> grad_out;           // _local_stat_transform_backward
  Planes<T> grad_mean, grad_var;  // _local_mean_var_backward (data nullptr: a zero gradient)
  T* out;                       // local_stat_transform's result, or local_mean_var's mean
  T* out_var;                   // local_mean_var's variance
  T* grad_x;
  T* grad_guide;
  int64_t batch, channels, height, width, radius;
  double eps;
};

// The kernels of one dtype, filled by name in local_stats_kernels.cpp (one table per SIMD level).
template <typename T>
struct LocalStatsKernels {
  void (*transform_forward)(const LocalStatsArgs<T>&);   // out
  void (*transform_backward)(const LocalStatsArgs<T>&);  // grad_x and/or grad_guide
  void (*mean_var_forward)(const LocalStatsArgs<T>&);    // out (the mean) and out_var
  void (*mean_var_backward)(const LocalStatsArgs<T>&);   // grad_x
};

FK_DECLARE_CPU_KERNEL_TABLE(LocalStatsKernels, local_stats_kernels)

}  // namespace facekernels::cpu
