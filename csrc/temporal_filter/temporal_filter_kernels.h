// Torch-free CPU kernels of temporal_filter: causal recurrences over T of [B, T, C] sequences, vectorised
// over the channels C.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

// x and y are contiguous [B, T, C]. state_out ([B, 3, C]: x_hat, dx_hat and the raw previous sample) is
// also the working state; state_in has the same layout or is nullptr (the first frame passes through).
template <typename T>
struct OneEuroArgs {
  const T* x;
  const T* periods;  // [B, T] with strides, seconds per frame; nullptr: 1 / rate
  const T* state_in;
  T* y;
  T* state_out;
  int64_t batch = 0, frames = 0, channels = 0;
  int64_t periods_stride_b = 0, periods_stride_t = 0;
  double rate = 1, min_cutoff = 1, beta = 0, d_cutoff = 1;
  bool raw_derivative = false;
};

// y[b, t] = alpha * x[b, t] + (1 - alpha) * y[b, t-1]; state [B, C] (the last output), in or nullptr.
template <typename T>
struct ExponentialSmoothingArgs {
  const T* x;
  const T* state_in;
  T* y;
  T* state_out;
  int64_t batch = 0, frames = 0, channels = 0;
  double alpha = 1;
};

template <typename T>
struct TemporalFilterKernels {
  void (*one_euro)(const OneEuroArgs<T>&);
  void (*exponential_smoothing)(const ExponentialSmoothingArgs<T>&);
};

FK_DECLARE_CPU_KERNEL_TABLE(TemporalFilterKernels, temporal_filter_kernels)

}  // namespace facekernels::cpu
