#include "core/parallel.h"

#include <torch/csrc/stable/ops.h>

namespace facekernels {

void parallel_for_impl(int64_t begin, int64_t end, int64_t grain, void* context, ParallelBody body) {
  torch::stable::parallel_for(begin, end, grain, [&](int64_t b, int64_t e) { body(context, b, e); });
}

int parallel_num_threads() {
  return static_cast<int>(torch::stable::get_num_threads());
}

}  // namespace facekernels
