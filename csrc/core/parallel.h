// A torch-free parallel loop for the kernel sources. It runs on torch's intra-op thread pool (OpenMP in
// the official builds), so torch.set_num_threads governs facekernels too and no second OpenMP runtime
// is loaded.
#pragma once

#include <cstdint>

namespace facekernels {

using ParallelBody = void (*)(void* context, int64_t begin, int64_t end);
void parallel_for_impl(int64_t begin, int64_t end, int64_t grain, void* context, ParallelBody body);

// The number of threads parallel_for may use (torch.get_num_threads()), at least 1.
int64_t num_threads();

template <typename F>
inline void parallel_for(int64_t begin, int64_t end, int64_t grain, const F& f) {
  if (begin >= end) return;
  parallel_for_impl(begin, end, grain, const_cast<void*>(static_cast<const void*>(&f)),
                    [](void* context, int64_t b, int64_t e) { (*static_cast<const F*>(context))(b, e); });
}

}  // namespace facekernels
