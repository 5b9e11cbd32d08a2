// diff_attention: the CUDA binding (argument checks shared with the CPU binding; GEMMs by cuBLAS through
// torch's bmm.out into buffers allocated once per call; the row epilogues from cuda/diff_attention on the
// current stream).
//
// Every GEMM and epilogue runs in float32 (float32 accumulation for every dtype): float16/bfloat16 inputs
// are converted to float32 copies first and the results converted back at the end (float32 matmuls
// follow torch's matmul precision setting, i.e. TF32 only when the user allows it). The work is tiled as on
// CPU, but a tile spans many (b, h) pairs at once to fill the GPU: [pairs, Tq, keys] score tiles of at
// most kTileFloats floats, with Tq query rows against every key the rows can see (causal: up to the
// block's last query). Forward: two score bmms, the softmax epilogue writes P = P1 - lam P2, one bmm with
// v. Backward per tile: three bmms (two scores and dO v^T), the epilogue writes the scaled dS of both maps
// and P, then dq (complete for the tile's rows), and dk1, dk2, dv accumulated over the query blocks (the
// last block first: with causal masking it reaches every key, so the first write covers the whole
// accumulator and later blocks add into a prefix). Extra memory: the float32 tiles and accumulators,
// float32 copies of half inputs, O(B H T) row statistics.
#include <cuda_runtime_api.h>

#include <torch/csrc/stable/accelerator.h>
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/macros.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "core/blas.h"
#include "core/checks.h"
#include "core/cuda_binding.h"
#include "core/tensors.h"
#include "cuda/diff_attention/diff_attention.h"
#include "diff_attention/diff_attention.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

constexpr int64_t kTileFloats = int64_t{1} << 24;  // 64 MiB per float32 tile buffer
constexpr int64_t kMinTileRows = 64;

Tensor as_float32(const Tensor& t) {
  return torch::stable::contiguous(torch::stable::to(t, ScalarType::Float));
}

struct Tiling {
  int64_t pairs_per_tile, rows_per_tile;
};

Tiling tiling(const DiffAttentionProblem& p) {
  const int64_t pairs = p.batch * p.heads, s = std::max<int64_t>(p.keys, 1);
  int64_t rows = kTileFloats / std::max<int64_t>(1, pairs * s);
  if (rows >= std::min(p.queries, kMinTileRows)) return {pairs, std::min(std::max<int64_t>(rows, 1), p.queries)};
  rows = std::min(p.queries, kMinTileRows);
  return {std::max<int64_t>(1, kTileFloats / (rows * s)), rows};
}

// The [pairs, rows, C] batch of matrices of a contiguous float32 [B, H, N, C] tensor: pairs bh0 ..
// bh0 + pairs - 1, rows r0 .. r0 + rows - 1 of each.
MatrixView rows_of(const Tensor& t, int64_t bh0, int64_t pairs, int64_t r0, int64_t rows) {
  const int64_t n = t.size(2), c = t.size(3);
  return MatrixView::row_major(data_of<float>(t) + (bh0 * n + r0) * c, rows, c).batched(pairs, n * c);
}

// The [pairs, rows, cols] batch of contiguous tiles at `data`.
MatrixView tiles(float* data, int64_t pairs, int64_t rows, int64_t cols) {
  return MatrixView::row_major(data, rows, cols).batched(pairs, rows * cols);
}

std::tuple<Tensor, Tensor, Tensor> diff_attention_forward_cuda(const Tensor& q1_in, const Tensor& k1_in,
                                                               const Tensor& q2_in, const Tensor& k2_in,
                                                               const Tensor& v_in, const Tensor& lam_in, bool causal,
                                                               std::optional<double> scale) {
  const char* op = "diff_attention";
  const DiffAttentionProblem p = check_diff_attention(op, q1_in, k1_in, q2_in, k2_in, v_in, lam_in, causal, scale);
  const torch::stable::accelerator::DeviceGuard guard(q1_in.get_device_index());
  const cudaStream_t stream = current_cuda_stream(q1_in.get_device_index());
  const ScalarType dtype = q1_in.scalar_type();
  const int64_t pairs = p.batch * p.heads, T = p.queries, S = p.keys, Dv = p.value_dim;
  Tensor lse1 = torch::stable::new_empty(q1_in, {p.batch, p.heads, T}, ScalarType::Float);
  Tensor lse2 = torch::stable::new_empty(q1_in, {p.batch, p.heads, T}, ScalarType::Float);
  Tensor out32 = torch::stable::new_empty(q1_in, {p.batch, p.heads, T, Dv}, ScalarType::Float);
  if (out32.numel() == 0) return {torch::stable::to(out32, dtype), lse1, lse2};
  const Tensor q1 = as_float32(q1_in), k1 = as_float32(k1_in), q2 = as_float32(q2_in), k2 = as_float32(k2_in);
  const Tensor v = as_float32(v_in), lam = as_float32(lam_in);
  const Tiling tl = tiling(p);
  const int64_t tile_cols = S;
  Tensor s1 = torch::stable::new_empty(q1, {tl.pairs_per_tile * tl.rows_per_tile * tile_cols});
  Tensor s2 = torch::stable::new_empty(q1, {tl.pairs_per_tile * tl.rows_per_tile * tile_cols});
  const torch::stable::Device device = q1.device();
  for (int64_t bh0 = 0; bh0 < pairs; bh0 += tl.pairs_per_tile) {
    const int64_t nb = std::min(tl.pairs_per_tile, pairs - bh0);
    for (int64_t t0 = 0; t0 < T; t0 += tl.rows_per_tile) {
      const int64_t rows = std::min(tl.rows_per_tile, T - t0);
      const int64_t kv = causal ? t0 + rows : S;
      gemm_into(tiles(data_of<float>(s1), nb, rows, kv), rows_of(q1, bh0, nb, t0, rows), rows_of(k1, bh0, nb, 0, kv).t(),
                device, ScalarType::Float);
      gemm_into(tiles(data_of<float>(s2), nb, rows, kv), rows_of(q2, bh0, nb, t0, rows), rows_of(k2, bh0, nb, 0, kv).t(),
                device, ScalarType::Float);
      const cuda::DiffAttentionTile tile{bh0, nb, rows, kv, t0, T, causal, static_cast<float>(p.scale)};
      check_launch(cuda::diff_attention_forward_rows(data_of<float>(s1), data_of<float>(s2), data_of<float>(lam), data_of<float>(lse1), data_of<float>(lse2),
                                                     tile, stream),
                   op);
      gemm_into(rows_of(out32, bh0, nb, t0, rows), tiles(data_of<float>(s1), nb, rows, kv), rows_of(v, bh0, nb, 0, kv), device,
                ScalarType::Float);
    }
  }
  return {dtype == ScalarType::Float ? out32 : torch::stable::to(out32, dtype), lse1, lse2};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> diff_attention_backward_cuda(
    const Tensor& grad_out_in, const Tensor& q1_in, const Tensor& k1_in, const Tensor& q2_in, const Tensor& k2_in,
    const Tensor& v_in, const Tensor& lam_in, const Tensor& lse1_in, const Tensor& lse2_in, bool causal,
    std::optional<double> scale) {
  const char* op = "_diff_attention_backward";
  const DiffAttentionProblem p = check_diff_attention(op, q1_in, k1_in, q2_in, k2_in, v_in, lam_in, causal, scale);
  check_diff_attention_backward(op, p, q1_in, grad_out_in, lse1_in, lse2_in);
  const torch::stable::accelerator::DeviceGuard guard(q1_in.get_device_index());
  const cudaStream_t stream = current_cuda_stream(q1_in.get_device_index());
  const ScalarType dtype = q1_in.scalar_type();
  const int64_t pairs = p.batch * p.heads, T = p.queries, S = p.keys, D = p.dim, Dv = p.value_dim;
  Tensor dq1 = torch::stable::new_zeros(q1_in, {p.batch, p.heads, T, D}, ScalarType::Float);
  Tensor dq2 = torch::stable::new_zeros(q1_in, {p.batch, p.heads, T, D}, ScalarType::Float);
  Tensor dk1 = torch::stable::new_zeros(q1_in, {p.batch, p.heads, S, D}, ScalarType::Float);
  Tensor dk2 = torch::stable::new_zeros(q1_in, {p.batch, p.heads, S, D}, ScalarType::Float);
  Tensor dv = torch::stable::new_zeros(q1_in, {p.batch, p.heads, S, Dv}, ScalarType::Float);
  Tensor dlam = torch::stable::new_zeros(q1_in, {p.batch, p.heads}, ScalarType::Float);
  auto finish = [&]() -> std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> {
    if (dtype == ScalarType::Float) return {dq1, dk1, dq2, dk2, dv, dlam};
    return {torch::stable::to(dq1, dtype), torch::stable::to(dk1, dtype), torch::stable::to(dq2, dtype),
            torch::stable::to(dk2, dtype), torch::stable::to(dv, dtype),  torch::stable::to(dlam, dtype)};
  };
  if (pairs == 0 || T == 0) return finish();
  const Tensor q1 = as_float32(q1_in), k1 = as_float32(k1_in), q2 = as_float32(q2_in), k2 = as_float32(k2_in);
  const Tensor v = as_float32(v_in), lam = as_float32(lam_in), go = as_float32(grad_out_in);
  const Tensor lse1 = torch::stable::contiguous(lse1_in), lse2 = torch::stable::contiguous(lse2_in);
  const Tiling tl = tiling(p);
  const int64_t tile_floats = tl.pairs_per_tile * tl.rows_per_tile * S;
  Tensor s1 = torch::stable::new_empty(q1, {tile_floats});
  Tensor s2 = torch::stable::new_empty(q1, {tile_floats});
  Tensor dpv = torch::stable::new_empty(q1, {tile_floats});
  Tensor temp = torch::stable::new_empty(q1, {tl.pairs_per_tile * S * std::max(D, Dv)});
  Tensor row_d2 = torch::stable::new_empty(q1, {pairs * T});
  const torch::stable::Device device = q1.device();
  const ScalarType f32 = ScalarType::Float;
  for (int64_t bh0 = 0; bh0 < pairs; bh0 += tl.pairs_per_tile) {
    const int64_t nb = std::min(tl.pairs_per_tile, pairs - bh0);
    const int64_t blocks = (T + tl.rows_per_tile - 1) / tl.rows_per_tile;
    int64_t filled = 0;  // leading key rows of this chunk's dk1, dk2, dv already written
    for (int64_t qb = blocks - 1; qb >= 0; --qb) {
      const int64_t t0 = qb * tl.rows_per_tile, rows = std::min(tl.rows_per_tile, T - t0);
      const int64_t kv = causal ? t0 + rows : S;
      const MatrixView q1b = rows_of(q1, bh0, nb, t0, rows), q2b = rows_of(q2, bh0, nb, t0, rows);
      const MatrixView gob = rows_of(go, bh0, nb, t0, rows);
      const MatrixView k1b = rows_of(k1, bh0, nb, 0, kv), k2b = rows_of(k2, bh0, nb, 0, kv);
      const MatrixView vb = rows_of(v, bh0, nb, 0, kv);
      const MatrixView ds1 = tiles(data_of<float>(s1), nb, rows, kv), ds2 = tiles(data_of<float>(s2), nb, rows, kv);
      const MatrixView pm = tiles(data_of<float>(dpv), nb, rows, kv);
      gemm_into(ds1, q1b, k1b.t(), device, f32);  // the scores, overwritten with dS by the epilogue
      gemm_into(ds2, q2b, k2b.t(), device, f32);
      gemm_into(pm, gob, vb.t(), device, f32);  // dO v^T, overwritten with P
      const cuda::DiffAttentionTile tile{bh0, nb, rows, kv, t0, T, causal, static_cast<float>(p.scale)};
      check_launch(cuda::diff_attention_backward_rows(data_of<float>(s1), data_of<float>(s2), data_of<float>(dpv), data_of<float>(lam), data_of<float>(lse1),
                                                      data_of<float>(lse2), data_of<float>(row_d2), tile, stream),
                   op);
      gemm_into(rows_of(dq1, bh0, nb, t0, rows), ds1, k1b, device, f32);
      gemm_into(rows_of(dq2, bh0, nb, t0, rows), ds2, k2b, device, f32);
      // dk_i[:kv] (+)= dS_i^T q_i, dv[:kv] (+)= P^T dO: the first block writes, later ones add (kv <= filled then).
      struct Target {
        const Tensor* dst;
        MatrixView a, b;
      };
      const Target targets[3] = {{&dk1, ds1.t(), q1b}, {&dk2, ds2.t(), q2b}, {&dv, pm.t(), gob}};
      for (const Target& tg : targets) {
        if (filled == 0) {
          gemm_into(rows_of(*tg.dst, bh0, nb, 0, kv), tg.a, tg.b, device, f32);
        } else {
          const int64_t cols = tg.b.cols;
          gemm_into(tiles(data_of<float>(temp), nb, kv, cols), tg.a, tg.b, device, f32);
          check_launch(cuda::diff_attention_accumulate(data_of<float>(*tg.dst) + bh0 * S * cols, S * cols, data_of<float>(temp),
                                                       kv * cols, nb, kv * cols, stream),
                       op);
        }
      }
      filled = std::max(filled, kv);
    }
  }
  check_launch(cuda::diff_attention_lam_gradient(data_of<float>(row_d2), pairs, T, data_of<float>(dlam), stream), op);
  return finish();
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CUDA, m) {
  m.impl("_diff_attention_forward", TORCH_BOX(&facekernels::diff_attention_forward_cuda));
  m.impl("_diff_attention_backward", TORCH_BOX(&facekernels::diff_attention_backward_cuda));
}
