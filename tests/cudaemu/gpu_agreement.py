"""Emulator-vs-GPU agreement on the same inputs (run by tools/gpu_check.sh on a GPU machine, after
`tools/cudaemu/build.py plain`): circular_conv, local_stats and correlation, whose CUDA ops call the launchers directly,
computed by the real GPU (torch.ops.facekernels on CUDA tensors) and by the emulator (the same launchers
on CPU memory), every storage dtype. Prints the largest differences; fails when they exceed the CUDA
tolerance of tests/devices.py (the two differ by float contraction/ordering and GPU math ulps only).

    CUDAEMU_BUILD=build/cudaemu/plain python tests/cudaemu/gpu_agreement.py
"""

import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import emu  # noqa: E402
import test_circular_conv_emu as tcc  # noqa: E402
import test_correlation_emu as tcr  # noqa: E402
import test_local_stats_emu as tls  # noqa: E402


def compare(op, shape, dtype, pairs, failures):
    """(name, emulator result, GPU result, atol scale) pairs at the CUDA tolerance; returns the largest
    difference, appends a line per pair outside tolerance to `failures`."""
    worst = 0.0
    for name, e, g, scale in pairs:
        d = (e.double() - g.double()).abs().max().item() if e.numel() else 0.0
        worst = max(worst, d)
        try:
            torch.testing.assert_close(e.double(), g.double(), **emu.tol(dtype, scale))
        except AssertionError as err:
            failures.append(f"{op} {shape} {dtype} {name}: {err}")
        print(f"{op} {str(shape):24s} {str(dtype):15s} {name}: max |emu - gpu| = {d:.3g}")
    return worst


def main():
    assert torch.cuda.is_available(), "needs a GPU"
    worst, failures = 0.0, []
    for dtype in (torch.float32, torch.float16, torch.bfloat16):
        for shape in tcc.SHAPES[::3]:
            B, C, H, W, L, dim = shape
            x, w, b, gy = (torch.randn(s, dtype=torch.float64).to(dtype) for s in ((B, C, H, W), (C, L), (C,),
                                                                                     (B, C, H, W)))
            _, y_emu = tcc.forward(x, w, b, dim)
            y_gpu = torch.ops.facekernels.circular_conv(x.cuda(), w.cuda(), b.cuda(), dim).cpu()
            _, g_emu = tcc.backward(gy, x, w, dim)
            g_gpu = torch.ops.facekernels._circular_conv_backward(gy.cuda(), x.cuda(), w.cuda(), dim, True, True, True)
            pairs = [("y", y_emu, y_gpu, math.sqrt(L))] + [
                (n, e, g.cpu(), s) for n, e, g, s in zip(("gx", "gw", "gb"), g_emu, g_gpu,
                                                         (math.sqrt(L), math.sqrt(B * H * W), math.sqrt(B * H * W)))]
            worst = max(worst, compare("circular_conv", shape, dtype, pairs, failures))
        for shape in tls.SHAPES[::3]:
            *size, k = shape
            B, C, H, W = size
            x = torch.randn(size, dtype=torch.float64).to(dtype)
            guide = (torch.randn(size, dtype=torch.float64) * 0.5 + 2).to(dtype)
            geo = (B * C, H, W, k // 2)
            out = tls.ls.empty(size, dtype)
            assert tls.ls("emu_lst_forward", tls.ls.dev(x), tls.ls.dev(guide), out,
                          tls.ws("emu_lst_forward_workspace", *geo), *geo, tls.EPS, dtype) == 0
            e = out.host()
            g = torch.ops.facekernels.local_stat_transform(x.cuda(), guide.cuda(), k, tls.EPS).cpu()
            d = (e.double() - g.double()).abs().max().item()
            scale = max(1.0, g.double().abs().max().item())
            try:
                torch.testing.assert_close(e.double(), g.double(), **emu.tol(dtype, scale, rtol=1e-4))
            except AssertionError as err:
                failures.append(f"local_stat_transform {shape} {dtype}: {err}")
            print(f"local_stat_transform {str(shape):20s} {str(dtype):15s}: max |emu - gpu| = {d:.3g}")
        for shape in tcr.SHAPES[::2]:
            B, C, H, W, P, d = shape
            x1, x2, go = tcr.inputs(shape, dtype, 1)
            _, y_emu = tcr.forward(x1, x2, P, d)
            _, g_emu = tcr.backward(go, x1, x2, P, d)
            y_gpu = torch.ops.facekernels.correlation(x1.cuda(), x2.cuda(), P, d, 1).cpu()
            g_gpu = torch.ops.facekernels._correlation_backward(go.cuda(), x1.cuda(), x2.cuda(), P, d, True, True)
            pairs = [("out", y_emu, y_gpu, max(1.0, math.sqrt(C)))] + [
                (n, e, g.cpu(), P) for n, e, g in zip(("grad_x1", "grad_x2"), g_emu, g_gpu)]
            worst = max(worst, compare("correlation", shape, dtype, pairs, failures))
        for f in emu.loaded():
            f.free_all()
    errors = sum(f.errors() for f in emu.loaded())
    print(f"largest difference {worst:.3g}; {len(failures)} outside tolerance; emulator reports: {errors}")
    for f in failures:
        print(f)
    return 1 if failures or errors else 0


if __name__ == "__main__":
    sys.exit(main())
