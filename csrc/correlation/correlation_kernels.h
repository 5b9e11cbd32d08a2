// Torch-free CPU kernels of correlation: raw pointers with element strides, so any input layout is read
// in place.
#pragma once

#include <cstdint>

#include "core/cpu_capability.h"

namespace facekernels::cpu {

// out[b, i, j, h, w] = sum_c x1[b, c, h, w] * x2[b, c, h + (i - P/2) * d, w + (j - P/2) * d], zero where
// the displaced position is outside the image. Element (b, c, h, w) of x1 is
// x1[b * x1_stride[0] + c * x1_stride[1] + h * x1_stride[2] + w * x1_stride[3]]; out is contiguous.
template <typename T>
struct CorrelationForwardArgs {
  const T* x1;
  const T* x2;
  T* out;  // [B, P, P, H, W], contiguous
  int64_t batch = 0, channels = 0, height = 0, width = 0, patch = 1, dilation = 1;
  int64_t x1_stride[4] = {}, x2_stride[4] = {};
};

// grad_x1 / grad_x2 (contiguous [B, C, H, W], or nullptr when not asked for) from grad_out (any strides).
template <typename T>
struct CorrelationBackwardArgs {
  const T* grad_out;
  const T* x1;
  const T* x2;
  T* grad_x1;
  T* grad_x2;
  int64_t batch = 0, channels = 0, height = 0, width = 0, patch = 1, dilation = 1;
  int64_t grad_stride[5] = {}, x1_stride[4] = {}, x2_stride[4] = {};
};

// The residue classes of a problem as matrices, for the whole-class plan: when every class fits inside
// the window (ceil(H / d) - 1 <= P / 2 and the same for W; MOL's 16 x 16 maps at P = 21, d = 2), every
// product of a class's positions with each other is one the output keeps, so the forward is one batched
// GEMM S = A^T B per class (A, B: the class's x1, x2 positions packed channel-major, [C, n]) and the
// backward two (dA = B dS^T, dB = A dS), run by the BLAS, and the kernels below only move data between the
// image layouts and the class matrices. Position (hs, ws) of class (b, rh, rw) (pixel (hs d + rh,
// ws d + rw)) is column hs * cols + ws of the class's [C, n] matrix, n = rows * cols; columns a smaller
// class lacks hold zeros.
struct CorrelationClasses {
  int64_t batch = 0, channels = 0, height = 0, width = 0, patch = 1, dilation = 1;
  int64_t residues_h = 0, residues_w = 0;  // min(d, H), min(d, W)
  int64_t rows = 0, cols = 0;               // the largest class: ceil(H / d) x ceil(W / d)
  int64_t positions() const { return rows * cols; }
  // Whether some class is smaller than the largest (its matrices have zero columns).
  bool ragged() const { return (dilation < height && height % dilation) || (dilation < width && width % dilation); }
  // Whether the window covers every class whole (the plan applies).
  bool fits_window() const { return rows - 1 <= patch / 2 && cols - 1 <= patch / 2; }
};

inline CorrelationClasses correlation_classes(int64_t batch, int64_t channels, int64_t height, int64_t width,
                                              int64_t patch, int64_t dilation) {
  CorrelationClasses c{batch, channels, height, width, patch, dilation};
  c.residues_h = dilation < height ? dilation : height;
  c.residues_w = dilation < width ? dilation : width;
  c.rows = (height + dilation - 1) / dilation;
  c.cols = (width + dilation - 1) / dilation;
  return c;
}

// One task of the whole-class plan: the classes (b, rh, rw) of sample b with rh in [rh0, rh0 + rh_count)
// and rw in [rw0, rw0 + rw_count). Its matrices are classes() consecutive [C, n] (operands) or [n, n]
// (products) matrices, class (rh, rw) the ((rh - rh0) * rw_count + rw - rw0)-th, in scratch memory the
// caller owns; the task reads and writes only the image rows h = rh (mod d) and columns w = rw (mod d) of
// its classes in sample b, so tasks run in parallel without races. The functions below run serially (the
// caller spreads tasks over the threads, each with its own scratch, and runs the GEMMs in between on the
// BLAS).
struct CorrelationTask {
  int64_t b = 0, rh0 = 0, rh_count = 1, rw0 = 0, rw_count = 1;
  int64_t classes() const { return rh_count * rw_count; }
};

template <typename T>
struct CorrelationKernels {
  void (*forward)(const CorrelationForwardArgs<T>&);
  void (*backward)(const CorrelationBackwardArgs<T>&);
  // The whole-class plan's data movement, per task. pack: x (element strides x_stride) -> packed
  // [classes(), C, n] (zero at the positions a smaller class lacks).
  void (*pack_classes)(const CorrelationClasses&, const CorrelationTask&, const T* x, const int64_t* x_stride,
                       T* packed);
  // unpack: packed [classes(), C, n] -> the task's elements of x, contiguous [B, C, H, W].
  void (*unpack_classes)(const CorrelationClasses&, const CorrelationTask&, const T* packed, T* x);
  // scatter: products [classes(), n, n] (S[u, q] = x1 at u . x2 at q) -> the task's elements of out,
  // contiguous [B, P, P, H, W] (every one written: zero where the displaced position is outside).
  void (*scatter_products)(const CorrelationClasses&, const CorrelationTask&, const T* products, T* out);
  // gather: grad_out (element strides grad_stride) -> products [classes(), n, n], the inverse of scatter
  // (zero at the entries a smaller class lacks).
  void (*gather_products)(const CorrelationClasses&, const CorrelationTask&, const T* grad_out,
                          const int64_t* grad_stride, T* products);
};

FK_DECLARE_CPU_KERNEL_TABLE(CorrelationKernels, correlation_kernels)

}  // namespace facekernels::cpu
