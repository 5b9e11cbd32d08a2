"""The transparent-huge-page hint on fresh CPU outputs (csrc/core/memory.h; issue 17, item 5).

The hint (MADV_HUGEPAGE) shows in /proc/self/smaps as the "hg" VmFlag of the mapping that holds an output.
Each case runs in a fresh interpreter: outputs of 32 MiB and more are mmap()ed fresh by torch's allocator
and unmapped when freed, so no earlier allocation can leave its flag behind.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import facekernels
import pytest

SMAPS = "/proc/self/smaps"
pytestmark = pytest.mark.skipif(
    not os.path.exists(SMAPS) or not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled"),
    reason="needs Linux with transparent huge pages (smaps VmFlags)")

# The documented default (docs/design.md, "The huge-page hint"): off. In the interleaved benchmarks no size
# measured a win for the hint (tools/huge_pages_sweep.py), so it is opt-in.
DEFAULT_MIN_BYTES = 0

SCRIPT = r"""
import json, sys, torch, facekernels

def hinted(t):
    addr = t.data_ptr() + t.numel() * t.element_size() // 2  # inside the 2 MiB-aligned part of the block
    inside = False
    for line in open("/proc/self/smaps"):
        head = line.split()[0]
        if "-" in head and not head.endswith(":"):
            lo, hi = (int(v, 16) for v in head.split("-"))
            inside = lo <= addr < hi
        elif inside and head == "VmFlags:":
            return "hg" in line.split()[1:]
    raise AssertionError("no mapping holds the output")

threshold = json.loads(sys.argv[1])
if threshold is not None:
    facekernels.set_huge_page_threshold(threshold)
out = {"min_bytes": facekernels.build_info()["huge_page_min_bytes"]}
for mib in json.loads(sys.argv[2]):
    x = torch.randn(1, 1, mib * 256, 1024)  # mib MiB of float32
    out[str(mib)] = hinted(facekernels.local_stat_transform(x, x, 3))
print(json.dumps(out))
"""


def run(threshold, sizes_mib, env=None) -> dict:
    environ = {k: v for k, v in os.environ.items() if k != "FACEKERNELS_HUGE_PAGES"}
    environ.update(env or {})
    result = subprocess.run([sys.executable, "-c", SCRIPT, json.dumps(threshold), json.dumps(sizes_mib)],
                            capture_output=True, text=True, env=environ, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_default_gives_no_hint():
    """By default no output gets the hint: a 32 MiB output (the sfft_k7 benchmark's size: B=4, C=128,
    128x128 float32; every output of 8 MiB or more was hinted before issue 17) and a 64 MiB one. In the
    interleaved benchmarks the hint's compaction stalls cost as much as or more than the page faults it
    saved."""
    assert run(None, [32, 64]) == {"min_bytes": DEFAULT_MIN_BYTES, "32": False, "64": False}


def test_threshold_setting():
    assert run(8 << 20, [16, 32]) == {"min_bytes": 8 << 20, "16": True, "32": True}
    assert run(64 << 20, [32, 64]) == {"min_bytes": 64 << 20, "32": False, "64": True}
    assert run(0, [32]) == {"min_bytes": 0, "32": False}  # 0: off


@pytest.mark.parametrize("value,expected", [("0", 0), ("16", 16 << 20), ("1024", 1 << 30),
                                            ("", DEFAULT_MIN_BYTES), ("-3", DEFAULT_MIN_BYTES),
                                            ("lots", DEFAULT_MIN_BYTES), ("12MiB", DEFAULT_MIN_BYTES),
                                            ("99999999999999999999", DEFAULT_MIN_BYTES)])
def test_environment_variable(value, expected, monkeypatch):
    """FACEKERNELS_HUGE_PAGES: a whole number of MiB (0: off); anything else keeps the default. The parse
    the extension runs once at load, called again here."""
    monkeypatch.setenv("FACEKERNELS_HUGE_PAGES", value)
    assert facekernels._C._huge_page_min_bytes_from_env() == expected
    monkeypatch.delenv("FACEKERNELS_HUGE_PAGES")
    assert facekernels._C._huge_page_min_bytes_from_env() == DEFAULT_MIN_BYTES


def test_environment_variable_takes_effect():
    assert run(None, [32], env={"FACEKERNELS_HUGE_PAGES": "16"}) == {"min_bytes": 16 << 20, "32": True}


def test_set_huge_page_threshold_returns_previous_and_refuses_bad_values():
    before = facekernels.build_info()["huge_page_min_bytes"]
    try:
        assert facekernels.set_huge_page_threshold(12345) == before
        assert facekernels.set_huge_page_threshold(before) == 12345
        with pytest.raises(ValueError, match=r"set_huge_page_threshold: min_bytes must be >= 0, got -1"):
            facekernels.set_huge_page_threshold(-1)
        for bad in (1.5, "8", True, None):
            with pytest.raises(TypeError, match=r"set_huge_page_threshold: min_bytes must be an int"):
                facekernels.set_huge_page_threshold(bad)
        assert facekernels.build_info()["huge_page_min_bytes"] == before
    finally:
        facekernels.set_huge_page_threshold(before)
