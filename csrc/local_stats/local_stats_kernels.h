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

struct LocalStatsKernels {
  void (*transform_forward_f32)(const LocalStatsArgs<float>&);
  void (*transform_forward_f64)(const LocalStatsArgs<double>&);
  void (*transform_backward_f32)(const LocalStatsArgs<float>&);
  void (*transform_backward_f64)(const LocalStatsArgs<double>&);
  void (*mean_var_forward_f32)(const LocalStatsArgs<float>&);
  void (*mean_var_forward_f64)(const LocalStatsArgs<double>&);
  void (*mean_var_backward_f32)(const LocalStatsArgs<float>&);
  void (*mean_var_backward_f64)(const LocalStatsArgs<double>&);
};

FK_DECLARE_CPU_KERNELS(const LocalStatsKernels&, local_stats_kernels)

}  // namespace facekernels::cpu
