// st_graph_conv (the spatio-temporal multi-graph convolution of ST-GCN): the schema and the argument
// checks shared by the CPU binding (st_graph_conv_cpu.cpp) and the CUDA binding (st_graph_conv_cuda.cpp).
// The algorithm is in st_graph_conv_driver.cpp.
#include "st_graph_conv/st_graph_conv.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>

#include "core/checks.h"

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

StGraphConvProblem check_st_graph_conv(const char* op, const Tensor& x, const Tensor& weight,
                                       const Tensor& adjacency, const std::optional<Tensor>& bias) {
  check_dim(op, "x", x, 4, "[N, Cin, T, V]");
  check_dim(op, "weight", weight, 3, "[K, Cout, Cin]");
  FK_CHECK(adjacency.dim() == 3 || adjacency.dim() == 4, op,
           "adjacency must be a 3-D tensor [K, V, V] (shared) or a 4-D tensor [N, K, V, V] (per sample), got a ",
           adjacency.dim(), "-D tensor of shape ", shape_string(adjacency));
  check_floating_dtype(op, "x", x);
  check_same_device(op, "weight", weight, "x", x);
  check_same_device(op, "adjacency", adjacency, "x", x);
  check_same_dtype(op, "weight", weight, "x", x);
  check_same_dtype(op, "adjacency", adjacency, "x", x);
  const int64_t n = x.size(0), cin = x.size(1), frames = x.size(2), nodes = x.size(3);
  const int64_t k = weight.size(0), cout = weight.size(1);
  FK_CHECK(weight.size(2) == cin, op, "weight must have Cin = x.size(1) = ", cin, " input channels, [K, Cout, ",
           cin, "], got shape ", shape_string(weight));
  const bool per_sample = adjacency.dim() == 4;
  const int64_t a0 = per_sample ? 1 : 0;
  if (per_sample) {
    FK_CHECK(adjacency.size(0) == n, op, "adjacency must have N = x.size(0) = ", n,
             " samples when 4-D [N, K, V, V] (or be 3-D [K, V, V], shared), got shape ", shape_string(adjacency));
  }
  FK_CHECK(adjacency.size(a0) == k, op, "adjacency must have K = weight.size(0) = ", k,
           " partitions, got shape ", shape_string(adjacency));
  FK_CHECK(adjacency.size(a0 + 1) == nodes && adjacency.size(a0 + 2) == nodes, op,
           "adjacency must be [", per_sample ? "N, " : "", "K, V, V] with V = x.size(3) = ", nodes,
           " nodes, got shape ", shape_string(adjacency));
  if (bias.has_value()) {
    check_same_device(op, "bias", *bias, "x", x);
    check_same_dtype(op, "bias", *bias, "x", x);
    FK_CHECK(bias->dim() == 2 && bias->size(0) == k && bias->size(1) == cout, op, "bias must have shape [K, Cout] = [",
             k, ", ", cout, "], got shape ", shape_string(*bias));
  }
  return {n, cin, cout, frames, nodes, k, per_sample, bias.has_value()};
}

void check_st_graph_conv_grad_out(const char* op, const Tensor& grad_out, const Tensor& x,
                                  const StGraphConvProblem& p) {
  const bool ok = grad_out.dim() == 4 && grad_out.size(0) == p.batch && grad_out.size(1) == p.out_channels &&
                  grad_out.size(2) == p.frames && grad_out.size(3) == p.nodes;
  FK_CHECK(ok, op, "grad_out must have shape [N, Cout, T, V] = [", p.batch, ", ", p.out_channels, ", ", p.frames,
           ", ", p.nodes, "], got shape ", shape_string(grad_out));
  check_same_device(op, "grad_out", grad_out, "x", x);
  check_same_dtype(op, "grad_out", grad_out, "x", x);
}

Tensor st_graph_conv_samples_contiguous(const Tensor& t) {
  const int64_t c = t.size(1), frames = t.size(2), nodes = t.size(3);
  const bool ok = (nodes == 1 || t.stride(3) == 1) && (frames == 1 || t.stride(2) == nodes) &&
                  (c == 1 || t.stride(1) == frames * nodes);
  return ok ? t : torch::stable::contiguous(t);
}

}  // namespace facekernels

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def("st_graph_conv(Tensor x, Tensor weight, Tensor adjacency, Tensor? bias=None) -> Tensor");
  m.def(
      "_st_graph_conv_backward(Tensor grad_out, Tensor x, Tensor weight, Tensor adjacency, Tensor? bias, "
      "bool need_x, bool need_weight, bool need_adjacency, bool need_bias) -> (Tensor, Tensor, Tensor, Tensor)");
}

