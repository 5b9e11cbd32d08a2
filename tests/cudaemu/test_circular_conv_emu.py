"""cuda/circular_conv's kernels (unmodified) run by the CPU emulator against torch.ops.facekernels' CPU
ops in float64 on the same inputs; float32, float16 and bfloat16 storage (float32 arithmetic), with the
CUDA tolerances (tests/devices.py's cuda rows, atol scaled by the size of the sums' terms as the CUDA
tests do). Shapes are those of the CUDA tests, the bigger ones dropped under the race checker."""

import itertools
import math

import pytest
import torch

import emu

cc = emu.family("circular_conv")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [  # (B, C, H, W, L, dim)
    (2, 3, 5, 7, 4, 2), (2, 3, 5, 7, 6, 3), (2, 3, 5, 7, 3, -2), (2, 3, 5, 7, 7, -1),
    (1, 1, 1, 1, 1, 2), (1, 1, 1, 1, 1, 3), (2, 2, 1, 9, 9, 3), (2, 2, 9, 1, 9, 2),
    (3, 2, 16, 16, 16, 2), (3, 2, 16, 16, 16, -1), (1, 5, 8, 3, 1, 2), (2, 3, 5, 100, 1, 3),
    (2, 4, 33, 33, 17, 2), (2, 4, 33, 33, 33, 3), (1, 2, 70, 40, 70, 2), (1, 2, 3, 130, 130, -1),
    (1, 3, 200, 3, 37, 2), (2, 700, 3, 5, 3, 3), (4, 8, 28, 28, 28, 2), (4, 8, 28, 28, 28, 3),
]
if cc.racecheck():
    SHAPES = [s for s in SHAPES if s[0] * s[1] * s[2] * s[3] <= 2500]


def forward(x, w, b, dim):
    B, C, H, W = x.shape
    y = cc.empty(x.shape, x.dtype)
    err = cc("emu_circular_conv_forward", cc.dev(x), cc.dev(w), cc.dev(b), y, B, C, H, W, w.shape[1], dim % 4, x.dtype)
    return err, y.host()


def backward(gy, x, w, dim, need=(True, True, True)):
    B, C, H, W = x.shape
    L = w.shape[1]
    gx = cc.empty(x.shape, x.dtype) if need[0] else None
    gw = cc.empty(w.shape, x.dtype) if need[1] else None
    gb = cc.empty((C,), x.dtype) if need[2] else None
    n = cc("emu_circular_conv_workspace", B, C, H, W, L, dim % 4, need[1], need[2])
    ws = cc.empty((n,), torch.float32) if n else None
    err = cc("emu_circular_conv_backward", cc.dev(gy), cc.dev(x), cc.dev(w), gx, gw, gb, ws, B, C, H, W, L, dim % 4,
             x.dtype)
    return err, tuple(t.host() if t is not None else None for t in (gx, gw, gb))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_cpu_op(shape, dtype):
    B, C, H, W, L, dim = shape
    g = torch.Generator().manual_seed(sum(shape) * 31 + L)
    x, w, b, gy = (torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in ((B, C, H, W), (C, L), (C,),
                                                                                          (B, C, H, W)))
    err, y = forward(x, w, b, dim)
    assert err == 0
    emu.check(y, torch.ops.facekernels.circular_conv(x.double(), w.double(), b.double(), dim), dtype, math.sqrt(L))

    err, (gx, gw, gb) = backward(gy, x, w, dim)
    assert err == 0
    rgx, rgw, rgb = torch.ops.facekernels._circular_conv_backward(gy.double(), x.double(), w.double(), dim, True,
                                                                  True, True)
    emu.check(gx, rgx, dtype, math.sqrt(L))
    reduced = math.sqrt(B * H * W)
    emu.check(gw, rgw, dtype, reduced)
    emu.check(gb, rgb, dtype, reduced)


@pytest.mark.parametrize("dim", [2, -1])
def test_gradient_flags_give_identical_sums(dim):
    """The launcher promises the same sums in the same order whatever subset of gradients is asked for."""
    x, w, gy = torch.randn(2, 3, 6, 7), torch.randn(3, 5), torch.randn(2, 3, 6, 7)
    _, full = backward(gy, x, w, dim)
    for mask in itertools.product([True, False], repeat=3):
        if any(mask):
            err, out = backward(gy, x, w, dim, mask)
            assert err == 0
            for asked, got, whole in zip(mask, out, full):
                if asked:
                    assert torch.equal(got, whole), mask


@pytest.mark.parametrize("schedule", [(1, 0), (2, 7), (2, 8)], ids=["reverse", "random7", "random8"])
def test_bitwise_identical_under_other_thread_orders(schedule):
    """Thread interleavings between barriers must not change a bit (the reductions are deterministic)."""
    x, w, b, gy = torch.randn(3, 4, 33, 40), torch.randn(4, 17), torch.randn(4), torch.randn(3, 4, 33, 40)
    _, y0 = forward(x, w, b, 3)
    _, g0 = backward(gy, x, w, 3)
    try:
        cc.lib.cudaemu_set_schedule(*schedule)
        _, y1 = forward(x, w, b, 3)
        _, g1 = backward(gy, x, w, 3)
    finally:
        cc.lib.cudaemu_set_schedule(0, 1)
    assert torch.equal(y0, y1)
    for a, c in zip(g0, g1):
        assert torch.equal(a, c)


def test_invalid_shape_is_refused():
    err, _ = forward(torch.randn(1, 2, 4, 4), torch.randn(2, 5), None, 2)  # taps > length
    assert err == 1  # cudaErrorInvalidValue
