// st_graph_conv: the CPU binding and its registration. The GEMM driver (st_graph_conv_driver.cpp) runs
// the samples in one chunk per thread of torch's pool, with BLAS for the GEMMs; the elementwise steps
// between them are the SIMD kernels of st_graph_conv_kernels.cpp, reached through CpuBackend.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>
#include <tuple>

#include "core/cpu_capability.h"
#include "core/parallel.h"
#include "core/tensors.h"
#include "st_graph_conv/st_graph_conv.h"
#include "st_graph_conv/st_graph_conv_kernels.h"

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

namespace {

template <typename T>
class CpuBackend final : public StGraphConvBackend<T> {
 public:
  explicit CpuBackend(const cpu::StGraphConvKernels<T>& k) : k_(k) {}
  void accumulate(T* dst, const T* src, int64_t n) const override { k_.accumulate(dst, src, n); }
  void add_to_rows(T* z, const T* row_values, int64_t rows, int64_t cols) const override {
    k_.add_to_rows(z, row_values, rows, cols);
  }
  void add_over_time(T* out, const T* table, int64_t channels, int64_t frames, int64_t nodes) const override {
    k_.add_over_time(out, table, channels, frames, nodes);
  }
  void column_sums(const T* adjacency, int64_t partitions, int64_t nodes, T* colsum) const override {
    k_.column_sums(adjacency, partitions, nodes, colsum);
  }
  void bias_table(const T* bias, const T* colsum, int64_t partitions, int64_t channels, int64_t nodes,
                  T* table) const override {
    k_.bias_table(bias, colsum, partitions, channels, nodes, table);
  }
  void sum_over_time(const T* g, int64_t channels, int64_t frames, int64_t nodes, T* sums) const override {
    k_.sum_over_time(g, channels, frames, nodes, sums);
  }
  void bias_gradient(const T* sums, const T* colsum, int64_t partitions, int64_t channels, int64_t nodes,
                     T* grad_bias) const override {
    k_.bias_gradient(sums, colsum, partitions, channels, nodes, grad_bias);
  }
  void adjacency_bias_gradient(const T* sums, const T* bias, int64_t partitions, int64_t channels, int64_t nodes,
                               T* grad_adjacency) const override {
    k_.adjacency_bias_gradient(sums, bias, partitions, channels, nodes, grad_adjacency);
  }

 private:
  const cpu::StGraphConvKernels<T>& k_;
};

Tensor st_graph_conv_cpu(const Tensor& x, const Tensor& weight, const Tensor& adjacency,
                         const std::optional<Tensor>& bias) {
  const StGraphConvProblem p = check_st_graph_conv("st_graph_conv", x, weight, adjacency, bias);
  const Tensor xc = st_graph_conv_samples_contiguous(x);
  const Tensor wc = torch::stable::contiguous(weight);
  const Tensor ac = torch::stable::contiguous(adjacency);
  const std::optional<Tensor> bc = contiguous_or_none(bias);
  if (x.scalar_type() == ScalarType::Float) {
    const CpuBackend<float> backend(FK_CPU_KERNEL_TABLE(cpu::st_graph_conv_kernels, float));
    return st_graph_conv_run_forward<float>(xc, wc, ac, bc, p, backend, num_threads());
  }
  const CpuBackend<double> backend(FK_CPU_KERNEL_TABLE(cpu::st_graph_conv_kernels, double));
  return st_graph_conv_run_forward<double>(xc, wc, ac, bc, p, backend, num_threads());
}

std::tuple<Tensor, Tensor, Tensor, Tensor> st_graph_conv_backward_cpu(
    const Tensor& grad_out, const Tensor& x, const Tensor& weight, const Tensor& adjacency,
    const std::optional<Tensor>& bias, bool need_x, bool need_weight, bool need_adjacency, bool need_bias) {
  const char* op = "_st_graph_conv_backward";
  const StGraphConvProblem p = check_st_graph_conv(op, x, weight, adjacency, bias);
  check_st_graph_conv_grad_out(op, grad_out, x, p);
  const StGraphConvMask mask{need_x, need_weight, need_adjacency, need_bias};
  const Tensor gc = st_graph_conv_samples_contiguous(grad_out);
  const Tensor xc = st_graph_conv_samples_contiguous(x);
  const Tensor wc = torch::stable::contiguous(weight);
  const Tensor ac = torch::stable::contiguous(adjacency);
  const std::optional<Tensor> bc = contiguous_or_none(bias);
  if (x.scalar_type() == ScalarType::Float) {
    const CpuBackend<float> backend(FK_CPU_KERNEL_TABLE(cpu::st_graph_conv_kernels, float));
    return st_graph_conv_run_backward<float>(gc, xc, wc, ac, bc, p, mask, backend, num_threads());
  }
  const CpuBackend<double> backend(FK_CPU_KERNEL_TABLE(cpu::st_graph_conv_kernels, double));
  return st_graph_conv_run_backward<double>(gc, xc, wc, ac, bc, p, mask, backend, num_threads());
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("st_graph_conv", TORCH_BOX(&facekernels::st_graph_conv_cpu));
  m.impl("_st_graph_conv_backward", TORCH_BOX(&facekernels::st_graph_conv_backward_cpu));
}
