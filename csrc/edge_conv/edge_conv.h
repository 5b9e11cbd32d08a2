// cosine_topk and edge_conv_max: argument checks and the GEMM helper shared by the CPU and CUDA bindings.
#pragma once

#include <torch/csrc/stable/device.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <cstdint>
#include <optional>

namespace facekernels {

struct CosineTopkProblem {
  int64_t batch, channels, n, m, k;
};

// x [B, C, N] floating (float32/float64 on CPU; float16/bfloat16/float32 on CUDA); y [B, C, M] of the same
// dtype and device, or none (y = x); 1 <= k <= M < 2^31.
CosineTopkProblem check_cosine_topk(const char* op, const torch::stable::Tensor& x, int64_t k,
                                    const std::optional<torch::stable::Tensor>& y);

struct EdgeConvProblem {
  int64_t batch, channels, n, m, k;
  bool has_bias;
};

// x [B, C, N] floating; idx int64 [B, N, k], k >= 1; w_self, w_edge [M, N]; bias [M] or none; one dtype and
// device. The range of idx is checked separately (check_edge_index_range on CPU, a kernel on CUDA).
EdgeConvProblem check_edge_conv_max(const char* op, const torch::stable::Tensor& x, const torch::stable::Tensor& idx,
                                    const torch::stable::Tensor& w_self, const torch::stable::Tensor& w_edge,
                                    const std::optional<torch::stable::Tensor>& bias);

// The backward op's arguments: those of the forward (bias as has_bias), grad_out [B, C, M] of x's dtype and
// device, winner int32 [B, C, M] on x's device.
EdgeConvProblem check_edge_conv_max_backward(const char* op, const torch::stable::Tensor& grad_out,
                                             const torch::stable::Tensor& x, const torch::stable::Tensor& idx,
                                             const torch::stable::Tensor& w_self, const torch::stable::Tensor& w_edge,
                                             const torch::stable::Tensor& winner, bool has_bias);

// Raises unless every value of idx (contiguous int64, `count` values) is in [0, n); one pass.
void check_edge_index_range(const char* op, const int64_t* idx, int64_t count, int64_t n, int64_t k);

// The message for an index out of range, at flat position `at` of idx [B, N, k].
[[noreturn]] void fail_edge_index(const char* op, int64_t value, int64_t at, int64_t n, int64_t k);

// A (batch of) matrices in memory: element (i, r, c) at data + i * batch_stride + r * row_stride +
// c * col_stride elements. BLAS needs row_stride or col_stride to be 1.
struct EdgeMatrixView {
  void* data;
  int64_t batch, rows, cols;
  int64_t batch_stride, row_stride, col_stride;
};

// out = a @ b (per batch entry) by torch's mm.out / bmm.out: BLAS on CPU (single-threaded inside our own
// parallel regions), cuBLAS on the current stream on CUDA. The tensors are made here, on the calling
// thread (tensors made on the op's thread would be inference tensors under torch.inference_mode(),
// which a worker thread may not write).
void matmul_into(const EdgeMatrixView& out, const EdgeMatrixView& a, const EdgeMatrixView& b, torch::stable::Device device,
                 torch::headeronly::ScalarType dtype);

}  // namespace facekernels
