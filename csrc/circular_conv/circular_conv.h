// circular_conv: argument checks shared by the CPU and CUDA bindings.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>

namespace facekernels {

struct CircularConvProblem {
  int64_t batch, channels, height, width, taps;
  int axis;  // 2 or 3, after normalising negative dims
};

// Validates circular_conv's arguments (rank, shapes, dtypes, devices, dim, taps) and returns the problem
// sizes; throws with the op, the argument, what was expected and what came.
CircularConvProblem check_circular_conv(const char* op, const torch::stable::Tensor& x,
                                        const torch::stable::Tensor& weight,
                                        const std::optional<torch::stable::Tensor>& bias, int64_t dim);

// The backward op additionally needs grad_out shaped like x.
CircularConvProblem check_circular_conv_backward(const torch::stable::Tensor& grad_out,
                                                 const torch::stable::Tensor& x,
                                                 const torch::stable::Tensor& weight, int64_t dim);

}  // namespace facekernels
