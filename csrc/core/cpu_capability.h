// Run-time choice of the SIMD level the CPU kernels were compiled for. Kernel sources are compiled once
// per level (see CMakeLists.txt); the binding layer asks for the best level this CPU supports.
#pragma once

namespace facekernels {

enum class CpuCapability { Default = 0, Avx2 = 1, Avx512 = 2 };

// The level kernels dispatch to: the best this CPU supports among those compiled in, lowered (never
// raised) by the environment variable FACEKERNELS_CPU_CAPABILITY=default|avx2|avx512.
CpuCapability cpu_capability();
const char* cpu_capability_name(CpuCapability c);

}  // namespace facekernels

// Picks the kernel table `name##_<LEVEL>()` for the current level. Each kernel source defines
// `name##_DEFAULT`, and on x86-64 also `name##_AVX2` and `name##_AVX512`.
#if defined(__x86_64__) || defined(_M_X64)
#define FK_CPU_DISPATCH(name)                                          \
  ([]() -> decltype(name##_DEFAULT()) {                                \
    switch (::facekernels::cpu_capability()) {                         \
      case ::facekernels::CpuCapability::Avx512: return name##_AVX512(); \
      case ::facekernels::CpuCapability::Avx2: return name##_AVX2();     \
      default: return name##_DEFAULT();                                \
    }                                                                  \
  }())
#define FK_DECLARE_CPU_KERNELS(type, name) \
  type name##_DEFAULT();                   \
  type name##_AVX2();                      \
  type name##_AVX512();
#else
#define FK_CPU_DISPATCH(name) (name##_DEFAULT())
#define FK_DECLARE_CPU_KERNELS(type, name) type name##_DEFAULT();
#endif
