"""Helpers shared by the family test files (import them from here, never from conftest: the CUDA
emulation stage's tests/cudaemu/conftest.py would shadow that name)."""

import torch


def run_at_each_cpu_capability(script: str, tmp_path) -> dict:
    """Run `script` (which saves (level used, outputs) to sys.argv[1] with torch.save) in a subprocess per
    SIMD level, the level lowered through FACEKERNELS_CPU_CAPABILITY; returns {level: (used, outputs)}."""
    import os
    import subprocess
    import sys

    results = {}
    for level in ("default", "avx2", "avx512"):
        path = tmp_path / f"{level}.pt"
        env = dict(os.environ, FACEKERNELS_CPU_CAPABILITY=level)
        subprocess.run([sys.executable, "-c", script, str(path)], env=env, check=True)
        results[level] = torch.load(path)
    assert results["default"][0] == "default"
    return results


def assert_compiled_matches_eager(fn, args, **compile_kwargs) -> None:
    """torch.compile(fn, fullgraph=True) gives eager's outputs and, through .sum().backward(), eager's
    gradients for every argument that requires them."""
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, dynamic=False, **compile_kwargs)
    expected = fn(*args)
    expected.sum().backward()
    grads = [a.grad.clone() for a in args]
    for a in args:
        a.grad = None
    out = compiled(*args)
    out.sum().backward()
    torch.testing.assert_close(out, expected)
    for a, g in zip(args, grads):
        torch.testing.assert_close(a.grad, g)
