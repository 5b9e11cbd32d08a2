// C entry points over cuda/st_graph_conv/st_graph_conv.h for the emulation tests (tests/cudaemu/emu.py).
#include <cstdint>

#include "cuda/st_graph_conv/st_graph_conv.h"

using namespace facekernels::cuda;

extern "C" {

int emu_sgc_accumulate(float* dst, const float* src, int64_t n) { return st_graph_conv_accumulate(dst, src, n, nullptr); }
int emu_sgc_add_to_rows(float* z, const float* rv, int64_t rows, int64_t cols) {
  return st_graph_conv_add_to_rows(z, rv, rows, cols, nullptr);
}
int emu_sgc_add_over_time(float* out, const float* table, int64_t c, int64_t t, int64_t v) {
  return st_graph_conv_add_over_time(out, table, c, t, v, nullptr);
}
int emu_sgc_column_sums(const float* a, int64_t k, int64_t v, float* colsum) {
  return st_graph_conv_column_sums(a, k, v, colsum, nullptr);
}
int emu_sgc_bias_table(const float* bias, const float* colsum, int64_t k, int64_t c, int64_t v, float* table) {
  return st_graph_conv_bias_table(bias, colsum, k, c, v, table, nullptr);
}
int emu_sgc_sum_over_time(const float* g, int64_t c, int64_t t, int64_t v, float* sums) {
  return st_graph_conv_sum_over_time(g, c, t, v, sums, nullptr);
}
int emu_sgc_bias_gradient(const float* sums, const float* colsum, int64_t k, int64_t c, int64_t v, float* gb) {
  return st_graph_conv_bias_gradient(sums, colsum, k, c, v, gb, nullptr);
}
int emu_sgc_adjacency_bias_gradient(const float* sums, const float* bias, int64_t k, int64_t c, int64_t v, float* ga) {
  return st_graph_conv_adjacency_bias_gradient(sums, bias, k, c, v, ga, nullptr);
}

}  // extern "C"
