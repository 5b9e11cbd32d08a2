// Large fresh CPU outputs: optionally ask Linux for transparent huge pages before the kernel first touches
// them.
//
// torch's CPU allocator hands out blocks of more than 32 MiB as fresh mmap()s (glibc's largest mmap
// threshold), so every call pays one page fault per 4 KiB page on first touch. With THP in "madvise" mode
// (the common default), a MADV_HUGEPAGE hint on the untouched block makes those faults 2 MiB at a time. But
// the hint has a price: with THP defrag "madvise" (also the common default) a hinted fault that finds no
// free 2 MiB page compacts memory synchronously, and where other work churns through memory between our
// calls (a training step's other layers and autograd buffers, or the benchmark's peers) those stalls cost
// as much as or more than the faults saved (issue 17: local_stat_transform forward+backward fell from
// 21-22x to 9-12x its peer with the hint on every output >= 8 MiB). No size measured a win under that
// interleaving (tools/huge_pages_sweep.py, docs/design.md "The huge-page hint"), so the hint is off by
// default: blocks of at least huge_page_min_bytes() get it, 0 meaning none. The environment variable
// FACEKERNELS_HUGE_PAGES (MiB) and facekernels.set_huge_page_threshold() turn it on for a workload that
// gains (few large outputs, little else allocating). The hint never changes contents and is ignored where
// unsupported; memory already touched is left as it is.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdint>
#include <cstdlib>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace facekernels {

// The default smallest block given the hint, in MiB: 0, off (no size measured a win in the interleaved
// benchmarks, tools/huge_pages_sweep.py; docs/design.md "The huge-page hint").
constexpr int64_t kDefaultHugePageMinMiB = 0;

// FACEKERNELS_HUGE_PAGES: a whole number of MiB >= 0 (0: never hint); anything else keeps the default.
inline int64_t huge_page_min_bytes_from_env() {
  int64_t mib = kDefaultHugePageMinMiB;
  if (const char* env = std::getenv("FACEKERNELS_HUGE_PAGES")) {
    char* end = nullptr;
    errno = 0;
    const long long v = std::strtoll(env, &end, 10);
    if (end != env && *end == '\0' && errno == 0 && v >= 0 && v <= (int64_t{1} << 30)) mib = v;
  }
  return mib << 20;
}

// The process-wide threshold (one instance in the extension: an inline function's static).
inline std::atomic<int64_t>& huge_page_min_bytes_setting() {
  static std::atomic<int64_t> bytes{huge_page_min_bytes_from_env()};
  return bytes;
}

// The smallest block given the hint, in bytes; 0: the hint is off.
inline int64_t huge_page_min_bytes() { return huge_page_min_bytes_setting().load(std::memory_order_relaxed); }

inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  const int64_t min_bytes = huge_page_min_bytes();
  if (data == nullptr || min_bytes <= 0 || bytes < static_cast<size_t>(min_bytes) || bytes < 2 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace facekernels
