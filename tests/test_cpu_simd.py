"""csrc/core/cpu_simd.h compiled on its own with the system g++, under the flags of the sanitizer build.

lane_bits' portable loop (the AVX-512 level's 64-byte masks take it) was miscompiled by GCC 12's C++
front end under -fsanitize=shift together with -fsanitize=bounds (both in -fsanitize=undefined): the
sanitized build's cosine_topk returned -1 / NaN for most rows (issue 17, docs/design.md "Sanitizers").
These tests compile a small program against the real header with those flags and check every bit.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess

import pytest
import torch

CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")

PROGRAM = r"""
#include <cstdio>
#include "core/cpu_simd.h"

using namespace facekernels::cpu;

// Every lane pattern of one comparison: a[l] == b[l] exactly where bit l of `pattern` is set.
template <typename T>
int check(uint32_t pattern) {
  constexpr int L = kLanes<T>;
  T a[L], b[L];
  for (int l = 0; l < L; ++l) {
    a[l] = static_cast<T>(l);
    b[l] = (pattern >> l) & 1u ? static_cast<T>(l) : static_cast<T>(-1);
  }
  const uint32_t expected = pattern & ((uint32_t{1} << L) - 1);  // L <= 16
  const uint32_t got = lane_bits(load(a) == load(b));
  if (got != expected) {
    std::printf("lane_bits<%d x %d bytes>: got 0x%x, expected 0x%x\n", L, static_cast<int>(sizeof(T)), got,
                expected);
    return 1;
  }
  return 0;
}

int main() {
  const uint32_t patterns[] = {0u, 1u, 0x220u, 0x8000u, 0x5555u, 0xaaaau, 0xffffu, 0x81u, 0x12345678u};
  int failures = 0;
  for (uint32_t p : patterns) failures += check<float>(p) + check<double>(p) + check<int32_t>(p);
  if (failures == 0) std::printf("lane_bits ok (%d-byte vectors)\n", kVectorBytes);
  return failures != 0;
}
"""


def _cpu_has_avx512f() -> bool:
    try:
        with open("/proc/cpuinfo") as handle:
            return " avx512f" in handle.read()
    except OSError:
        return False


# Each SIMD level's own -m flags (CMakeLists.txt) under the sanitizer build's instrumentation; the
# AVX-512 level's code also without -mavx512f (as FACEKERNELS_AVX512_EMULATION builds it), which runs on
# any x86-64 CPU and takes the same portable loop.
LEVELS = {
    "default": ["-DFK_CPU_CAPABILITY_DEFAULT"],
    "avx2": ["-DFK_CPU_CAPABILITY_AVX2", "-mavx2", "-mfma"],
    "avx512-emulated": ["-DFK_CPU_CAPABILITY_AVX512", "-mavx2", "-mfma"],
    "avx512": ["-DFK_CPU_CAPABILITY_AVX512", "-mavx512f", "-mavx512bw", "-mavx512vl", "-mavx512dq", "-mavx2",
               "-mfma"],
}
SANITIZERS = {
    "none": [],
    "shift,bounds": ["-fsanitize=shift,bounds"],
    "undefined": ["-fsanitize=undefined"],
}


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64"), reason="x86-64 SIMD levels")
@pytest.mark.parametrize("sanitizer", list(SANITIZERS))
@pytest.mark.parametrize("optimisation", ["-O2", "-O3"])  # the kernels build at -O3
@pytest.mark.parametrize("level", list(LEVELS))
def test_lane_bits_under_sanitizer_instrumentation(level, optimisation, sanitizer, tmp_path):
    cxx = shutil.which(os.environ.get("CXX", "g++"))
    if cxx is None:
        pytest.skip("needs g++ on PATH")
    if level == "avx2" and not torch.backends.cpu.get_cpu_capability().startswith("AVX"):
        pytest.skip("this CPU has no AVX2")
    if level == "avx512" and not _cpu_has_avx512f():
        pytest.skip("this CPU has no AVX-512")
    source = tmp_path / "lane_bits.cpp"
    source.write_text(PROGRAM)
    binary = tmp_path / "lane_bits"
    # The compiler and the program without the sanitizer step's preloaded libasan: neither is ours to check.
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "ASAN_OPTIONS", "UBSAN_OPTIONS")}
    flags = [*LEVELS[level], optimisation, *SANITIZERS[sanitizer]]
    if sanitizer != "none":
        flags.append("-fno-sanitize-recover=all")
    build = subprocess.run([cxx, "-std=c++20", "-I", CSRC, *flags, str(source), "-o", str(binary)],
                           capture_output=True, text=True, env=env)
    if build.returncode != 0 and sanitizer != "none" and "ubsan" in build.stderr:
        pytest.skip(f"{cxx} cannot link UBSan here: {build.stderr.strip()[-200:]}")
    assert build.returncode == 0, build.stderr
    run = subprocess.run([str(binary)], capture_output=True, text=True, env=env)
    assert run.returncode == 0, f"{' '.join(flags)}:\n{run.stdout}{run.stderr}"
