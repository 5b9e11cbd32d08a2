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

// The backward op's outputs, allocated like `x` and `weight`: a gradient not asked for is an empty [0]
// tensor (the fake kernel agrees). With no planes at all (B = 0 or C = 0) the weight and bias gradients
// are zero-filled sums over nothing and `done` is set: nothing is left to launch.
struct CircularConvGradients {
  torch::stable::Tensor grad_x, grad_weight, grad_bias;
  bool done;
};
CircularConvGradients allocate_circular_conv_gradients(const torch::stable::Tensor& x,
                                                       const torch::stable::Tensor& weight,
                                                       const CircularConvProblem& p, bool need_x,
                                                       bool need_weight, bool need_bias);

}  // namespace facekernels
