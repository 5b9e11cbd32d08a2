// selective_scan: the problem sizes and argument checks shared by the CPU and CUDA bindings.
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <tuple>

namespace facekernels {

// The largest state size N the kernels take (mamba-ssm's CUDA kernels stop at 256 too).
constexpr int64_t kSelectiveScanMaxState = 256;

struct SelectiveScanProblem {
  int64_t batch, channels, length, state;  // B, D, L, N
  int64_t groups_b, groups_c;              // G of B and C: 1 for the [B, N, L] form
};

// Validates selective_scan's arguments and returns the sizes; throws with the op, the argument, what was
// expected and what came.
SelectiveScanProblem check_selective_scan(const char* op, const torch::stable::Tensor& u,
                                          const torch::stable::Tensor& delta, const torch::stable::Tensor& A,
                                          const torch::stable::Tensor& B, const torch::stable::Tensor& C,
                                          const std::optional<torch::stable::Tensor>& D,
                                          const std::optional<torch::stable::Tensor>& z,
                                          const std::optional<torch::stable::Tensor>& delta_bias);

// The backward op also takes grad_out (shaped like u) and, optionally, the last state's gradient.
SelectiveScanProblem check_selective_scan_backward(
    const torch::stable::Tensor& grad_out, const std::optional<torch::stable::Tensor>& grad_last_state,
    const torch::stable::Tensor& u, const torch::stable::Tensor& delta, const torch::stable::Tensor& A,
    const torch::stable::Tensor& B, const torch::stable::Tensor& C, const std::optional<torch::stable::Tensor>& D,
    const std::optional<torch::stable::Tensor>& z, const std::optional<torch::stable::Tensor>& delta_bias);

// The forward's tensors made contiguous (both bindings' kernels take raw pointers).
struct SelectiveScanTensors {
  torch::stable::Tensor u, delta, A, B, C;
  std::optional<torch::stable::Tensor> D, z, delta_bias;
};
SelectiveScanTensors contiguous_selective_scan_inputs(const torch::stable::Tensor& u, const torch::stable::Tensor& delta,
                                                      const torch::stable::Tensor& A, const torch::stable::Tensor& B,
                                                      const torch::stable::Tensor& C,
                                                      const std::optional<torch::stable::Tensor>& D,
                                                      const std::optional<torch::stable::Tensor>& z,
                                                      const std::optional<torch::stable::Tensor>& delta_bias);

// The backward op's outputs, allocated like the inputs: an absent optional input's gradient is an empty [0]
// tensor (the fake kernel agrees). With no steps at all (B, D or L zero) every gradient is a sum over
// nothing, zero-filled, and `done` is set: nothing is left to launch.
struct SelectiveScanGradients {
  torch::stable::Tensor u, delta, A, B, C, D, z, delta_bias;
  bool done;
  std::tuple<torch::stable::Tensor, torch::stable::Tensor, torch::stable::Tensor, torch::stable::Tensor,
             torch::stable::Tensor, torch::stable::Tensor, torch::stable::Tensor, torch::stable::Tensor>
  as_tuple() const {
    return {u, delta, A, B, C, D, z, delta_bias};
  }
};
SelectiveScanGradients allocate_selective_scan_gradients(const SelectiveScanTensors& in, const SelectiveScanProblem& p);

}  // namespace facekernels
