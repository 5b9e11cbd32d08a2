"""The stage's own checks that need no emulated kernel: every CUDA family has a harness (or is on the
short, shrinking list below), and the 32-bit index lint over cuda/ is clean and still catches what it is
for."""

import os
import subprocess
import sys

import emu

sys.path.insert(0, os.path.join(emu.ROOT, "tools", "cudaemu"))
import build  # noqa: E402
import lint_index32  # noqa: E402

# Families whose launchers have no emulation harness yet (issue 16): remove a name when its harness lands.
NOT_YET = set()


def test_every_cuda_family_has_a_harness():
    base = os.path.join(emu.ROOT, "cuda")
    fams = {f for f in os.listdir(base) if os.path.exists(os.path.join(base, f, f + ".cu"))}
    have = {f for f in fams if os.path.exists(os.path.join(emu.ROOT, "tests", "cudaemu", f + "_capi.cpp"))
            or f in build.BINDINGS}
    for f in have:  # a harness without tests would be coverage on paper only
        assert os.path.exists(os.path.join(emu.ROOT, "tests", "cudaemu", f"test_{f}_emu.py")), f
    assert fams - have == NOT_YET, f"without a harness: {sorted(fams - have)}; expected {sorted(NOT_YET)}"


def test_index32_lint_is_clean():
    p = subprocess.run([sys.executable, os.path.join(emu.ROOT, "tools", "cudaemu", "lint_index32.py")],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_index32_lint_catches_32_bit_index_arithmetic():
    bad = """
__global__ void k(const float* x, int64_t n, int64_t inner) {
  int i = blockIdx.x * blockDim.x + threadIdx.x;
  const int line_size = static_cast<int>(n * inner);
  int count = n * inner;
}
"""
    rules = {n: {w[:2] for w in why} for _, n, _, why in lint_index32.findings("x.cu", bad)}
    assert set(rules) == {3, 4, 5} and "R1" in rules[3] and "R2" in rules[4] and "R3" in rules[5], rules
    good = """
__global__ void k(const float* x, int64_t n, int64_t inner) {
  const int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  const int64_t line_size = n * inner;
}
"""
    assert lint_index32.findings("x.cu", good) == []
