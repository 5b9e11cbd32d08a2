// C entry points over cuda/correlation/correlation.h for the emulation tests (tests/cudaemu/emu.py): device
// pointers in, the launcher's cudaError_t out; sizes and element strides as int64_t, the dtype as its DType code.
#include <cstdint>

#include "cuda/correlation/correlation.h"

using namespace facekernels::cuda;

extern "C" {

int emu_correlation_forward(const void* x1, const void* x2, void* out, int64_t B, int64_t C, int64_t H, int64_t W,
                            int64_t P, int64_t d, int64_t a0, int64_t a1, int64_t a2, int64_t a3, int64_t b0,
                            int64_t b1, int64_t b2, int64_t b3, int64_t o0, int64_t o1, int64_t o2, int64_t o3,
                            int64_t o4, int64_t dtype) {
  CorrelationForwardParams p{};
  p.x1 = x1;
  p.x2 = x2;
  p.out = out;
  const int64_t s1[4] = {a0, a1, a2, a3}, s2[4] = {b0, b1, b2, b3}, so[5] = {o0, o1, o2, o3, o4};
  for (int k = 0; k < 4; ++k) {
    p.x1_stride[k] = s1[k];
    p.x2_stride[k] = s2[k];
  }
  for (int k = 0; k < 5; ++k) p.out_stride[k] = so[k];
  p.shape = CorrelationShape{B, C, H, W, P, d};
  p.dtype = static_cast<DType>(dtype);
  return correlation_forward(p, nullptr);
}

// Strides: grad_out (5), then x1, x2, grad_x1, grad_x2 (4 each).
int emu_correlation_backward(const void* grad_out, const void* x1, const void* x2, void* grad_x1, void* grad_x2,
                             int64_t B, int64_t C, int64_t H, int64_t W, int64_t P, int64_t d, int64_t g0, int64_t g1,
                             int64_t g2, int64_t g3, int64_t g4, int64_t a0, int64_t a1, int64_t a2, int64_t a3,
                             int64_t b0, int64_t b1, int64_t b2, int64_t b3, int64_t e0, int64_t e1, int64_t e2,
                             int64_t e3, int64_t f0, int64_t f1, int64_t f2, int64_t f3, int64_t dtype) {
  CorrelationBackwardParams p{};
  p.grad_out = grad_out;
  p.x1 = x1;
  p.x2 = x2;
  p.grad_x1 = grad_x1;
  p.grad_x2 = grad_x2;
  const int64_t sg[5] = {g0, g1, g2, g3, g4};
  const int64_t s1[4] = {a0, a1, a2, a3}, s2[4] = {b0, b1, b2, b3}, e[4] = {e0, e1, e2, e3}, f[4] = {f0, f1, f2, f3};
  for (int k = 0; k < 5; ++k) p.grad_stride[k] = sg[k];
  for (int k = 0; k < 4; ++k) {
    p.x1_stride[k] = s1[k];
    p.x2_stride[k] = s2[k];
    p.grad_x1_stride[k] = e[k];
    p.grad_x2_stride[k] = f[k];
  }
  p.shape = CorrelationShape{B, C, H, W, P, d};
  p.dtype = static_cast<DType>(dtype);
  return correlation_backward(p, nullptr);
}

}  // extern "C"
