// C entry points over cuda/selective_scan/selective_scan.h for the emulation tests (tests/cudaemu/emu.py):
// device pointers in, the launcher's cudaError_t out; sizes as int64_t, the dtype as its DType code.
#include <cstdint>

#include "cuda/selective_scan/selective_scan.h"

using namespace facekernels::cuda;

namespace {
SelectiveScanShape shape_of(int64_t b, int64_t d, int64_t l, int64_t n, int64_t gb, int64_t gc, int64_t softplus) {
  return SelectiveScanShape{b, d, l, n, gb, gc, softplus != 0};
}
}  // namespace

extern "C" {

int emu_selective_scan_forward(const void* u, const void* delta, const void* A, const void* B, const void* C,
                               const void* D, const void* z, const void* bias, void* out, void* last_state,
                               int64_t b, int64_t d, int64_t l, int64_t n, int64_t gb, int64_t gc, int64_t softplus,
                               int64_t dtype) {
  SelectiveScanForwardParams p{};
  p.in = SelectiveScanInputs{u, delta, A, B, C, D, z, bias};
  p.out = out;
  p.last_state = static_cast<float*>(last_state);
  p.shape = shape_of(b, d, l, n, gb, gc, softplus);
  p.dtype = static_cast<DType>(dtype);
  return selective_scan_forward(p, nullptr);
}

int64_t emu_selective_scan_workspace(int64_t b, int64_t d, int64_t l, int64_t n, int64_t gb, int64_t gc) {
  return selective_scan_backward_workspace_size(shape_of(b, d, l, n, gb, gc, 0));
}

// grads: du, ddelta, dA, dB, dC, dD, dz, dbias (the last three nullptr when D, z, delta_bias are)
int emu_selective_scan_backward(const void* grad_out, const void* grad_last_state, const void* u, const void* delta,
                                const void* A, const void* B, const void* C, const void* D, const void* z,
                                const void* bias, void* du, void* ddelta, void* dA, void* dB, void* dC, void* dD,
                                void* dz, void* dbias, void* workspace, int64_t b, int64_t d, int64_t l, int64_t n,
                                int64_t gb, int64_t gc, int64_t softplus, int64_t dtype) {
  SelectiveScanBackwardParams p{};
  p.grad_out = grad_out;
  p.grad_last_state = static_cast<const float*>(grad_last_state);
  p.in = SelectiveScanInputs{u, delta, A, B, C, D, z, bias};
  p.grad_u = du;
  p.grad_delta = ddelta;
  p.grad_A = dA;
  p.grad_B = dB;
  p.grad_C = dC;
  p.grad_D = dD;
  p.grad_z = dz;
  p.grad_delta_bias = dbias;
  p.workspace = static_cast<float*>(workspace);
  p.shape = shape_of(b, d, l, n, gb, gc, softplus);
  p.dtype = static_cast<DType>(dtype);
  return selective_scan_backward(p, nullptr);
}

}  // extern "C"
