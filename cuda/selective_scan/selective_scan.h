// Torch-free CUDA launchers of selective_scan, called by csrc/selective_scan/selective_scan_cuda.cpp.
//
// Every pointer is to contiguous device memory: u, delta, z, out, grad_out and their gradients are
// [B, D, L]; A [D, N]; B and C [B, G, N, L] (G = 1 for the [B, N, L] form); D and delta_bias [D]; all
// in `dtype`. The state, last_state and grad_last_state ([B, D, N]) and the workspace are float32, as is
// all arithmetic. Work is enqueued on `stream`; each launcher returns the first launch error (or
// cudaSuccess) and never synchronises.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/core/dtype.h"

namespace facekernels::cuda {

struct SelectiveScanShape {
  int64_t batch, channels, length, state;  // B, D, L, N (1 <= N <= 256)
  int64_t groups_b, groups_c;              // dividing D
  bool delta_softplus;
};

// The forward's inputs, read by both directions.
struct SelectiveScanInputs {
  const void* u;
  const void* delta;
  const void* A;
  const void* B;
  const void* C;
  const void* D;           // or nullptr
  const void* z;           // or nullptr
  const void* delta_bias;  // or nullptr
};

struct SelectiveScanForwardParams {
  SelectiveScanInputs in;
  void* out;
  float* last_state;
  SelectiveScanShape shape;
  DType dtype;
};

// With dt = delta + delta_bias (softplus'd when delta_softplus) and h[-1] = 0:
//   h[b, d, n, l] = exp(dt A[d, n]) h[b, d, n, l-1] + dt B[b, g(d), n, l] u[b, d, l]
//   out[b, d, l]  = (sum_n C[b, g(d), n, l] h[b, d, n, l] + D[d] u[b, d, l]) * silu(z[b, d, l])
// g(d) = d / (D / G); last_state = h[.., L-1].
cudaError_t selective_scan_forward(const SelectiveScanForwardParams& params, cudaStream_t stream);

// float32 elements of scratch the backward needs (checkpoints of the state at chunk starts, and the
// partial sums of the reduced gradients).
int64_t selective_scan_backward_workspace_size(const SelectiveScanShape& shape);

struct SelectiveScanBackwardParams {
  const void* grad_out;
  const float* grad_last_state;  // or nullptr (zero)
  SelectiveScanInputs in;
  void* grad_u;
  void* grad_delta;
  void* grad_A;
  void* grad_B;
  void* grad_C;
  void* grad_D;           // nullptr when D is
  void* grad_z;           // nullptr when z is
  void* grad_delta_bias;  // nullptr when delta_bias is
  float* workspace;       // selective_scan_backward_workspace_size(shape) floats
  SelectiveScanShape shape;
  DType dtype;
};

// Every gradient of the forward's inputs. The sums over channels (grad_B, grad_C) and over the batch
// (grad_A, grad_D, grad_delta_bias) are deterministic: partial sums in the workspace, added in a fixed
// order that depends only on the shape.
cudaError_t selective_scan_backward(const SelectiveScanBackwardParams& params, cudaStream_t stream);

}  // namespace facekernels::cuda
