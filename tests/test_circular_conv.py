"""circular_conv on CPU: values and gradients against a float64 reference, the torch.library contract,
torch.compile, strides, odd and empty shapes, and every bad input the op must refuse."""

import itertools

import facekernels
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_compiled_matches_eager, run_at_each_cpu_capability
from facekernels.ops import circular_conv


def reference(x, weight, bias, dim):
    """Plain float64 definition: y[..., i, ...] = bias + sum_t weight[c, t] * x[..., (i + t) mod n, ...]."""
    axis = dim % 4
    n = x.shape[axis]
    x64, w64 = x.double(), weight.double()
    y = torch.zeros_like(x64)
    for t in range(weight.shape[1]):
        index = torch.tensor([(i + t) % n for i in range(n)], device=x.device)
        y = y + w64[:, t].view(1, -1, 1, 1) * x64.index_select(axis, index)
    if bias is not None:
        y = y + bias.double().view(1, -1, 1, 1)
    return y


TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float64: {"atol": 1e-12, "rtol": 1e-12}}

SHAPES = [  # (B, C, H, W, L, dim)
    (2, 3, 5, 7, 4, 2),
    (2, 3, 5, 7, 6, 3),
    (1, 1, 1, 1, 1, 2),
    (1, 1, 1, 1, 1, 3),
    (3, 2, 16, 16, 16, 2),   # MOL's FCC: L = H
    (3, 2, 16, 16, 16, 3),
    (2, 4, 9, 33, 9, -2),    # rows longer than a register tile, ragged tails
    (2, 4, 33, 9, 9, -1),
    (1, 5, 8, 3, 1, 2),      # L = 1: a per-channel scale
    (2, 3, 4, 70, 70, 3),    # L = W, wide rows
    (2, 2, 70, 5, 17, 2),
    (2, 3, 11, 24, 13, 3),   # along W, rows a multiple of 8 wide: 8-row transposed tiles + 3 rows left
    (1, 2, 8, 8, 8, -1),
    (2, 2, 17, 32, 5, 3),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
def test_forward_backward_match_reference(shape, dtype, with_bias):
    b, c, h, w, taps, dim = shape
    x = torch.randn(b, c, h, w, dtype=dtype, requires_grad=True)
    weight = torch.randn(c, taps, dtype=dtype, requires_grad=True)
    bias = torch.randn(c, dtype=dtype, requires_grad=True) if with_bias else None
    y = circular_conv(x, weight, bias, dim)
    assert y.shape == x.shape and y.dtype == dtype and y.is_contiguous()

    leaves = [t.detach().double().requires_grad_() for t in (x, weight)]
    bias64 = bias.detach().double().requires_grad_() if with_bias else None
    ref = reference(leaves[0], leaves[1], bias64, dim)
    torch.testing.assert_close(y.double(), ref, **TOL[dtype])

    grad = torch.randn_like(ref)
    y.backward(grad.to(dtype))
    ref.backward(grad)
    scale = max(1.0, h * w * b / 64)  # sums over B*H*W grow the float32 rounding of the weight gradient
    tol = TOL[dtype]
    torch.testing.assert_close(x.grad.double(), leaves[0].grad, **tol)
    torch.testing.assert_close(weight.grad.double(), leaves[1].grad, atol=tol["atol"] * scale, rtol=tol["rtol"] * scale)
    if with_bias:
        torch.testing.assert_close(bias.grad.double(), bias64.grad, atol=tol["atol"] * scale, rtol=tol["rtol"] * scale)


def test_matches_mol_conv2d_formulation():
    """MOL computes it as a depthwise conv2d over the input concatenated with its first L-1 rows."""
    x = torch.randn(4, 6, 16, 16)
    weight = torch.randn(6, 16)
    bias = torch.randn(6)
    along_h = F.conv2d(torch.cat((x, x[:, :, :-1]), 2), weight.view(6, 1, 16, 1), bias, groups=6)
    along_w = F.conv2d(torch.cat((x, x[:, :, :, :-1]), 3), weight.view(6, 1, 1, 16), bias, groups=6)
    torch.testing.assert_close(circular_conv(x, weight, bias, 2), along_h, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(circular_conv(x, weight, bias, 3), along_w, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("check", [torch.autograd.gradcheck, torch.autograd.gradgradcheck],
                         ids=["gradcheck", "gradgradcheck"])
def test_gradcheck(dim, check):
    """First and second derivatives (gradient penalties need the second: not silently dropped)."""
    x = torch.randn(2, 3, 5, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    assert check(lambda *a: circular_conv(*a, dim=dim), (x, weight, bias))
    assert check(lambda a, b: circular_conv(a, b, None, dim), (x, weight))


def test_partial_gradients():
    """Only the gradients asked for are computed; the others stay None."""
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    weight = torch.randn(3, 4)
    bias = torch.randn(3, requires_grad=True)
    circular_conv(x, weight, bias).sum().backward()
    assert x.grad is not None and bias.grad is not None and weight.grad is None
    torch.testing.assert_close(bias.grad, torch.full((3,), 60.0))


@pytest.mark.parametrize("dim", [2, 3])
def test_opcheck(dim):
    x = torch.randn(2, 3, 5, 6, requires_grad=True)
    weight = torch.randn(3, 5, requires_grad=True)
    bias = torch.randn(3, requires_grad=True)
    torch.library.opcheck(torch.ops.facekernels.circular_conv.default, (x, weight, bias, dim))
    torch.library.opcheck(torch.ops.facekernels.circular_conv.default, (x, weight, None, dim))
    grad = torch.randn(2, 3, 5, 6)
    for mask in itertools.product([True, False], repeat=3):
        torch.library.opcheck(
            torch.ops.facekernels._circular_conv_backward.default,
            (grad, x.detach(), weight.detach(), dim, *mask),
        )
    # the backward op is differentiable too (double backward)
    torch.library.opcheck(
        torch.ops.facekernels._circular_conv_backward.default,
        (grad.requires_grad_(), x.detach().requires_grad_(), weight.detach().requires_grad_(), dim, True, True, True),
    )


def test_torch_compile_fullgraph():
    def block(x, w1, w2, b):
        return torch.relu(circular_conv(x, w1, b, 2)) + circular_conv(x, w2, None, 3)

    args = [torch.randn(2, 3, 8, 8, requires_grad=True), torch.randn(3, 8, requires_grad=True),
            torch.randn(3, 5, requires_grad=True), torch.randn(3, requires_grad=True)]
    assert_compiled_matches_eager(block, args)


def test_strided_inputs():
    base = torch.randn(2, 8, 13, 14, dtype=torch.float64)
    x = base[:, ::2, 1::1, ::2]            # channel- and width-strided view
    x_cl = torch.randn(2, 4, 12, 7, dtype=torch.float64).to(memory_format=torch.channels_last)
    weight_full = torch.randn(6, 4, dtype=torch.float64)
    weight = weight_full.t()               # [4, 6], non-contiguous
    bias = torch.randn(8, dtype=torch.float64)[::2]
    for xi in (x, x_cl):
        for dim in (2, 3):
            w = weight[:, : min(6, xi.shape[dim])]
            y = circular_conv(xi, w, bias, dim)
            assert y.is_contiguous()
            torch.testing.assert_close(y, reference(xi, w, bias, dim))
    x = x.clone().requires_grad_()
    g_out = torch.randn(2, 12, 4, 7, dtype=torch.float64).transpose(1, 2)  # strided upstream gradient
    circular_conv(x, weight, bias, 2).backward(g_out)
    x64 = x.detach().clone().requires_grad_()
    reference(x64, weight, bias, 2).backward(g_out)
    torch.testing.assert_close(x.grad, x64.grad)


@pytest.mark.parametrize("shape", [(0, 3, 5, 6), (2, 0, 5, 6)])
def test_empty(shape):
    c = shape[1]
    x = torch.randn(*shape, requires_grad=True)
    weight = torch.randn(c, 3, requires_grad=True)
    bias = torch.randn(c, requires_grad=True)
    y = circular_conv(x, weight, bias, 2)
    assert y.shape == shape
    y.sum().backward()
    assert x.grad.shape == shape
    torch.testing.assert_close(weight.grad, torch.zeros_like(weight))
    torch.testing.assert_close(bias.grad, torch.zeros_like(bias))


def test_cpu_capabilities_agree(tmp_path):
    """The SIMD levels compiled in give the same result (run in subprocesses with the level lowered)."""
    script = (
        "import torch, facekernels\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(3, 4, 19, 23); w = torch.randn(4, 11); b = torch.randn(4)\n"
        "g = torch.randn(3, 4, 19, 23)\n"
        "outs = []\n"
        "for d in (2, 3):\n"
        "    outs.append(facekernels.circular_conv(x, w, b, d))\n"
        "    outs.extend(torch.ops.facekernels._circular_conv_backward(g, x, w, d, True, True, True))\n"
        "torch.save((facekernels.build_info()['cpu_capability'], outs), sys.argv[1])\n"
    )
    results = run_at_each_cpu_capability("import sys\n" + script, tmp_path)
    base = results["default"][1]
    for level, (used, outs) in results.items():
        for a, b in zip(outs, base):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5, msg=f"{level} ({used}) differs from default")


def test_autocast_cpu_mixed_dtypes():
    """Under CPU autocast a bfloat16 activation meets a float32 weight: the op runs in float32."""
    x = torch.randn(2, 3, 6, 6).bfloat16()
    weight = torch.randn(3, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = circular_conv(x, weight, None, 2)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, reference(x.float(), weight, None, 2).float(), atol=1e-5, rtol=1e-5)


def test_build_info():
    info = facekernels.build_info()
    assert info["torch_target_version"] == "2.10"
    assert info["version"] == facekernels.__version__
    assert info["cpu_kernels"]["circular_conv"] in info["cpu_capabilities_compiled"] or \
        info["cpu_kernels"]["circular_conv"].upper() in info["cpu_capabilities_compiled"]
    assert info["num_threads"] == torch.get_num_threads()
    assert isinstance(info["cuda"], bool)
    assert isinstance(info["avx512_emulation"], bool)  # a testing build (docs/design.md)


# ---- bad inputs: each raises with the op, the argument, what was expected and what came -------------

def _args(**over):
    args = {"x": torch.randn(2, 3, 5, 6), "weight": torch.randn(3, 4), "bias": torch.randn(3), "dim": 2}
    args.update(over)
    return args


BAD = [
    ("L > size(dim)", _args(weight=torch.randn(3, 6)), r"weight must have 1 <= L <= x.size\(2\) = 5 taps, got L = 6"),
    ("L > size(W)", _args(weight=torch.randn(3, 7), dim=3), r"weight must have 1 <= L <= x.size\(3\) = 6 taps, got L = 7"),
    ("L = 0", _args(weight=torch.randn(3, 0)), r"weight must have 1 <= L .* got L = 0"),
    ("weight C", _args(weight=torch.randn(4, 4)), r"weight must have shape \[C, L\] with C = x.size\(1\) = 3, got \[4, 4\]"),
    ("weight rank", _args(weight=torch.randn(3, 1, 4)), r"weight must be a 2-D tensor \[C, L\], got a 3-D"),
    ("bias length", _args(bias=torch.randn(4)), r"bias must have shape \[3\] \(C of x\), got \[4\]"),
    ("bias rank", _args(bias=torch.randn(3, 1)), r"bias must have shape \[3\]"),
    ("x 3-D", _args(x=torch.randn(3, 5, 6)), r"x must be a 4-D tensor \[B, C, H, W\], got a 3-D tensor of shape \[3, 5, 6\]"),
    ("x 5-D", _args(x=torch.randn(1, 2, 3, 5, 6)), r"x must be a 4-D tensor"),
    ("integer x", _args(x=torch.ones(2, 3, 5, 6, dtype=torch.int64), weight=torch.ones(3, 4, dtype=torch.int64), bias=None),
     r"x must be float32 or float64 on CPU, got int64"),
    ("half on CPU", _args(x=torch.randn(2, 3, 5, 6).half(), weight=torch.randn(3, 4).half(), bias=None),
     r"x must be float32 or float64 on CPU, got float16"),
    ("mixed dtypes", _args(weight=torch.randn(3, 4, dtype=torch.float64)), r"weight must have the same dtype as x \(float32\), got float64"),
    ("mixed bias dtype", _args(bias=torch.randn(3, dtype=torch.float64)), r"bias must have the same dtype as x"),
    ("dim 1", _args(dim=1), r"dim must be one of 2, 3, -2, -1 \(H or W\), got 1"),
    ("dim 4", _args(dim=4), r"dim must be one of 2, 3, -2, -1"),
    ("dim -3", _args(dim=-3), r"dim must be one of 2, 3, -2, -1 \(H or W\), got -3"),
]


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_raise(name, args, match):
    with pytest.raises(RuntimeError, match=r"circular_conv: " + match):
        circular_conv(**args)


def test_bad_input_mixed_devices():
    """A CPU x with a weight elsewhere (meta here; CUDA in the CUDA tests) is refused, not computed."""
    with pytest.raises(RuntimeError, match=r"circular_conv: weight must be on the same device as x \(cpu\), got meta"):
        circular_conv(torch.randn(2, 3, 5, 6), torch.randn(3, 4, device="meta"))
    with pytest.raises(RuntimeError, match=r"circular_conv: bias must be on the same device as x \(cpu\), got meta"):
        circular_conv(torch.randn(2, 3, 5, 6), torch.randn(3, 4), torch.randn(3, device="meta"))


def test_backward_op_checks_grad_shape():
    x, w = torch.randn(2, 3, 5, 6), torch.randn(3, 4)
    with pytest.raises(RuntimeError, match=r"_circular_conv_backward: grad_out must have the shape of x \[2, 3, 5, 6\], got \[2, 3, 5, 5\]"):
        torch.ops.facekernels._circular_conv_backward(torch.randn(2, 3, 5, 5), x, w, 2, True, True, True)


@pytest.mark.parametrize("shape", [(2, 3, 11, 16, 5), (2, 3, 8, 24, 24), (1, 2, 5, 6, 3)], ids=str)
@pytest.mark.parametrize("dim", [2, 3])
def test_backward_masks_agree_with_full_backward(shape, dim):
    """Each gradient is the same whichever others are asked for (the kernels share work between them)."""
    b, c, h, w, taps = shape
    taps = min(taps, (h, w)[dim - 2])
    x, weight, grad = torch.randn(b, c, h, w), torch.randn(c, taps), torch.randn(b, c, h, w)
    full = torch.ops.facekernels._circular_conv_backward(grad, x, weight, dim, True, True, True)
    x64 = x.double().requires_grad_()
    w64 = weight.double().requires_grad_()
    b64 = torch.zeros(c, dtype=torch.float64, requires_grad=True)
    reference(x64, w64, b64, dim).backward(grad.double())
    for expected, got in zip((x64.grad, w64.grad, b64.grad), full):
        torch.testing.assert_close(got.double(), expected, atol=1e-4, rtol=1e-5)
    for mask in itertools.product([True, False], repeat=3):
        part = torch.ops.facekernels._circular_conv_backward(grad, x, weight, dim, *mask)
        for wanted, got, ref in zip(mask, part, full):
            if wanted:
                torch.testing.assert_close(got, ref, atol=0, rtol=0)
            else:
                assert got.numel() == 0


@pytest.mark.parametrize("dim", [2, 3])
def test_channel_and_batch_sliced_views(dim):
    """Views whose [H, W] planes are contiguous but whose B/C strides are not (torch.chunk halves, batch
    steps) are read in place; values and gradients as for contiguous copies."""
    base = torch.randn(4, 6, 9, 16, dtype=torch.float64)
    weight = torch.randn(3, 7, dtype=torch.float64)
    for view in (torch.chunk(base, 2, dim=1)[1], base[::2, ::2], base[1:3, 2:5]):
        x = view.clone().requires_grad_()       # contiguous copy, for the reference
        xv = view.detach().requires_grad_()     # the strided view itself
        g_base = torch.randn(view.shape[0], 2 * view.shape[1], 9, 16, dtype=torch.float64)
        g = g_base[:, ::2]                      # a strided upstream gradient too
        yv = circular_conv(xv, weight, None, dim)
        torch.testing.assert_close(yv, reference(x, weight, None, dim))
        yv.backward(g)
        reference(x, weight, None, dim).backward(g)
        torch.testing.assert_close(xv.grad, x.grad)


def test_gradient_penalty_matches_reference():
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 5, dtype=torch.float64, requires_grad=True)
    results = []
    for fn in (lambda a, w: circular_conv(a, w, None, 3), lambda a, w: reference(a, w, None, 3)):
        (g,) = torch.autograd.grad(fn(x, weight).pow(2).sum(), x, create_graph=True)
        penalty = g.pow(2).sum()
        results.append(torch.autograd.grad(penalty, (x, weight)))
    for ours, ref in zip(*results):
        torch.testing.assert_close(ours, ref)
