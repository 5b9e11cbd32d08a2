// temporal_filter: the CPU binding (checks, outputs allocated with torch, kernels from
// temporal_filter_kernels.cpp at the CPU's SIMD level). There is no CUDA binding (temporal_filter.cpp).
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <tuple>

#include "core/tensors.h"
#include "temporal_filter/temporal_filter.h"
#include "temporal_filter/temporal_filter_kernels.h"

namespace facekernels {
namespace {

using torch::stable::Tensor;

// Empty inputs: with no frames the state passes through (an absent one becomes the zero state of a
// stream that has seen nothing); returns whether the kernels have nothing left to do.
bool nothing_to_filter(const TemporalFilterProblem& p, const std::optional<Tensor>& state, Tensor& state_out) {
  if (p.batch * p.channels == 0) return true;
  if (p.frames > 0) return false;
  if (state.has_value()) {
    torch::stable::copy_(state_out, *state);
  } else {
    torch::stable::zero_(state_out);
  }
  return true;
}

std::tuple<Tensor, Tensor> one_euro_filter_cpu(const Tensor& x, const std::optional<Tensor>& periods,
                                               const std::optional<Tensor>& state, double rate, double min_cutoff,
                                               double beta, double d_cutoff, bool raw_derivative) {
  const TemporalFilterProblem p = check_one_euro_filter(x, periods, state, rate, min_cutoff, beta, d_cutoff);
  Tensor y = new_cpu_output(x, x.sizes());
  Tensor state_out = torch::stable::new_empty(x, {p.batch, 3, p.channels});
  if (nothing_to_filter(p, state, state_out)) return {y, state_out};
  const Tensor xc = torch::stable::contiguous(x);
  const std::optional<Tensor> sc = contiguous_or_none(state);
  dispatch_cpu_dtype(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    if (periods.has_value()) {
      check_periods_values("one_euro_filter", data_of<const T>(periods), periods->stride(0), periods->stride(1),
                           p.batch, p.frames, state.has_value() ? 0 : 1);
    }
    cpu::OneEuroArgs<T> a{.x = data_of<const T>(xc),
                          .periods = data_of<const T>(periods),
                          .state_in = data_of<const T>(sc),
                          .y = data_of<T>(y),
                          .state_out = data_of<T>(state_out),
                          .batch = p.batch,
                          .frames = p.frames,
                          .channels = p.channels,
                          .periods_stride_b = periods.has_value() ? periods->stride(0) : 0,
                          .periods_stride_t = periods.has_value() ? periods->stride(1) : 0,
                          .rate = rate,
                          .min_cutoff = min_cutoff,
                          .beta = beta,
                          .d_cutoff = d_cutoff,
                          .raw_derivative = raw_derivative};
    FK_CPU_KERNEL_TABLE(cpu::temporal_filter_kernels, T).one_euro(a);
  });
  return {y, state_out};
}

std::tuple<Tensor, Tensor> exponential_smoothing_cpu(const Tensor& x, const std::optional<Tensor>& state,
                                                     double alpha) {
  const TemporalFilterProblem p = check_exponential_smoothing(x, state, alpha);
  Tensor y = new_cpu_output(x, x.sizes());
  Tensor state_out = torch::stable::new_empty(x, {p.batch, p.channels});
  if (nothing_to_filter(p, state, state_out)) return {y, state_out};
  const Tensor xc = torch::stable::contiguous(x);
  const std::optional<Tensor> sc = contiguous_or_none(state);
  dispatch_cpu_dtype(xc.scalar_type(), [&](auto tag) {
    using T = decltype(tag);
    cpu::ExponentialSmoothingArgs<T> a{.x = data_of<const T>(xc),
                                       .state_in = data_of<const T>(sc),
                                       .y = data_of<T>(y),
                                       .state_out = data_of<T>(state_out),
                                       .batch = p.batch,
                                       .frames = p.frames,
                                       .channels = p.channels,
                                       .alpha = alpha};
    FK_CPU_KERNEL_TABLE(cpu::temporal_filter_kernels, T).exponential_smoothing(a);
  });
  return {y, state_out};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("one_euro_filter", TORCH_BOX(&facekernels::one_euro_filter_cpu));
  m.impl("exponential_smoothing", TORCH_BOX(&facekernels::exponential_smoothing_cpu));
}
