// st_graph_conv: the CUDA binding. Argument checks (st_graph_conv.cpp) and the GEMM driver
// (st_graph_conv_driver.cpp) are shared with the CPU binding; the GEMMs run in cuBLAS through torch's mm.out on the current stream, one sample
// at a time into buffers allocated once per call, and the elementwise steps are the kernels of
// cuda/st_graph_conv. Every dtype computes in float32: float16/bfloat16 inputs are converted once,
// intermediates and gradient sums stay float32, and outputs are converted back at the end (float32
// GEMMs follow torch's matmul precision setting: TF32 only when the user allows it).
#include <cuda_runtime_api.h>

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/macros.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <optional>
#include <tuple>

#include "core/cuda_binding.h"
#include "cuda/st_graph_conv/st_graph_conv.h"
#include "st_graph_conv/st_graph_conv.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

constexpr const char* kOp = "st_graph_conv";

class CudaBackend final : public StGraphConvBackend<float> {
 public:
  explicit CudaBackend(cudaStream_t stream) : stream_(stream) {}
  void accumulate(float* dst, const float* src, int64_t n) const override {
    check_launch(cuda::st_graph_conv_accumulate(dst, src, n, stream_), kOp);
  }
  void add_to_rows(float* z, const float* row_values, int64_t rows, int64_t cols) const override {
    check_launch(cuda::st_graph_conv_add_to_rows(z, row_values, rows, cols, stream_), kOp);
  }
  void add_over_time(float* out, const float* table, int64_t channels, int64_t frames, int64_t nodes) const override {
    check_launch(cuda::st_graph_conv_add_over_time(out, table, channels, frames, nodes, stream_), kOp);
  }
  void column_sums(const float* adjacency, int64_t partitions, int64_t nodes, float* colsum) const override {
    check_launch(cuda::st_graph_conv_column_sums(adjacency, partitions, nodes, colsum, stream_), kOp);
  }
  void bias_table(const float* bias, const float* colsum, int64_t partitions, int64_t channels, int64_t nodes,
                  float* table) const override {
    check_launch(cuda::st_graph_conv_bias_table(bias, colsum, partitions, channels, nodes, table, stream_), kOp);
  }
  void sum_over_time(const float* g, int64_t channels, int64_t frames, int64_t nodes, float* sums) const override {
    check_launch(cuda::st_graph_conv_sum_over_time(g, channels, frames, nodes, sums, stream_), kOp);
  }
  void bias_gradient(const float* sums, const float* colsum, int64_t partitions, int64_t channels, int64_t nodes,
                     float* grad_bias) const override {
    check_launch(cuda::st_graph_conv_bias_gradient(sums, colsum, partitions, channels, nodes, grad_bias, stream_),
                 kOp);
  }
  void adjacency_bias_gradient(const float* sums, const float* bias, int64_t partitions, int64_t channels,
                               int64_t nodes, float* grad_adjacency) const override {
    check_launch(cuda::st_graph_conv_adjacency_bias_gradient(sums, bias, partitions, channels, nodes,
                                                             grad_adjacency, stream_),
                 kOp);
  }

 private:
  cudaStream_t stream_;
};

Tensor to_float(const Tensor& t) {
  return t.scalar_type() == ScalarType::Float ? t
                                              : torch::stable::to(t, std::optional<ScalarType>(ScalarType::Float));
}

Tensor to_dtype(const Tensor& t, ScalarType dtype) {
  return dtype == ScalarType::Float ? t : torch::stable::to(t, std::optional<ScalarType>(dtype));
}

std::optional<Tensor> float_contiguous_or_none(const std::optional<Tensor>& t) {
  return t.has_value() ? std::optional<Tensor>(torch::stable::contiguous(to_float(*t))) : std::nullopt;
}

Tensor st_graph_conv_cuda(const Tensor& x, const Tensor& weight, const Tensor& adjacency,
                          const std::optional<Tensor>& bias) {
  const StGraphConvProblem p = check_st_graph_conv("st_graph_conv", x, weight, adjacency, bias);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const CudaBackend backend(current_cuda_stream(x.get_device_index()));
  const Tensor out =
      st_graph_conv_run_forward<float>(st_graph_conv_samples_contiguous(to_float(x)),
                                       torch::stable::contiguous(to_float(weight)),
                                       torch::stable::contiguous(to_float(adjacency)), float_contiguous_or_none(bias),
                                       p, backend, 1);
  return to_dtype(out, x.scalar_type());
}

std::tuple<Tensor, Tensor, Tensor, Tensor> st_graph_conv_backward_cuda(
    const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& adjacency,
    const std::optional<Tensor>& bias, bool need_x, bool need_weight, bool need_adjacency, bool need_bias) {
  const char* op = "_st_graph_conv_backward";
  const StGraphConvProblem p = check_st_graph_conv(op, x, weight, adjacency, bias);
  check_st_graph_conv_grad_out(op, grad_out, x, p);
  const torch::stable::accelerator::DeviceGuard guard(x.get_device_index());
  const CudaBackend backend(current_cuda_stream(x.get_device_index()));
  auto [gx, gw, ga, gb] = st_graph_conv_run_backward<float>(
      st_graph_conv_samples_contiguous(to_float(grad_out)), st_graph_conv_samples_contiguous(to_float(x)),
      torch::stable::contiguous(to_float(weight)), torch::stable::contiguous(to_float(adjacency)),
      float_contiguous_or_none(bias), p, {need_x, need_weight, need_adjacency, need_bias}, backend, 1);
  const ScalarType dtype = x.scalar_type();
  return {to_dtype(gx, dtype), to_dtype(gw, dtype), to_dtype(ga, dtype), to_dtype(gb, dtype)};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CUDA, m) {
  m.impl("st_graph_conv", TORCH_BOX(&facekernels::st_graph_conv_cuda));
  m.impl("_st_graph_conv_backward", TORCH_BOX(&facekernels::st_graph_conv_backward_cuda));
}
