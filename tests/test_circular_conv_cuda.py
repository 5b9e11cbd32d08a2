"""circular_conv on CUDA: values and gradients in float32/float16/bfloat16 against a float64 reference,
the torch.library contract, torch.compile, strides, odd and empty shapes, streams and CUDA graphs,
deterministic reductions, and the bad inputs the CUDA binding must refuse.

The CUDA kernels compute in float16/bfloat16/float32 only (float64 is refused), so gradcheck, which needs
float64, cannot run here: gradients are compared with the float64 reference's autograd instead.
"""

import itertools
import math

import pytest
import torch
from conftest import assert_compiled_matches_eager
from facekernels.ops import circular_conv  # importing facekernels registers the ops

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEVICE = "cuda"


def reference(x, weight, bias, dim):
    """float64 on the CPU, from the definition: y = bias + sum_t weight[:, t] * x rolled back by t along dim
    (torch.roll(x, -t)[i] = x[(i + t) mod n])."""
    axis = dim % 4
    x64, w64 = x.double().cpu(), weight.double().cpu()
    y = torch.zeros_like(x64)
    for t in range(weight.shape[1]):
        y = y + w64[:, t].view(1, -1, 1, 1) * torch.roll(x64, shifts=-t, dims=axis)
    if bias is not None:
        y = y + bias.double().cpu().view(1, -1, 1, 1)
    return y


# Inputs are rounded to the dtype before the float64 reference sees them, so the error left is the
# float32 accumulation and the final rounding to the dtype: rtol about one unit in the last place of the
# dtype, atol for results that cancel to near zero, scaled by the size of the sum's terms.
TOL = {
    torch.float32: {"atol": 2e-6, "rtol": 1e-5},
    torch.float16: {"atol": 1e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 8e-3, "rtol": 1.6e-2},
}
DTYPES = list(TOL)


def assert_close(actual, expected, dtype, scale=1.0):
    assert actual.dtype == dtype, (actual.dtype, dtype)
    assert actual.device.type == "cuda"
    tol = TOL[dtype]
    torch.testing.assert_close(actual.cpu().double(), expected, atol=tol["atol"] * scale, rtol=tol["rtol"])


SHAPES = [  # (B, C, H, W, L, dim)
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


def make_inputs(shape, dtype, with_bias=True, requires_grad=False):
    b, c, h, w, taps, dim = shape
    x = torch.randn(b, c, h, w, device=DEVICE).to(dtype).requires_grad_(requires_grad)
    weight = torch.randn(c, taps, device=DEVICE).to(dtype).requires_grad_(requires_grad)
    bias = torch.randn(c, device=DEVICE).to(dtype).requires_grad_(requires_grad) if with_bias else None
    return x, weight, bias, dim


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no_bias"])
def test_forward_backward_match_reference(shape, dtype, with_bias):
    b, _, h, w, taps, _ = shape
    x, weight, bias, dim = make_inputs(shape, dtype, with_bias, requires_grad=True)
    y = circular_conv(x, weight, bias, dim)
    assert y.shape == x.shape and y.dtype == dtype and y.is_contiguous() and y.device == x.device

    x64 = x.detach().cpu().double().requires_grad_()
    w64 = weight.detach().cpu().double().requires_grad_()
    b64 = bias.detach().cpu().double().requires_grad_() if with_bias else None
    ref = reference(x64, w64, b64, dim)
    assert_close(y, ref, dtype, scale=math.sqrt(taps))

    grad = torch.randn(ref.shape, dtype=torch.float64).to(dtype)
    y.backward(grad.to(DEVICE))
    ref.backward(grad.double())
    assert_close(x.grad, x64.grad, dtype, scale=math.sqrt(taps))
    reduced = math.sqrt(b * h * w)  # grad_weight and grad_bias sum B*H*W terms
    assert_close(weight.grad, w64.grad, dtype, scale=reduced)
    if with_bias:
        assert_close(bias.grad, b64.grad, dtype, scale=reduced)


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


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_reductions_are_deterministic(dtype):
    """grad_weight and grad_bias come from fixed-order reductions: equal bit for bit on every run."""
    x, weight, _, _ = make_inputs((8, 4, 56, 56, 56, 3), dtype)
    grad = torch.randn_like(x)
    first = torch.ops.facekernels._circular_conv_backward(grad, x, weight, 3, False, True, True)
    for _ in range(3):
        again = torch.ops.facekernels._circular_conv_backward(grad, x, weight, 3, False, True, True)
        for a, b in zip(first, again):
            assert torch.equal(a, b)


def test_strided_inputs():
    base = torch.randn(2, 8, 13, 14, device=DEVICE)
    x = base[:, ::2, 1:, ::2]  # channel-, height- and width-strided view [2, 4, 12, 7]
    x_cl = torch.randn(2, 4, 12, 7, device=DEVICE).to(memory_format=torch.channels_last)
    weight = torch.randn(6, 4, device=DEVICE).t()  # [4, 6], non-contiguous
    bias = torch.randn(8, device=DEVICE)[::2]
    for xi in (x, x_cl):
        assert not xi.is_contiguous()
        for dim in (2, 3):
            w = weight[:, : min(6, xi.shape[dim])]
            y = circular_conv(xi, w, bias, dim)
            assert y.is_contiguous()
            assert_close(y, reference(xi, w, bias, dim), torch.float32, scale=math.sqrt(w.shape[1]))

    xg = x.detach().clone().requires_grad_()  # contiguous copy, strided weight and upstream gradient
    wg = weight.detach().clone().t().contiguous().t().requires_grad_()
    g_out = torch.randn(2, 12, 4, 7, device=DEVICE).transpose(1, 2)
    assert not g_out.is_contiguous() and not wg.is_contiguous()
    circular_conv(xg, wg, bias, 2).backward(g_out)
    x64 = xg.detach().cpu().double().requires_grad_()
    w64 = wg.detach().cpu().double().requires_grad_()
    reference(x64, w64, bias, 2).backward(g_out.cpu().double())
    assert_close(xg.grad, x64.grad, torch.float32, scale=math.sqrt(6))
    assert_close(wg.grad, w64.grad, torch.float32, scale=math.sqrt(2 * 12 * 7))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(0, 3, 5, 6), (2, 0, 5, 6), (2, 3, 5, 0)], ids=str)
def test_empty(shape, dtype):
    c = shape[1]
    x = torch.randn(*shape, device=DEVICE).to(dtype).requires_grad_()
    weight = torch.randn(c, 3, device=DEVICE).to(dtype).requires_grad_()
    bias = torch.randn(c, device=DEVICE).to(dtype).requires_grad_()
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


def test_partial_gradients():
    x = torch.randn(2, 3, 5, 6, device=DEVICE, requires_grad=True)
    weight = torch.randn(3, 4, device=DEVICE)
    bias = torch.randn(3, device=DEVICE, requires_grad=True)
    circular_conv(x, weight, bias).sum().backward()
    assert x.grad is not None and bias.grad is not None and weight.grad is None
    torch.testing.assert_close(bias.grad, torch.full((3,), 60.0, device=DEVICE))


@pytest.mark.parametrize("dim", [2, 3])
def test_opcheck(dim):
    x = torch.randn(2, 3, 5, 6, device=DEVICE, requires_grad=True)
    weight = torch.randn(3, 5, device=DEVICE, requires_grad=True)
    bias = torch.randn(3, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.facekernels.circular_conv.default, (x, weight, bias, dim))
    torch.library.opcheck(torch.ops.facekernels.circular_conv.default, (x, weight, None, dim))
    grad = torch.randn(2, 3, 5, 6, device=DEVICE)
    for mask in itertools.product([True, False], repeat=3):
        torch.library.opcheck(
            torch.ops.facekernels._circular_conv_backward.default,
            (grad, x.detach(), weight.detach(), dim, *mask),
        )


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
def test_torch_compile_fullgraph(backend):
    def block(x, w1, w2, b):
        return torch.relu(circular_conv(x, w1, b, 2)) + circular_conv(x, w2, None, 3)

    args = [
        torch.randn(2, 3, 8, 8, device=DEVICE, requires_grad=True),
        torch.randn(3, 8, device=DEVICE, requires_grad=True),
        torch.randn(3, 5, device=DEVICE, requires_grad=True),
        torch.randn(3, device=DEVICE, requires_grad=True),
    ]
    assert_compiled_matches_eager(block, args, backend=backend)


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
    assert_close(y, reference(x, weight, bias, dim), torch.float32, scale=math.sqrt(5))


def test_autocast_cuda():
    """Under CUDA autocast the op runs in the autocast dtype, whatever the inputs' float dtypes."""
    x = torch.randn(2, 3, 6, 6, device=DEVICE)
    weight = torch.randn(3, 6, device=DEVICE)
    bias = torch.randn(3, device=DEVICE).half()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        y = circular_conv(x, weight, bias, 2)
    assert y.dtype == torch.bfloat16
    xb, wb, bb = x.bfloat16(), weight.bfloat16(), bias.bfloat16()
    assert_close(y, reference(xb, wb, bb, 2), torch.bfloat16, scale=math.sqrt(6))


# ---- bad inputs on CUDA ---------------------------------------------------------------------------------


def test_float64_refused():
    x = torch.randn(2, 3, 5, 6, device=DEVICE, dtype=torch.float64)
    weight = torch.randn(3, 4, device=DEVICE, dtype=torch.float64)
    with pytest.raises(
        RuntimeError, match=r"circular_conv: x must be float16, bfloat16 or float32 on CUDA, got float64"
    ):
        circular_conv(x, weight)
    with pytest.raises(
        RuntimeError, match=r"_circular_conv_backward: x must be float16, bfloat16 or float32 on CUDA"
    ):
        torch.ops.facekernels._circular_conv_backward(torch.randn_like(x), x, weight, 2, True, True, True)


def test_mixed_dtypes_refused():
    x = torch.randn(2, 3, 5, 6, device=DEVICE).half()
    with pytest.raises(
        RuntimeError, match=r"circular_conv: weight must have the same dtype as x \(float16\), got float32"
    ):
        circular_conv(x, torch.randn(3, 4, device=DEVICE))
    with pytest.raises(
        RuntimeError, match=r"circular_conv: bias must have the same dtype as x \(float16\), got bfloat16"
    ):
        circular_conv(x, torch.randn(3, 4, device=DEVICE).half(), torch.randn(3, device=DEVICE).bfloat16())


def test_mixed_devices_refused():
    x_cuda, x_cpu = torch.randn(2, 3, 5, 6, device=DEVICE), torch.randn(2, 3, 5, 6)
    w_cuda, w_cpu = torch.randn(3, 4, device=DEVICE), torch.randn(3, 4)
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


def test_shape_errors_on_cuda():
    x = torch.randn(2, 3, 5, 6, device=DEVICE)
    with pytest.raises(
        RuntimeError, match=r"circular_conv: weight must have 1 <= L <= x.size\(2\) = 5 taps, got L = 6"
    ):
        circular_conv(x, torch.randn(3, 6, device=DEVICE))
    with pytest.raises(
        RuntimeError, match=r"circular_conv: dim must be one of 2, 3, -2, -1 \(H or W\), got 1"
    ):
        circular_conv(x, torch.randn(3, 4, device=DEVICE), None, 1)
    with pytest.raises(RuntimeError, match=r"_circular_conv_backward: grad_out must have the shape of x"):
        torch.ops.facekernels._circular_conv_backward(
            torch.randn(2, 3, 5, 5, device=DEVICE), x, torch.randn(3, 4, device=DEVICE), 2, True, True, True
        )
