// Matrix products into memory the caller owns, through torch's own mm.out / bmm.out: BLAS on CPU (which
// runs single-threaded when called from inside our parallel regions), cuBLAS on the current stream on
// CUDA. torch::stable has matmul, which allocates its result, but no mm_out wrapper in the 2.10 surface,
// so the op is reached through the stable dispatcher call. Every family's tile GEMMs go through here.
//
// Make the operand tensors (from_blob views) on the thread that calls these: a worker thread may not
// write inference tensors made on the op's thread under torch.inference_mode().
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/tensor.h>

#include <array>

namespace facekernels {

// out = a @ b for 2-D operands (aten::mm.out) or 3-D ones (aten::bmm.out).
inline void matmul_out(const torch::stable::Tensor& out, const torch::stable::Tensor& a,
                       const torch::stable::Tensor& b) {
  std::array<StableIValue, 3> stack{torch::stable::detail::from(a), torch::stable::detail::from(b),
                                    torch::stable::detail::from(out)};
  const char* op = out.dim() == 3 ? "aten::bmm" : "aten::mm";
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher(op, "out", stack.data(), TORCH_ABI_VERSION));
  // The call leaves its returned tensor (out) on the stack: take it back so its reference is released.
  (void)torch::stable::detail::to<torch::stable::Tensor>(stack[0]);
}

}  // namespace facekernels
