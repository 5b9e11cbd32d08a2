// temporal_filter: argument checks of the causal per-channel filters (One Euro, exponential smoothing).
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>

namespace facekernels {

struct TemporalFilterProblem {
  int64_t batch, frames, channels;
};

// one_euro_filter: x [B, T, C]; periods [B, T] (any strides) or absent; state [B, 3, C] or absent; the
// rate and the three cutoff parameters positive and finite (beta >= 0).
TemporalFilterProblem check_one_euro_filter(const torch::stable::Tensor& x,
                                            const std::optional<torch::stable::Tensor>& periods,
                                            const std::optional<torch::stable::Tensor>& state, double rate,
                                            double min_cutoff, double beta, double d_cutoff);

// one_euro_filter's periods [B, T] (strides in elements): every period the kernel reads, periods[b, t] for
// t >= first (1 without a state, whose first frame passes through; 0 with one), must be finite and > 0.
template <typename T>
void check_periods_values(const char* op, const T* periods, int64_t stride_b, int64_t stride_t, int64_t batch,
                          int64_t frames, int64_t first);

// exponential_smoothing: x [B, T, C]; state [B, C] or absent; 0 < alpha <= 1.
TemporalFilterProblem check_exponential_smoothing(const torch::stable::Tensor& x,
                                                  const std::optional<torch::stable::Tensor>& state,
                                                  double alpha);

}  // namespace facekernels
