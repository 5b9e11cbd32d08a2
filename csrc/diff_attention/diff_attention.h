// diff_attention: the problem and the argument checks shared by the CPU and CUDA bindings
// (diff_attention_cpu.cpp, diff_attention_cuda.cpp); defined in diff_attention.cpp.
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

// An input whose last dimension is unit-stride (after a copy if it was not): per (b, h) it is then a
// matrix BLAS reads in place, whatever the other strides (e.g. a [B, T, H, D] tensor transposed). A
// broadcast input whose rows share memory (stride 0 over T or S) is copied too: core/blas.h's gemm_into
// takes a stride below 1 as 1.
torch::stable::Tensor diff_attention_rows_unit_stride(const torch::stable::Tensor& t);

}  // namespace facekernels
