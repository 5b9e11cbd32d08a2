"""selective_scan through its CUDA binding (csrc/selective_scan/selective_scan_cuda.cpp and the shared
selective_scan.cpp, unmodified, compiled on the CPU torch: tools/cudaemu/binding/) with cuda/selective_scan's
kernels in the emulator: what the C harness (test_selective_scan_emu.py) does not reach, i.e. the binding's
contiguous copies of strided inputs, the float32 last state, the workspace it sizes and allocates, the
empty [0] gradients of absent inputs, a missing last-state gradient and the empty-input returns. Compared
with torch.ops.facekernels' CPU ops in float64 with the CUDA tolerances (atol scaled by the size of the
reference), in float32 and float16."""

import emu
import pytest
import torch

ops = emu.binding("selective_scan")
NAMES = ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")


def data(batch, channels, length, state, groups_b, groups_c, dtype, seed, *, optional=True):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)
    m = lambda groups: r(batch, state, length) if groups == 0 else r(batch, groups, state, length)
    t = [r(batch, channels, length), r(batch, channels, length).abs() * 0.3 + 0.05, -torch.exp(r(channels, state)),
         m(groups_b), m(groups_c), r(channels) if optional else None, r(batch, channels, length) if optional else None,
         r(channels) * 0.1 if optional else None]
    return [None if v is None else v.to(dtype) for v in t]


def close(actual, expected, dtype):
    assert actual.shape == expected.shape
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    emu.check(actual, expected, dtype, 10 * scale)


def compare(args, softplus, dtype, grad_last=True):
    args64 = [None if a is None else a.double() for a in args]
    out, last = ops.selective_scan(*args, softplus)
    ref_out, ref_last = torch.ops.facekernels.selective_scan(*args64, softplus)
    assert out.dtype == dtype and last.dtype == torch.float32
    close(out, ref_out, dtype)
    close(last, ref_last, dtype)
    gout = torch.randn(out.shape, dtype=torch.float64).to(dtype)
    glast = torch.randn(last.shape) if grad_last else None
    got = ops._selective_scan_backward(gout, glast, *args, softplus)
    want = torch.ops.facekernels._selective_scan_backward(
        gout.double(), None if glast is None else glast.double(), *args64, softplus)
    for name, a, w, given in zip(NAMES, got, want, args):
        if given is None:
            assert a.shape == (0,) and w.shape == (0,), name
        else:
            close(a, w, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16], ids=str)
@pytest.mark.parametrize("shape", [(2, 5, 40, 4, 0, 0), (1, 6, 33, 20, 2, 3), (2, 3, 1, 1, 0, 0)], ids=str)
def test_matches_cpu_ops(shape, dtype):
    compare(data(*shape, dtype, sum(shape)), True, dtype)
    compare(data(*shape, dtype, sum(shape) + 1, optional=False), False, dtype, grad_last=False)


def test_strided_inputs():
    args = data(2, 4, 35, 3, 0, 2, torch.float32, 5)
    strided = [a.transpose(-1, -2).contiguous().transpose(-1, -2) if a.dim() > 1 else a for a in args]
    assert not strided[0].is_contiguous()
    compare(strided, True, torch.float32)


def test_empty():
    for shape in ((0, 3, 5, 2, 0, 0), (2, 3, 0, 2, 0, 0)):
        args = data(*shape, torch.float32, 0)
        out, last = ops.selective_scan(*args, True)
        assert out.shape == shape[:3] and (last == 0).all()
        grads = ops._selective_scan_backward(torch.zeros(shape[:3]), None, *args, True)
        for g, a in zip(grads, args):
            assert g.shape == a.shape and (g == 0).all()
