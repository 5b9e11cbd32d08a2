"""cuda/triplet_attention's kernels (unmodified) run by the CPU emulator against torch.ops.facekernels' CPU
ops in float64 on the same inputs: axis_pool (values, means and the argmax maps, which must agree exactly),
its backward in both output layouts, triplet_gate forward and backward (NCHW and channels_last x and
grad_y read through their strides, absent gates and scale), and gate_conv forward and backward; float32,
float16 and bfloat16 storage (float32 arithmetic) at the CUDA tolerances (tests/devices.py's cuda rows,
atol scaled by the size of the sums' terms)."""

import math

import pytest
import torch

import emu

ta = emu.family("triplet_attention")
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (2, 6, 1, 9), (3, 5, 4, 1), (2, 20, 7, 6), (1, 9, 16, 16)]
if ta.racecheck():
    SHAPES = [s for s in SHAPES if math.prod(s) <= 1000]


def _strides(layout, shape):
    B, C, H, W = shape
    return (C * H * W, 1, W * C, C) if layout == "channels_last" else (C * H * W, H * W, W, 1)


def _device_x(t, layout):
    """A device copy of t's elements in the layout's memory order, and its strides."""
    host = t.permute(0, 2, 3, 1).contiguous() if layout == "channels_last" else t.contiguous()
    return ta.dev(host), _strides(layout, t.shape)


def _host_x(dev, layout, shape):
    B, C, H, W = shape
    if layout == "channels_last":
        return dev.host().view(B, H, W, C).permute(0, 3, 1, 2)
    return dev.host().view(B, C, H, W)


def _inputs(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    B, C, H, W = shape
    x = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    maps = [torch.rand(s, generator=g, dtype=torch.float64).to(dtype) for s in ((B, H, W), (B, C, W), (B, H, C), (B, C))]
    return x, maps


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_axis_pool_matches_cpu_op(shape, dtype, layout):
    B, C, H, W = shape
    x, _ = _inputs(shape, dtype, sum(shape))
    if dtype != torch.float32:
        x[0, 0] = x[0, -1]  # ties across C (exact copies)
    xd, s = _device_x(x, layout)
    outs = [ta.empty(t, dtype) for t in ((B, 2, H, W), (B, 2, C, W), (B, 2, H, C))]
    args = [ta.empty(t, torch.int32) for t in ((B, H, W), (B, C, W), (B, H, C))]
    assert ta("emu_axis_pool", xd, *s, *outs, *args, B, C, H, W, dtype) == 0
    ref = torch.ops.facekernels.axis_pool(x.double())
    for got, want in zip(outs, ref[:3]):
        emu.check(got.host(), want, dtype)
    for got, want in zip(args, ref[3:]):
        assert torch.equal(got.host(), want)

    grads = [torch.randn(t.shape, dtype=torch.float64).to(dtype) for t in ref[:3]]
    cl = layout == "channels_last"
    gx = ta.empty((B * C * H * W,), dtype)
    assert ta("emu_axis_pool_backward", *(ta.dev(g) for g in grads), *(ta.dev(a) for a in ref[3:]), gx, cl, B, C, H,
              W, dtype) == 0
    want = torch.ops.facekernels._axis_pool_backward(*(g.double() for g in grads), *ref[3:], cl)
    emu.check(_host_x(gx, layout, shape), want, dtype, 2.0)


@pytest.mark.parametrize("present", [(True, True, True, True), (False, True, True, False), (True, False, False, True)])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_triplet_gate_matches_cpu_op(shape, dtype, layout, present):
    B, C, H, W = shape
    x, maps = _inputs(shape, dtype, 7 * sum(shape))
    maps = [m if p else None for m, p in zip(maps, present)]
    gy = torch.randn(shape, dtype=torch.float64).to(dtype)
    cl = layout == "channels_last"
    xd, s = _device_x(x, layout)
    md = [ta.dev(m) for m in maps]
    y = ta.empty((B * C * H * W,), dtype)
    assert ta("emu_triplet_gate", xd, *s, *md, y, cl, B, C, H, W, dtype) == 0
    m64 = [m.double() if m is not None else None for m in maps]
    emu.check(_host_x(y, layout, shape), torch.ops.facekernels.triplet_gate(x.double(), *m64), dtype, 2.0)

    gyd, gs = _device_x(gy, "contiguous" if cl else "channels_last")  # grad_y in the other layout
    gx = ta.empty((B * C * H * W,), dtype)
    grads = [ta.empty(m.shape, dtype) if m is not None else None for m in maps]
    assert ta("emu_triplet_gate_backward", gyd, *gs, xd, *s, *md, gx, cl, *grads, B, C, H, W, dtype) == 0
    want = torch.ops.facekernels._triplet_gate_backward(gy.double(), x.double(), *m64, True)
    emu.check(_host_x(gx, layout, shape), want[0], dtype, 2.0)
    lengths = (C, H, W, H * W)
    for got, ref, n in zip(grads, want[1:], lengths):
        if got is not None:
            emu.check(got.host(), ref, dtype, 3.0 * math.sqrt(n))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(2, 2, 9, 11, 7), (1, 2, 5, 3, 7), (1, 1, 1, 1, 7), (2, 3, 8, 8, 3), (2, 2, 4, 6, 1)],
                         ids=str)
def test_gate_conv_matches_cpu_op(shape, dtype):
    B, Cin, M, N, K = shape
    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(B, Cin, M, N, generator=g, dtype=torch.float64).to(dtype)
    w = torch.randn(1, Cin, K, K, generator=g, dtype=torch.float64).to(dtype)
    gy = torch.randn(B, 1, M, N, generator=g, dtype=torch.float64).to(dtype)
    y = ta.empty((B, 1, M, N), dtype)
    assert ta("emu_gate_conv", ta.dev(x), ta.dev(w), y, B, Cin, M, N, K, dtype) == 0
    emu.check(y.host(), torch.ops.facekernels.gate_conv(x.double(), w.double()), dtype, 2.0 * K)
    gx, gw = ta.empty(x.shape, dtype), ta.empty(w.shape, dtype)
    assert ta("emu_gate_conv_backward", ta.dev(gy), ta.dev(x), ta.dev(w), gx, gw, B, Cin, M, N, K, dtype) == 0
    rgx, rgw = torch.ops.facekernels._gate_conv_backward(gy.double(), x.double(), w.double(), True, True)
    emu.check(gx.host(), rgx, dtype, 2.0 * K)
    emu.check(gw.host(), rgw, dtype, 2.0 * math.sqrt(B * M * N))
