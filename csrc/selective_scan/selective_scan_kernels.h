// Torch-free CPU kernels of selective_scan on contiguous tensors: u, delta, z, out [B, D, L]; A [D, N];
// B and C [B, G, N, L] (G = 1 for the [B, N, L] form); D and delta_bias [D]; last_state [B, D, N].
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

struct SelectiveScanSizes {
  int64_t batch = 0, channels = 0, length = 0, state = 0, groups_b = 1, groups_c = 1;
  bool delta_softplus = false;
};

// The forward's inputs, read by both directions.
template <typename T>
struct SelectiveScanInputs {
  const T* u;
  const T* delta;
  const T* A;
  const T* B;
  const T* C;
  const T* D;           // or nullptr
  const T* z;           // or nullptr
  const T* delta_bias;  // or nullptr
};

template <typename T>
struct SelectiveScanForwardArgs {
  SelectiveScanInputs<T> in;
  T* out;
  T* last_state;
  SelectiveScanSizes sizes;
};

// Every gradient is written; those of absent optional inputs are nullptr. grad_last_state may be nullptr
// (zero).
template <typename T>
struct SelectiveScanBackwardArgs {
  const T* grad_out;
  const T* grad_last_state;
  SelectiveScanInputs<T> in;
  T* grad_u;
  T* grad_delta;
  T* grad_A;
  T* grad_B;
  T* grad_C;
  T* grad_D;
  T* grad_z;
  T* grad_delta_bias;
  SelectiveScanSizes sizes;
};

template <typename T>
struct SelectiveScanKernels {
  void (*forward)(const SelectiveScanForwardArgs<T>&);
  void (*backward)(const SelectiveScanBackwardArgs<T>&);
};

FK_DECLARE_CPU_KERNEL_TABLE(SelectiveScanKernels, selective_scan_kernels)

}  // namespace facekernels::cpu
