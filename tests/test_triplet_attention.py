"""axis_pool and triplet_gate (the triplet_attention family): values and gradients against float64
references written from the definitions, ties and NaN in the max, NCHW / channels_last / strided layouts,
odd and size-1 shapes, empty batches, gradcheck, opcheck, torch.compile, the SIMD levels agreeing, and every
bad input refused alike by the native ops and the fake kernels."""

import itertools

import pytest
import torch
from devices import assert_close
from helpers import (
    arguments,
    assert_compiled_matches_eager,
    assert_fake_refuses_like_native,
    assert_tracing_refuses_like_native,
    run_at_each_cpu_capability,
)

import torch.nn.functional as F

from facekernels.ops import axis_pool, gate_conv, triplet_gate

CPU_DTYPES = [torch.float32, torch.float64]
SHAPES = [(2, 3, 5, 7), (1, 1, 1, 1), (2, 1, 4, 3), (3, 6, 1, 9), (2, 5, 7, 1), (2, 20, 3, 17), (1, 9, 16, 16)]


# ---- float64 references, from the definitions ----------------------------------------------------------


def _max_first(x, dim):
    """max over dim whose gradient goes to the first index holding it (torch.argmax returns the first
    maximal index; NaN counts as the largest, as in torch.max)."""
    nan = torch.isnan(x)
    key = torch.where(nan, torch.full_like(x, float("inf")), x)
    idx = torch.argmax(torch.where(nan.any(dim, keepdim=True), nan.to(x.dtype), key), dim, keepdim=True)
    return x.gather(dim, idx).squeeze(dim)


def reference_pool(x):
    x = x.double()
    pc = torch.stack([_max_first(x, 1), x.mean(1)], 1)                                   # [B, 2, H, W]
    ph = torch.stack([_max_first(x, 2), x.mean(2)], 1)                                   # [B, 2, C, W]
    pw = torch.stack([_max_first(x, 3).transpose(1, 2), x.mean(3).transpose(1, 2)], 1)  # [B, 2, H, C]
    return pc, ph, pw


def reference_gate(x, gate_c, gate_h, gate_w, scale):
    b, c, h, w = x.shape
    g = torch.zeros(b, c, h, w, dtype=torch.float64)
    if gate_c is not None:
        g = g + gate_c.double()[:, None, :, :]
    if gate_h is not None:
        g = g + gate_h.double()[:, :, None, :]
    if gate_w is not None:
        g = g + gate_w.double().transpose(1, 2)[:, :, :, None]
    y = x.double() * g
    if scale is not None:
        y = y * scale.double()[:, :, None, None]
    return y


def _layouts(x):
    """x contiguous, channels_last, and strided views of the same values."""
    b, c, h, w = x.shape
    yield "contiguous", x.detach().contiguous().clone()
    yield "channels_last", x.detach().contiguous(memory_format=torch.channels_last).clone()
    wide = torch.zeros(b, 2 * c, h, 2 * w, dtype=x.dtype)
    wide[:, ::2, :, ::2] = x
    yield "strided", wide[:, ::2, :, ::2]
    yield "transposed", x.transpose(2, 3).contiguous().transpose(2, 3)
    sliced = torch.zeros(2 * b + 1, 3 * c, h, w, dtype=x.dtype)  # planar, read in place: batch and channel strides
    sliced[1::2, 1::3] = x
    yield "channel_sliced", sliced[1::2, 1::3]


def _gate_inputs(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    b, c, h, w = shape
    x = torch.randn(shape, generator=g, dtype=dtype)
    gate_c = torch.rand(b, h, w, generator=g, dtype=dtype)
    gate_h = torch.rand(b, c, w, generator=g, dtype=dtype)
    gate_w = torch.rand(b, h, c, generator=g, dtype=dtype)
    scale = torch.rand(b, c, generator=g, dtype=dtype)
    return x, gate_c, gate_h, gate_w, scale


# ---- axis_pool ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", CPU_DTYPES)
def test_axis_pool_matches_reference(shape, dtype):
    x0 = torch.randn(shape, dtype=dtype)
    grads = [torch.randn(t.shape, dtype=dtype) for t in reference_pool(x0)]
    for name, x in _layouts(x0):
        x = x.detach().requires_grad_()
        outs = axis_pool(x)
        for out, ref in zip(outs, reference_pool(x0)):
            assert out.is_contiguous()
            assert_close(out, ref, msg=name)
        torch.autograd.backward(outs, grads)
        xr = x0.double().clone().requires_grad_()
        torch.autograd.backward(reference_pool(xr), [g.double() for g in grads])
        assert_close(x.grad, xr.grad, msg=name)
        if name == "channels_last" and not (shape[2] == shape[3] == 1 or shape[1] == 1):
            assert x.grad.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_axis_pool_ties_go_to_the_first_index(layout):
    """Integer values in a small range: most maxima are tied; the gradient goes to the first of each."""
    x0 = torch.randint(0, 3, (2, 7, 6, 5)).double()
    x = dict(_layouts(x0))[layout].requires_grad_()
    outs = axis_pool(x)
    grads = [torch.randn(t.shape, dtype=torch.float64) for t in outs]
    torch.autograd.backward(outs, grads)
    xr = x0.clone().requires_grad_()
    torch.autograd.backward(reference_pool(xr), grads)
    torch.testing.assert_close(x.grad, xr.grad, atol=1e-12, rtol=1e-12)
    # and the same index torch.max(x, dim) picks on CPU
    torch.testing.assert_close(outs[0][:, 0], torch.max(x0, 1).values)
    x1 = x0.clone().requires_grad_()
    torch.max(x1, 1).values.backward(grads[0][:, 0])
    x2 = x0.clone().requires_grad_()
    axis_pool(x2)[0][:, 0].backward(grads[0][:, 0])
    torch.testing.assert_close(x2.grad, x1.grad)


def test_axis_pool_nan_propagates():
    x = torch.randn(2, 4, 3, 5)
    x[0, 2, 1, 3] = float("nan")
    x[0, 3, 1, 3] = float("nan")
    pc, ph, pw = axis_pool(x)
    assert torch.isnan(pc[0, :, 1, 3]).all() and torch.isnan(ph[0, :, 2, 3]).all() and torch.isnan(pw[0, :, 1, 2]).all()
    assert not torch.isnan(pc[1]).any()
    xr = x.clone().requires_grad_()
    axis_pool(xr)[0][:, 0].sum().backward()
    assert xr.grad[0, 2, 1, 3] == 1 and xr.grad[0, 3, 1, 3] == 0  # the first NaN takes the max's gradient


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_axis_pool_gradcheck(layout):
    x0 = torch.randn(2, 4, 5, 3, dtype=torch.float64)  # distinct values: the max is differentiable
    x = dict(_layouts(x0))[layout].requires_grad_()
    assert torch.autograd.gradcheck(axis_pool, (x,))


def test_axis_pool_empty_batch():
    x = torch.randn(0, 3, 4, 5, requires_grad=True)
    outs = axis_pool(x)
    assert [tuple(o.shape) for o in outs] == [(0, 2, 4, 5), (0, 2, 3, 5), (0, 2, 4, 3)]
    sum(o.sum() for o in outs).backward()
    assert x.grad.shape == x.shape


def test_axis_pool_only_some_outputs_used():
    x = torch.randn(2, 3, 4, 5, requires_grad=True)
    axis_pool(x)[1].sum().backward()
    xr = x.detach().double().requires_grad_()
    reference_pool(xr)[1].sum().backward()
    assert_close(x.grad, xr.grad)


# ---- triplet_gate ----------------------------------------------------------------------------------------

PRESENT = [(True, True, True, True), (True, True, True, False), (False, True, True, False),
           (True, False, False, True), (False, False, True, True)]


@pytest.mark.parametrize("present", PRESENT)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype", CPU_DTYPES)
def test_triplet_gate_matches_reference(shape, dtype, present):
    x0, *maps = _gate_inputs(shape, dtype)
    maps = [m if p else None for m, p in zip(maps, present)]
    grad_y = torch.randn(shape, dtype=dtype)
    expected_grads = None
    for name, x in _layouts(x0):
        x = x.detach().requires_grad_()
        args = [m.detach().clone().requires_grad_() if m is not None else None for m in maps]
        y = triplet_gate(x, *args)
        assert_close(y, reference_gate(x0, *maps), msg=name)
        if name == "channels_last" and shape[1] > 1 and shape[2] * shape[3] > 1:
            assert y.is_contiguous(memory_format=torch.channels_last)
        elif name != "channels_last":
            assert y.is_contiguous()
        for gname, g in _layouts(grad_y):
            for t in [x, *args]:
                if t is not None:
                    t.grad = None
            y = triplet_gate(x, *args)
            y.backward(g)
            if expected_grads is None:
                xr = x0.double().clone().requires_grad_()
                ref_args = [m.double().clone().requires_grad_() if m is not None else None for m in maps]
                reference_gate(xr, *ref_args).backward(grad_y.double())
                expected_grads = [xr.grad] + [a.grad if a is not None else None for a in ref_args]
            for t, e in zip([x, *args], expected_grads):
                if t is not None:
                    assert_close(t.grad, e, scale=10.0, msg=f"{name} / grad {gname}")


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_triplet_gate_gradcheck(layout):
    x0, *maps = _gate_inputs((2, 3, 4, 5), torch.float64)
    x = dict(_layouts(x0))[layout].requires_grad_()
    maps = [m.requires_grad_() for m in maps]
    assert torch.autograd.gradcheck(triplet_gate, (x, *maps))
    assert torch.autograd.gradcheck(lambda a, b: triplet_gate(a, None, b), (x, maps[1]))


def test_triplet_gate_partial_gradients():
    x, gc, gh, gw, s = _gate_inputs((2, 3, 4, 5), torch.float32)
    gh.requires_grad_()
    triplet_gate(x, gc, gh, gw, s).sum().backward()
    assert gh.grad is not None and x.grad is None and gc.grad is None


def test_triplet_gate_empty():
    for shape in [(0, 3, 4, 5), (2, 0, 4, 5), (2, 3, 0, 5)]:
        x, gc, gh, gw, s = (t.requires_grad_() for t in _gate_inputs(shape, torch.float32))
        y = triplet_gate(x, gc, gh, gw, s)
        assert y.shape == shape
        y.sum().backward()
        for t in (x, gc, gh, gw, s):
            assert t.grad.shape == t.shape and (t.grad == 0).all()


def test_triplet_attention_identity():
    """Three gates of 1/3 each and no scale give x back."""
    x = torch.randn(2, 5, 6, 7)
    b, c, h, w = x.shape
    third = 1.0 / 3.0
    y = triplet_gate(x, torch.full((b, h, w), third), torch.full((b, c, w), third), torch.full((b, h, c), third))
    torch.testing.assert_close(y, x)


# ---- gate_conv -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, k", [((2, 2, 9, 11), 7), ((3, 2, 5, 3), 7), ((1, 1, 1, 1), 7), ((2, 3, 8, 8), 3),
                                      ((2, 2, 56, 56), 7), ((1, 2, 14, 384), 7), ((2, 2, 4, 6), 1)])
@pytest.mark.parametrize("dtype", CPU_DTYPES)
def test_gate_conv_matches_conv2d(shape, k, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(shape, generator=g, dtype=dtype, requires_grad=True)
    w = torch.randn(1, shape[1], k, k, generator=g, dtype=dtype, requires_grad=True)
    y = gate_conv(x, w)
    x64 = x.detach().double().clone().requires_grad_()
    w64 = w.detach().double().clone().requires_grad_()
    ref = F.conv2d(x64, w64, padding=k // 2)
    assert_close(y, ref, scale=10.0)
    grad = torch.randn(y.shape, generator=g, dtype=dtype)
    y.backward(grad)
    ref.backward(grad.double())
    assert_close(x.grad, x64.grad, scale=10.0)
    assert_close(w.grad, w64.grad, scale=10.0, atol_scale=shape[0] * shape[2] * shape[3] / 10)


def test_gate_conv_gradcheck_and_strided():
    x = torch.randn(2, 2, 6, 5, dtype=torch.float64).transpose(2, 3).requires_grad_()
    w = torch.randn(1, 2, 7, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(gate_conv, (x, w))
    torch.library.opcheck(torch.ops.facekernels.gate_conv.default, (x, w))
    gy = torch.randn(2, 1, 5, 6, dtype=torch.float64)
    for mask in itertools.product([True, False], repeat=2):
        torch.library.opcheck(torch.ops.facekernels._gate_conv_backward.default, (gy, x.detach(), w.detach(), *mask))


def test_gate_conv_weight_gradient_is_deterministic():
    x = torch.randn(8, 2, 30, 30)
    w = torch.randn(1, 2, 7, 7)
    gy = torch.randn(8, 1, 30, 30)
    a = torch.ops.facekernels._gate_conv_backward(gy, x, w, True, True)
    b = torch.ops.facekernels._gate_conv_backward(gy, x, w, True, True)
    assert torch.equal(a[1], b[1]) and torch.equal(a[0], b[0])


BAD_CONV = [
    (dict(weight=torch.randn(1, 2, 6, 6)), r"gate_conv: weight must have shape \[1, Cin, K, K\] with Cin = x.size\(1\) = 2 and K odd, got \[1, 2, 6, 6\]"),
    (dict(weight=torch.randn(1, 3, 7, 7)), r"with Cin = x.size\(1\) = 2 and K odd, got \[1, 3, 7, 7\]"),
    (dict(weight=torch.randn(2, 7, 7)), r"gate_conv: weight must be a 4-D tensor \[1, Cin, K, K\], got a 3-D"),
    (dict(weight=torch.randn(1, 2, 7, 7).double()), r"gate_conv: weight must have the same dtype as x \(float32\), got float64"),
    (dict(x=torch.randn(2, 2, 5)), r"gate_conv: x must be a 4-D tensor \[B, Cin, M, N\], got a 3-D"),
]


@pytest.mark.parametrize("over, match", BAD_CONV)
def test_gate_conv_bad_inputs(over, match):
    args = arguments(dict(x=torch.randn(2, 2, 5, 6), weight=torch.randn(1, 2, 7, 7)), **over)
    with pytest.raises(RuntimeError, match=match):
        gate_conv(*args)
    assert_fake_refuses_like_native(gate_conv, *args)


# ---- the torch.library contract ----------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["contiguous", "channels_last", "strided"])
def test_opcheck(layout):
    x0, gc, gh, gw, s = _gate_inputs((2, 3, 4, 5), torch.float32)
    x = dict(_layouts(x0))[layout].requires_grad_()
    torch.library.opcheck(torch.ops.facekernels.axis_pool.default, (x,))
    for args in [(x, gc, gh, gw, s), (x, gc, gh, gw), (x, None, gh, None, s)]:
        args = tuple(a.detach().requires_grad_() if a is not None else None for a in args)
        torch.library.opcheck(torch.ops.facekernels.triplet_gate.default, args)
    outs = torch.ops.facekernels.axis_pool.default(x.detach())
    grads = [torch.randn_like(o) for o in outs[:3]]
    for cl in (False, True):
        torch.library.opcheck(torch.ops.facekernels._axis_pool_backward.default, (*grads, *outs[3:], cl))
    grad_y = torch.randn(x.shape)
    for need_x in (False, True):
        torch.library.opcheck(torch.ops.facekernels._triplet_gate_backward.default,
                              (grad_y, x.detach(), gc, None, gw, s, need_x))


def test_torch_compile_fullgraph():
    def block(x, gc, gh, gw):
        pc, ph, pw = axis_pool(x)
        return triplet_gate(x, torch.sigmoid(pc[:, 1] + gc), torch.sigmoid(ph[:, 0] + gh),
                            torch.sigmoid(pw.sum(1) + gw))

    x0, gc, gh, gw, _ = _gate_inputs((2, 3, 6, 5), torch.float32)
    for x in (x0, x0.contiguous(memory_format=torch.channels_last)):
        args = [x.clone().requires_grad_(), gc.clone().requires_grad_(), gh.clone().requires_grad_(),
                gw.clone().requires_grad_()]
        assert_compiled_matches_eager(block, args)


def test_double_backward_refused():
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    pooled = axis_pool(x)[1]
    v = torch.randn(pooled.shape, dtype=torch.float64, requires_grad=True)
    g = torch.autograd.grad(pooled, x, v, create_graph=True)[0]
    with pytest.raises(RuntimeError, match="axis_pool: double backward"):
        g.sum().backward()
    maps = [torch.rand(2, 4, 5, dtype=torch.float64, requires_grad=True)]
    g = torch.autograd.grad(triplet_gate(x, *maps).sum(), x, create_graph=True)[0]
    with pytest.raises(RuntimeError, match="triplet_gate: double backward"):
        g.sum().backward()


def test_autocast_cpu():
    x = torch.randn(2, 3, 4, 5).bfloat16()
    gc = torch.rand(2, 4, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = triplet_gate(x, gc)
        pc, _, _ = axis_pool(x)
    assert y.dtype == torch.float32 and pc.dtype == torch.float32


def test_cpu_capabilities_agree(tmp_path):
    script = (
        "import sys, torch, facekernels\n"
        "from facekernels.ops import axis_pool, triplet_gate\n"
        "torch.manual_seed(0)\n"
        "outs = []\n"
        "for cl in (False, True):\n"
        "    x = torch.randn(3, 21, 19, 23)\n"
        "    if cl: x = x.contiguous(memory_format=torch.channels_last)\n"
        "    x.requires_grad_()\n"
        "    maps = [torch.rand(3, 19, 23), torch.rand(3, 21, 23), torch.rand(3, 19, 21), torch.rand(3, 21)]\n"
        "    maps = [m.requires_grad_() for m in maps]\n"
        "    p = axis_pool(x)\n"
        "    y = triplet_gate(x, *maps)\n"
        "    (sum((o * torch.randn_like(o)).sum() for o in p) + (y * torch.randn_like(y)).sum()).backward()\n"
        "    outs += [*p, y, x.grad, *[m.grad for m in maps]]\n"
        "torch.save((facekernels.build_info()['cpu_kernels']['triplet_attention'], outs), sys.argv[1])\n"
    )
    results = run_at_each_cpu_capability(script, tmp_path)
    base = results["default"][1]
    for level, (used, outs) in results.items():
        for a, b in zip(outs, base):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5, msg=f"{level} ({used}) differs from default")


# ---- bad inputs --------------------------------------------------------------------------------------------

_X = torch.randn(2, 3, 4, 5)
_GOOD_GATE = dict(x=_X, gate_c=torch.rand(2, 4, 5), gate_h=torch.rand(2, 3, 5), gate_w=torch.rand(2, 4, 3),
                  scale=torch.rand(2, 3))

BAD_POOL = [
    ("rank", torch.randn(3, 4, 5), r"axis_pool: x must be a 4-D tensor \[B, C, H, W\], got a 3-D tensor"),
    ("dtype", torch.randn(2, 3, 4, 5).half(), "axis_pool: x must be float32 or float64 on CPU, got float16"),
    ("int", torch.ones(2, 3, 4, 5, dtype=torch.int64), "axis_pool: x must be float32 or float64 on CPU, got int64"),
    ("empty C", torch.randn(2, 0, 4, 5), r"axis_pool: x must have C, H and W >= 1 .*got shape \[2, 0, 4, 5\]"),
    ("empty W", torch.randn(2, 3, 4, 0), r"axis_pool: x must have C, H and W >= 1"),
]

BAD_GATE = [
    ("x rank", dict(x=torch.randn(2, 3, 4)), r"triplet_gate: x must be a 4-D tensor \[B, C, H, W\], got a 3-D"),
    ("x dtype", dict(x=_X.half()), "triplet_gate: x must be float32 or float64 on CPU, got float16"),
    ("no gate", dict(gate_c=None, gate_h=None, gate_w=None), "triplet_gate: at least one of gate_c, gate_h"),
    ("gate_c shape", dict(gate_c=torch.rand(2, 5, 4)),
     r"triplet_gate: gate_c must have shape \[B, H, W\] = \[2, 4, 5\], got \[2, 5, 4\]"),
    ("gate_c rank", dict(gate_c=torch.rand(2, 1, 4, 5)),
     r"triplet_gate: gate_c must have shape \[B, H, W\] = \[2, 4, 5\], got \[2, 1, 4, 5\]"),
    ("gate_h shape", dict(gate_h=torch.rand(2, 4, 5)),
     r"triplet_gate: gate_h must have shape \[B, C, W\] = \[2, 3, 5\], got \[2, 4, 5\]"),
    ("gate_w shape", dict(gate_w=torch.rand(2, 3, 4)),
     r"triplet_gate: gate_w must have shape \[B, H, C\] = \[2, 4, 3\], got \[2, 3, 4\]"),
    ("gate dtype", dict(gate_h=torch.rand(2, 3, 5, dtype=torch.float64)),
     r"triplet_gate: gate_h must have the same dtype as x \(float32\), got float64"),
    ("scale shape", dict(scale=torch.rand(2, 3, 1)), r"triplet_gate: scale must have shape \[B, C\] = \[2, 3\]"),
    ("scale dtype", dict(scale=torch.rand(2, 3, dtype=torch.float64)),
     r"triplet_gate: scale must have the same dtype as x \(float32\), got float64"),
]


@pytest.mark.parametrize("name, x, match", BAD_POOL, ids=[c[0] for c in BAD_POOL])
def test_axis_pool_bad_inputs(name, x, match):
    with pytest.raises(RuntimeError, match=match):
        axis_pool(x)
    assert_fake_refuses_like_native(axis_pool, x)


@pytest.mark.parametrize("name, over, match", BAD_GATE, ids=[c[0] for c in BAD_GATE])
def test_triplet_gate_bad_inputs(name, over, match):
    args = arguments(_GOOD_GATE, **over)
    with pytest.raises(RuntimeError, match=match):
        triplet_gate(*args)
    assert_fake_refuses_like_native(triplet_gate, *args)


def test_compile_and_export_refuse_bad_inputs():
    assert_tracing_refuses_like_native(triplet_gate, *arguments(_GOOD_GATE, gate_c=torch.rand(2, 5, 4)))
    assert_tracing_refuses_like_native(axis_pool, torch.randn(2, 0, 4, 5))


def _pool_backward_args(**over):
    outs = torch.ops.facekernels.axis_pool.default(_X)
    good = dict(grad_c=torch.randn(2, 2, 4, 5), grad_h=torch.randn(2, 2, 3, 5), grad_w=torch.randn(2, 2, 4, 3),
                arg_c=outs[3], arg_h=outs[4], arg_w=outs[5], channels_last=False)
    return arguments(good, **over)


BAD_POOL_BACKWARD = [
    (dict(grad_w=torch.randn(2, 2, 3, 4)), r"_axis_pool_backward: grad_w must have shape \[B, 2, H, C\] = \[2, 2, 4, 3\]"),
    (dict(grad_h=torch.randn(2, 2, 3, 5).double()), r"grad_h must have the same dtype as grad_c \(float32\)"),
    (dict(arg_h=torch.zeros(2, 3, 5, dtype=torch.int64)), "_axis_pool_backward: arg_h must be int32, got int64"),
    (dict(arg_c=torch.zeros(2, 4, 4, dtype=torch.int32)),
     r"_axis_pool_backward: arg_c must have shape \[B, H, W\] = \[2, 4, 5\], got \[2, 4, 4\]"),
    (dict(grad_c=torch.randn(2, 3, 4, 5)), r"grad_c must have shape \[B, 2, H, W\] = \[2, 2, 4, 5\], got \[2, 3, 4, 5\]"),
]


@pytest.mark.parametrize("over, match", BAD_POOL_BACKWARD)
def test_axis_pool_backward_bad_inputs(over, match):
    args = _pool_backward_args(**over)
    with pytest.raises(RuntimeError, match=match):
        torch.ops.facekernels._axis_pool_backward(*args)
    assert_fake_refuses_like_native(torch.ops.facekernels._axis_pool_backward.default, *args)


def test_triplet_gate_backward_checks_grad_shape():
    args = (torch.randn(2, 3, 4, 4), *_GOOD_GATE.values(), True)
    with pytest.raises(RuntimeError, match=r"_triplet_gate_backward: grad_y must have the shape of x \[2, 3, 4, 5\]"):
        torch.ops.facekernels._triplet_gate_backward(*args)
    assert_fake_refuses_like_native(torch.ops.facekernels._triplet_gate_backward.default, *args)


def test_meta_shapes():
    """The fake kernels' shapes and layouts on meta tensors."""
    x = torch.empty(2, 3, 4, 5, device="meta").contiguous(memory_format=torch.channels_last)
    pc, ph, pw = axis_pool(x)
    assert (pc.shape, ph.shape, pw.shape) == ((2, 2, 4, 5), (2, 2, 3, 5), (2, 2, 4, 3))
    y = triplet_gate(x, torch.empty(2, 4, 5, device="meta"))
    assert y.is_contiguous(memory_format=torch.channels_last)
