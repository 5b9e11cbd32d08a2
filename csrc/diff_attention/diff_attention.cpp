// diff_attention (the Differential Transformer's attention, MMDA's MD2A): schemas, argument checks, the GEMM
// helpers and the CPU binding.
//
//   P_i = softmax(q_i k_i^T * scale + M)      out = (P_1 - lam P_2) v
//
// CPU forward. Work items are (b, h, block of Tq query rows). An item computes the two score tiles
// S_i = Q_i K_i^T of its rows against all its keys (causal: keys up to its last query) with torch's BLAS
// into its thread's buffers, takes the exact row softmax of both (an epilogue in diff_attention_cpu.cpp,
// while the tiles are in cache), writes P = P_1 - lam P_2 over S_1 and finishes with one GEMM P V into its
// rows of the output: the two maps are combined before the product with V, which is done once. Tq is
// chosen so that a tile of Tq x S stays cache-sized (cpu_query_block); beyond 2^17 keys (cpu_key_block:
// where even 16 rows of all keys would be 8 MiB) the keys are split into blocks and the item makes two
// passes: pass 1 the row maxima and sums of both maps over the key blocks (hence lse), pass 2 P from the
// lse and P V accumulated block by block (the backward then makes one more pass, for the row sums d_i).
// Extra memory: per thread two or three tiles of at most Tq x min(S, 2^17) plus small row buffers; per
// call the row statistics lse1, lse2 [B, H, T] saved for the backward.
//
// CPU backward (the flop structure of the forward again): per item, dPV = dO V^T once for both maps;
// d_i = rowsum(P_i dPV) (P_i recomputed from the scores and the saved lse); dS_1 = P_1 (dPV - d_1),
// dS_2 = -lam P_2 (dPV - d_2); dV += (P_1 - lam P_2)^T dO (one product); dlam -= sum d_2;
// dQ_i = scale dS_i K_i, dK_i += scale dS_i^T Q_i. Items are whole (b, h) pairs (each thread owns its
// heads' dK, dV) unless there are fewer pairs than threads: then each pair's query blocks are dealt to
// several items that accumulate into their own zeroed partial dK, dV, reduced in a fixed order at the end.
#include "diff_attention/diff_attention.h"

#include <torch/csrc/stable/library.h>
#include <torch/csrc/stable/ops.h>
#include <torch/csrc/stable/tensor.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <limits>
#include <optional>
#include <sstream>
#include <tuple>
#include <utility>
#include <vector>

#include "core/blas.h"
#include "core/checks.h"
#include "core/memory.h"
#include "core/parallel.h"
#include "diff_attention/diff_attention_kernels.h"

namespace facekernels {

using torch::headeronly::ScalarType;
using torch::stable::Tensor;

namespace {

constexpr int64_t kMaxHeadDim = 256;

void check_shape(const char* op, const char* arg, const Tensor& t, std::initializer_list<int64_t> expected,
                 const char* layout) {
  bool same = true;
  int64_t i = 0;
  for (int64_t e : expected) {
    if (e >= 0 && t.size(i) != e) same = false;
    ++i;
  }
  if (same) return;
  std::ostringstream want;
  want << layout << " = [";
  i = 0;
  for (int64_t e : expected) {
    want << (i++ ? ", " : "");
    if (e >= 0) want << e;
    else want << "*";
  }
  want << "]";
  fail(op, arg, " must have shape ", want.str(), ", got ", shape_string(t));
}

}  // namespace

ScalarType diff_attention_stats_dtype(ScalarType s) {
  return s == ScalarType::Double ? ScalarType::Double : ScalarType::Float;
}

DiffAttentionProblem check_diff_attention(const char* op, const Tensor& q1, const Tensor& k1, const Tensor& q2,
                                          const Tensor& k2, const Tensor& v, const Tensor& lam, bool causal,
                                          std::optional<double> scale) {
  check_dim(op, "q1", q1, 4, "[B, H, T, D]");
  check_dim(op, "k1", k1, 4, "[B, H, S, D]");
  check_dim(op, "q2", q2, 4, "[B, H, T, D]");
  check_dim(op, "k2", k2, 4, "[B, H, S, D]");
  check_dim(op, "v", v, 4, "[B, H, S, Dv]");
  check_floating_dtype(op, "q1", q1);
  check_same_dtype(op, "k1", k1, "q1", q1);
  check_same_dtype(op, "q2", q2, "q1", q1);
  check_same_dtype(op, "k2", k2, "q1", q1);
  check_same_dtype(op, "v", v, "q1", q1);
  check_same_dtype(op, "lam", lam, "q1", q1);
  check_same_device(op, "k1", k1, "q1", q1);
  check_same_device(op, "q2", q2, "q1", q1);
  check_same_device(op, "k2", k2, "q1", q1);
  check_same_device(op, "v", v, "q1", q1);
  check_same_device(op, "lam", lam, "q1", q1);
  const int64_t b = q1.size(0), h = q1.size(1), t = q1.size(2), d = q1.size(3);
  const int64_t s = k1.size(2), dv = v.size(3);
  check_shape(op, "k1", k1, {b, h, -1, d}, "[B, H, S, D]");
  check_shape(op, "q2", q2, {b, h, t, d}, "[B, H, T, D]");
  check_shape(op, "k2", k2, {b, h, s, d}, "[B, H, S, D]");
  check_shape(op, "v", v, {b, h, s, -1}, "[B, H, S, Dv]");
  FK_CHECK(lam.dim() == 2 && lam.size(0) == b && lam.size(1) == h, op, "lam must have shape [B, H] = [", b, ", ",
           h, "] (facekernels.ops.diff_attention broadcasts it), got ", shape_string(lam));
  FK_CHECK(d >= 1 && d <= kMaxHeadDim, op, "q1 must have a head dimension D in [1, ", kMaxHeadDim, "], got D = ", d);
  FK_CHECK(dv >= 1 && dv <= kMaxHeadDim, op, "v must have a head dimension Dv in [1, ", kMaxHeadDim,
           "], got Dv = ", dv);
  FK_CHECK(s >= 1 || b * h * t == 0, op, "k1 must have at least one key (S >= 1), got S = 0");
  FK_CHECK(!causal || t == s, op, "q1 must have as many queries as k1 has keys for causal=True (T == S), got T = ",
           t, " and S = ", s);
  double sc = 1.0 / std::sqrt(static_cast<double>(d));
  if (scale.has_value()) {
    FK_CHECK(std::isfinite(*scale), op, "scale must be a finite number, got ", *scale);
    sc = *scale;
  }
  return {b, h, t, s, d, dv, causal, sc};
}

void check_diff_attention_backward(const char* op, const DiffAttentionProblem& p, const Tensor& q1,
                                   const Tensor& grad_out, const Tensor& lse1, const Tensor& lse2) {
  check_dim(op, "grad_out", grad_out, 4, "[B, H, T, Dv]");
  check_shape(op, "grad_out", grad_out, {p.batch, p.heads, p.queries, p.value_dim}, "[B, H, T, Dv]");
  check_same_dtype(op, "grad_out", grad_out, "q1", q1);
  check_same_device(op, "grad_out", grad_out, "q1", q1);
  const ScalarType stats = diff_attention_stats_dtype(q1.scalar_type());
  for (const auto& [name, t] : {std::pair<const char*, const Tensor*>{"lse1", &lse1}, {"lse2", &lse2}}) {
    check_dim(op, name, *t, 3, "[B, H, T]");
    check_shape(op, name, *t, {p.batch, p.heads, p.queries}, "[B, H, T]");
    FK_CHECK(t->scalar_type() == stats, op, name, " must be ", dtype_name(stats),
             " (the forward's row statistics), got ",
             dtype_name(t->scalar_type()));
    check_same_device(op, name, *t, "q1", q1);
  }
}

Tensor diff_attention_rows_unit_stride(const Tensor& t) {
  return (t.size(3) <= 1 || t.stride(3) == 1) ? t : torch::stable::contiguous(t);
}

namespace {

Tensor matrix_tensor(const DiffAttentionMatrix& m, torch::stable::Device device, ScalarType dtype) {
  return torch::stable::from_blob(const_cast<void*>(m.data), {m.rows, m.cols}, {m.row_stride, m.col_stride},
                                  device, dtype);
}

}  // namespace

void diff_attention_gemm(void* out, int64_t ldo, const DiffAttentionMatrix& a, const DiffAttentionMatrix& b,
                         torch::stable::Device device, ScalarType dtype) {
  const Tensor out_t = torch::stable::from_blob(out, {a.rows, b.cols}, {ldo, 1}, device, dtype);
  matmul_out(out_t, matrix_tensor(a, device, dtype), matrix_tensor(b, device, dtype));
}

void diff_attention_bmm(void* out, int64_t out_batch_stride, int64_t ldo, const DiffAttentionMatrix& a,
                        int64_t a_batch_stride, const DiffAttentionMatrix& b, int64_t b_batch_stride, int64_t batch,
                        torch::stable::Device device, ScalarType dtype) {
  const Tensor out_t =
      torch::stable::from_blob(out, {batch, a.rows, b.cols}, {out_batch_stride, ldo, 1}, device, dtype);
  const Tensor a_t = torch::stable::from_blob(const_cast<void*>(a.data), {batch, a.rows, a.cols},
                                              {a_batch_stride, a.row_stride, a.col_stride}, device, dtype);
  const Tensor b_t = torch::stable::from_blob(const_cast<void*>(b.data), {batch, b.rows, b.cols},
                                              {b_batch_stride, b.row_stride, b.col_stride}, device, dtype);
  matmul_out(out_t, a_t, b_t);
}

namespace {

// ---- CPU ------------------------------------------------------------------------------------------------

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

template <typename T>
T* data_of(const Tensor& t) {
  return static_cast<T*>(t.data_ptr());
}

// One input as a per-(b, h) matrix: rows of `cols` unit-stride elements.
struct HeadMatrices {
  const char* base;
  int64_t stride_b, stride_h, stride_row, cols, element;
  DiffAttentionMatrix at(int64_t bh, int64_t heads, int64_t row0, int64_t rows) const {
    const int64_t b = bh / heads, h = bh % heads;
    const char* p = base + (b * stride_b + h * stride_h + row0 * stride_row) * element;
    return {p, rows, cols, stride_row, 1};
  }
};

HeadMatrices head_matrices(const Tensor& t) {
  return {static_cast<const char*>(t.data_ptr()), t.stride(0), t.stride(1), t.stride(2), t.size(3),
          static_cast<int64_t>(t.element_size())};
}

DiffAttentionMatrix transposed(const DiffAttentionMatrix& m) {
  return {m.data, m.cols, m.rows, m.col_stride, m.row_stride};
}

// A work item: forward, query block `first` of pair bh (count 1); backward, the `count` query blocks
// first, first + groups, ... of pair bh / groups.
struct Item {
  int64_t bh, first, count, cost;
};

// Items dealt to `threads` lists: the most costly first, each to the least loaded list so far (a fixed
// assignment: results do not depend on timing).
std::vector<std::vector<Item>> deal(std::vector<Item> items, int64_t threads) {
  std::stable_sort(items.begin(), items.end(), [](const Item& x, const Item& y) { return x.cost > y.cost; });
  std::vector<std::vector<Item>> lists(static_cast<size_t>(threads));
  std::vector<int64_t> load(static_cast<size_t>(threads), 0);
  for (const Item& it : items) {
    const size_t least = static_cast<size_t>(std::min_element(load.begin(), load.end()) - load.begin());
    lists[least].push_back(it);
    load[least] += it.cost;
  }
  for (auto& list : lists) {
    std::sort(list.begin(), list.end(),
              [](const Item& x, const Item& y) { return x.bh != y.bh ? x.bh < y.bh : x.first < y.first; });
  }
  return lists;
}

const cpu::DiffAttentionKernels& kernels() { return FK_CPU_DISPATCH(cpu::diff_attention_kernels); }

// dst[i] += src[i], i < n, by the SIMD kernel of this CPU.
template <typename T>
void add_into(T* dst, const T* src, int64_t n) {
  const cpu::DiffAttentionKernels& k = kernels();
  if constexpr (sizeof(T) == 4) k.add_f32(dst, src, n);
  else k.add_f64(dst, src, n);
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
  void add(int64_t row0, const DiffAttentionMatrix& a, const DiffAttentionMatrix& b, T* temp,
           torch::stable::Device device, ScalarType dtype) {
    const int64_t rows = a.rows;
    if (row0 >= filled) {
      std::fill(dst + filled * cols, dst + row0 * cols, T(0));
      diff_attention_gemm(dst + row0 * cols, cols, a, b, device, dtype);
      filled = row0 + rows;
      return;
    }
    diff_attention_gemm(temp, cols, a, b, device, dtype);
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
  const cpu::DiffAttentionKernels& k = kernels();
  constexpr bool f32 = sizeof(T) == 4;
  const int64_t bh_count = p.batch * p.heads, T_ = p.queries, S = p.keys, Dv = p.value_dim;
  const ScalarType dtype = f32 ? ScalarType::Float : ScalarType::Double;
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
  const T scale = static_cast<T>(p.scale);
  parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t th = begin; th < end; ++th) {
      T* s1 = data_of<T>(scratch) + th * (2 * tile + row_buffers + (blocked ? tq * Dv : 0));
      T* s2 = s1 + tile;
      T* rowbuf = s2 + tile;
      T* temp = rowbuf + row_buffers;
      for (const Item& it : lists[static_cast<size_t>(th)]) {
        const int64_t bh = it.bh, t0 = it.first * tq, rows = std::min(tq, T_ - t0);
        const int64_t kv = p.causal ? t0 + rows : S;
        const DiffAttentionMatrix q1 = in.q1.at(bh, p.heads, t0, rows), q2 = in.q2.at(bh, p.heads, t0, rows);
        T* o = out + (bh * T_ + t0) * Dv;
        T* l1 = lse1 + bh * T_ + t0;
        T* l2 = lse2 + bh * T_ + t0;
        const T lam_bh = lam[bh];
        if (kv <= key_block) {
          diff_attention_gemm(s1, kv, q1, transposed(in.k1.at(bh, p.heads, 0, kv)), device, dtype);
          diff_attention_gemm(s2, kv, q2, transposed(in.k2.at(bh, p.heads, 0, kv)), device, dtype);
          const cpu::DiffTile<T> t{s1, s2, nullptr, rows, kv, t0, 0, p.causal, scale, lam_bh};
          if constexpr (f32) k.forward_single_f32(t, l1, l2);
          else k.forward_single_f64(t, l1, l2);
          diff_attention_gemm(o, Dv, {s1, rows, kv, kv, 1}, in.v.at(bh, p.heads, 0, kv), device, dtype);
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
          diff_attention_gemm(s1, cols, q1, transposed(in.k1.at(bh, p.heads, k0, cols)), device, dtype);
          diff_attention_gemm(s2, cols, q2, transposed(in.k2.at(bh, p.heads, k0, cols)), device, dtype);
          const cpu::DiffTile<T> t{s1, s2, nullptr, rows, cols, t0, k0, p.causal, scale, lam_bh};
          if constexpr (f32) k.forward_stats_f32(t, m1, sum1, m2, sum2);
          else k.forward_stats_f64(t, m1, sum1, m2, sum2);
        }
        for (int64_t r = 0; r < rows; ++r) {
          l1[r] = static_cast<T>(m1[r] + std::log(sum1[r]));
          l2[r] = static_cast<T>(m2[r] + std::log(sum2[r]));
        }
        for (int64_t k0 = 0; k0 < kv; k0 += key_block) {
          const int64_t cols = std::min(key_block, kv - k0);
          diff_attention_gemm(s1, cols, q1, transposed(in.k1.at(bh, p.heads, k0, cols)), device, dtype);
          diff_attention_gemm(s2, cols, q2, transposed(in.k2.at(bh, p.heads, k0, cols)), device, dtype);
          const cpu::DiffTile<T> t{s1, s2, nullptr, rows, cols, t0, k0, p.causal, scale, lam_bh};
          if constexpr (f32) k.forward_probs_f32(t, l1, l2);
          else k.forward_probs_f64(t, l1, l2);
          // Every pass adds into all `rows` output rows: the accumulator's rows are the item's query rows.
          if (k0 == 0) {
            diff_attention_gemm(o, Dv, {s1, rows, cols, cols, 1}, in.v.at(bh, p.heads, k0, cols), device, dtype);
          } else {
            diff_attention_gemm(temp, Dv, {s1, rows, cols, cols, 1}, in.v.at(bh, p.heads, k0, cols), device, dtype);
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
  const cpu::DiffAttentionKernels& k = kernels();
  constexpr bool f32 = sizeof(T) == 4;
  const int64_t bh_count = p.batch * p.heads, T_ = p.queries, S = p.keys, D = p.dim, Dv = p.value_dim;
  const ScalarType dtype = f32 ? ScalarType::Float : ScalarType::Double;
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
  const T scale = static_cast<T>(p.scale);
  const int64_t partial_size = S * (2 * D + Dv);
  parallel_for(0, threads, 1, [&](int64_t begin, int64_t end) {
    for (int64_t th = begin; th < end; ++th) {
      T* s1 = data_of<T>(scratch) + th * per_thread;
      T* s2 = s1 + tile;
      T* dpv = s2 + tile;
      T* temp = dpv + tile;
      double* d1 = data_of<double>(row_sums) + th * (2 * tq + 16);
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
          const DiffAttentionMatrix q1 = in.q1.at(bh, p.heads, t0, rows), q2 = in.q2.at(bh, p.heads, t0, rows);
          const DiffAttentionMatrix go = in.grad_out.at(bh, p.heads, t0, rows);
          const T* l1 = lse1 + bh * T_ + t0;
          const T* l2 = lse2 + bh * T_ + t0;
          T* dq1 = g.dq1 + (bh * T_ + t0) * D;
          T* dq2 = g.dq2 + (bh * T_ + t0) * D;
          std::fill(d1, d1 + rows, 0.0);
          std::fill(d2, d2 + rows, 0.0);
          const bool single = kv <= key_block;
          auto scores = [&](int64_t k0, int64_t cols) {
            diff_attention_gemm(s1, cols, q1, transposed(in.k1.at(bh, p.heads, k0, cols)), device, dtype);
            diff_attention_gemm(s2, cols, q2, transposed(in.k2.at(bh, p.heads, k0, cols)), device, dtype);
            diff_attention_gemm(dpv, cols, go, transposed(in.v.at(bh, p.heads, k0, cols)), device, dtype);
            return cpu::DiffTile<T>{s1, s2, dpv, rows, cols, t0, k0, p.causal, scale, lam_bh};
          };
          if (!single) {
            for (int64_t k0 = 0; k0 < kv; k0 += key_block) {
              const auto t = scores(k0, std::min(key_block, kv - k0));
              if constexpr (f32) k.backward_rowsums_f32(t, l1, l2, d1, d2, false);
              else k.backward_rowsums_f64(t, l1, l2, d1, d2, false);
            }
          }
          for (int64_t k0 = 0; k0 < kv; k0 += key_block) {
            const int64_t cols = std::min(key_block, kv - k0);
            const auto t = scores(k0, cols);
            if (single) {
              if constexpr (f32) k.backward_rowsums_f32(t, l1, l2, d1, d2, true);
              else k.backward_rowsums_f64(t, l1, l2, d1, d2, true);
            }
            if constexpr (f32) k.backward_grads_f32(t, l1, l2, d1, d2, single);
            else k.backward_grads_f64(t, l1, l2, d1, d2, single);
            const DiffAttentionMatrix ds1{s1, rows, cols, cols, 1}, ds2{s2, rows, cols, cols, 1};
            const DiffAttentionMatrix pm{dpv, rows, cols, cols, 1};
            const DiffAttentionMatrix k1 = in.k1.at(bh, p.heads, k0, cols), k2 = in.k2.at(bh, p.heads, k0, cols);
            if (k0 == 0) {
              diff_attention_gemm(dq1, D, ds1, k1, device, dtype);
              diff_attention_gemm(dq2, D, ds2, k2, device, dtype);
            } else {
              diff_attention_gemm(temp, D, ds1, k1, device, dtype);
              add_into(dq1, temp, rows * D);
              diff_attention_gemm(temp, D, ds2, k2, device, dtype);
              add_into(dq2, temp, rows * D);
            }
            acc_k1.add(k0, transposed(ds1), q1, temp, device, dtype);
            acc_k2.add(k0, transposed(ds2), q2, temp, device, dtype);
            acc_v.add(k0, transposed(pm), go, temp, device, dtype);
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

Tensor new_output(const Tensor& like, torch::headeronly::IntHeaderOnlyArrayRef sizes, ScalarType dtype) {
  Tensor t = torch::stable::new_empty(like, sizes, dtype);
  advise_huge_pages(t.data_ptr(), static_cast<size_t>(t.numel()) * t.element_size());
  return t;
}

std::tuple<Tensor, Tensor, Tensor> diff_attention_forward_cpu(const Tensor& q1_in, const Tensor& k1_in,
                                                              const Tensor& q2_in, const Tensor& k2_in,
                                                              const Tensor& v_in, const Tensor& lam_in, bool causal,
                                                              std::optional<double> scale) {
  const char* op = "diff_attention";
  const DiffAttentionProblem p = check_diff_attention(op, q1_in, k1_in, q2_in, k2_in, v_in, lam_in, causal, scale);
  const ScalarType dtype = q1_in.scalar_type();
  const ScalarType stats = diff_attention_stats_dtype(dtype);
  Tensor out = new_output(q1_in, {p.batch, p.heads, p.queries, p.value_dim}, dtype);
  Tensor lse1 = new_output(q1_in, {p.batch, p.heads, p.queries}, stats);
  Tensor lse2 = new_output(q1_in, {p.batch, p.heads, p.queries}, stats);
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
  Tensor dq1 = new_output(q1_in, {p.batch, p.heads, p.queries, p.dim}, dtype);
  Tensor dq2 = new_output(q1_in, {p.batch, p.heads, p.queries, p.dim}, dtype);
  Tensor dk1 = new_output(q1_in, {p.batch, p.heads, p.keys, p.dim}, dtype);
  Tensor dk2 = new_output(q1_in, {p.batch, p.heads, p.keys, p.dim}, dtype);
  Tensor dv = new_output(q1_in, {p.batch, p.heads, p.keys, p.value_dim}, dtype);
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

STABLE_TORCH_LIBRARY_FRAGMENT(facekernels, m) {
  m.def(
      "_diff_attention_forward(Tensor q1, Tensor k1, Tensor q2, Tensor k2, Tensor v, Tensor lam, bool causal=False, "
      "float? scale=None) -> (Tensor, Tensor, Tensor)");
  m.def(
      "_diff_attention_backward(Tensor grad_out, Tensor q1, Tensor k1, Tensor q2, Tensor k2, Tensor v, Tensor lam, "
      "Tensor lse1, Tensor lse2, bool causal, float? scale) -> (Tensor, Tensor, Tensor, Tensor, Tensor, Tensor)");
}

STABLE_TORCH_LIBRARY_IMPL(facekernels, CPU, m) {
  m.impl("_diff_attention_forward", TORCH_BOX(&facekernels::diff_attention_forward_cpu));
  m.impl("_diff_attention_backward", TORCH_BOX(&facekernels::diff_attention_backward_cpu));
}
