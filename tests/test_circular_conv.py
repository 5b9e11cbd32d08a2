"""circular_conv on every device: values and gradients against one float64 reference (float32/float64
on CPU, float32/float16/bfloat16 on CUDA), the torch.library contract, torch.compile, strides, odd and
empty shapes, every bad input the op must refuse, and the CUDA-only checks (streams, CUDA graphs,
deterministic reductions, CPU/CUDA agreement, the bad inputs the CUDA binding must refuse).

The CUDA kernels compute in float16/bfloat16/float32 only (float64 is refused), so gradcheck, which needs
float64, runs on CPU; on CUDA gradients are compared with the float64 reference's autograd instead.
"""

import itertools
import math

import facekernels
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    arguments,
    assert_compiled_matches_eager,
    assert_fake_refuses_like_native,
    assert_tracing_refuses_like_native,
    run_at_each_cpu_capability,
)
from devices import DEVICES, DTYPES, tolerance
from facekernels.ops import circular_conv

cuda_only = pytest.mark.cuda  # conftest skips these without a CUDA device
CUDA_DEVICE = "cuda"


def reference(x, weight, bias, dim):
    """float64 on the CPU, from the definition: y = bias + sum_t weight[:, t] * x rolled back by t along
    dim (torch.roll(x, -t)[i] = x[(i + t) mod n]). Differentiable (the reference gradients)."""
    axis = dim % 4
    x64, w64 = x.double().cpu(), weight.double().cpu()
    y = torch.zeros_like(x64)
    for t in range(weight.shape[1]):
        y = y + w64[:, t].view(1, -1, 1, 1) * torch.roll(x64, shifts=-t, dims=axis)
    if bias is not None:
        y = y + bias.double().cpu().view(1, -1, 1, 1)
    return y


# Tolerances of an output against the float64 reference: tests/devices.py's table, family
# "circular_conv" (its rows say why they differ from the defaults).


def assert_close_cuda(actual, expected, dtype, scale=1.0):
    """The CUDA rule: the table's atol times `scale`, its rtol as it is."""
    assert actual.dtype == dtype, (actual.dtype, dtype)
    assert actual.device.type == "cuda"
    tol = tolerance("cuda", dtype, "circular_conv", atol_scale=scale)
    torch.testing.assert_close(actual.cpu().double(), expected, **tol)


def _name(dtype):
    return str(dtype).removeprefix("torch.")


# ---- values and gradients on every device ----------------------------------------------------------------
# Each device keeps the shapes it was tested on: the CPU's reach its register tiles and ragged tails,
# CUDA's its tiles, tap passes and reduction splits.

CPU_SHAPES = [  # (B, C, H, W, L, dim)
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

CUDA_SHAPES = [  # (B, C, H, W, L, dim)
    (2, 3, 5, 7, 4, 2),
    (2, 3, 5, 7, 6, 3),
    (2, 3, 5, 7, 3, -2),
    (2, 3, 5, 7, 7, -1),
    (1, 1, 1, 1, 1, 2),  # size-1 everything
    (1, 1, 1, 1, 1, 3),
    (2, 2, 1, 9, 9, 3),  # H = 1 along W, L = W
    (2, 2, 9, 1, 9, 2),  # W = 1 along H, L = H
    (3, 2, 16, 16, 16, 2),  # MOL's FCC: L = H
    (3, 2, 16, 16, 16, -1),
    (1, 5, 8, 3, 1, 2),  # L = 1: a per-channel scale
    (2, 3, 5, 100, 1, 3),
    (2, 4, 33, 33, 17, 2),  # rows of 33 = 32 + 1 columns, odd sizes
    (2, 4, 33, 33, 33, 3),
    (1, 2, 70, 40, 70, 2),  # several tiles along H, two tap passes (L > 64), columns 32 + 8
    (1, 2, 3, 130, 130, -1),  # long rows, three tap passes
    (1, 3, 200, 3, 37, 2),
    (2, 700, 3, 5, 3, 3),  # many channels: one block per channel, no split of the sums
    (4, 8, 28, 28, 28, 2),  # a FCC-sized plane
    (4, 8, 28, 28, 28, 3),
]

CASES = [
    pytest.param("cpu", dtype, shape, id=f"cpu-{_name(dtype)}-{shape}")
    for dtype in DTYPES["cpu"] for shape in CPU_SHAPES
] + [
    pytest.param("cuda", dtype, shape, marks=cuda_only, id=f"cuda-{_name(dtype)}-{shape}")
    for dtype in DTYPES["cuda"] for shape in CUDA_SHAPES
]


def check_output(actual, expected, dtype, taps, reduced_terms=None):
    """An output (or, with reduced_terms, a weight/bias gradient summing that many terms) by the device's
    rule. CPU: the table's tolerance, both widened by max(1, terms / 64) for the reductions. CUDA: atol
    widened by sqrt(taps) for the convolutions and sqrt(terms) for the reductions."""
    if actual.device.type == "cpu":
        scale = max(1.0, reduced_terms / 64) if reduced_terms is not None else 1.0
        assert actual.dtype == dtype
        torch.testing.assert_close(actual.double(), expected, **tolerance("cpu", dtype, "circular_conv", scale))
    else:
        scale = math.sqrt(reduced_terms) if reduced_terms is not None else math.sqrt(taps)
        assert_close_cuda(actual, expected, dtype, scale=scale)


@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
@pytest.mark.parametrize("device,dtype,shape", CASES)
def test_forward_backward_match_reference(device, dtype, shape, with_bias):
    b, c, h, w, taps, dim = shape
    made = torch.float64 if device == "cpu" else torch.float32  # then rounded to dtype
    x = torch.randn(b, c, h, w, device=device, dtype=made).to(dtype).requires_grad_()
    weight = torch.randn(c, taps, device=device, dtype=made).to(dtype).requires_grad_()
    bias = torch.randn(c, device=device, dtype=made).to(dtype).requires_grad_() if with_bias else None
    y = circular_conv(x, weight, bias, dim)
    assert y.shape == x.shape and y.dtype == dtype and y.is_contiguous() and y.device == x.device

    x64 = x.detach().cpu().double().requires_grad_()
    w64 = weight.detach().cpu().double().requires_grad_()
    b64 = bias.detach().cpu().double().requires_grad_() if with_bias else None
    ref = reference(x64, w64, b64, dim)
    check_output(y, ref, dtype, taps)

    grad = torch.randn(ref.shape, dtype=torch.float64).to(dtype)
    y.backward(grad.to(device))
    ref.backward(grad.double())
    check_output(x.grad, x64.grad, dtype, taps)
    reduced = b * h * w  # grad_weight and grad_bias sum B*H*W terms
    check_output(weight.grad, w64.grad, dtype, taps, reduced_terms=reduced)
    if with_bias:
        check_output(bias.grad, b64.grad, dtype, taps, reduced_terms=reduced)


EMPTY_CASES = [pytest.param("cpu", torch.float32, shape, id=f"cpu-{shape}") for shape in [(0, 3, 5, 6), (2, 0, 5, 6)]] + [
    pytest.param("cuda", dtype, shape, marks=cuda_only, id=f"cuda-{_name(dtype)}-{shape}")
    for dtype in DTYPES["cuda"] for shape in [(0, 3, 5, 6), (2, 0, 5, 6), (2, 3, 5, 0)]
]


@pytest.mark.parametrize("device,dtype,shape", EMPTY_CASES)
def test_empty(device, dtype, shape):
    c = shape[1]
    x = torch.randn(*shape, device=device).to(dtype).requires_grad_()
    weight = torch.randn(c, 3, device=device).to(dtype).requires_grad_()
    bias = torch.randn(c, device=device).to(dtype).requires_grad_()
    y = circular_conv(x, weight, bias, 2)
    assert y.shape == shape and y.device == x.device and y.dtype == dtype
    y.sum().backward()
    assert x.grad.shape == shape
    torch.testing.assert_close(weight.grad, torch.zeros_like(weight), atol=0, rtol=0)
    torch.testing.assert_close(bias.grad, torch.zeros_like(bias), atol=0, rtol=0)
    out = torch.ops.facekernels._circular_conv_backward(
        torch.zeros_like(x), x.detach(), weight.detach(), 2, False, True, False
    )
    assert out[0].shape == (0,) and out[2].shape == (0,)
    torch.testing.assert_close(out[1], torch.zeros_like(weight), atol=0, rtol=0)


@pytest.mark.parametrize("device", DEVICES)
def test_partial_gradients(device):
    """Only the gradients asked for are computed; the others stay None."""
    x = torch.randn(2, 3, 5, 6, device=device, requires_grad=True)
    weight = torch.randn(3, 4, device=device)
    bias = torch.randn(3, device=device, requires_grad=True)
    circular_conv(x, weight, bias).sum().backward()
    assert x.grad is not None and bias.grad is not None and weight.grad is None
    torch.testing.assert_close(bias.grad, torch.full((3,), 60.0, device=device))


@pytest.mark.parametrize("dim", [2, 3])
@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device, dim):
    x = torch.randn(2, 3, 5, 6, device=device, requires_grad=True)
    weight = torch.randn(3, 5, device=device, requires_grad=True)
    bias = torch.randn(3, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.facekernels.circular_conv.default, (x, weight, bias, dim))
    torch.library.opcheck(torch.ops.facekernels.circular_conv.default, (x, weight, None, dim))
    grad = torch.randn(2, 3, 5, 6, device=device)
    for mask in itertools.product([True, False], repeat=3):
        torch.library.opcheck(
            torch.ops.facekernels._circular_conv_backward.default,
            (grad, x.detach(), weight.detach(), dim, *mask),
        )
    if device == "cpu":  # the backward op is differentiable too (double backward; checked on CPU)
        torch.library.opcheck(
            torch.ops.facekernels._circular_conv_backward.default,
            (grad.requires_grad_(), x.detach().requires_grad_(), weight.detach().requires_grad_(), dim,
             True, True, True),
        )


# ---- CPU --------------------------------------------------------------------------------------------------

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
    assert isinstance(info["sanitize"], bool)  # a testing build: ASan + UBSan (tools/ci/sanitize.sh)


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


# ---- the fake kernels refuse what the native ops refuse, with the same exception and message, so that
# tracing, compiling and exporting fail where the eager call does (issue 17) ----------------------------


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_fake_kernel_refuses_bad_inputs(name, args, match):
    assert_fake_refuses_like_native(circular_conv, **args)


BACKWARD_GOOD = {"grad_out": torch.randn(2, 3, 5, 6), "x": torch.randn(2, 3, 5, 6), "weight": torch.randn(3, 4),
                 "dim": 2, "need_x": True, "need_weight": True, "need_bias": True}
BACKWARD_BAD = {
    "grad_out shape": arguments(BACKWARD_GOOD, grad_out=torch.randn(2, 3, 5, 5)),
    "grad_out 3-D": arguments(BACKWARD_GOOD, grad_out=torch.randn(3, 5, 6)),
    "grad_out dtype": arguments(BACKWARD_GOOD, grad_out=torch.randn(2, 3, 5, 6, dtype=torch.float64)),
    "x 3-D": arguments(BACKWARD_GOOD, x=torch.randn(3, 5, 6)),
    "weight C": arguments(BACKWARD_GOOD, weight=torch.randn(4, 4)),
    "weight dtype": arguments(BACKWARD_GOOD, weight=torch.randn(3, 4, dtype=torch.float64)),
    "L > size(dim)": arguments(BACKWARD_GOOD, weight=torch.randn(3, 6)),
    "dim": arguments(BACKWARD_GOOD, dim=0),
}


@pytest.mark.parametrize("args", BACKWARD_BAD.values(), ids=BACKWARD_BAD.keys())
def test_backward_fake_kernel_refuses_bad_inputs(args):
    assert_fake_refuses_like_native(torch.ops.facekernels._circular_conv_backward.default, *args)


@pytest.mark.parametrize("name", ["L > size(dim)", "weight C", "mixed dtypes", "dim 1", "integer x"])
def test_compile_and_export_refuse_bad_inputs(name):
    args = next(b[1] for b in BAD if b[0] == name)
    args = (args["x"], args["weight"], args["bias"], args["dim"])
    assert_tracing_refuses_like_native(circular_conv, *args)


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


# ---- CUDA -------------------------------------------------------------------------------------------------


def make_inputs(shape, dtype, with_bias=True, requires_grad=False):
    b, c, h, w, taps, dim = shape
    x = torch.randn(b, c, h, w, device=CUDA_DEVICE).to(dtype).requires_grad_(requires_grad)
    weight = torch.randn(c, taps, device=CUDA_DEVICE).to(dtype).requires_grad_(requires_grad)
    bias = torch.randn(c, device=CUDA_DEVICE).to(dtype).requires_grad_(requires_grad) if with_bias else None
    return x, weight, bias, dim


@cuda_only
@pytest.mark.parametrize("dim", [2, 3])
def test_matches_cpu_kernel(dim):
    x, weight, bias, _ = make_inputs((3, 5, 19, 23, 11, dim), torch.float32)
    grad = torch.randn_like(x)
    y = circular_conv(x, weight, bias, dim)
    torch.testing.assert_close(
        y.cpu(), circular_conv(x.cpu(), weight.cpu(), bias.cpu(), dim), atol=1e-5, rtol=1e-5
    )
    got = torch.ops.facekernels._circular_conv_backward(grad, x, weight, dim, True, True, True)
    expected = torch.ops.facekernels._circular_conv_backward(
        grad.cpu(), x.cpu(), weight.cpu(), dim, True, True, True
    )
    for g, e in zip(got, expected):
        torch.testing.assert_close(g.cpu(), e, atol=1e-4, rtol=1e-5)


@cuda_only
@pytest.mark.parametrize("dim", [2, -1])
def test_backward_op_flags(dim):
    """Each gradient is computed only when asked for; the others come back as empty [0] tensors."""
    x, weight, _, _ = make_inputs((2, 3, 6, 7, 5, dim), torch.float32)
    grad = torch.randn_like(x)
    full = torch.ops.facekernels._circular_conv_backward(grad, x, weight, dim, True, True, True)
    for mask in itertools.product([True, False], repeat=3):
        out = torch.ops.facekernels._circular_conv_backward(grad, x, weight, dim, *mask)
        for asked, got, whole in zip(mask, out, full):
            assert got.device == x.device and got.dtype == x.dtype
            if asked:  # the same sums in the same order, whatever else is asked for
                assert got.shape == whole.shape
                torch.testing.assert_close(got, whole, atol=0, rtol=0)
            else:
                assert got.shape == (0,)


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES["cuda"], ids=str)
def test_reductions_are_deterministic(dtype):
    """grad_weight and grad_bias come from fixed-order reductions: equal bit for bit on every run."""
    x, weight, _, _ = make_inputs((8, 4, 56, 56, 56, 3), dtype)
    grad = torch.randn_like(x)
    first = torch.ops.facekernels._circular_conv_backward(grad, x, weight, 3, False, True, True)
    for _ in range(3):
        again = torch.ops.facekernels._circular_conv_backward(grad, x, weight, 3, False, True, True)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


@cuda_only
def test_strided_inputs_cuda():
    base = torch.randn(2, 8, 13, 14, device=CUDA_DEVICE)
    x = base[:, ::2, 1:, ::2]  # channel-, height- and width-strided view [2, 4, 12, 7]
    x_cl = torch.randn(2, 4, 12, 7, device=CUDA_DEVICE).to(memory_format=torch.channels_last)
    weight = torch.randn(6, 4, device=CUDA_DEVICE).t()  # [4, 6], non-contiguous
    bias = torch.randn(8, device=CUDA_DEVICE)[::2]
    for xi in (x, x_cl):
        assert not xi.is_contiguous()
        for dim in (2, 3):
            w = weight[:, : min(6, xi.shape[dim])]
            y = circular_conv(xi, w, bias, dim)
            assert y.is_contiguous()
            assert_close_cuda(y, reference(xi, w, bias, dim), torch.float32, scale=math.sqrt(w.shape[1]))

    xg = x.detach().clone().requires_grad_()  # contiguous copy, strided weight and upstream gradient
    wg = weight.detach().clone().t().contiguous().t().requires_grad_()
    g_out = torch.randn(2, 12, 4, 7, device=CUDA_DEVICE).transpose(1, 2)
    assert not g_out.is_contiguous() and not wg.is_contiguous()
    circular_conv(xg, wg, bias, 2).backward(g_out)
    x64 = xg.detach().cpu().double().requires_grad_()
    w64 = wg.detach().cpu().double().requires_grad_()
    reference(x64, w64, bias, 2).backward(g_out.cpu().double())
    assert_close_cuda(xg.grad, x64.grad, torch.float32, scale=math.sqrt(6))
    assert_close_cuda(wg.grad, w64.grad, torch.float32, scale=math.sqrt(2 * 12 * 7))


def _has_triton():
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    return has_triton()


@pytest.mark.parametrize(
    "backend",
    [
        "aot_eager",
        pytest.param("inductor", marks=pytest.mark.skipif(not _has_triton(), reason="needs triton")),
    ],
)
@cuda_only
def test_torch_compile_fullgraph_cuda(backend):
    def block(x, w1, w2, b):
        return torch.relu(circular_conv(x, w1, b, 2)) + circular_conv(x, w2, None, 3)

    args = [
        torch.randn(2, 3, 8, 8, device=CUDA_DEVICE, requires_grad=True),
        torch.randn(3, 8, device=CUDA_DEVICE, requires_grad=True),
        torch.randn(3, 5, device=CUDA_DEVICE, requires_grad=True),
        torch.randn(3, device=CUDA_DEVICE, requires_grad=True),
    ]
    assert_compiled_matches_eager(block, args, backend=backend)


@cuda_only
def test_runs_on_the_current_stream():
    x, weight, bias, dim = make_inputs((4, 8, 33, 40, 20, 2), torch.float32)
    grad = torch.randn_like(x)
    expected = [
        circular_conv(x, weight, bias, dim),
        *torch.ops.facekernels._circular_conv_backward(grad, x, weight, dim, True, True, True),
    ]
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = [
            circular_conv(x, weight, bias, dim),
            *torch.ops.facekernels._circular_conv_backward(grad, x, weight, dim, True, True, True),
        ]
    torch.cuda.current_stream().wait_stream(side)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=0, rtol=0)


@cuda_only
def test_cuda_graph_capture():
    """Capture fails if anything is launched outside the capturing (current) stream."""
    x, weight, bias, dim = make_inputs((2, 4, 30, 36, 30, 2), torch.float32)
    grad = torch.randn_like(x)

    def step():
        y = circular_conv(x, weight, bias, dim)
        return (y, *torch.ops.facekernels._circular_conv_backward(grad, x, weight, dim, True, True, True))

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        expected = step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = step()
    graph.replay()
    torch.cuda.synchronize()
    for g, e in zip(captured, expected):
        torch.testing.assert_close(g, e, atol=0, rtol=0)


@cuda_only
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    """Tensors on cuda:1 while cuda:0 is current: the binding switches device and stream."""
    x, weight, bias, dim = (
        t.to("cuda:1") if isinstance(t, torch.Tensor) else t
        for t in make_inputs((2, 3, 9, 10, 5, 3), torch.float32)
    )
    with torch.cuda.device(0):
        y = circular_conv(x, weight, bias, dim)
    assert y.device == x.device
    assert_close_cuda(y, reference(x, weight, bias, dim), torch.float32, scale=math.sqrt(5))


@cuda_only
def test_autocast_cuda():
    """Under CUDA autocast the op runs in the autocast dtype, whatever the inputs' float dtypes."""
    x = torch.randn(2, 3, 6, 6, device=CUDA_DEVICE)
    weight = torch.randn(3, 6, device=CUDA_DEVICE)
    bias = torch.randn(3, device=CUDA_DEVICE).half()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = circular_conv(x, weight, bias, 2)
    assert y.dtype == torch.bfloat16
    xb, wb, bb = x.bfloat16(), weight.bfloat16(), bias.bfloat16()
    assert_close_cuda(y, reference(xb, wb, bb, 2), torch.bfloat16, scale=math.sqrt(6))


# ---- bad inputs on CUDA ---------------------------------------------------------------------------------


@cuda_only
def test_float64_refused():
    x = torch.randn(2, 3, 5, 6, device=CUDA_DEVICE, dtype=torch.float64)
    weight = torch.randn(3, 4, device=CUDA_DEVICE, dtype=torch.float64)
    with pytest.raises(
        RuntimeError, match=r"circular_conv: x must be float16, bfloat16 or float32 on CUDA, got float64"
    ):
        circular_conv(x, weight)
    with pytest.raises(
        RuntimeError, match=r"_circular_conv_backward: x must be float16, bfloat16 or float32 on CUDA"
    ):
        torch.ops.facekernels._circular_conv_backward(torch.randn_like(x), x, weight, 2, True, True, True)


@cuda_only
def test_mixed_dtypes_refused():
    x = torch.randn(2, 3, 5, 6, device=CUDA_DEVICE).half()
    with pytest.raises(
        RuntimeError, match=r"circular_conv: weight must have the same dtype as x \(float16\), got float32"
    ):
        circular_conv(x, torch.randn(3, 4, device=CUDA_DEVICE))
    with pytest.raises(
        RuntimeError, match=r"circular_conv: bias must have the same dtype as x \(float16\), got bfloat16"
    ):
        circular_conv(x, torch.randn(3, 4, device=CUDA_DEVICE).half(), torch.randn(3, device=CUDA_DEVICE).bfloat16())


@cuda_only
def test_mixed_devices_refused():
    x_cuda, x_cpu = torch.randn(2, 3, 5, 6, device=CUDA_DEVICE), torch.randn(2, 3, 5, 6)
    w_cuda, w_cpu = torch.randn(3, 4, device=CUDA_DEVICE), torch.randn(3, 4)
    same_device = r"circular_conv(_backward)?: (weight|bias|grad_out) must be on the same device as x"
    with pytest.raises(RuntimeError, match=same_device + r" \(cuda:\d+\), got cpu"):
        circular_conv(x_cuda, w_cpu)
    with pytest.raises(RuntimeError, match=same_device + r" \(cpu\), got cuda:\d+"):
        circular_conv(x_cpu, w_cuda)
    with pytest.raises(RuntimeError, match=same_device + r" \(cuda:\d+\), got cpu"):
        circular_conv(x_cuda, w_cuda, torch.randn(3))
    with pytest.raises(RuntimeError, match=same_device):
        torch.ops.facekernels._circular_conv_backward(
            torch.randn(2, 3, 5, 6), x_cuda, w_cuda, 2, True, True, True
        )


@cuda_only
def test_shape_errors_on_cuda():
    x = torch.randn(2, 3, 5, 6, device=CUDA_DEVICE)
    with pytest.raises(
        RuntimeError, match=r"circular_conv: weight must have 1 <= L <= x.size\(2\) = 5 taps, got L = 6"
    ):
        circular_conv(x, torch.randn(3, 6, device=CUDA_DEVICE))
    with pytest.raises(
        RuntimeError, match=r"circular_conv: dim must be one of 2, 3, -2, -1 \(H or W\), got 1"
    ):
        circular_conv(x, torch.randn(3, 4, device=CUDA_DEVICE), None, 1)
    with pytest.raises(RuntimeError, match=r"_circular_conv_backward: grad_out must have the shape of x"):
        torch.ops.facekernels._circular_conv_backward(
            torch.randn(2, 3, 5, 5, device=CUDA_DEVICE), x, torch.randn(3, 4, device=CUDA_DEVICE), 2, True, True, True
        )
