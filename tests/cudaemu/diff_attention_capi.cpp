// C entry points over cuda/diff_attention/diff_attention.h for the emulation tests (tests/cudaemu/emu.py).
#include <cstdint>

#include "cuda/diff_attention/diff_attention.h"

using namespace facekernels::cuda;

namespace {
DiffAttentionTile tile_of(int64_t first_bh, int64_t batches, int64_t rows, int64_t cols, int64_t q0, int64_t queries,
                          int64_t causal, double scale) {
  DiffAttentionTile t{};
  t.first_bh = first_bh;
  t.batches = batches;
  t.rows = rows;
  t.cols = cols;
  t.q0 = q0;
  t.queries = queries;
  t.causal = causal != 0;
  t.scale = static_cast<float>(scale);
  return t;
}
}  // namespace

extern "C" {

int emu_da_forward_rows(float* s1, const float* s2, const float* lam, float* lse1, float* lse2, int64_t first_bh,
                        int64_t batches, int64_t rows, int64_t cols, int64_t q0, int64_t queries, int64_t causal,
                        double scale) {
  return diff_attention_forward_rows(s1, s2, lam, lse1, lse2,
                                     tile_of(first_bh, batches, rows, cols, q0, queries, causal, scale), nullptr);
}
int emu_da_backward_rows(float* s1, float* s2, float* dpv, const float* lam, const float* lse1, const float* lse2,
                         float* row_d2, int64_t first_bh, int64_t batches, int64_t rows, int64_t cols, int64_t q0,
                         int64_t queries, int64_t causal, double scale) {
  return diff_attention_backward_rows(s1, s2, dpv, lam, lse1, lse2, row_d2,
                                      tile_of(first_bh, batches, rows, cols, q0, queries, causal, scale), nullptr);
}
int emu_da_accumulate(float* dst, int64_t dst_stride, const float* src, int64_t src_stride, int64_t batches,
                      int64_t count) {
  return diff_attention_accumulate(dst, dst_stride, src, src_stride, batches, count, nullptr);
}
int emu_da_lam_gradient(const float* row_d2, int64_t pairs, int64_t queries, float* dlam) {
  return diff_attention_lam_gradient(row_d2, pairs, queries, dlam, nullptr);
}

}  // extern "C"
