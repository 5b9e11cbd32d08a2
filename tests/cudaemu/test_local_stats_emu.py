"""cuda/local_stats' kernels (unmodified) run by the CPU emulator against torch.ops.facekernels' CPU ops in
float64 on the same inputs (shapes of the CUDA tests). Tolerances: tests/devices.py's cuda rows, atol
scaled by the output's magnitude; float32 rtol 1e-4 as the CUDA tests of these statistics (windowed
variances from shifted float32 sums)."""

import pytest
import torch

import emu

ls = emu.family("local_stats")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
EPS = 1e-5
SHAPES = [  # (B, C, H, W, kernel_size)
    (2, 3, 16, 16, 7), (2, 3, 5, 7, 3), (1, 2, 9, 13, 1), (1, 2, 12, 10, 9), (2, 2, 6, 5, 31), (1, 2, 6, 5, 11),
    (1, 1, 1, 17, 5), (1, 1, 17, 1, 5), (1, 1, 1, 1, 3), (1, 3, 33, 65, 15), (2, 2, 40, 37, 5), (1, 1, 300, 3, 41),
    (3, 2, 19, 23, 11),
]
if ls.racecheck():
    SHAPES = [s for s in SHAPES if s[0] * s[1] * s[2] * s[3] <= 2500]


def check(actual, expected, dtype):
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    emu.check(actual, expected, dtype, scale, rtol=1e-4)


def ws(name, *args):
    n = ls(name, *args)
    return ls.empty((n,), torch.float32) if n else None


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_cpu_ops(shape, dtype):
    *size, k = shape
    B, C, H, W = size
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(size, generator=g, dtype=torch.float64).to(dtype)
    guide = (torch.randn(size, generator=g, dtype=torch.float64) * 0.5 + 2.0).to(dtype)
    gout, gm, gv = (torch.randn(size, generator=g, dtype=torch.float64).to(dtype) for _ in range(3))
    geo = (B * C, H, W, k // 2)
    x64, g64 = x.double(), guide.double()
    dx, dg = ls.dev(x), ls.dev(guide)

    out = ls.empty(size, dtype)
    assert ls("emu_lst_forward", dx, dg, out, ws("emu_lst_forward_workspace", *geo), *geo, EPS, dtype) == 0
    check(out.host(), torch.ops.facekernels.local_stat_transform(x64, g64, k, EPS), dtype)

    rgx, rgg = torch.ops.facekernels._local_stat_transform_backward(gout.double(), x64, g64, k, EPS, True, True)
    for need in ((True, True), (True, False), (False, True)):
        gx = ls.empty(size, dtype) if need[0] else None
        gg = ls.empty(size, dtype) if need[1] else None
        assert ls("emu_lst_backward", ls.dev(gout), dx, dg, gx, gg, ws("emu_lst_backward_workspace", *geo, *need),
                  *geo, EPS, dtype) == 0
        if gx:
            check(gx.host(), rgx, dtype)
        if gg:
            check(gg.host(), rgg, dtype)

    mean, var = ls.empty(size, dtype), ls.empty(size, dtype)
    assert ls("emu_lmv_forward", dx, mean, var, ws("emu_lmv_forward_workspace", *geo), *geo, dtype) == 0
    rmean, rvar = torch.ops.facekernels.local_mean_var(x64, k)
    check(mean.host(), rmean, dtype)
    check(var.host(), rvar, dtype)

    for a, b in ((gm, gv), (gm, None), (None, gv), (None, None)):
        gx = ls.empty(size, dtype)
        assert ls("emu_lmv_backward", ls.dev(a), ls.dev(b), dx, gx,
                  ws("emu_lmv_backward_workspace", *geo, a is not None, b is not None), *geo, dtype) == 0
        if a is None and b is None:
            assert torch.equal(gx.host(), torch.zeros(size, dtype=dtype))
            continue
        ref = torch.ops.facekernels._local_mean_var_backward(
            a.double() if a is not None else None, b.double() if b is not None else None, x64, k)
        check(gx.host(), ref, dtype)


@pytest.mark.parametrize("schedule", [(1, 0), (2, 3)], ids=["reverse", "random3"])
def test_bitwise_identical_under_other_thread_orders(schedule):
    size, geo = (2, 3, 40, 37), (6, 40, 37, 4)
    x, guide, gout = torch.randn(size), torch.randn(size) * 0.5 + 2, torch.randn(size)

    def run():
        out, gx, gg = ls.empty(size, torch.float32), ls.empty(size, torch.float32), ls.empty(size, torch.float32)
        assert ls("emu_lst_forward", ls.dev(x), ls.dev(guide), out, ws("emu_lst_forward_workspace", *geo), *geo, EPS,
                  torch.float32) == 0
        assert ls("emu_lst_backward", ls.dev(gout), ls.dev(x), ls.dev(guide), gx, gg,
                  ws("emu_lst_backward_workspace", *geo, True, True), *geo, EPS, torch.float32) == 0
        return out.host(), gx.host(), gg.host()

    first = run()
    try:
        ls.lib.cudaemu_set_schedule(*schedule)
        second = run()
    finally:
        ls.lib.cudaemu_set_schedule(0, 1)
    for a, b in zip(first, second):
        assert torch.equal(a, b)
