"""selective_scan on every device: values, last states and every gradient against a float64 sequential
reference (L = 1, sequences crossing the kernels' chunk edges, odd channel counts, the [B, N, L] and
grouped [B, G, N, L] forms of B and C, each optional argument on and off), gradcheck, the torch.library
contract, torch.compile, strides, empty inputs, and every bad input the op must refuse (natively and by
the fake kernels alike).

The CUDA kernels compute in float16/bfloat16/float32 (float32 state), so gradcheck runs on CPU in float64.
"""

import itertools

import facekernels
import pytest
import torch
import torch.nn.functional as F
from devices import DEVICE_DTYPES, DEVICES, assert_close
from facekernels.ops import selective_scan
from helpers import (
    arguments,
    assert_compiled_matches_eager,
    assert_fake_refuses_like_native,
    assert_tracing_refuses_like_native,
    run_at_each_cpu_capability,
)

# The CPU kernels walk the sequence in chunks of 32 steps and the channels in tiles of one vector's lanes
# (4 to 16): the lengths and channel counts below cross both.


def _expand(m, channels):
    """B or C as [B, D, N, L]: the 3-D form shared by every channel, the grouped form repeated per group."""
    if m.dim() == 3:
        return m[:, None].expand(m.shape[0], channels, *m.shape[1:])
    return m.repeat_interleave(channels // m.shape[1], dim=1)


def reference(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """float64 on the CPU, one step at a time from the definition; returns (out, last_state).
    Differentiable (the reference gradients)."""
    f64 = lambda t: None if t is None else t.detach().double().cpu().requires_grad_(t.requires_grad)
    return reference64(*(f64(t) for t in (u, delta, A, B, C, D, z, delta_bias)), delta_softplus)


def reference64(u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    batch, channels, length = u.shape
    dt = delta if delta_bias is None else delta + delta_bias[:, None]
    if delta_softplus:
        dt = F.softplus(dt)
    Bx, Cx = _expand(B, channels), _expand(C, channels)
    h = torch.zeros(batch, channels, A.shape[1], dtype=torch.float64)
    ys = []
    for t in range(length):
        step = dt[:, :, t, None]
        h = torch.exp(step * A) * h + step * Bx[..., t] * u[:, :, t, None]
        ys.append((h * Cx[..., t]).sum(-1))
    y = torch.stack(ys, -1) if ys else torch.zeros_like(u)
    out = y if D is None else y + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    return out, h


def make_inputs(batch, channels, length, state, groups_b=0, groups_c=0, *, with_D=True, with_z=True,
                with_bias=True, device="cpu", dtype=torch.float32, seed=0):
    """Mamba-like inputs: A = -exp(A_log) < 0, delta around softplus's knee; groups 0: the [B, N, L] form."""
    g = torch.Generator().manual_seed(seed)
    randn = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)

    def matrix(groups):
        return randn(batch, state, length) if groups == 0 else randn(batch, groups, state, length)

    tensors = {
        "u": randn(batch, channels, length),
        "delta": randn(batch, channels, length).abs() * 0.3 + 0.05,  # positive steps, as softplus gives
        "A": -torch.exp(randn(channels, state) * 0.5),
        "B": matrix(groups_b),
        "C": matrix(groups_c),
        "D": randn(channels) if with_D else None,
        "z": randn(batch, channels, length) if with_z else None,
        "delta_bias": randn(channels) * 0.1 if with_bias else None,
    }
    return {k: None if v is None else v.to(device=device, dtype=dtype) for k, v in tensors.items()}


SHAPES = [
    # batch, channels, length, state, groups_b, groups_c
    (1, 1, 1, 1, 0, 0),
    (2, 3, 1, 16, 0, 0),
    (2, 5, 33, 4, 0, 0),
    (3, 19, 100, 16, 0, 0),
    (2, 8, 65, 16, 2, 4),
    (1, 12, 40, 5, 3, 0),
    (2, 24, 70, 8, 0, 6),
]
OPTIONS = [
    # D, z, delta_bias, delta_softplus
    (True, True, True, True),
    (False, False, False, False),
    (True, False, False, True),
    (False, True, True, False),
]


def _scale(length):
    # the state is a sum of up to L decayed terms and y a sum over N: float32 rounding grows with both
    return 10.0 if length > 1 else 1.0


def _options_id(options):
    return "-".join(n for n, on in zip(("D", "z", "bias", "softplus"), options) if on) or "plain"


@pytest.mark.parametrize("options", OPTIONS, ids=_options_id)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES)
def test_forward_and_gradients_match_reference(device, dtype, shape, options):
    with_D, with_z, with_bias, softplus = options
    inputs = make_inputs(*shape, with_D=with_D, with_z=with_z, with_bias=with_bias, device=device, dtype=dtype)
    leaves = {k: v.requires_grad_() for k, v in inputs.items() if v is not None}
    out, last = selective_scan(**inputs, delta_softplus=softplus, return_last_state=True)
    ref_inputs = {k: None if v is None else v.detach().double().cpu().requires_grad_() for k, v in inputs.items()}
    ref_out, ref_last = reference64(**ref_inputs, delta_softplus=softplus)
    scale = _scale(shape[2])
    assert out.dtype == dtype and last.dtype == (torch.float64 if dtype == torch.float64 else torch.float32)
    assert_close(out, ref_out, scale)
    assert_close(last.to(dtype), ref_last, scale)
    g = torch.Generator().manual_seed(1)
    grad_out = torch.randn(out.shape, generator=g, dtype=torch.float64)
    grad_last = torch.randn(last.shape, generator=g, dtype=torch.float64)
    torch.autograd.backward((out, last), (grad_out.to(device, dtype), grad_last.to(device, last.dtype)))
    torch.autograd.backward((ref_out, ref_last), (grad_out, grad_last))
    for name, leaf in leaves.items():
        # gradients sum over L (and B, D): widen atol by the size of the sum
        assert_close(leaf.grad, ref_inputs[name].grad, scale, atol_scale=max(1.0, shape[2] / 10),
                     msg=lambda m, name=name: f"grad of {name}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_out_only_and_last_state_only(device):
    """Either output alone carries the gradient (the other's is None), and return_last_state=False
    returns out alone."""
    inputs = make_inputs(2, 6, 45, 8, device=device, dtype=torch.float32)
    u = inputs["u"].requires_grad_()
    out = selective_scan(**inputs)
    assert isinstance(out, torch.Tensor)
    out.sum().backward()
    g_out = u.grad.clone()
    u.grad = None
    _, last = selective_scan(**inputs, return_last_state=True)
    last.sum().backward()
    ref_grads = []
    for pick in (0, 1):
        ref_inputs = {k: None if v is None else v.detach().double().cpu().requires_grad_(k == "u")
                      for k, v in inputs.items()}
        reference64(**ref_inputs, delta_softplus=False)[pick].sum().backward()
        ref_grads.append(ref_inputs["u"].grad)
    assert_close(g_out, ref_grads[0], 10.0)
    assert_close(u.grad, ref_grads[1], 10.0)


def test_gradcheck():
    for shape, options in [((2, 5, 37, 3, 0, 0), OPTIONS[0]), ((1, 4, 6, 2, 2, 4), OPTIONS[1]),
                           ((2, 3, 1, 2, 0, 0), OPTIONS[3])]:
        with_D, with_z, with_bias, softplus = options
        inputs = make_inputs(*shape, with_D=with_D, with_z=with_z, with_bias=with_bias, dtype=torch.float64)
        names = [k for k, v in inputs.items() if v is not None]
        tensors = [inputs[k].requires_grad_() for k in names]

        def fn(*ts, names=names, softplus=softplus):
            out, last = selective_scan(**dict(zip(names, ts)), delta_softplus=softplus, return_last_state=True)
            return out, last

        assert torch.autograd.gradcheck(fn, tensors)


def test_double_backward_refused():
    inputs = make_inputs(1, 2, 3, 2, dtype=torch.float64)
    u = inputs["u"].requires_grad_()
    (g,) = torch.autograd.grad(selective_scan(**inputs).sum(), u, create_graph=True)
    with pytest.raises(RuntimeError, match="selective_scan: double backward"):
        g.sum().backward()


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    op = torch.ops.facekernels.selective_scan.default
    backward = torch.ops.facekernels._selective_scan_backward.default
    for groups, options in [((0, 0), OPTIONS[0]), ((2, 4), OPTIONS[1])]:
        with_D, with_z, with_bias, softplus = options
        i = make_inputs(2, 8, 35, 4, *groups, with_D=with_D, with_z=with_z, with_bias=with_bias, device=device)
        args = [i[k] for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
        grad_args = [a.clone().requires_grad_() if a is not None else None for a in args]
        torch.library.opcheck(op, (*grad_args, softplus))
        grad_out = torch.randn_like(i["u"])
        for grad_last in (None, torch.randn(2, 8, 4, device=device)):
            torch.library.opcheck(backward, (grad_out, grad_last, *args, softplus))


def test_torch_compile_fullgraph():
    def block(u, delta, A, B, C, D, z, bias):
        out, last = selective_scan(u, delta, A, B, C, D, z, bias, True, True)
        return torch.tanh(out).sum() + last.square().sum()

    i = make_inputs(2, 6, 40, 4, 0, 3)
    args = [i[k].requires_grad_() for k in ("u", "delta", "A", "B", "C", "D", "z", "delta_bias")]
    assert_compiled_matches_eager(block, args)


def test_strided_inputs():
    """Transposed, sliced and expanded inputs give what their contiguous copies give."""
    i = make_inputs(2, 6, 40, 4, 0, 2, dtype=torch.float64)
    strided = {
        "u": i["u"].transpose(1, 2).contiguous().transpose(1, 2),
        "delta": torch.stack((i["delta"], i["delta"]), -1)[..., 0],
        "A": i["A"].t().contiguous().t(),
        "B": i["B"].transpose(1, 2).contiguous().transpose(1, 2),
        "C": i["C"].permute(0, 1, 3, 2).contiguous().permute(0, 1, 3, 2),
        "D": torch.stack((i["D"], i["D"]), 1)[:, 0],
        "z": i["z"].permute(2, 0, 1).contiguous().permute(1, 2, 0),
        "delta_bias": i["delta_bias"],
    }
    assert not strided["u"].is_contiguous() and not strided["delta"].is_contiguous()
    out, last = selective_scan(**strided, delta_softplus=True, return_last_state=True)
    ref_out, ref_last = reference(**i, delta_softplus=True)
    assert_close(out, ref_out)
    assert_close(last, ref_last)
    leaves = {k: v.detach().clone().requires_grad_() for k, v in i.items()}
    grad = torch.randn(2, 40, 6, dtype=torch.float64).transpose(1, 2)
    selective_scan(**leaves, delta_softplus=True).backward(grad)
    ref_leaves = {k: v.detach().clone().requires_grad_() for k, v in i.items()}
    reference64(**ref_leaves, delta_softplus=True)[0].backward(grad)
    for k, leaf in leaves.items():
        assert_close(leaf.grad, ref_leaves[k].grad, msg=lambda m, k=k: f"grad of {k}: {m}")


@pytest.mark.parametrize("device", DEVICES)
def test_empty(device):
    for batch, channels, length in [(0, 4, 5), (2, 0, 5), (2, 4, 0)]:
        i = make_inputs(batch, channels, length, 3, device=device)
        leaves = {k: v.requires_grad_() for k, v in i.items()}
        out, last = selective_scan(**leaves, return_last_state=True)
        assert out.shape == (batch, channels, length) and last.shape == (batch, channels, 3)
        assert (last == 0).all()
        (out.sum() + last.sum()).backward()
        for k, v in leaves.items():  # sums over nothing: zero
            assert v.grad is not None and v.grad.shape == v.shape and (v.grad == 0).all(), k


def test_results_do_not_depend_on_thread_count():
    i = make_inputs(3, 40, 70, 16, 0, 0)
    leaves = {k: v.requires_grad_() for k, v in i.items()}
    results = []
    threads = torch.get_num_threads()
    try:
        for n in (1, 2, 3):
            torch.set_num_threads(n)
            for v in leaves.values():
                v.grad = None
            out, last = selective_scan(**leaves, delta_softplus=True, return_last_state=True)
            (out.sum() + last.sum()).backward()
            results.append([out.detach(), last.detach()] + [v.grad.clone() for v in leaves.values()])
    finally:
        torch.set_num_threads(threads)
    for other in results[1:]:
        for a, b in zip(results[0], other):
            assert torch.equal(a, b)


def test_cpu_capabilities_agree(tmp_path):
    """The SIMD levels compiled in give the same results (subprocesses with the level lowered)."""
    script = (
        "import sys, torch, facekernels\n"
        "torch.manual_seed(0)\n"
        "u, delta, z = torch.randn(3, 2, 19, 70).unbind(0); delta = delta.abs() * 0.3 + 0.05\n"
        "A = -torch.rand(19, 16) - 0.1; B = torch.randn(2, 16, 70); C = torch.randn(2, 1, 16, 70)\n"
        "D = torch.randn(19); bias = torch.randn(19)\n"
        "g, gl = torch.randn(2, 19, 70), torch.randn(2, 19, 16)\n"
        "outs = list(torch.ops.facekernels.selective_scan(u, delta, A, B, C, D, z, bias, True))\n"
        "outs += torch.ops.facekernels._selective_scan_backward(g, gl, u, delta, A, B, C, D, z, bias, True)\n"
        "torch.save((facekernels.build_info()['cpu_capability'], outs), sys.argv[1])\n"
    )
    results = run_at_each_cpu_capability(script, tmp_path)
    base = results["default"][1]
    for level, (used, outs) in results.items():
        for a, b in zip(outs, base):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"{level} ({used}) differs from default")


def test_autocast_cpu():
    """Under CPU autocast bfloat16 activations run in float32, as every facekernels op."""
    i = make_inputs(2, 4, 10, 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = selective_scan(**{k: v.bfloat16() if k in ("u", "delta") else v for k, v in i.items()})
    assert out.dtype == torch.float32


def test_build_info_lists_the_family():
    assert "selective_scan" in facekernels.build_info()["cpu_kernels"]


# ---- bad inputs: the native op and the fake kernels refuse them alike -------------------------------------

GOOD = make_inputs(2, 4, 6, 3, 0, 2)
GOOD["delta_softplus"] = False
BAD = [
    ("u 2-D", dict(GOOD, u=torch.randn(4, 6)),
     r"u must be a 3-D tensor \[B, D, L\], got a 2-D tensor of shape \[4, 6\]"),
    ("u int", dict(GOOD, u=torch.ones(2, 4, 6, dtype=torch.int32)),
     r"u must be float32 or float64 on CPU, got int32"),
    ("delta shape", dict(GOOD, delta=torch.randn(2, 4, 5)),
     r"delta must have the shape of u \[2, 4, 6\], got \[2, 4, 5\]"),
    ("delta dtype", dict(GOOD, delta=torch.randn(2, 4, 6, dtype=torch.float64)),
     r"delta must have the same dtype as u \(float32\), got float64"),
    ("A 1-D", dict(GOOD, A=torch.randn(4)), r"A must be a 2-D tensor \[D, N\]"),
    ("A D", dict(GOOD, A=torch.randn(5, 3)),
     r"A must have shape \[D, N\] with D = u.size\(1\) = 4 and 1 <= N <= 256, got \[5, 3\]"),
    ("A N too large", dict(GOOD, A=torch.randn(4, 257)), r"A must have shape \[D, N\] .* got \[4, 257\]"),
    ("B 2-D", dict(GOOD, B=torch.randn(4, 3)),
     r"B must be a 3-D tensor \[B, N, L\] or a 4-D tensor \[B, G, N, L\], got a 2-D tensor of shape \[4, 3\]"),
    ("B N", dict(GOOD, B=torch.randn(2, 4, 6)), r"B must have shape \[B, N, L\] = \[2, 3, 6\], got \[2, 4, 6\]"),
    ("B L", dict(GOOD, B=torch.randn(2, 3, 7)), r"B must have shape \[B, N, L\] = \[2, 3, 6\], got \[2, 3, 7\]"),
    ("C groups", dict(GOOD, C=torch.randn(2, 3, 3, 6)),
     r"C must have shape \[B, G, N, L\] = \[2, G, 3, 6\] with G dividing D = 4, got \[2, 3, 3, 6\]"),
    ("C dtype", dict(GOOD, C=torch.randn(2, 2, 3, 6, dtype=torch.float64)),
     r"C must have the same dtype as u \(float32\), got float64"),
    ("D shape", dict(GOOD, D=torch.randn(5)), r"D must have shape \[4\] \(D of u\), got \[5\]"),
    ("z shape", dict(GOOD, z=torch.randn(2, 4, 7)), r"z must have the shape of u \[2, 4, 6\], got \[2, 4, 7\]"),
    ("delta_bias dtype", dict(GOOD, delta_bias=torch.randn(4, dtype=torch.float64)),
     r"delta_bias must have the same dtype as u \(float32\), got float64"),
    ("A device", dict(GOOD, A=torch.randn(4, 3, device="meta")),
     r"A must be on the same device as u \(cpu\), got meta"),
]


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs(name, args, match):
    with pytest.raises(RuntimeError, match=r"selective_scan: " + match):
        selective_scan(**args)


SAME_DEVICE_BAD = [b for b in BAD if b[0] != "A device"]  # meta tensors are the fake kernels' own


@pytest.mark.parametrize("name,args,match", SAME_DEVICE_BAD, ids=[b[0] for b in SAME_DEVICE_BAD])
def test_fake_kernel_refuses_bad_inputs(name, args, match):
    assert_fake_refuses_like_native(selective_scan, **args)


@pytest.mark.parametrize("name", ["delta shape", "B N", "C groups"])
def test_tracing_refuses_bad_inputs(name):
    args = dict(next(b[1] for b in BAD if b[0] == name))
    assert_tracing_refuses_like_native(lambda *a: selective_scan(*a), *args.values())


BACKWARD_GOOD = {"grad_out": torch.randn(2, 4, 6), "grad_last_state": torch.randn(2, 4, 3),
                 **{k: v for k, v in GOOD.items()}}
BACKWARD_BAD = {
    "grad_out shape": (arguments(BACKWARD_GOOD, grad_out=torch.randn(2, 4, 5)),
                       r"grad_out must have the shape of u \[2, 4, 6\], got \[2, 4, 5\]"),
    "grad_last_state shape": (arguments(BACKWARD_GOOD, grad_last_state=torch.randn(2, 4, 4)),
                              r"grad_last_state must have shape \[B, D, N\] = \[2, 4, 3\], got \[2, 4, 4\]"),
    "grad_last_state dtype": (arguments(BACKWARD_GOOD, grad_last_state=torch.randn(2, 4, 3, dtype=torch.float64)),
                              r"grad_last_state must be float32 \(the state's dtype\), got float64"),
    "u 2-D": (arguments(BACKWARD_GOOD, u=torch.randn(4, 6)), r"u must be a 3-D tensor"),
}


@pytest.mark.parametrize("name", list(BACKWARD_BAD))
def test_backward_bad_inputs(name):
    args, match = BACKWARD_BAD[name]
    op = torch.ops.facekernels._selective_scan_backward.default
    with pytest.raises(RuntimeError, match=r"_selective_scan_backward: " + match):
        op(*args)
    assert_fake_refuses_like_native(op, *args)


def test_fake_kernel_shapes_on_meta():
    i = make_inputs(2, 8, 10, 4, 2, 0, device="meta")
    out, last = torch.ops.facekernels.selective_scan(*i.values(), True)
    assert out.shape == (2, 8, 10) and last.shape == (2, 8, 4) and last.dtype == torch.float32
    grads = torch.ops.facekernels._selective_scan_backward(
        torch.empty(2, 8, 10, device="meta"), None, *i.values(), True)
    assert [tuple(g.shape) for g in grads] == [(2, 8, 10), (2, 8, 10), (8, 4), (2, 2, 4, 10), (2, 4, 10), (8,),
                                               (2, 8, 10), (8,)]


def test_optional_gradients_are_none_when_not_passed():
    i = make_inputs(1, 4, 5, 2, with_D=False, with_z=False, with_bias=False)
    leaves = {k: v.requires_grad_() for k, v in i.items() if v is not None}
    selective_scan(**leaves).sum().backward()
    assert all(v.grad is not None for v in leaves.values())


@pytest.mark.parametrize("combo", list(itertools.product([False, True], repeat=3)))
def test_each_optional_argument_alone(combo):
    """Every subset of (D, z, delta_bias), softplus on, against the reference, gradients included."""
    with_D, with_z, with_bias = combo
    i = make_inputs(2, 5, 35, 3, 0, 0, with_D=with_D, with_z=with_z, with_bias=with_bias, dtype=torch.float64)
    leaves = {k: v.requires_grad_() for k, v in i.items() if v is not None}
    out = selective_scan(**i, delta_softplus=True)
    ref_leaves = {k: None if v is None else v.detach().clone().requires_grad_() for k, v in i.items()}
    ref = reference64(**ref_leaves, delta_softplus=True)[0]
    assert_close(out, ref)
    out.sum().backward()
    ref.sum().backward()
    for k, v in leaves.items():
        assert_close(v.grad, ref_leaves[k].grad, msg=lambda m, k=k: f"grad of {k}: {m}")
