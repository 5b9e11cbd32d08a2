// Large fresh CPU outputs: ask Linux for transparent huge pages before the kernel first touches them.
//
// torch's CPU allocator hands out blocks of more than 32 MiB as fresh mmap()s (glibc's largest mmap
// threshold), so every call pays one page fault per 4 KiB page on first touch -- on the machines we
// measured, more time than the op's own arithmetic. With THP in "madvise" mode (the common default), a
// MADV_HUGEPAGE hint on the untouched block makes those faults 2 MiB at a time. torch does the same for
// its own blocks when THP_MEM_ALLOC_ENABLE=1 is set. The hint never changes contents and is ignored
// where unsupported; memory already touched is left as it is (khugepaged may merge it later).
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(__linux__)
#include <sys/mman.h>
#endif

namespace facekernels {

inline void advise_huge_pages(void* data, size_t bytes) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  constexpr uintptr_t kHuge = uintptr_t(2) << 20;
  if (data == nullptr || bytes < 4 * kHuge) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(data) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(data) + bytes) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)data;
  (void)bytes;
#endif
}

}  // namespace facekernels
