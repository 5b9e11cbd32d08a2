// triplet_attention: argument checks and layout rules shared by the CPU and CUDA bindings of axis_pool and
// triplet_gate (the two passes of a triplet-attention / TripSE block).
#pragma once

#include <torch/csrc/stable/tensor.h>

#include <cstdint>
#include <optional>

namespace facekernels {

struct TripletProblem {
  int64_t batch, channels, height, width;
};

// How the kernels read a [B, C, H, W] tensor: NCHW planes (stride(3) == 1, stride(2) == W; any B and C
// strides) or channels_last (stride(1) == 1, stride(3) == C, stride(2) == W * C; any B stride). Size-1
// dimensions match either rule whatever their stride.
bool is_planar(const torch::stable::Tensor& t);
bool is_channels_last(const torch::stable::Tensor& t);

// `t` as the kernels read it: in place when planar or channels_last, otherwise a contiguous copy.
torch::stable::Tensor kernel_layout(const torch::stable::Tensor& t);
// `t` in place when it has the layout asked for (channels_last or planar), otherwise a copy in it.
torch::stable::Tensor in_layout(const torch::stable::Tensor& t, bool channels_last);

// A new [B, C, H, W] tensor like `like`, channels_last (strides (HWC, 1, WC, C)) or contiguous.
torch::stable::Tensor new_4d_output(const torch::stable::Tensor& like, int64_t b, int64_t c, int64_t h,
                                    int64_t w, bool channels_last);

TripletProblem check_axis_pool(const char* op, const torch::stable::Tensor& x);

// The backward op's arguments: grads of the three pooled maps and the argmax maps of the forward.
TripletProblem check_axis_pool_backward(const torch::stable::Tensor& grad_c, const torch::stable::Tensor& grad_h,
                                        const torch::stable::Tensor& grad_w, const torch::stable::Tensor& arg_c,
                                        const torch::stable::Tensor& arg_h, const torch::stable::Tensor& arg_w);

TripletProblem check_triplet_gate(const char* op, const torch::stable::Tensor& x,
                                  const std::optional<torch::stable::Tensor>& gate_c,
                                  const std::optional<torch::stable::Tensor>& gate_h,
                                  const std::optional<torch::stable::Tensor>& gate_w,
                                  const std::optional<torch::stable::Tensor>& scale);

TripletProblem check_triplet_gate_backward(const torch::stable::Tensor& grad_y, const torch::stable::Tensor& x,
                                           const std::optional<torch::stable::Tensor>& gate_c,
                                           const std::optional<torch::stable::Tensor>& gate_h,
                                           const std::optional<torch::stable::Tensor>& gate_w,
                                           const std::optional<torch::stable::Tensor>& scale);

struct GateConvProblem {
  int64_t batch, in_channels, rows, cols, taps;
};

// gate_conv(x [B, Cin, M, N], weight [1, Cin, K, K]), K odd: checks and sizes.
GateConvProblem check_gate_conv(const char* op, const torch::stable::Tensor& x, const torch::stable::Tensor& weight);
GateConvProblem check_gate_conv_backward(const torch::stable::Tensor& grad_y, const torch::stable::Tensor& x,
                                         const torch::stable::Tensor& weight);

}  // namespace facekernels
