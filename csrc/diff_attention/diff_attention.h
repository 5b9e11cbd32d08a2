// diff_attention: argument checks and the GEMM helper shared by the CPU and CUDA bindings.
#pragma once

#include <torch/csrc/stable/device.h>
#include <torch/csrc/stable/tensor.h>
#include <torch/headeronly/core/ScalarType.h>

#include <cstdint>
#include <optional>

namespace facekernels {

struct DiffAttentionProblem {
  int64_t batch, heads, queries, keys, dim, value_dim;  // B, H, T, S, D, Dv
  bool causal;
  double scale;
};

// q1, q2 [B, H, T, D]; k1, k2 [B, H, S, D]; v [B, H, S, Dv]; lam [B, H] (the Python wrapper broadcasts
// it); one floating dtype (float32/float64 on CPU, float16/bfloat16/float32 on CUDA) and one device;
// 1 <= D, Dv <= 256; S >= 1 unless the problem is empty; causal needs T == S; scale finite when given.
DiffAttentionProblem check_diff_attention(const char* op, const torch::stable::Tensor& q1,
                                          const torch::stable::Tensor& k1, const torch::stable::Tensor& q2,
                                          const torch::stable::Tensor& k2, const torch::stable::Tensor& v,
                                          const torch::stable::Tensor& lam, bool causal,
                                          std::optional<double> scale);

// The backward's extra arguments: grad_out [B, H, T, Dv] of the inputs' dtype and device, lse1 and lse2
// [B, H, T] of the statistics dtype (float64 for float64 inputs, else float32).
void check_diff_attention_backward(const char* op, const DiffAttentionProblem& p, const torch::stable::Tensor& q1,
                                   const torch::stable::Tensor& grad_out, const torch::stable::Tensor& lse1,
                                   const torch::stable::Tensor& lse2);

// The dtype of the row statistics (log-sum-exp) for inputs of dtype `s`.
torch::headeronly::ScalarType diff_attention_stats_dtype(torch::headeronly::ScalarType s);

// A strided matrix: element (i, j) of `data` (of the op's dtype) is at data + i * row_stride + j * col_stride
// elements.
struct DiffAttentionMatrix {
  const void* data;
  int64_t rows, cols, row_stride, col_stride;
};

// out (rows x cols, row stride ldo, unit column stride) = a @ b, by torch's mm.out: BLAS on CPU (run
// single-threaded inside our parallel regions), cuBLAS on the current stream on CUDA. The tensors handed
// to mm are made here, on the calling thread (see alignment_energy.h on inference mode).
void diff_attention_gemm(void* out, int64_t ldo, const DiffAttentionMatrix& a, const DiffAttentionMatrix& b,
                         torch::stable::Device device, torch::headeronly::ScalarType dtype);

// The same over a batch: out[i] = a[i] @ b[i] for i < batch, with the given batch strides (elements).
void diff_attention_bmm(void* out, int64_t out_batch_stride, int64_t ldo, const DiffAttentionMatrix& a,
                        int64_t a_batch_stride, const DiffAttentionMatrix& b, int64_t b_batch_stride, int64_t batch,
                        torch::stable::Device device, torch::headeronly::ScalarType dtype);

// An input whose last dimension is unit-stride (after a copy if it was not): per (b, h) it is then a
// matrix BLAS reads in place, whatever the other strides (e.g. a [B, T, H, D] tensor transposed).
torch::stable::Tensor diff_attention_rows_unit_stride(const torch::stable::Tensor& t);

}  // namespace facekernels
