// selective_scan (Mamba's selective state-space scan): schema and argument checks, shared by the CPU
// binding (selective_scan_cpu.cpp) and the CUDA binding (selective_scan_cuda.cpp).
#include "selective_scan/selective_scan.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include "core/checks.h"
#include "core/tensors.h"

namespace facekernels {

using torch::stable::Tensor;

namespace {

// B or C: [B, N, L] or grouped [B, G, N, L] with G dividing D; returns G (1 for the 3-D form).
int64_t check_input_matrix(const char* op, const char* arg, const Tensor& m, const Tensor& u, int64_t state) {
  FK_CHECK(m.dim() == 3 || m.dim() == 4, op, arg,
           " must be a 3-D tensor [B, N, L] or a 4-D tensor [B, G, N, L], got a ", m.dim(), "-D tensor of shape ",
           shape_string(m));
  check_same_dtype(op, arg, m, "u", u);
  check_same_device(op, arg, m, "u", u);
  const int64_t batch = u.size(0), channels = u.size(1), length = u.size(2);
  const int64_t groups = m.dim() == 4 ? m.size(1) : 1;
  const int64_t off = m.dim() - 3;
  const bool ok = m.size(0) == batch && m.size(off + 1) == state && m.size(off + 2) == length;
  if (m.dim() == 3) {
    FK_CHECK(ok, op, arg, " must have shape [B, N, L] = [", batch, ", ", state, ", ", length, "], got ",
             shape_string(m));
  } else {
    FK_CHECK(ok && groups >= 1 && channels % groups == 0, op, arg, " must have shape [B, G, N, L] = [", batch,
             ", G, ", state, ", ", length, "] with G dividing D = ", channels, ", got ", shape_string(m));
  }
  return groups;
}

void check_channel_vector(const char* op, const char* arg, const std::optional<Tensor>& v, const Tensor& u) {
  if (!v.has_value()) return;
  FK_CHECK(v->dim() == 1 && v->size(0) == u.size(1), op, arg, " must have shape [", u.size(1), "] (D of u), got ",
           shape_string(*v));
  check_same_dtype(op, arg, *v, "u", u);
  check_same_device(op, arg, *v, "u", u);
}

}  // namespace

SelectiveScanProblem check_selective_scan(const char* op, const Tensor& u, const Tensor& delta, const Tensor& A,
                                          const Tensor& B, const Tensor& C, const std::optional<Tensor>& D,
                                          const std::optional<Tensor>& z, const std::optional<Tensor>& delta_bias) {
  check_dim(op, "u", u, 3, "[B, D, L]");
  check_floating_dtype(op, "u", u);
  check_like(op, "delta", delta, "u", u, 3, "[B, D, L]");
  check_dim(op, "A", A, 2, "[D, N]");
  const int64_t state = A.size(1);
  FK_CHECK(A.size(0) == u.size(1) && state >= 1 && state <= kSelectiveScanMaxState, op,
           "A must have shape [D, N] with D = u.size(1) = ", u.size(1), " and 1 <= N <= ", kSelectiveScanMaxState,
           ", got ", shape_string(A));
  check_same_dtype(op, "A", A, "u", u);
  check_same_device(op, "A", A, "u", u);
  const int64_t groups_b = check_input_matrix(op, "B", B, u, state);
  const int64_t groups_c = check_input_matrix(op, "C", C, u, state);
  check_channel_vector(op, "D", D, u);
  if (z.has_value()) check_like(op, "z", *z, "u", u, 3, "[B, D, L]");
  check_channel_vector(op, "delta_bias", delta_bias, u);
  return {u.size(0), u.size(1), u.size(2), state, groups_b, groups_c};
}

SelectiveScanProblem check_selective_scan_backward(const Tensor& grad_out, const std::optional<Tensor>& grad_last_state,
                                                   const Tensor& u, const Tensor& delta, const Tensor& A,
                                                   const Tensor& B, const Tensor& C, const std::optional<Tensor>& D,
                                                   const std::optional<Tensor>& z,
                                                   const std::optional<Tensor>& delta_bias) {
  const char* op = "_selective_scan_backward";
  const SelectiveScanProblem p = check_selective_scan(op, u, delta, A, B, C, D, z, delta_bias);
  check_like(op, "grad_out", grad_out, "u", u, 3, "[B, D, L]");
  if (grad_last_state.has_value()) {
    const Tensor& g = *grad_last_state;
    FK_CHECK(g.dim() == 3 && g.size(0) == p.batch && g.size(1) == p.channels && g.size(2) == p.state, op,
             "grad_last_state must have shape [B, D, N] = [", p.batch, ", ", p.channels, ", ", p.state, "], got ",
             shape_string(g));
    check_same_device(op, "grad_last_state", g, "u", u);
    // the state is float32 for float16/bfloat16/float32 inputs, float64 for float64 ones
    const auto state_dtype = u.scalar_type() == torch::headeronly::ScalarType::Double
                                 ? torch::headeronly::ScalarType::Double
                                 : torch::headeronly::ScalarType::Float;
    FK_CHECK(g.scalar_type() == state_dtype, op, "grad_last_state must be ", dtype_name(state_dtype),
             " (the state's dtype), got ", dtype_name(g.scalar_type()));
  }
  return p;
}

SelectiveScanTensors contiguous_selective_scan_inputs(const Tensor& u, const Tensor& delta, const Tensor& A,
                                                      const Tensor& B, const Tensor& C, const std::optional<Tensor>& D,
                                                      const std::optional<Tensor>& z,
                                                      const std::optional<Tensor>& delta_bias) {
  using torch::stable::contiguous;
  return {contiguous(u),         contiguous(delta),     contiguous(A), contiguous(B), contiguous(C),
          contiguous_or_none(D), contiguous_or_none(z), contiguous_or_none(delta_bias)};
}

SelectiveScanGradients allocate_selective_scan_gradients(const SelectiveScanTensors& in, const SelectiveScanProblem& p) {
  auto like = [&](const Tensor& t) { return torch::stable::new_empty(t, t.sizes()); };
  auto like_optional = [&](const std::optional<Tensor>& t) {
    return t.has_value() ? like(*t) : torch::stable::new_empty(in.u, {0});
  };
  SelectiveScanGradients g{like(in.u),  like(in.u),          like(in.A),          like(in.B),
                           like(in.C),  like_optional(in.D), like_optional(in.z), like_optional(in.delta_bias),
                           false};
  if (p.batch * p.channels * p.length == 0) {
    for (Tensor* t : {&g.u, &g.delta, &g.A, &g.B, &g.C, &g.D, &g.z, &g.delta_bias}) {
      if (t->numel() > 0) torch::stable::zero_(*t);
    }
    g.done = true;
  }
  return g;
}

}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def(
      "selective_scan(Tensor u, Tensor delta, Tensor A, Tensor B, Tensor C, Tensor? D=None, Tensor? z=None, "
      "Tensor? delta_bias=None, bool delta_softplus=False) -> (Tensor, Tensor)");
  m.def(
      "_selective_scan_backward(Tensor grad_out, Tensor? grad_last_state, Tensor u, Tensor delta, Tensor A, "
      "Tensor B, Tensor C, Tensor? D, Tensor? z, Tensor? delta_bias, bool delta_softplus) -> (Tensor, Tensor, "
      "Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}
