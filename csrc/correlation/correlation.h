// correlation: argument checks shared by the CPU and CUDA bindings.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>

namespace facekernels {

struct CorrelationProblem {
  int64_t batch, channels, height, width, patch, dilation;
};

// Validates correlation's arguments (rank, shapes, dtypes, devices, patch_size, dilation_patch,
// kernel_size) and returns the problem sizes; throws with the op, the argument, what was expected and
// what came.
CorrelationProblem check_correlation(const char* op, const torch::stable::Tensor& x1,
                                     const torch::stable::Tensor& x2, int64_t patch_size,
                                     int64_t dilation_patch, int64_t kernel_size);

// The backward op additionally needs grad_out shaped [B, P, P, H, W] like the forward's output.
CorrelationProblem check_correlation_backward(const torch::stable::Tensor& grad_out,
                                              const torch::stable::Tensor& x1, const torch::stable::Tensor& x2,
                                              int64_t patch_size, int64_t dilation_patch);

}  // namespace facekernels
