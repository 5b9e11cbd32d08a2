"""The CUDA emulation stage's tests (make cuda-emu). They need the emulated kernels built by
tools/cudaemu/build.py and CUDAEMU_BUILD set, so the ordinary suite (make test) does not collect them."""

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

if not os.environ.get("CUDAEMU_BUILD"):
    collect_ignore_glob = ["test_*.py"]


@pytest.fixture(autouse=True)
def _emulator_clean():
    """Every test must leave every emulator report count at 0 (races, barrier divergence, bad warp
    collectives, deadlocks, uninitialised shared reads, shared out-of-bounds)."""
    import emu

    for f in emu.loaded():
        f.reset()
    yield
    for f in emu.loaded():
        f.free_all()
    bad = {f.lib._name: f.errors() for f in emu.loaded() if f.errors()}
    assert not bad, f"cudaemu reported errors (see stderr / $CUDAEMU_LOG): {bad}"
