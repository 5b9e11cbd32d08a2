// diff_attention on CPU: the binding, the flash-style driver (query blocks, work dealing, the tile GEMMs
// through torch's BLAS, per-thread scratch) and the CPU registration. Schemas and argument checks are in
// diff_attention.cpp, the row epilogues (softmax arithmetic on one tile) in diff_attention_kernels.cpp.
//
//   P_i = softmax(q_i k_i^T * scale + M)      out = (P_1 - lam P_2) v
//
// Forward. Work items are (b, h, block of Tq query rows). An item computes the two score tiles
// S_i = Q_i K_i^T of its rows against all its keys (causal: keys up to its last query) with torch's BLAS
// into its thread's buffers, takes the exact row softmax of both (an epilogue in diff_attention_kernels.cpp,
// while the tiles are in cache), writes P = P_1 - lam P_2 over S_1 and finishes with one GEMM P V into its
// rows of the output: the two maps are combined before the product with V, which is done once. Tq is
// chosen so that a tile of Tq x S stays cache-sized (cpu_query_block); beyond 2^17 keys (cpu_key_block:
// where even 16 rows of all keys would be 8 MiB) the keys are split into blocks and the item makes two
// passes: pass 1 the row maxima and sums of both maps over the key blocks (hence lse), pass 2 P from the
// lse and P V accumulated block by block (the backward then makes one more pass, for the row sums d_i).
// Extra memory: per thread two or three tiles of at most Tq x min(S, 2^17) plus small row buffers; per
// call the row statistics lse1, lse2 [B, H, T] saved for the backward.
//
// Backward (the flop structure of the forward again): per item, dPV = dO V^T once for both maps;
// d_i = rowsum(P_i dPV) (P_i recomputed from the scores and the saved lse); dS_1 = P_1 (dPV - d_1),
// dS_2 = -lam P_2 (dPV - d_2); dV += (P_1 - lam P_2)^T dO (one product); dlam -= sum d_2;
// dQ_i = scale dS_i K_i, dK_i += scale dS_i^T Q_i. Items are whole (b, h) pairs (each thread owns its
// heads' dK, dV) unless there are fewer pairs than threads: then each pair's query blocks are dealt to
// several items that accumulate into their own zeroed partial dK, dV, reduced in a fixed order at the end.
#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

#include "core/blas.h"
#include "core/parallel.h"
#include "core/schedule.h"
#include "core/tensors.h"
#include "diff_attention/diff_attention.h"
#include "diff_attention/diff_attention_kernels.h"

namespace facekernels {
namespace {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

// Keys per tile row: beyond this the forward and backward split the keys into blocks (two passes).
// 16 rows x 2^17 float32 keys are 8 MiB per tile. FACEKERNELS_DIFF_ATTENTION_KEY_BLOCK lowers it (the
// tests use it to exercise the key-blocked path on small shapes).
int64_t cpu_key_block() {
  int64_t block = int64_t{1} << 17;
  if (const char* env = std::getenv("FACEKERNELS_DIFF_ATTENTION_KEY_BLOCK")) {
    const long long v = std::atoll(env);
    if (v >= 1 && v < block) block = v;
  }
  return block;
}

// Query rows per item: about `target` scores per tile, at least 16 rows (GEMMs of fewer rows run far
// from BLAS's peak) and at most 128. The forward aims at 64 Ki scores per map (256 KiB in float32: the
// item's two tiles stay in L2/L3 between the GEMMs and the epilogue), the backward, whose dK and dV
// GEMMs have the block's rows as their inner dimension, at twice that. Fewer, larger items also mean
// fewer GEMM calls (each costs a few microseconds of dispatch).
int64_t cpu_query_block(int64_t keys, int64_t queries, int64_t target) {
  const int64_t rows = std::clamp<int64_t>(target / std::max<int64_t>(keys, 1), 16, 128);
  return std::min(rows, std::max<int64_t>(queries, 1));
}

int64_t forward_query_block(int64_t keys, int64_t queries) { return cpu_query_block(keys, queries, 65536); }

int64_t backward_query_block(int64_t keys, int64_t queries) { return cpu_query_block(keys, queries, 131072); }

// One input as a per-(b, h) matrix: rows of `cols` unit-stride elements.
struct HeadMatrices {
  const char* base;
  int64_t stride_b, stride_h, stride_row, cols, element;
  MatrixView at(int64_t bh, int64_t heads, int64_t row0, int64_t rows) const {
    const int64_t b = bh / heads, h = bh % heads;
    const char* p = base + (b * stride_b + h * stride_h + row0 * stride_row) * element;
    return MatrixView::row_major(p, rows, cols, stride_row);
  }
};

HeadMatrices head_matrices(const Tensor& t) {
  return {static_cast<const char*>(t.data_ptr()), t.stride(0), t.stride(1), t.stride(2), t.size(3),
          static_cast<int64_t>(t.element_size())};
}

// A work item: forward, query block `first` of pair bh (count 1); backward, the `count` query blocks
// first, first + groups, ... of pair bh / groups.
struct Item {
  int64_t bh, first, count, cost;
};

// Items dealt to `threads` lists by core/schedule.h (a fixed assignment: results do not depend on
// timing), each list walked in (pair, first block) order.
std::vector<std::vector<Item>> deal(std::vector<Item> items, int64_t threads) {
  return deal_largest_first(
      std::move(items), threads, [](const Item& it) { return it.cost; },
      [](const Item& x, const Item& y) { return x.bh != y.bh ? x.bh < y.bh : x.first < y.first; });
}

// This CPU's kernel table for T.
template <typename T>
const cpu::DiffAttentionKernels<T>& kernels() {
  return FK_CPU_KERNEL_TABLE(cpu::diff_attention_kernels, T);
}

// The torch dtype of T (float or double).
template <typename T>
constexpr ScalarType dtype_of() {
  return std::is_same_v<T, float> ? ScalarType::Float : ScalarType::Double;
}

// dst[i] += src[i], i < n, by the SIMD kernel of this CPU.
template <typename T>
void add_into(T* dst, const T* src, int64_t n) {
  kernels<T>().add(dst, src, n);
}

template <typename T>
void copy_rows(T* dst, int64_t ld_dst, const T* src, int64_t ld_src, int64_t rows, int64_t cols) {
  for (int64_t r = 0; r < rows; ++r) std::copy(src + r * ld_src, src + r * ld_src + cols, dst + r * ld_dst);
}

// An accumulator dst [n, cols] (row stride cols) whose first `filled` rows hold partial sums: adds a @ b to
// rows [row0, row0 + a.rows), writing rows at or past `filled` directly (rows skipped in between are zeroed).
template <typename T>
struct Accumulator {
  T* dst;
  int64_t cols;
  int64_t filled;
  void add(int64_t row0, const MatrixView& a, const MatrixView& b, T* temp, torch::stable::Device device) {
    const int64_t rows = a.rows;
    if (row0 >= filled) {
      std::fill(dst + filled * cols, dst + row0 * cols, T(0));
      gemm_into(MatrixView::row_major(dst + row0 * cols, rows, cols), a, b, device, dtype_of<T>());
      filled = row0 + rows;
      return;
    }
    gemm_into(MatrixView::row_major(temp, rows, cols), a, b, device, dtype_of<T>());
    const int64_t overlap = std::min(rows, filled - row0);
    add_into(dst + row0 * cols, temp, overlap * cols);
    copy_rows(dst + (row0 + overlap) * cols, cols, temp + overlap * cols, cols, rows - overlap, cols);
    filled = std::max(filled, row0 + rows);
  }
};

struct CpuInputs {
  HeadMatrices q1, k1, q2, k2, v, grad_out;
};

template <typename T>
void forward_cpu(const DiffAttentionProblem& p, const CpuInputs& in, const T* lam, T* out, T* lse1, T* lse2,
                 torch::stable::Device device, const Tensor& like) {
  const cpu::DiffAttentionKernels<T>& k = kernels<T>();
  const int64_t bh_count = p.batch * p.heads, T_ = p.queries, S = p.keys, Dv = p.value_dim;
  const ScalarType dtype = dtype_of<T>();
  const int64_t key_block = std::min(cpu_key_block(), S);
  const int64_t tq = forward_query_block(key_block, T_);
  const int64_t nq = (T_ + tq - 1) / tq;
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(num_threads(), bh_count * nq));
  std::vector<Item> items;
  for (int64_t bh = 0; bh < bh_count; ++bh) {
    for (int64_t qb = 0; qb < nq; ++qb) {
      const int64_t kv = p.causal ? std::min(S, qb * tq + tq) : S;
      items.push_back({bh, qb, 1, kv * std::min(tq, T_ - qb * tq)});
    }
  }
  const auto lists = deal(std::move(items), threads);
  const bool blocked = key_block < S;
  const int64_t tile = tq * key_block + 64;
  const int64_t row_buffers = 4 * tq + 64;
  Tensor scratch = torch::stable::new_empty(like, {threads, 2 * tile + row_buffers + (blocked ? tq * Dv : 0)});
  T* const scratch_data = data_of<T>(scratch);
  const T scale = static_cast<T>(p.scale);
  parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t th = begin; th < end; ++th) {
      T* s1 = scratch_data + th * (2 * tile + row_buffers + (blocked ? tq * Dv : 0));
      T* s2 = s1 + tile;
      T* rowbuf = s2 + tile;
      T* temp = rowbuf + row_buffers;
      for (const Item& it : lists[static_cast<size_t>(th)]) {
        const int64_t bh = it.bh, t0 = it.first * tq, rows = std::min(tq, T_ - t0);
        const int64_t kv = p.causal ? t0 + rows : S;
        const MatrixView q1 = in.q1.at(bh, p.heads, t0, rows), q2 = in.q2.at(bh, p.heads, t0, rows);
        T* o = out + (bh * T_ + t0) * Dv;
        T* l1 = lse1 + bh * T_ + t0;
        T* l2 = lse2 + bh * T_ + t0;
        const T lam_bh = lam[bh];
        if (kv <= key_block) {
          gemm_into(MatrixView::row_major(s1, rows, kv), q1, in.k1.at(bh, p.heads, 0, kv).t(), device, dtype);
          gemm_into(MatrixView::row_major(s2, rows, kv), q2, in.k2.at(bh, p.heads, 0, kv).t(), device, dtype);
          const cpu::DiffTile<T> t{s1, s2, nullptr, rows, kv, t0, 0, p.causal, scale, lam_bh};
          k.forward_single(t, l1, l2);
          gemm_into(MatrixView::row_major(o, rows, Dv), MatrixView::row_major(s1, rows, kv),
                    in.v.at(bh, p.heads, 0, kv), device, dtype);
          continue;
        }
        T* m1 = rowbuf;
        T* sum1 = m1 + tq;
        T* m2 = sum1 + tq;
        T* sum2 = m2 + tq;
        std::fill(m1, m1 + rows, -std::numeric_limits<T>::infinity());
        std::fill(m2, m2 + rows, -std::numeric_limits<T>::infinity());
        std::fill(sum1, sum1 + rows, T(0));
        std::fill(sum2, sum2 + rows, T(0));
        for (int64_t k0 = 0; k0 < kv; k0 += key_block) {
          const int64_t cols = std::min(key_block, kv - k0);
          gemm_into(MatrixView::row_major(s1, rows, cols), q1, in.k1.at(bh, p.heads, k0, cols).t(), device, dtype);
          gemm_into(MatrixView::row_major(s2, rows, cols), q2, in.k2.at(bh, p.heads, k0, cols).t(), device, dtype);
          const cpu::DiffTile<T> t{s1, s2, nullptr, rows, cols, t0, k0, p.causal, scale, lam_bh};
          k.forward_stats(t, m1, sum1, m2, sum2);
        }
        for (int64_t r = 0; r < rows; ++r) {
          l1[r] = static_cast<T>(m1[r] + std::log(sum1[r]));
          l2[r] = static_cast<T>(m2[r] + std::log(sum2[r]));
        }
        for (int64_t k0 = 0; k0 < kv; k0 += key_block) {
          const int64_t cols = std::min(key_block, kv - k0);
          gemm_into(MatrixView::row_major(s1, rows, cols), q1, in.k1.at(bh, p.heads, k0, cols).t(), device, dtype);
          gemm_into(MatrixView::row_major(s2, rows, cols), q2, in.k2.at(bh, p.heads, k0, cols).t(), device, dtype);
          const cpu::DiffTile<T> t{s1, s2, nullptr, rows, cols, t0, k0, p.causal, scale, lam_bh};
          k.forward_probs(t, l1, l2);
          // Every pass adds into all `rows` output rows: the accumulator's rows are the item's query rows.
          const MatrixView pm = MatrixView::row_major(s1, rows, cols), v = in.v.at(bh, p.heads, k0, cols);
          if (k0 == 0) {
            gemm_into(MatrixView::row_major(o, rows, Dv), pm, v, device, dtype);
          } else {
            gemm_into(MatrixView::row_major(temp, rows, Dv), pm, v, device, dtype);
            add_into(o, temp, rows * Dv);
          }
        }
      }
    }
  });
}

template <typename T>
struct BackwardOutputs {
  T* dq1;
  T* dk1;
  T* dq2;
  T* dk2;
  T* dv;
  double* dlam;  // [B * H * groups]
};

template <typename T>
void backward_cpu(const DiffAttentionProblem& p, const CpuInputs& in, const T* lam, const T* lse1, const T* lse2,
                  const BackwardOutputs<T>& g, torch::stable::Device device, const Tensor& like, int64_t groups,
                  T* partials) {
  const cpu::DiffAttentionKernels<T>& k = kernels<T>();
  const int64_t bh_count = p.batch * p.heads, T_ = p.queries, S = p.keys, D = p.dim, Dv = p.value_dim;
  const ScalarType dtype = dtype_of<T>();
  const int64_t key_block = std::min(cpu_key_block(), S);
  const int64_t tq = backward_query_block(key_block, T_);
  const int64_t nq = (T_ + tq - 1) / tq;
  const int64_t threads = std::max<int64_t>(1, std::min<int64_t>(num_threads(), bh_count * groups));
  std::vector<Item> items;
  for (int64_t bh = 0; bh < bh_count; ++bh) {
    for (int64_t gi = 0; gi < groups; ++gi) {
      int64_t cost = 0, count = 0;
      for (int64_t qb = gi; qb < nq; qb += groups) {
        cost += (p.causal ? std::min(S, qb * tq + tq) : S) * std::min(tq, T_ - qb * tq);
        ++count;
      }
      if (count > 0) items.push_back({bh * groups + gi, gi, count, cost});
    }
  }
  const auto lists = deal(std::move(items), threads);
  const int64_t tile = tq * key_block + 64;
  const int64_t dmax = std::max(D, Dv);
  const int64_t temp_size = std::max(key_block, tq) * dmax + 64;
  const int64_t per_thread = 3 * tile + temp_size;
  Tensor scratch = torch::stable::new_empty(like, {threads, per_thread});
  Tensor row_sums = torch::stable::new_empty(like, {threads, 2 * tq + 16}, ScalarType::Double);
  T* const scratch_data = data_of<T>(scratch);
  double* const row_sums_data = data_of<double>(row_sums);
  const T scale = static_cast<T>(p.scale);
  const int64_t partial_size = S * (2 * D + Dv);
  parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t th = begin; th < end; ++th) {
      T* s1 = scratch_data + th * per_thread;
      T* s2 = s1 + tile;
      T* dpv = s2 + tile;
      T* temp = dpv + tile;
      double* d1 = row_sums_data + th * (2 * tq + 16);
      double* d2 = d1 + tq;
      for (const Item& it : lists[static_cast<size_t>(th)]) {
        const int64_t bh = it.bh / groups, gi = it.first;
        const T lam_bh = lam[bh];
        // Destinations of dK1, dK2, dV: the outputs (filled as written), or this item's zeroed partials.
        T* dk1;
        T* dk2;
        T* dv;
        int64_t filled = 0;
        if (groups == 1) {
          dk1 = g.dk1 + bh * S * D;
          dk2 = g.dk2 + bh * S * D;
          dv = g.dv + bh * S * Dv;
        } else {
          dk1 = partials + it.bh * partial_size;
          dk2 = dk1 + S * D;
          dv = dk2 + S * D;
          filled = S;
        }
        Accumulator<T> acc_k1{dk1, D, filled}, acc_k2{dk2, D, filled}, acc_v{dv, Dv, filled};
        double dlam = 0;
        // Query blocks gi, gi + groups, ... from the last: with causal masking the last block sees every
        // key, so the accumulators are written whole first and added to afterwards.
        for (int64_t c = it.count - 1; c >= 0; --c) {
          const int64_t qb = gi + c * groups;
          const int64_t t0 = qb * tq, rows = std::min(tq, T_ - t0);
          const int64_t kv = p.causal ? t0 + rows : S;
          const MatrixView q1 = in.q1.at(bh, p.heads, t0, rows), q2 = in.q2.at(bh, p.heads, t0, rows);
          const MatrixView go = in.grad_out.at(bh, p.heads, t0, rows);
          const T* l1 = lse1 + bh * T_ + t0;
          const T* l2 = lse2 + bh * T_ + t0;
          T* dq1 = g.dq1 + (bh * T_ + t0) * D;
          T* dq2 = g.dq2 + (bh * T_ + t0) * D;
          std::fill(d1, d1 + rows, 0.0);
          std::fill(d2, d2 + rows, 0.0);
          const bool single = kv <= key_block;
          auto scores = [&](int64_t k0, int64_t cols) {
            gemm_into(MatrixView::row_major(s1, rows, cols), q1, in.k1.at(bh, p.heads, k0, cols).t(), device, dtype);
            gemm_into(MatrixView::row_major(s2, rows, cols), q2, in.k2.at(bh, p.heads, k0, cols).t(), device, dtype);
            gemm_into(MatrixView::row_major(dpv, rows, cols), go, in.v.at(bh, p.heads, k0, cols).t(), device, dtype);
            return cpu::DiffTile<T>{s1, s2, dpv, rows, cols, t0, k0, p.causal, scale, lam_bh};
          };
          if (!single) {
            for (int64_t k0 = 0; k0 < kv; k0 += key_block) {
              const auto t = scores(k0, std::min(key_block, kv - k0));
              k.backward_rowsums(t, l1, l2, d1, d2, false);
            }
          }
          for (int64_t k0 = 0; k0 < kv; k0 += key_block) {
            const int64_t cols = std::min(key_block, kv - k0);
            const auto t = scores(k0, cols);
            if (single) k.backward_rowsums(t, l1, l2, d1, d2, true);
            k.backward_grads(t, l1, l2, d1, d2, single);
            const MatrixView ds1 = MatrixView::row_major(s1, rows, cols), ds2 = MatrixView::row_major(s2, rows, cols);
            const MatrixView pm = MatrixView::row_major(dpv, rows, cols);
            const MatrixView k1 = in.k1.at(bh, p.heads, k0, cols), k2 = in.k2.at(bh, p.heads, k0, cols);
            if (k0 == 0) {
              gemm_into(MatrixView::row_major(dq1, rows, D), ds1, k1, device, dtype);
              gemm_into(MatrixView::row_major(dq2, rows, D), ds2, k2, device, dtype);
            } else {
              gemm_into(MatrixView::row_major(temp, rows, D), ds1, k1, device, dtype);
              add_into(dq1, temp, rows * D);
              gemm_into(MatrixView::row_major(temp, rows, D), ds2, k2, device, dtype);
              add_into(dq2, temp, rows * D);
            }
            acc_k1.add(k0, ds1.t(), q1, temp, device);
            acc_k2.add(k0, ds2.t(), q2, temp, device);
            acc_v.add(k0, pm.t(), go, temp, device);
          }
          for (int64_t r = 0; r < rows; ++r) dlam -= d2[r];
        }
        // Rows no item reached (possible only for the outputs themselves) are zero.
        if (groups == 1) {
          std::fill(dk1 + acc_k1.filled * D, dk1 + S * D, T(0));
          std::fill(dk2 + acc_k2.filled * D, dk2 + S * D, T(0));
          std::fill(dv + acc_v.filled * Dv, dv + S * Dv, T(0));
        }
        g.dlam[it.bh] = dlam;
      }
    }
  });
  if (groups > 1) {
    // dK1, dK2, dV of each (b, h): the groups' partials added in group order.
    parallel_for(0, bh_count, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bh = begin; bh < end; ++bh) {
        const T* part = partials + bh * groups * partial_size;
        T* dsts[3] = {g.dk1 + bh * S * D, g.dk2 + bh * S * D, g.dv + bh * S * Dv};
        const int64_t sizes[3] = {S * D, S * D, S * Dv};
        int64_t offset = 0;
        for (int i = 0; i < 3; ++i) {
          std::copy(part + offset, part + offset + sizes[i], dsts[i]);
          for (int64_t gi = 1; gi < groups; ++gi) add_into(dsts[i], part + gi * partial_size + offset, sizes[i]);
          offset += sizes[i];
        }
      }
    });
  }
}

CpuInputs cpu_inputs(const Tensor& q1, const Tensor& k1, const Tensor& q2, const Tensor& k2, const Tensor& v,
                     const std::optional<Tensor>& grad_out) {
  return {head_matrices(q1), head_matrices(k1), head_matrices(q2), head_matrices(k2), head_matrices(v),
          grad_out ? head_matrices(*grad_out) : HeadMatrices{}};
}

std::tuple<Tensor, Tensor, Tensor> diff_attention_forward_cpu(const Tensor& q1_in, const Tensor& k1_in,
                                                              const Tensor& q2_in, const Tensor& k2_in,
                                                              const Tensor& v_in, const Tensor& lam_in, bool causal,
                                                              std::optional<double> scale) {
  const char* op = "diff_attention";
  const DiffAttentionProblem p = check_diff_attention(op, q1_in, k1_in, q2_in, k2_in, v_in, lam_in, causal, scale);
  const ScalarType dtype = q1_in.scalar_type();
  const ScalarType stats = diff_attention_stats_dtype(dtype);
  Tensor out = new_cpu_output(q1_in, {p.batch, p.heads, p.queries, p.value_dim}, dtype);
  Tensor lse1 = new_cpu_output(q1_in, {p.batch, p.heads, p.queries}, stats);
  Tensor lse2 = new_cpu_output(q1_in, {p.batch, p.heads, p.queries}, stats);
  if (out.numel() == 0) return {out, lse1, lse2};
  const Tensor q1 = diff_attention_rows_unit_stride(q1_in), k1 = diff_attention_rows_unit_stride(k1_in);
  const Tensor q2 = diff_attention_rows_unit_stride(q2_in), k2 = diff_attention_rows_unit_stride(k2_in);
  const Tensor v = diff_attention_rows_unit_stride(v_in);
  const Tensor lam = torch::stable::contiguous(lam_in);
  const CpuInputs in = cpu_inputs(q1, k1, q2, k2, v, std::nullopt);
  if (dtype == ScalarType::Float) {
    forward_cpu<float>(p, in, data_of<const float>(lam), data_of<float>(out), data_of<float>(lse1),
                       data_of<float>(lse2), q1.device(), q1);
  } else {
    forward_cpu<double>(p, in, data_of<const double>(lam), data_of<double>(out), data_of<double>(lse1),
                        data_of<double>(lse2), q1.device(), q1);
  }
  return {out, lse1, lse2};
}

std::tuple<Tensor, Tensor, Tensor, Tensor, Tensor, Tensor> diff_attention_backward_cpu(
    const Tensor& grad_out_in, const Tensor& q1_in, const Tensor& k1_in, const Tensor& q2_in, const Tensor& k2_in,
    const Tensor& v_in, const Tensor& lam_in, const Tensor& lse1_in, const Tensor& lse2_in, bool causal,
    std::optional<double> scale) {
  const char* op = "_diff_attention_backward";
  const DiffAttentionProblem p = check_diff_attention(op, q1_in, k1_in, q2_in, k2_in, v_in, lam_in, causal, scale);
  check_diff_attention_backward(op, p, q1_in, grad_out_in, lse1_in, lse2_in);
  const ScalarType dtype = q1_in.scalar_type();
  Tensor dq1 = new_cpu_output(q1_in, {p.batch, p.heads, p.queries, p.dim}, dtype);
  Tensor dq2 = new_cpu_output(q1_in, {p.batch, p.heads, p.queries, p.dim}, dtype);
  Tensor dk1 = new_cpu_output(q1_in, {p.batch, p.heads, p.keys, p.dim}, dtype);
  Tensor dk2 = new_cpu_output(q1_in, {p.batch, p.heads, p.keys, p.dim}, dtype);
  Tensor dv = new_cpu_output(q1_in, {p.batch, p.heads, p.keys, p.value_dim}, dtype);
  Tensor dlam = torch::stable::new_empty(q1_in, {p.batch, p.heads}, dtype);
  const int64_t bh_count = p.batch * p.heads;
  if (bh_count == 0) return {dq1, dk1, dq2, dk2, dv, dlam};
  if (p.queries == 0) {
    for (Tensor* t : {&dk1, &dk2, &dv, &dlam}) torch::stable::zero_(*t);
    return {dq1, dk1, dq2, dk2, dv, dlam};
  }
  const Tensor q1 = diff_attention_rows_unit_stride(q1_in), k1 = diff_attention_rows_unit_stride(k1_in);
  const Tensor q2 = diff_attention_rows_unit_stride(q2_in), k2 = diff_attention_rows_unit_stride(k2_in);
  const Tensor v = diff_attention_rows_unit_stride(v_in), grad_out = diff_attention_rows_unit_stride(grad_out_in);
  const Tensor lam = torch::stable::contiguous(lam_in);
  const Tensor lse1 = torch::stable::contiguous(lse1_in), lse2 = torch::stable::contiguous(lse2_in);
  const CpuInputs in = cpu_inputs(q1, k1, q2, k2, v, grad_out);
  // Fewer (b, h) pairs than threads: split each pair's query blocks into groups with partial dK, dV.
  const int64_t threads = num_threads();
  const int64_t key_block = std::min(cpu_key_block(), p.keys);
  const int64_t tq = backward_query_block(key_block, p.queries);
  const int64_t nq = (p.queries + tq - 1) / tq;
  const int64_t groups = bh_count >= threads ? 1 : std::min(nq, (threads + bh_count - 1) / bh_count);
  Tensor partials = torch::stable::new_zeros(
      q1, {groups > 1 ? bh_count * groups * p.keys * (2 * p.dim + p.value_dim) : 0});
  Tensor dlam_parts = torch::stable::new_empty(q1, {bh_count * groups}, ScalarType::Double);
  auto run = [&](auto zero) {
    using T = decltype(zero);
    const BackwardOutputs<T> g{data_of<T>(dq1), data_of<T>(dk1), data_of<T>(dq2),
                               data_of<T>(dk2), data_of<T>(dv),  data_of<double>(dlam_parts)};
    backward_cpu<T>(p, in, data_of<const T>(lam), data_of<const T>(lse1), data_of<const T>(lse2), g, q1.device(), q1,
                    groups, data_of<T>(partials));
    const double* parts = data_of<const double>(dlam_parts);
    T* out = data_of<T>(dlam);
    for (int64_t bh = 0; bh < bh_count; ++bh) {
      double s = 0;
      for (int64_t gi = 0; gi < groups; ++gi) s += parts[bh * groups + gi];
      out[bh] = static_cast<T>(s);
    }
  };
  if (dtype == ScalarType::Float) run(float{});
  else run(double{});
  return {dq1, dk1, dq2, dk2, dv, dlam};
}

}  // namespace
}  // namespace facekernels

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("_diff_attention_forward", TORCH_BOX(&facekernels::diff_attention_forward_cpu));
  m.impl("_diff_attention_backward", TORCH_BOX(&facekernels::diff_attention_backward_cpu));
}
