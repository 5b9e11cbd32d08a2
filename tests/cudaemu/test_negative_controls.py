"""Negative controls: seeded bugs in a copy of cuda/ that the emulation stage must catch, run through
circular_conv (four in cuda/circular_conv/circular_conv.cu; the two warp-shuffle ones in the shared
warp_sum of cuda/core/device_math.cuh, which circular_conv's weight/bias reduction uses). Each mutant is built with tools/cudaemu/build.py --src <copy> in the build mode that is meant to
catch it, then a small slice of test_circular_conv_emu.py must FAIL on it (and the failure must come from
the expected kind of evidence). This test fails if the emulator stops catching one of them, or if the
text a mutant edits is no longer in its source file (then update the mutant, do not drop it).

Run by `make cuda-emu` with CUDAEMU_NEGATIVE_CONTROLS=1 (each mutant costs a compile).
"""

import os
import re
import shutil
import subprocess
import sys

import pytest

import emu

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = emu.ROOT
ASAN_PRELOAD = " ".join(
    subprocess.run(["gcc", f"-print-file-name={lib}"], capture_output=True, text=True).stdout.strip()
    for lib in ("libasan.so", "libubsan.so"))

# name: (old text, new text, build mode that must catch it, evidence expected in the output, what it models[,
#        file under cuda/ (default circular_conv/circular_conv.cu)])
DEFAULT_FILE = "circular_conv/circular_conv.cu"
MUTANTS = {
    "no_sync_after_staging": (
        "        taps_shared[line * chunk_max + t] = to_float(weight[c * g.taps + tap]);\n      }\n      __syncthreads();",
        "        taps_shared[line * chunk_max + t] = to_float(weight[c * g.taps + tap]);\n      }\n      ;",
        "race", r"cudaemu: (RACE|UNINITIALIZED)",
        "forward reads the staged taps before every thread wrote them"),
    "shuffle_tree_short": (
        "offset > 0; offset /= 2) v += __shfl_xor_sync(", "offset > 1; offset /= 2) v += __shfl_xor_sync(",
        "plain", r"Mismatched elements|AssertionError",
        "the warp reduction (warp_sum) drops its last butterfly step", "core/device_math.cuh"),
    "shuffle_mask_half": (
        "v += __shfl_xor_sync(kFullWarpMask, v, offset)", "v += __shfl_xor_sync(0x0000ffffu, v, offset)",
        "plain", r"cudaemu: (INVALID WARP OP|DEADLOCK|WARP OP MISMATCH)",
        "warp_sum's shuffle mask leaves out lanes 16-31 that call it", "core/device_math.cuh"),
    "store_one_row_past_tile": (
        "if (it.row + r < o.rows_here) out[r * g.inner]", "if (it.row + r <= o.rows_here) out[r * g.inner]",
        "asan", r"AddressSanitizer|Mismatched elements|AssertionError",
        "the forward's store runs one row past the tile's edge"),
    "shared_bytes_one_float_short": (
        "(g.tile_rows + chunk_max - 1) * g.tile_cols + chunk_max));",
        "(g.tile_rows + chunk_max - 1) * g.tile_cols + chunk_max) - sizeof(float));",
        "asan", r"AddressSanitizer: (heap-buffer-overflow|use-after-poison)",
        "dynamic shared memory one float too small"),
    "launch_bounds_exceeded": (
        "__global__ void __launch_bounds__(kThreads)", "__global__ void __launch_bounds__(kThreads / 2)",
        "plain", r"exceeds its __launch_bounds__",
        "a kernel compiled for fewer threads than it is launched with"),
}

SHAPES = ["(2, 3, 5, 7, 4, 2)", "(3, 2, 16, 16, 16, -1)", "(2, 4, 33, 33, 17, 2)"]  # the last not in the race run


def slice_for(mode):
    return [f"test_circular_conv_emu.py::test_matches_cpu_op[{shape}-torch.float32]"
            for shape in (SHAPES[:2] if mode == "race" else SHAPES)]

pytestmark = pytest.mark.skipif(not os.environ.get("CUDAEMU_NEGATIVE_CONTROLS"),
                                reason="set CUDAEMU_NEGATIVE_CONTROLS=1 (make cuda-emu does)")


@pytest.mark.parametrize("name", list(MUTANTS))
def test_seeded_bug_is_caught(name, tmp_path):
    old, new, mode, evidence, _, *where = MUTANTS[name]
    rel = where[0] if where else DEFAULT_FILE
    tree = tmp_path / "src"
    shutil.copytree(os.path.join(ROOT, "cuda"), tree / "cuda")
    path = tree / "cuda" / rel
    text = path.read_text()
    assert text.count(old) >= 1, f"mutant {name}: its text is no longer in cuda/{rel}; update it"
    path.write_text(text.replace(old, new))
    out = tmp_path / "build"
    b = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "cudaemu", "build.py"), mode, "circular_conv",
                        "--src", str(tree), "--out", str(out)], capture_output=True, text=True)
    assert b.returncode == 0, b.stdout + b.stderr
    env = dict(os.environ, CUDAEMU_BUILD=str(out), CUDAEMU_RACECHECK="1" if mode == "race" else "0")
    env.pop("CUDAEMU_NEGATIVE_CONTROLS", None)
    env.pop("CUDAEMU_LOG", None)
    if mode == "asan":
        env["LD_PRELOAD"] = ASAN_PRELOAD
        env["ASAN_OPTIONS"] = "detect_leaks=0"
    p = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-s", *slice_for(mode)],
                       capture_output=True, text=True, env=env, cwd=HERE, timeout=600)
    output = p.stdout + p.stderr
    assert "no tests ran" not in output and "ERROR: not found" not in output, output[-2000:]
    assert p.returncode != 0, f"mutant {name} ({mode} build) was NOT caught:\n{output[-2000:]}"
    assert re.search(evidence, output), f"mutant {name} failed without the expected evidence:\n{output[-3000:]}"
