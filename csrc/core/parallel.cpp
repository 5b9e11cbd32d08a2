#include "core/parallel.h"

#include <torch/csrc/stable/ops.h>

namespace facekernels {

void parallel_for_impl(int64_t begin, int64_t end, int64_t grain, void* context, ParallelBody body) {
  torch::stable::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { body(context, b, e); });
}

int64_t num_threads() {
  const int64_t n = torch::stable::get_num_threads();
  return n < 1 ? 1 : n;
}

}  // namespace facekernels
