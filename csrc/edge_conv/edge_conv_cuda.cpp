// cosine_topk and edge_conv_max: the CUDA binding (argument checks shared with the CPU binding; GEMMs by
// cuBLAS through torch's mm/bmm into buffers allocated once per call; kernels from cuda/edge_conv on the
// current stream).
//
// cosine_topk walks blocks of up to 2048 rows of x against tiles of 8192 columns of y (one tile buffer,
// at most 64 MiB in float32, plus the rows' lists); edge_conv_max runs chunks of batch elements and
// groups of neighbours sized so the side-by-side weights and pre-activations stay within about 2^25
// elements. Checking idx's range synchronises the stream once (the result is needed on the host), and so
// does cosine_topk's check that every row was filled (a row of fewer than k finite similarities, from
// non-finite input, is refused), which is skipped while the stream is captured into a CUDA graph.
// float32 GEMMs follow torch's matmul precision setting (TF32 when allowed); cosine_topk's candidate
// margin covers TF32 rounding, and its final values are float64 recomputations either way.
#include <cuda_runtime_api.h>

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/macros.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cmath>
#include <optional>
#include <tuple>
#include <vector>

#include "core/blas.h"
#include "core/checks.h"
#include "core/cuda_binding.h"
#include "core/tensors.h"
#include "cuda/edge_conv/edge_conv.h"
#include "edge_conv/edge_conv.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

inline void* byte_offset(const Tensor& t, int64_t elements) {
  return static_cast<char*>(t.data_ptr()) + elements * static_cast<int64_t>(t.element_size());
}

// The position of the first value of idx (contiguous, on the device) outside [0, n), or -1 when all are in
// range. Synchronises the stream (the answer is needed on the host).
int64_t first_index_out_of_range_cuda(const char* op, const Tensor& idx, int64_t n, cudaStream_t stream) {
  const int64_t count = idx.numel();
  if (count == 0) return -1;
  Tensor flag = torch::stable::new_empty(idx, {1}, ScalarType::Long);
  unsigned long long* first_bad = static_cast<unsigned long long*>(flag.data_ptr());
  const unsigned long long none = static_cast<unsigned long long>(count);
  check_launch(cudaMemcpyAsync(first_bad, &none, sizeof(none), cudaMemcpyHostToDevice, stream), op);
  check_launch(cuda::edge_index_check(data_of<const int64_t>(idx), count, n, first_bad, stream), op);
  unsigned long long at = none;
  check_launch(cudaMemcpyAsync(&at, first_bad, sizeof(at), cudaMemcpyDeviceToHost, stream), op);
  check_launch(cudaStreamSynchronize(stream), op);
  return at == none ? -1 : static_cast<int64_t>(at);
}

std::tuple<Tensor, Tensor> cosine_topk_cuda(const Tensor& x_in, int64_t k, const std::optional<Tensor>& y_in) {
  const char* op = "cosine_topk";
  const CosineTopkProblem p = check_cosine_topk(op, x_in, k, y_in);
  const torch::stable::accelerator::DeviceGuard guard(x_in.get_device_index());
  const cudaStream_t stream = current_cuda_stream(x_in.get_device_index());
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m;
  Tensor values = torch::stable::new_empty(x_in, {B, N, k});
  Tensor indices = torch::stable::new_empty(x_in, {B, N, k}, ScalarType::Long);
  if (B == 0 || N == 0) return {values, indices};
  const Tensor x = torch::stable::contiguous(x_in);
  const Tensor y = y_in.has_value() ? torch::stable::contiguous(*y_in) : x;
  const cuda::DType dtype = cuda_dtype(x);
  Tensor inv_x = torch::stable::new_empty(x, {B * N}, ScalarType::Double);
  Tensor inv_y = y_in.has_value() ? torch::stable::new_empty(x, {B * M}, ScalarType::Double) : inv_x;
  check_launch(cuda::edge_inverse_norms(x.data_ptr(), B, C, N, data_of<double>(inv_x), dtype, stream), op);
  if (y_in.has_value()) {
    check_launch(cuda::edge_inverse_norms(y.data_ptr(), B, C, M, data_of<double>(inv_y), dtype, stream), op);
  }

  const int64_t R = std::min<int64_t>(N, std::clamp<int64_t>((int64_t{1} << 22) / k, 32, 2048));
  const int64_t W = std::min<int64_t>(M, 8192);
  Tensor sim = torch::stable::new_empty(x, {R * W});
  Tensor list_value = torch::stable::new_empty(x, {R * k}, ScalarType::Double);
  Tensor list_index = torch::stable::new_empty(x, {R * k}, ScalarType::Int);
  Tensor list_size = torch::stable::new_empty(x, {R}, ScalarType::Int);
  const cuda::TopkLists lists{k, data_of<double>(list_value), data_of<int32_t>(list_index), data_of<int32_t>(list_size)};
  // Twice a bound on |scaled tile value - similarity|: the float32 accumulation over C terms, the
  // rounding of the tile to the dtype (or TF32 inputs for float32), with slack.
  const double accumulation = static_cast<double>(C + 8) * std::ldexp(1.0, -24);
  const double storage = dtype == cuda::DType::Float32 ? std::ldexp(1.0, -10)
                         : dtype == cuda::DType::Float16 ? 4 * std::ldexp(1.0, -11)
                                                         : 4 * std::ldexp(1.0, -8);
  const float margin = static_cast<float>(2.2 * (accumulation + storage) + 1e-6);
  const torch::stable::Device device = x.device();
  const ScalarType scalar = x.scalar_type();
  for (int64_t b = 0; b < B; ++b) {
    const cuda::TopkColumns columns{byte_offset(x, b * C * N), byte_offset(y, b * C * M), C, N, M,
                                    data_of<double>(inv_x) + b * N, data_of<double>(inv_y) + b * M, margin};
    for (int64_t n0 = 0; n0 < N; n0 += R) {
      const int64_t rows = std::min(R, N - n0);
      check_launch(cudaMemsetAsync(lists.size, 0, sizeof(int32_t) * rows, stream), op);
      for (int64_t c0 = 0; c0 < M; c0 += W) {
        const int64_t cols = std::min(W, M - c0);
        gemm_into(MatrixView::row_major(sim.data_ptr(), rows, cols),
                  MatrixView::row_major(byte_offset(x, b * C * N + n0), C, rows, N).t(),
                  MatrixView::row_major(byte_offset(y, b * C * M + c0), C, cols, M), device, scalar);
        check_launch(cuda::cosine_topk_tile(sim.data_ptr(), columns, n0, rows, c0, cols, lists, dtype, stream), op);
      }
      check_launch(cuda::cosine_topk_finish(lists, rows, byte_offset(values, (b * N + n0) * k),
                                            data_of<int64_t>(indices) + (b * N + n0) * k, dtype, stream),
                   op);
    }
  }
  // A row of fewer than k finite similarities (NaN or inf in x or y) is padded with -1: refuse it, as the
  // CPU binding does. This synchronises the stream once per call, except while the stream is being
  // captured into a CUDA graph (a synchronisation would break the capture): there the check is skipped and
  // such rows keep index -1, which edge_conv_max refuses outside a capture.
  cudaStreamCaptureStatus capture = cudaStreamCaptureStatusNone;
  check_launch(cudaStreamIsCapturing(stream, &capture), op);
  if (capture == cudaStreamCaptureStatusNone) {
    const int64_t unfilled = first_index_out_of_range_cuda(op, indices, M, stream);
    if (unfilled >= 0) fail_cosine_topk_unfilled(op, p, !y_in.has_value(), unfilled);
  }
  return {values, indices};
}

// Raises unless every value of idx (contiguous, on the device) is in [0, n).
void check_index_range_cuda(const char* op, const Tensor& idx, int64_t n, int64_t k, cudaStream_t stream) {
  const int64_t at = first_index_out_of_range_cuda(op, idx, n, stream);
  if (at < 0) return;
  int64_t value = 0;
  check_launch(cudaMemcpy(&value, data_of<const int64_t>(idx) + at, sizeof(value), cudaMemcpyDeviceToHost), op);
  fail_edge_index(op, value, at, n, k);
}

// The launcher's view of (w_self - w_edge)^T and w_edge^T into weights_t [2, N * M] (float32), from the
// weights' strides.
cuda::EdgeTransposeParams transpose_params(const Tensor& w_self, const Tensor& w_edge, const Tensor& weights_t) {
  float* self_minus_edge_t = data_of<float>(weights_t);
  return {.w_self = w_self.data_ptr(),
          .s0 = w_self.stride(0),
          .s1 = w_self.stride(1),
          .w_edge = w_edge.data_ptr(),
          .e0 = w_edge.stride(0),
          .e1 = w_edge.stride(1),
          .m = w_self.size(0),
          .n = w_self.size(1),
          .self_minus_edge_t = self_minus_edge_t,
          .edge_t = self_minus_edge_t + w_self.size(0) * w_self.size(1)};
}

// The launcher's view of the weights of neighbours j0 .. j0 + kj - 1 for batch elements b0 .. b0 + bc - 1,
// from the transposed weights_t [2, N * M] (float32), into scratch / wcat.
cuda::EdgeBuildParams build_params(const Tensor& weights_t, const Tensor& idx, const Tensor& scratch, const Tensor& wcat,
                                   const EdgeConvProblem& p, int64_t b0, int64_t bc, int64_t j0, int64_t kj) {
  const float* self_minus_edge_t = data_of<const float>(weights_t);
  return {.self_minus_edge_t = self_minus_edge_t,
          .edge_t = self_minus_edge_t + p.n * p.m,
          .idx = data_of<const int64_t>(idx),
          .b0 = b0,
          .bc = bc,
          .n = p.n,
          .m = p.m,
          .k = p.k,
          .j0 = j0,
          .kj = kj,
          .scratch = data_of<float>(scratch),
          .wcat = wcat.data_ptr()};
}

struct CudaEdgePlan {
  int64_t kj, bc;
};

CudaEdgePlan cuda_edge_plan(const EdgeConvProblem& p) {
  const int64_t nm = std::max<int64_t>(1, p.n * p.m);
  const int64_t kj = std::max<int64_t>(1, std::min<int64_t>(p.k, (int64_t{1} << 24) / nm));
  const int64_t per_batch = std::max<int64_t>(1, (p.n + p.channels) * kj * p.m);
  const int64_t bc = std::max<int64_t>(1, std::min<int64_t>(p.batch, (int64_t{1} << 25) / per_batch));
  return {kj, bc};
}

std::tuple<Tensor, Tensor> edge_conv_max_cuda(const Tensor& x_in, const Tensor& idx_in, const Tensor& w_self,
                                              const Tensor& w_edge, const std::optional<Tensor>& bias_in) {
  const char* op = "edge_conv_max";
  const EdgeConvProblem p = check_edge_conv_max(op, x_in, idx_in, w_self, w_edge, bias_in);
  const torch::stable::accelerator::DeviceGuard guard(x_in.get_device_index());
  const cudaStream_t stream = current_cuda_stream(x_in.get_device_index());
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m, k = p.k;
  Tensor out = torch::stable::new_empty(x_in, {B, C, M});
  Tensor winner = torch::stable::new_empty(x_in, {B, C, M}, ScalarType::Int);
  const Tensor idx = torch::stable::contiguous(idx_in);
  check_index_range_cuda(op, idx, N, k, stream);
  if (B == 0 || C == 0 || M == 0) return {out, winner};
  const Tensor x = torch::stable::contiguous(x_in);
  const std::optional<Tensor> bias =
      bias_in.has_value() ? std::optional<Tensor>(torch::stable::contiguous(*bias_in)) : std::nullopt;
  const cuda::DType dtype = cuda_dtype(x);
  const bool f32 = dtype == cuda::DType::Float32;

  Tensor weights_t = torch::stable::new_empty(x, {2, N * M}, ScalarType::Float);
  check_launch(cuda::edge_transpose_weights(transpose_params(w_self, w_edge, weights_t), dtype, stream), op);
  Tensor skip = torch::stable::new_empty(x, {B * k}, ScalarType::Byte);
  check_launch(cuda::edge_duplicate_neighbours(data_of<const int64_t>(idx), B, N, k, data_of<uint8_t>(skip), stream),
               op);

  const CudaEdgePlan plan = cuda_edge_plan(p);
  const int64_t width = plan.kj * M;
  Tensor scratch = torch::stable::new_empty(x, {plan.bc * N * width}, ScalarType::Float);
  Tensor wcat = f32 ? scratch : torch::stable::new_empty(x, {plan.bc * N * width});
  Tensor z = torch::stable::new_empty(x, {plan.bc * C * width});
  Tensor best = torch::stable::new_empty(x, {B * C * M}, ScalarType::Float);
  const torch::stable::Device device = x.device();
  const ScalarType scalar = x.scalar_type();
  for (int64_t b0 = 0; b0 < B; b0 += plan.bc) {
    const int64_t bc = std::min(plan.bc, B - b0);
    for (int64_t j0 = 0; j0 < k; j0 += plan.kj) {
      const int64_t kj = std::min(plan.kj, k - j0), w = kj * M;
      check_launch(cuda::edge_build_weights(build_params(weights_t, idx, scratch, wcat, p, b0, bc, j0, kj), dtype, stream),
                   op);
      gemm_into(MatrixView::row_major(z.data_ptr(), C, w).batched(bc, C * w),
                MatrixView::row_major(byte_offset(x, b0 * C * N), C, N).batched(bc, C * N),
                MatrixView::row_major(wcat.data_ptr(), N, w).batched(bc, N * w), device, scalar);
      const cuda::EdgeMaxGroupParams group{.z = z.data_ptr(),
                                           .bc = bc,
                                           .c = C,
                                           .m = M,
                                           .k = k,
                                           .j0 = j0,
                                           .kj = kj,
                                           .skip = data_of<const uint8_t>(skip) + b0 * k,
                                           .best = data_of<float>(best) + b0 * C * M,
                                           .arg = data_of<int32_t>(winner) + b0 * C * M,
                                           .last = j0 + kj >= k,
                                           .bias = bias.has_value() ? bias->data_ptr() : nullptr,
                                           .out = byte_offset(out, b0 * C * M)};
      check_launch(cuda::edge_max_group(group, dtype, stream), op);
    }
  }
  return {out, winner};
}

std::tuple<Tensor, Tensor, Tensor, Tensor> edge_conv_max_backward_cuda(const Tensor& grad_in, const Tensor& x_in,
                                                                       const Tensor& idx_in, const Tensor& w_self,
                                                                       const Tensor& w_edge, const Tensor& winner_in,
                                                                       bool has_bias, bool need_x, bool need_weights) {
  const char* op = "_edge_conv_max_backward";
  const EdgeConvProblem p =
      check_edge_conv_max_backward(op, grad_in, x_in, idx_in, w_self, w_edge, winner_in, has_bias);
  const torch::stable::accelerator::DeviceGuard guard(x_in.get_device_index());
  const cudaStream_t stream = current_cuda_stream(x_in.get_device_index());
  const int64_t B = p.batch, C = p.channels, N = p.n, M = p.m, k = p.k;
  Tensor grad_x = torch::stable::new_zeros(x_in, need_x ? std::vector<int64_t>{B, C, N} : std::vector<int64_t>{0});
  Tensor grad_self = torch::stable::new_zeros(x_in, need_weights ? std::vector<int64_t>{M, N} : std::vector<int64_t>{0});
  Tensor grad_edge = torch::stable::new_zeros(x_in, need_weights ? std::vector<int64_t>{M, N} : std::vector<int64_t>{0});
  Tensor grad_bias = torch::stable::new_zeros(x_in, {has_bias ? M : 0});
  // N == 0 still has a bias gradient: the forward's output is then ReLU(bias).
  if (B == 0 || C == 0 || M == 0) return {grad_x, grad_self, grad_edge, grad_bias};
  const Tensor grad = torch::stable::contiguous(grad_in);
  const Tensor x = torch::stable::contiguous(x_in);
  const Tensor idx = torch::stable::contiguous(idx_in);
  const Tensor winner = torch::stable::contiguous(winner_in);
  const cuda::DType dtype = cuda_dtype(x);
  const bool f32 = dtype == cuda::DType::Float32;
  if (has_bias) {
    check_launch(cuda::edge_bias_gradient(grad.data_ptr(), data_of<const int32_t>(winner), B, C, M, grad_bias.data_ptr(),
                                          dtype, stream),
                 op);
  }
  if (!(need_x || need_weights) || N == 0) return {grad_x, grad_self, grad_edge, grad_bias};
  // The backward op is callable directly: idx indexes rows of the scratch weights below, so check it too.
  check_index_range_cuda(op, idx, N, p.k, stream);

  Tensor weights_t = torch::stable::new_empty(x, {need_x ? 2 : 0, N * M}, ScalarType::Float);
  if (need_x) {
    check_launch(cuda::edge_transpose_weights(transpose_params(w_self, w_edge, weights_t), dtype, stream), op);
  }
  const CudaEdgePlan plan = cuda_edge_plan(p);
  const int64_t width = plan.kj * M;
  Tensor scratch = torch::stable::new_empty(x, {need_x ? plan.bc * N * width : 0}, ScalarType::Float);
  Tensor wcat = f32 ? scratch : torch::stable::new_empty(x, {need_x ? plan.bc * N * width : 0});
  Tensor dz = torch::stable::new_empty(x, {plan.bc * C * width});
  Tensor dx_part = torch::stable::new_empty(x, {need_x ? plan.bc * C * N : 0});
  Tensor dx_accum = torch::stable::new_zeros(x, {need_x ? B * C * N : 0}, ScalarType::Float);
  Tensor dwcat = torch::stable::new_empty(x, {need_weights ? plan.bc * N * width : 0});
  Tensor weight_accum = torch::stable::new_zeros(x, {need_weights ? 2 * N * M : 0}, ScalarType::Float);
  const torch::stable::Device device = x.device();
  const ScalarType scalar = x.scalar_type();
  for (int64_t b0 = 0; b0 < B; b0 += plan.bc) {
    const int64_t bc = std::min(plan.bc, B - b0);
    for (int64_t j0 = 0; j0 < k; j0 += plan.kj) {
      const int64_t kj = std::min(plan.kj, k - j0), w = kj * M;
      const cuda::EdgeRouteParams route{.grad = byte_offset(grad, b0 * C * M),
                                        .winner = data_of<const int32_t>(winner) + b0 * C * M,
                                        .bc = bc,
                                        .c = C,
                                        .m = M,
                                        .j0 = j0,
                                        .kj = kj,
                                        .dz = dz.data_ptr()};
      check_launch(cuda::edge_route_gradient(route, dtype, stream), op);
      if (need_x) {
        check_launch(
            cuda::edge_build_weights(build_params(weights_t, idx, scratch, wcat, p, b0, bc, j0, kj), dtype, stream), op);
        // dX = dZ W^T: [bc, C, kj M] x [bc, kj M, N].
        gemm_into(MatrixView::row_major(dx_part.data_ptr(), C, N).batched(bc, C * N),
                  MatrixView::row_major(dz.data_ptr(), C, w).batched(bc, C * w),
                  MatrixView::row_major(wcat.data_ptr(), N, w).t().batched(bc, N * w), device, scalar);
        check_launch(cuda::edge_accumulate(data_of<float>(dx_accum) + b0 * C * N, dx_part.data_ptr(), bc * C * N, dtype,
                                           stream),
                     op);
      }
      if (need_weights) {
        // dW = X^T dZ: [bc, N, C] x [bc, C, kj M].
        gemm_into(MatrixView::row_major(dwcat.data_ptr(), N, w).batched(bc, N * w),
                  MatrixView::row_major(byte_offset(x, b0 * C * N), C, N).t().batched(bc, C * N),
                  MatrixView::row_major(dz.data_ptr(), C, w).batched(bc, C * w), device, scalar);
        const cuda::EdgeWeightGradParams grads{.dwcat = dwcat.data_ptr(),
                                               .idx = data_of<const int64_t>(idx),
                                               .b0 = b0,
                                               .bc = bc,
                                               .n = N,
                                               .m = M,
                                               .k = k,
                                               .j0 = j0,
                                               .kj = kj,
                                               .gd = data_of<float>(weight_accum),
                                               .ge = data_of<float>(weight_accum) + N * M};
        check_launch(cuda::edge_accumulate_weight_grads(grads, dtype, stream), op);
      }
    }
  }
  if (need_x) check_launch(cuda::edge_convert(data_of<float>(dx_accum), B * C * N, grad_x.data_ptr(), dtype, stream), op);
  if (need_weights) {
    check_launch(cuda::edge_finish_weight_grads(data_of<float>(weight_accum), data_of<float>(weight_accum) + N * M, N,
                                                M, grad_self.data_ptr(), grad_edge.data_ptr(), dtype, stream),
                 op);
  }
  return {grad_x, grad_self, grad_edge, grad_bias};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CUDA, m) {
  m.impl("cosine_topk", TORCH_BOX(&facekernels::cosine_topk_cuda));
  m.impl("edge_conv_max", TORCH_BOX(&facekernels::edge_conv_max_cuda));
  m.impl("_edge_conv_max_backward", TORCH_BOX(&facekernels::edge_conv_max_backward_cuda));
}
