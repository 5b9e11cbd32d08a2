// st_graph_conv: what the CPU binding (st_graph_conv_cpu.cpp) and the CUDA binding (st_graph_conv_cuda.cpp)
// share: the argument checks (st_graph_conv.cpp), the contraction-order choice and the GEMM driver
// (st_graph_conv_driver.cpp). The driver runs every GEMM through gemm_into (torch's mm.out: BLAS on CPU,
// cuBLAS on CUDA) into buffers it reuses, and leaves the elementwise steps between GEMMs to a backend:
// the CPU kernels (st_graph_conv_kernels.cpp) or the CUDA launchers (cuda/st_graph_conv).
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <array>
#include <cstdint>
#include <optional>
#include <tuple>

namespace facekernels {

struct StGraphConvProblem {
  int64_t batch, in_channels, out_channels, frames, nodes, partitions;
  bool per_sample;  // adjacency [N, K, V, V] rather than [K, V, V]
  bool has_bias;
};

// x [N, Cin, T, V]; weight [K, Cout, Cin]; adjacency [K, V, V] or [N, K, V, V]; bias [K, Cout] or none;
// one floating dtype (float32/float64 on CPU, float16/bfloat16/float32 on CUDA) and one device.
StGraphConvProblem check_st_graph_conv(const char* op, const torch::stable::Tensor& x,
                                       const torch::stable::Tensor& weight, const torch::stable::Tensor& adjacency,
                                       const std::optional<torch::stable::Tensor>& bias);

// grad_out [N, Cout, T, V] in x's dtype, on x's device.
void check_st_graph_conv_grad_out(const char* op, const torch::stable::Tensor& grad_out,
                                  const torch::stable::Tensor& x, const StGraphConvProblem& p);

// Which of the gradients x, weight, adjacency, bias are wanted.
using StGraphConvMask = std::array<bool, 4>;

// The two contraction orders. AggregateFirst: Y[k] = X A_k over the graph, then one channel GEMM
// out = [W_0 .. W_K-1] Y. ChannelFirst: Z = W X for all K*Cout channels, then out = sum_k Z_k A_k.
enum class StGraphConvOrder { AggregateFirst, ChannelFirst };

// Multiply-adds per sample of each order; the driver takes the cheaper.
StGraphConvOrder st_graph_conv_forward_order(const StGraphConvProblem& p);
StGraphConvOrder st_graph_conv_backward_order(const StGraphConvProblem& p, const StGraphConvMask& mask);

// The elementwise steps between the GEMMs, on contiguous buffers of the compute type T (float or
// double) on the tensors' device; the same contracts as cpu::StGraphConvKernels
// (st_graph_conv_kernels.h).
template <typename T>
class StGraphConvBackend {
 public:
  virtual ~StGraphConvBackend() = default;
  virtual void accumulate(T* dst, const T* src, int64_t n) const = 0;
  virtual void add_to_rows(T* z, const T* row_values, int64_t rows, int64_t cols) const = 0;
  virtual void add_over_time(T* out, const T* table, int64_t channels, int64_t frames, int64_t nodes) const = 0;
  virtual void column_sums(const T* adjacency, int64_t partitions, int64_t nodes, T* colsum) const = 0;
  virtual void bias_table(const T* bias, const T* colsum, int64_t partitions, int64_t channels, int64_t nodes,
                          T* table) const = 0;
  virtual void sum_over_time(const T* g, int64_t channels, int64_t frames, int64_t nodes, T* sums) const = 0;
  virtual void bias_gradient(const T* sums, const T* colsum, int64_t partitions, int64_t channels, int64_t nodes,
                             T* grad_bias) const = 0;
  virtual void adjacency_bias_gradient(const T* sums, const T* bias, int64_t partitions, int64_t channels,
                                       int64_t nodes, T* grad_adjacency) const = 0;
};

// The driver. Inputs are in the compute type T: x with each sample [Cin, T, V] contiguous (any batch
// stride), weight, adjacency and bias contiguous. `workers` samples-chunks run in parallel, each with its
// own buffers (1: the calling thread only, GEMMs free to use the library's own threads). Returns the
// contiguous output [N, Cout, T, V].
template <typename T>
torch::stable::Tensor st_graph_conv_run_forward(const torch::stable::Tensor& x, const torch::stable::Tensor& weight,
                                                const torch::stable::Tensor& adjacency,
                                                const std::optional<torch::stable::Tensor>& bias,
                                                const StGraphConvProblem& p, const StGraphConvBackend<T>& backend,
                                                int64_t workers);

// (grad_x, grad_weight, grad_adjacency, grad_bias); a gradient not in the mask is an empty [0] tensor.
// grad_out has each sample [Cout, T, V] contiguous.
template <typename T>
std::tuple<torch::stable::Tensor, torch::stable::Tensor, torch::stable::Tensor, torch::stable::Tensor>
st_graph_conv_run_backward(const torch::stable::Tensor& grad_out, const torch::stable::Tensor& x,
                           const torch::stable::Tensor& weight, const torch::stable::Tensor& adjacency,
                           const std::optional<torch::stable::Tensor>& bias, const StGraphConvProblem& p,
                           const StGraphConvMask& mask, const StGraphConvBackend<T>& backend, int64_t workers);

// x as the drivers read it: returned as is when each sample is contiguous, else a contiguous copy.
torch::stable::Tensor st_graph_conv_samples_contiguous(const torch::stable::Tensor& t);

}  // namespace facekernels
