#include "core/cpu_capability.h"

#include <cstdlib>
#include <cstring>
#include <string>

namespace facekernels {
namespace {

CpuCapability detect() {
#if defined(__x86_64__) || defined(_M_X64)
  __builtin_cpu_init();
  CpuCapability best = CpuCapability::Default;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    best = CpuCapability::Avx2;
  }
  if (best == CpuCapability::Avx2 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq")) {
    best = CpuCapability::Avx512;
  }
#if defined(FK_AVX512_EMULATION)
  // A testing build (FACEKERNELS_AVX512_EMULATION): the AVX-512 level holds AVX2 instructions.
  if (best == CpuCapability::Avx2) best = CpuCapability::Avx512;
#endif
#else
  CpuCapability best = CpuCapability::Default;
#endif
  if (const char* env = std::getenv("FACEKERNELS_CPU_CAPABILITY")) {
    std::string want(env);
    CpuCapability asked = best;
    if (want == "default") asked = CpuCapability::Default;
    else if (want == "avx2") asked = CpuCapability::Avx2;
    else if (want == "avx512") asked = CpuCapability::Avx512;
    if (static_cast<int>(asked) < static_cast<int>(best)) best = asked;
  }
  return best;
}

}  // namespace

CpuCapability cpu_capability() {
  static const CpuCapability level = detect();
  return level;
}

const char* cpu_capability_name(CpuCapability c) {
  switch (c) {
    case CpuCapability::Avx512: return "avx512";
    case CpuCapability::Avx2: return "avx2";
    default: return "default";
  }
}

}  // namespace facekernels
