// temporal_filter (causal per-channel filters over [B, T, C] sequences: the One Euro filter and
// exponential smoothing): schemas and argument checks. CPU kernels only (temporal_filter_cpu.cpp): the
// recurrences are sequential in time and run where real-time animation runs them; docs/animation.md says
// why there is no CUDA kernel.
#include "temporal_filter/temporal_filter.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include <cmath>

#include "core/checks.h"

namespace facekernels {

using torch::stable::Tensor;

namespace {

TemporalFilterProblem check_sequence(const char* op, const Tensor& x) {
  check_dim(op, "x", x, 3, "[B, T, C]");
  check_floating_dtype(op, "x", x);
  return {x.size(0), x.size(1), x.size(2)};
}

// state: [B, rows, C] (rows > 0) or [B, C] (rows = 0), the dtype and device of x.
void check_state(const char* op, const std::optional<Tensor>& state, const Tensor& x, const TemporalFilterProblem& p,
                 int64_t rows) {
  if (!state.has_value()) return;
  const Tensor& s = *state;
  const bool ok = rows > 0 ? s.dim() == 3 && s.size(0) == p.batch && s.size(1) == rows && s.size(2) == p.channels
                           : s.dim() == 2 && s.size(0) == p.batch && s.size(1) == p.channels;
  if (rows > 0) {
    FK_CHECK(ok, op, "state must have shape [", p.batch, ", ", rows, ", ", p.channels, "] ([B, ", rows,
             ", C] of x), got ", shape_string(s));
  } else {
    FK_CHECK(ok, op, "state must have shape [", p.batch, ", ", p.channels, "] ([B, C] of x), got ", shape_string(s));
  }
  check_same_dtype(op, "state", s, "x", x);
  check_same_device(op, "state", s, "x", x);
}

void check_positive(const char* op, const char* arg, double value) {
  FK_CHECK(std::isfinite(value) && value > 0.0, op, arg, " must be positive and finite, got ", value);
}

}  // namespace

TemporalFilterProblem check_one_euro_filter(const Tensor& x, const std::optional<Tensor>& periods,
                                            const std::optional<Tensor>& state, double rate, double min_cutoff,
                                            double beta, double d_cutoff) {
  const char* op = "one_euro_filter";
  const TemporalFilterProblem p = check_sequence(op, x);
  check_positive(op, "rate", rate);
  check_positive(op, "min_cutoff", min_cutoff);
  FK_CHECK(std::isfinite(beta) && beta >= 0.0, op, "beta must be finite and >= 0, got ", beta);
  check_positive(op, "d_cutoff", d_cutoff);
  if (periods.has_value()) {
    const Tensor& t = *periods;
    FK_CHECK(t.dim() == 2 && t.size(0) == p.batch && t.size(1) == p.frames, op, "periods must have shape [",
             p.batch, ", ", p.frames, "] ([B, T] of x), got ", shape_string(t));
    check_same_dtype(op, "periods", t, "x", x);
    check_same_device(op, "periods", t, "x", x);
  }
  check_state(op, state, x, p, 3);
  return p;
}

template <typename T>
void check_periods_values(const char* op, const T* periods, int64_t stride_b, int64_t stride_t, int64_t batch,
                          int64_t frames, int64_t first) {
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t t = first; t < frames; ++t) {
      const double value = static_cast<double>(periods[b * stride_b + t * stride_t]);
      // A zero, negative, NaN or infinite period makes alpha, the derivative and every later output NaN.
      if (!(std::isfinite(value) && value > 0.0)) {
        fail(op, "periods must be positive and finite (seconds between frames; periods[:, 0] is unused without "
             "a state), got ", value, " at periods[", b, ", ", t, "]");
      }
    }
  }
}

template void check_periods_values<float>(const char*, const float*, int64_t, int64_t, int64_t, int64_t, int64_t);
template void check_periods_values<double>(const char*, const double*, int64_t, int64_t, int64_t, int64_t, int64_t);

TemporalFilterProblem check_exponential_smoothing(const Tensor& x, const std::optional<Tensor>& state,
                                                  double alpha) {
  const char* op = "exponential_smoothing";
  const TemporalFilterProblem p = check_sequence(op, x);
  FK_CHECK(alpha > 0.0 && alpha <= 1.0, op, "alpha must be in (0, 1], got ", alpha);
  check_state(op, state, x, p, 0);
  return p;
}

}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def(
      "one_euro_filter(Tensor x, Tensor? periods, Tensor? state, float rate, float min_cutoff, float beta, "
      "float d_cutoff, bool raw_derivative) -> (Tensor, Tensor)");
  m.def("exponential_smoothing(Tensor x, Tensor? state, float alpha) -> (Tensor, Tensor)");
}
