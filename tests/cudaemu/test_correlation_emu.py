"""cuda/correlation's kernels (unmodified) run by the CPU emulator against torch.ops.facekernels' CPU ops in
float64 on the same inputs; float32, float16 and bfloat16 storage (float32 arithmetic), with the CUDA
tolerances (tests/devices.py's cuda rows, atol scaled by the square root of the number of terms in each sum:
C for the forward, P*P for the gradients). Shapes: odd sizes, P = 1, displacements past the border (P d
beyond H and W), the CUDA tests' shapes; strided layouts (channels-last, every other channel with NaN in
the gaps, a permuted output and gradients) through the launchers' stride arguments; the grid-stride loops
past the grid cap (the grid-capped run). The bigger shapes are dropped under the race checker."""

import pytest
import torch

import emu

cc = emu.family("correlation")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [  # (B, C, H, W, P, d)
    (2, 5, 7, 9, 5, 2), (1, 3, 6, 5, 3, 3), (1, 1, 1, 1, 1, 1), (3, 4, 5, 6, 1, 1), (2, 3, 4, 5, 9, 3),
    (1, 2, 3, 1, 7, 1), (2, 6, 1, 8, 5, 1), (1, 7, 9, 11, 3, 2), (1, 0, 3, 4, 3, 1), (2, 40, 16, 16, 21, 2),
    (1, 64, 12, 13, 7, 1),
]
if cc.racecheck():
    SHAPES = [s for s in SHAPES if s[0] * s[2] * s[3] * s[4] * s[4] <= 3000]


def layout(t, kind):
    """(storage, strides): a contiguous storage tensor whose elements at `strides` are t."""
    if kind == "contiguous":
        return t.contiguous(), t.stride()
    if kind == "channels_last":
        s = t.permute(0, 2, 3, 1).contiguous()
        return s, s.permute(0, 3, 1, 2).stride()
    if kind == "every_other_channel":  # the gaps hold NaN: a read of them would show
        base = torch.full((t.shape[0], 2 * t.shape[1], *t.shape[2:]), float("nan"), dtype=t.dtype)
        base[:, ::2] = t
        return base, base[:, ::2].stride()
    raise ValueError(kind)


OUT_PERM = {"contiguous": ((0, 1, 2, 3, 4), (0, 1, 2, 3, 4)), "planes_last": ((0, 3, 4, 1, 2), (0, 3, 4, 1, 2))}
GRAD_PERM = {"contiguous": ((0, 1, 2, 3), (0, 1, 2, 3)), "channels_last": ((0, 2, 3, 1), (0, 3, 1, 2))}


def strided_output(shape, dtype, kind, perms):
    """A NaN-filled device buffer for an output of `shape` stored in the permuted order; its strides and a
    function reading it back as [shape]."""
    to_storage, back = perms[kind]
    storage_shape = [shape[k] for k in to_storage]
    dev = cc.empty(storage_shape, dtype)
    strides = torch.empty(storage_shape).permute(*back).stride()
    return dev, strides, lambda: dev.host().permute(*back)


def forward(x1, x2, P, d, in_kind="contiguous", out_kind="contiguous"):
    B, C, H, W = x1.shape
    (s1, st1), (s2, st2) = layout(x1, in_kind), layout(x2, in_kind)
    out, so, read = strided_output((B, P, P, H, W), x1.dtype, out_kind, OUT_PERM)
    err = cc("emu_correlation_forward", cc.dev(s1), cc.dev(s2), out, B, C, H, W, P, d, *st1, *st2, *so, x1.dtype)
    return err, read()


def backward(g, x1, x2, P, d, need=(True, True), in_kind="contiguous", grad_kind="contiguous"):
    B, C, H, W = x1.shape
    (s1, st1), (s2, st2) = layout(x1, in_kind), layout(x2, in_kind)
    # grad_out: contiguous with contiguous inputs, else stored with the planes first ([B, H, W, P, P]).
    sg = g.contiguous() if in_kind == "contiguous" else g.permute(0, 3, 4, 1, 2).contiguous()
    stg = g.stride() if in_kind == "contiguous" else sg.permute(0, 3, 4, 1, 2).stride()
    outs, strides, reads = [], [], []
    for asked in need:
        if asked:
            dev, st, read = strided_output(x1.shape, x1.dtype, grad_kind, GRAD_PERM)
        else:
            dev, st, read = None, (0, 0, 0, 0), None
        outs.append(dev)
        strides.append(st)
        reads.append(read)
    err = cc("emu_correlation_backward", cc.dev(sg), cc.dev(s1), cc.dev(s2), outs[0], outs[1], B, C, H, W, P, d,
             *stg, *st1, *st2, *strides[0], *strides[1], x1.dtype)
    return err, tuple(r() if r is not None else None for r in reads)


def inputs(shape, dtype, seed):
    B, C, H, W, P, d = shape
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=g, dtype=torch.float64).to(dtype) for s in ((B, C, H, W), (B, C, H, W),
                                                                                  (B, P, P, H, W))]


def cpu_ops(x1, x2, g, P, d):
    out = torch.ops.facekernels.correlation(x1.double(), x2.double(), P, d, 1)
    g1, g2 = torch.ops.facekernels._correlation_backward(g.double(), x1.double(), x2.double(), P, d, True, True)
    return out, g1, g2


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_cpu_op(shape, dtype):
    B, C, H, W, P, d = shape
    x1, x2, g = inputs(shape, dtype, sum(shape) * 31 + P)
    out, g1, g2 = cpu_ops(x1, x2, g, P, d)
    err, got = forward(x1, x2, P, d)
    assert err == 0
    emu.check(got, out, dtype, max(1.0, C ** 0.5))
    err, (got1, got2) = backward(g, x1, x2, P, d)
    assert err == 0
    emu.check(got1, g1, dtype, P)
    emu.check(got2, g2, dtype, P)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("in_kind,out_kind,grad_kind", [("channels_last", "planes_last", "channels_last"),
                                                        ("every_other_channel", "contiguous", "channels_last")])
def test_strided_layouts(in_kind, out_kind, grad_kind, dtype):
    shape = (2, 3, 5, 7, 5, 2)
    B, C, H, W, P, d = shape
    x1, x2, g = inputs(shape, dtype, 11)
    out, g1, g2 = cpu_ops(x1, x2, g, P, d)
    err, got = forward(x1, x2, P, d, in_kind, out_kind)
    assert err == 0
    emu.check(got, out, dtype, C ** 0.5)
    err, (got1, got2) = backward(g, x1, x2, P, d, in_kind=in_kind, grad_kind=grad_kind)
    assert err == 0
    emu.check(got1, g1, dtype, P)
    emu.check(got2, g2, dtype, P)


@pytest.mark.parametrize("need", [(True, False), (False, True)], ids=str)
def test_one_gradient_alone(need):
    """A gradient left nullptr is not computed; the other equals the one computed with both."""
    x1, x2, g = inputs((2, 3, 6, 7, 5, 2), torch.float32, 5)
    _, both = backward(g, x1, x2, 5, 2)
    err, alone = backward(g, x1, x2, 5, 2, need)
    assert err == 0
    for asked, a, b in zip(need, alone, both):
        if asked:
            assert torch.equal(a, b)
        else:
            assert a is None


def test_grid_stride_loops_past_the_grid_cap():
    """Forward 3 x 7 x 7 x 9 x 10 = 13230 outputs and backward 3 x 4 x 9 x 10 = 1080 gradient elements a
    kernel: more than 3 blocks of 256 threads, so under the grid-capped run every kernel loops."""
    shape = (3, 4, 9, 10, 7, 2)
    x1, x2, g = inputs(shape, torch.float32, 9)
    out, g1, g2 = cpu_ops(x1, x2, g, 7, 2)
    before = cc.lib.cudaemu_capped_launches()
    err, got = forward(x1, x2, 7, 2)
    assert err == 0
    err, (got1, got2) = backward(g, x1, x2, 7, 2)
    assert err == 0
    emu.check(got, out, torch.float32, 2.0)
    emu.check(got1, g1, torch.float32, 7)
    emu.check(got2, g2, torch.float32, 7)
    if emu.grid_capped():
        assert cc.lib.cudaemu_capped_launches() - before == 3


@pytest.mark.parametrize("schedule", [(1, 0), (2, 7)], ids=["reverse", "random7"])
def test_bitwise_identical_under_other_thread_orders(schedule):
    x1, x2, g = inputs((2, 4, 9, 8, 5, 2), torch.float32, 13)
    _, y0 = forward(x1, x2, 5, 2)
    _, g0 = backward(g, x1, x2, 5, 2)
    try:
        cc.lib.cudaemu_set_schedule(*schedule)
        _, y1 = forward(x1, x2, 5, 2)
        _, g1 = backward(g, x1, x2, 5, 2)
    finally:
        cc.lib.cudaemu_set_schedule(0, 1)
    assert torch.equal(y0, y1)
    for a, b in zip(g0, g1):
        assert torch.equal(a, b)


@pytest.mark.parametrize("P,d", [(4, 1), (0, 1), (-3, 1), (3, 0)])
def test_invalid_arguments_are_refused(P, d):
    """Even or non-positive P, d < 1: cudaErrorInvalidValue before any launch (the 1-element output is
    never touched)."""
    x = torch.randn(1, 2, 4, 4)
    out = cc.empty((1,), torch.float32)
    err = cc("emu_correlation_forward", cc.dev(x), cc.dev(x), out, 1, 2, 4, 4, P, d, *x.stride(), *x.stride(),
             1, 1, 1, 1, 1, x.dtype)
    assert err == 1  # cudaErrorInvalidValue
    assert torch.isnan(out.host()).all()
