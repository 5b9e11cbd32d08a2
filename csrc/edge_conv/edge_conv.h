// cosine_topk and edge_conv_max: the problems and argument checks shared by the CPU bindings
// (cosine_topk_cpu.cpp, edge_conv_cpu.cpp) and the CUDA binding (edge_conv_cuda.cpp); edge_conv.cpp
// defines them.
#pragma once

#include <torch/csrc/stable/tensor.h>

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

// The position of the first of `count` values of idx (contiguous int64) outside [0, n), or -1 when all are
// in range; one pass when they are.
int64_t first_index_out_of_range(const int64_t* idx, int64_t count, int64_t n);

// Raises unless every value of idx (contiguous int64, `count` values) is in [0, n); one pass.
void check_edge_index_range(const char* op, const int64_t* idx, int64_t count, int64_t n, int64_t k);

// cosine_topk's refusal of a row it could not fill: indices [B, N, k] hold -1 from flat position `at` on in
// a row with fewer than k finite (non-NaN) similarities, which only non-finite input (NaN or inf in x or y)
// gives. `self`: called without y (y = x). Both bindings look for it with first_index_out_of_range(indices,
// B * N * k, M).
[[noreturn]] void fail_cosine_topk_unfilled(const char* op, const CosineTopkProblem& p, bool self, int64_t at);

// The message for an index out of range, at flat position `at` of idx [B, N, k].
[[noreturn]] void fail_edge_index(const char* op, int64_t value, int64_t at, int64_t n, int64_t k);

// Raises unless every winner (count values, [B, C, M] contiguous) is in [-1, k): -1 for an inactive
// output, else the neighbour its max came from (the CPU backward; CUDA's kernels bound-check it).
void check_winner_range(const char* op, const int32_t* winner, int64_t count, int64_t k, int64_t c, int64_t m);

// For the CPU drivers (cosine_topk_cpu.cpp, edge_conv_cpu.cpp): the rounding-up division (core has none
// for binding code; core/cpu_simd.h's are for kernel sources) and the padding of their scratch buffers
// (kernels may load a vector past a row's end).
namespace edge_cpu {
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
constexpr int64_t kPad = 64;
}  // namespace edge_cpu

}  // namespace facekernels
