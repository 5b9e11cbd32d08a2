// C entry points over cuda/circular_conv/circular_conv.h for the emulation tests (tests/cudaemu/emu.py):
// device pointers in, the launcher's cudaError_t out; sizes as int64_t, the dtype as its DType code.
#include <cstdint>

#include "cuda/circular_conv/circular_conv.h"

using namespace facekernels::cuda;

namespace {
CircularConvShape shape_of(int64_t b, int64_t c, int64_t h, int64_t w, int64_t l, int64_t axis) {
  return CircularConvShape{b, c, h, w, l, static_cast<int>(axis)};
}
}  // namespace

extern "C" {

int emu_circular_conv_forward(const void* x, const void* w, const void* bias, void* y, int64_t B, int64_t C, int64_t H,
                              int64_t W, int64_t L, int64_t axis, int64_t dtype) {
  CircularConvForwardParams p{};
  p.x = x;
  p.weight = w;
  p.bias = bias;
  p.y = y;
  p.shape = shape_of(B, C, H, W, L, axis);
  p.dtype = static_cast<DType>(dtype);
  return circular_conv_forward(p, nullptr);
}

int64_t emu_circular_conv_workspace(int64_t B, int64_t C, int64_t H, int64_t W, int64_t L, int64_t axis,
                                    int64_t need_w, int64_t need_b) {
  return circular_conv_backward_workspace_size(shape_of(B, C, H, W, L, axis), need_w != 0, need_b != 0);
}

int emu_circular_conv_backward(const void* gy, const void* x, const void* w, void* gx, void* gw, void* gb,
                               void* workspace, int64_t B, int64_t C, int64_t H, int64_t W, int64_t L, int64_t axis,
                               int64_t dtype) {
  CircularConvBackwardParams p{};
  p.grad_y = gy;
  p.x = x;
  p.weight = w;
  p.grad_x = gx;
  p.grad_weight = gw;
  p.grad_bias = gb;
  p.workspace = static_cast<float*>(workspace);
  p.shape = shape_of(B, C, H, W, L, axis);
  p.dtype = static_cast<DType>(dtype);
  return circular_conv_backward(p, nullptr);
}

}  // extern "C"
