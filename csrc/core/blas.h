// Matrix products into memory the caller owns, through torch's own mm.out / bmm.out: BLAS on CPU (which
// runs single-threaded when called from inside our parallel regions), cuBLAS on the current stream on
// CUDA. torch::stable has matmul, which allocates its result, but no mm_out wrapper in the 2.10 surface,
// so the op is reached through the stable dispatcher call. Every family's GEMMs go through gemm_into.
//
// Call gemm_into on the thread that owns the work: the operand tensors (from_blob views) are made there,
// and a worker thread may not write inference tensors made on the op's thread under
// torch.inference_mode().
#pragma once

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <array>
#include <cstdint>

namespace facekernels {

// A strided (batch of) matrices in memory the caller owns: element (b, i, j) lies at
// data + b * batch_stride + i * row_stride + j * col_stride, in elements.
struct MatrixView {
  const void* data = nullptr;
  int64_t rows = 0, cols = 0, row_stride = 0, col_stride = 1;
  int64_t batch = 1, batch_stride = 0;

  // A row-major [rows, cols] matrix whose rows are `ld` elements apart (ld = cols when contiguous).
  static MatrixView row_major(const void* data, int64_t rows, int64_t cols, int64_t ld) {
    return {data, rows, cols, ld, 1};
  }
  static MatrixView row_major(const void* data, int64_t rows, int64_t cols) {
    return row_major(data, rows, cols, cols);
  }
  // The same matrix read as its transpose: [cols, rows].
  MatrixView t() const { return {data, cols, rows, col_stride, row_stride, batch, batch_stride}; }
  // `count` such matrices, `stride` elements apart.
  MatrixView batched(int64_t count, int64_t stride) const {
    return {data, rows, cols, row_stride, col_stride, count, stride};
  }
};

namespace detail {

// aten::mm.out (2-D) or aten::bmm.out (3-D) through the stable dispatcher.
inline void matmul_out(const torch::stable::Tensor& out, const torch::stable::Tensor& a,
                       const torch::stable::Tensor& b) {
  std::array<StableIValue, 3> stack{torch::stable::detail::from(a), torch::stable::detail::from(b),
                                    torch::stable::detail::from(out)};
  const char* op = out.dim() == 3 ? "aten::bmm" : "aten::mm";
  STABLE_TORCH_ERROR_CODE_CHECK(torch_call_dispatcher(op, "out", stack.data(), TORCH_ABI_VERSION));
  // The call leaves its returned tensor (out) on the stack: take it back so its reference is released.
  (void)torch::stable::detail::to<torch::stable::Tensor>(stack[0]);
}

inline torch::stable::Tensor view_of(const MatrixView& v, bool batched, torch::stable::Device device,
                                     torch::headeronly::ScalarType dtype) {
  // BLAS wants every leading dimension >= 1: a dimension of size 0 or 1, whose stride is moot, gets 1. A
  // stride of 0 over a longer dimension is a broadcast and stays as it is (torch copies as it needs).
  auto s = [](int64_t size, int64_t stride) { return size <= 1 && stride < 1 ? int64_t{1} : stride; };
  void* data = const_cast<void*>(v.data);
  if (batched) {
    return torch::stable::from_blob(data, {v.batch, v.rows, v.cols},
                                    {s(v.batch, v.batch_stride), s(v.rows, v.row_stride), s(v.cols, v.col_stride)},
                                    device, dtype);
  }
  return torch::stable::from_blob(data, {v.rows, v.cols}, {s(v.rows, v.row_stride), s(v.cols, v.col_stride)}, device,
                                  dtype);
}

}  // namespace detail

// out = a @ b, for one matrix each or for batches of equal count (then bmm). `out` is written through its
// own strides; every view holds `dtype` elements on `device`.
inline void gemm_into(const MatrixView& out, const MatrixView& a, const MatrixView& b, torch::stable::Device device,
                      torch::headeronly::ScalarType dtype) {
  const bool batched = out.batch != 1 || a.batch != 1 || b.batch != 1;
  detail::matmul_out(detail::view_of(out, batched, device, dtype), detail::view_of(a, batched, device, dtype),
                     detail::view_of(b, batched, device, dtype));
}

}  // namespace facekernels
