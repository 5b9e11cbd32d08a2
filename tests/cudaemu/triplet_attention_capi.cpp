// C entry points over cuda/triplet_attention/triplet_attention.h for the emulation tests (tests/cudaemu/emu.py):
// device pointers in, the launcher's cudaError_t out; sizes and strides as int64_t, the dtype as its DType code.
#include <cstdint>

#include "cuda/triplet_attention/triplet_attention.h"

using namespace facekernels::cuda;

// The gate inputs both entry points pass.
static TripletGateInputs gate_inputs(const void* x, int64_t sb, int64_t sc, int64_t sh, int64_t sw, const void* gc,
                                     const void* gh, const void* gw, const void* s, int64_t channels_last, int64_t B,
                                     int64_t C, int64_t H, int64_t W, int64_t dtype) {
  return {.x = x,
          .x_strides = {sb, sc, sh, sw},
          .gate_c = gc,
          .gate_h = gh,
          .gate_w = gw,
          .scale = s,
          .channels_last = channels_last != 0,
          .shape = {B, C, H, W},
          .dtype = static_cast<DType>(dtype)};
}

extern "C" {

int emu_axis_pool(const void* x, int64_t sb, int64_t sc, int64_t sh, int64_t sw, void* pc, void* ph, void* pw,
                  void* ac, void* ah, void* aw, int64_t B, int64_t C, int64_t H, int64_t W, int64_t dtype) {
  AxisPoolParams p{};
  p.x = x;
  p.x_strides = {sb, sc, sh, sw};
  p.pooled_c = pc;
  p.pooled_h = ph;
  p.pooled_w = pw;
  p.arg_c = static_cast<int32_t*>(ac);
  p.arg_h = static_cast<int32_t*>(ah);
  p.arg_w = static_cast<int32_t*>(aw);
  p.shape = {B, C, H, W};
  p.dtype = static_cast<DType>(dtype);
  return axis_pool_forward(p, nullptr);
}

int emu_axis_pool_backward(const void* gc, const void* gh, const void* gw, const void* ac, const void* ah,
                           const void* aw, void* gx, int64_t channels_last, int64_t B, int64_t C, int64_t H, int64_t W,
                           int64_t dtype) {
  AxisPoolBackwardParams p{};
  p.grad_c = gc;
  p.grad_h = gh;
  p.grad_w = gw;
  p.arg_c = static_cast<const int32_t*>(ac);
  p.arg_h = static_cast<const int32_t*>(ah);
  p.arg_w = static_cast<const int32_t*>(aw);
  p.grad_x = gx;
  p.channels_last = channels_last != 0;
  p.shape = {B, C, H, W};
  p.dtype = static_cast<DType>(dtype);
  return axis_pool_backward(p, nullptr);
}

int emu_triplet_gate(const void* x, int64_t sb, int64_t sc, int64_t sh, int64_t sw, const void* gc, const void* gh,
                     const void* gw, const void* s, void* y, int64_t channels_last, int64_t B, int64_t C, int64_t H,
                     int64_t W, int64_t dtype) {
  TripletGateParams p{};
  p.in = gate_inputs(x, sb, sc, sh, sw, gc, gh, gw, s, channels_last, B, C, H, W, dtype);
  p.y = y;
  return triplet_gate_forward(p, nullptr);
}

int emu_triplet_gate_backward(const void* gy, int64_t ysb, int64_t ysc, int64_t ysh, int64_t ysw, const void* x,
                              int64_t sb, int64_t sc, int64_t sh, int64_t sw, const void* gc, const void* gh,
                              const void* gw, const void* s, void* gx, int64_t channels_last, void* dgc, void* dgh,
                              void* dgw, void* ds, int64_t B, int64_t C, int64_t H, int64_t W, int64_t dtype) {
  TripletGateBackwardParams p{};
  p.in = gate_inputs(x, sb, sc, sh, sw, gc, gh, gw, s, channels_last, B, C, H, W, dtype);
  p.grad_y = gy;
  p.grad_y_strides = {ysb, ysc, ysh, ysw};
  p.grad_x = gx;
  p.grad_gate_c = dgc;
  p.grad_gate_h = dgh;
  p.grad_gate_w = dgw;
  p.grad_scale = ds;
  return triplet_gate_backward(p, nullptr);
}

int emu_gate_conv(const void* x, const void* w, void* y, int64_t B, int64_t Cin, int64_t M, int64_t N, int64_t K,
                  int64_t dtype) {
  GateConvParams p{};
  p.x = x;
  p.weight = w;
  p.y = y;
  p.batch = B;
  p.in_channels = Cin;
  p.rows = M;
  p.cols = N;
  p.taps = K;
  p.dtype = static_cast<DType>(dtype);
  return gate_conv_forward(p, nullptr);
}

int emu_gate_conv_backward(const void* gy, const void* x, const void* w, void* gx, void* gw, int64_t B, int64_t Cin,
                           int64_t M, int64_t N, int64_t K, int64_t dtype) {
  GateConvParams p{};
  p.grad_y = gy;
  p.x = x;
  p.weight = w;
  p.grad_x = gx;
  p.grad_weight = gw;
  p.batch = B;
  p.in_channels = Cin;
  p.rows = M;
  p.cols = N;
  p.taps = K;
  p.dtype = static_cast<DType>(dtype);
  return gate_conv_backward(p, nullptr);
}

}  // extern "C"
