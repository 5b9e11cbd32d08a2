// Torch-free CUDA launchers of local_stat_transform and local_mean_var, called by
// csrc/local_stats/local_stats_cuda.cpp.
//
// Every tensor pointer is to contiguous [planes, H, W] device memory of the given dtype (planes = B * C).
// Windows are the clipped squares {|h' - h| <= r, |w' - w| <= r} inside the image, n = their size;
// statistics are computed in float32 for every dtype, from sums shifted by a per-plane value near the
// data, with a cost per pixel independent of r. Work is enqueued on `stream`; each launcher returns the
// first launch error (or cudaSuccess) and never synchronises. Empty shapes launch nothing.
//
// Each launcher takes float32 scratch memory (`workspace`) of the size its *_workspace_size function
// returns for the same arguments; a function of the shape and flags only, so the binding can allocate
// it from torch's caching allocator on the stream's device. A size of 0 allows nullptr.
#pragma once

#include <cuda_runtime_api.h>

#include <cstdint>

#include "cuda/core/dtype.h"

namespace facekernels::cuda {

struct LocalStatsShape {
  int64_t planes, height, width, radius;  // radius = kernel_size / 2, any value >= 0
};

int64_t local_stat_transform_forward_workspace_size(const LocalStatsShape& shape);
int64_t local_stat_transform_backward_workspace_size(const LocalStatsShape& shape, bool need_x,
                                                     bool need_guide);
int64_t local_mean_var_forward_workspace_size(const LocalStatsShape& shape);
int64_t local_mean_var_backward_workspace_size(const LocalStatsShape& shape, bool has_grad_mean,
                                               bool has_grad_var);

// The arguments of the four launchers, filled by name in the binding; each launcher reads the fields its
// comment names, and a pointer not set is nullptr. Tensors are of `dtype`, the workspace float32; a
// gradient pointer left nullptr is not computed (an incoming one: a zero gradient).
struct LocalStatTransformParams {
  const void* x = nullptr;
  const void* guide = nullptr;
  void* out = nullptr;             // forward: the result
  const void* grad_out = nullptr;  // backward: the incoming gradient
  void* grad_x = nullptr;          // backward, or nullptr
  void* grad_guide = nullptr;      // backward, or nullptr
  float* workspace = nullptr;      // sized by the *_workspace_size function of the launcher called
  LocalStatsShape shape;
  float eps;
  DType dtype;
};

struct LocalMeanVarParams {
  const void* x = nullptr;
  void* mean = nullptr;             // forward
  void* var = nullptr;              // forward
  const void* grad_mean = nullptr;  // backward, or nullptr
  const void* grad_var = nullptr;   // backward, or nullptr
  void* grad_x = nullptr;           // backward
  float* workspace = nullptr;       // sized by the *_workspace_size function of the launcher called
  LocalStatsShape shape;
  DType dtype;
};

// out = (x - mu_x) / sqrt(var_x + eps) * sqrt(var_g + eps) + mu_g, from x, guide, out and a workspace of
// local_stat_transform_forward_workspace_size(shape) floats.
cudaError_t local_stat_transform_forward(const LocalStatTransformParams& params, cudaStream_t stream);

// The gradients of local_stat_transform w.r.t. x and guide (through the statistics too) whose pointers
// are non-null, from grad_out, x and guide; `workspace` sized by
// local_stat_transform_backward_workspace_size(shape, grad_x != nullptr, grad_guide != nullptr).
cudaError_t local_stat_transform_backward(const LocalStatTransformParams& params, cudaStream_t stream);

// mean = mu_x, var = var_x (biased), from x and a workspace of local_mean_var_forward_workspace_size(shape)
// floats.
cudaError_t local_mean_var_forward(const LocalMeanVarParams& params, cudaStream_t stream);

// grad_x from grad_mean and grad_var, either of which may be nullptr (a zero gradient; both nullptr:
// grad_x is zero-filled), and x; `workspace` sized by local_mean_var_backward_workspace_size(shape,
// grad_mean != nullptr, grad_var != nullptr).
cudaError_t local_mean_var_backward(const LocalMeanVarParams& params, cudaStream_t stream);

}  // namespace facekernels::cuda
