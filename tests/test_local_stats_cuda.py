"""local_stat_transform and local_mean_var on CUDA: values and gradients in float32/float16/bfloat16 against
a float64 reference, the float32 accuracy on offset data, long rows (the kernels' global-scratch path),
tall planes, more planes than one grid holds, empty and strided inputs, CPU/CUDA agreement, the
torch.library contract, the backward ops called directly, streams and CUDA graphs, and the bad inputs
the CUDA binding must refuse.

The CUDA kernels compute in float16/bfloat16/float32 only (float64 is refused), so gradcheck, which needs
float64, cannot run here: gradients are compared with the float64 reference's autograd instead.
"""

import itertools

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_compiled_matches_eager
from facekernels import ops  # importing facekernels registers the ops

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEVICE = "cuda"
EPS = 1e-5


# ---- float64 reference ------------------------------------------------------------------------------


def window_mean(t, kernel_size):
    """Mean over the clipped kernel_size square around each pixel: average pooling over the zero-padded
    input that counts only the pixels inside the image. A window larger than the image covers it whole."""
    return F.avg_pool2d(t, kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=False)


def reference_mean_var(x, kernel_size):
    """float64 windowed mean and biased variance. The variance is computed from values centred by their
    plane's mean (a constant per plane does not change it), so the reference itself does not cancel."""
    x = x.double()
    mean = window_mean(x, kernel_size)
    centred = x - x.mean(dim=(2, 3), keepdim=True)
    centred_mean = window_mean(centred, kernel_size)
    return mean, window_mean(centred * centred, kernel_size) - centred_mean * centred_mean


def reference_transform(x, guide, kernel_size, eps):
    mean_x, var_x = reference_mean_var(x, kernel_size)
    mean_g, var_g = reference_mean_var(guide, kernel_size)
    return (x.double() - mean_x) / torch.sqrt(var_x + eps) * torch.sqrt(var_g + eps) + mean_g


# Inputs are rounded to the dtype before the float64 reference sees them, so what is left is the float32
# arithmetic and the final rounding to the dtype: rtol about one unit in the last place of the dtype, atol
# (times the largest reference value) for results that cancel to near zero.
TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-4},
    torch.float16: {"atol": 1e-3, "rtol": 2e-3},
    torch.bfloat16: {"atol": 8e-3, "rtol": 1.6e-2},
}
DTYPES = list(TOL)


def assert_close(actual, expected, dtype):
    assert actual.dtype == dtype, (actual.dtype, dtype)
    assert actual.device.type == "cuda"
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    tol = TOL[dtype]
    scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
    torch.testing.assert_close(
        actual.detach().cpu().double(), expected.detach(), atol=tol["atol"] * scale, rtol=tol["rtol"]
    )


SHAPES = [  # (B, C, H, W, kernel_size)
    (2, 3, 16, 16, 7),  # the default kernel
    (2, 3, 5, 7, 3),
    (1, 2, 9, 13, 1),  # kernel 1: each window is its pixel
    (1, 2, 12, 10, 9),  # the narrowest window summed through prefixes along W
    (2, 2, 6, 5, 31),  # kernel larger than the image: one window per plane
    (1, 2, 6, 5, 11),  # kernel = 2 H - 1: the window covers the image from every pixel
    (1, 1, 1, 17, 5),  # H = 1
    (1, 1, 17, 1, 5),  # W = 1
    (1, 1, 1, 1, 3),  # a single pixel
    (1, 3, 33, 65, 15),  # several 32-column segments
    (2, 2, 40, 37, 5),  # several bands of rows
    (1, 1, 300, 3, 41),  # bands of r + 1 rows
    (3, 2, 19, 23, 11),
]


def randn(shape, dtype, scale=1.0, offset=0.0):
    return (torch.randn(shape, dtype=torch.float64) * scale + offset).to(dtype).to(DEVICE)


# ---- values and gradients -----------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_local_stat_transform_matches_reference(shape, dtype):
    *size, k = shape
    x = randn(size, dtype).requires_grad_()
    guide = randn(size, dtype, scale=0.5, offset=2.0).requires_grad_()
    out = ops.local_stat_transform(x, guide, kernel_size=k, eps=EPS)
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous() and out.device == x.device

    x64 = x.detach().cpu().double().requires_grad_()
    g64 = guide.detach().cpu().double().requires_grad_()
    ref = reference_transform(x64, g64, k, EPS)
    assert_close(out, ref, dtype)

    grad = randn(size, dtype)
    gx, gg = torch.autograd.grad(out, (x, guide), grad)
    rx, rg = torch.autograd.grad(ref, (x64, g64), grad.cpu().double())
    assert_close(gx, rx, dtype)
    assert_close(gg, rg, dtype)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_local_mean_var_matches_reference(shape, dtype):
    *size, k = shape
    x = randn(size, dtype).requires_grad_()
    mean, var = ops.local_mean_var(x, kernel_size=k)
    for t in (mean, var):
        assert t.shape == x.shape and t.dtype == dtype and t.is_contiguous() and t.device == x.device

    x64 = x.detach().cpu().double().requires_grad_()
    ref_mean, ref_var = reference_mean_var(x64, k)
    assert_close(mean, ref_mean, dtype)
    assert_close(var, ref_var, dtype)
    assert (var >= 0).all()

    grad_mean, grad_var = randn(size, dtype), randn(size, dtype)
    (gx,) = torch.autograd.grad((mean, var), x, (grad_mean, grad_var))
    (rx,) = torch.autograd.grad(
        (ref_mean, ref_var), x64, (grad_mean.cpu().double(), grad_var.cpu().double()), retain_graph=True
    )
    assert_close(gx, rx, dtype)

    # Either incoming gradient absent, through the backward op itself.
    for gm, gv in ((grad_mean, None), (None, grad_var)):
        got = torch.ops.facekernels._local_mean_var_backward(gm, gv, x.detach(), k)
        outputs = [t for t, g in ((ref_mean, gm), (ref_var, gv)) if g is not None]
        grads = [g.cpu().double() for g in (gm, gv) if g is not None]
        (expected,) = torch.autograd.grad(outputs, x64, grads, retain_graph=True)
        assert_close(got, expected, dtype)


@pytest.mark.parametrize("kernel_size", [3, 7, 15])
def test_offset_data_float32_accuracy(kernel_size):
    """Data whose mean is 100x its standard deviation: float32 results within 1e-4 relative of float64 (the
    sums are shifted by a value near the data; E[x^2] - mu^2 on raw values would lose about 1e-3 here)."""
    x = randn((2, 3, 24, 40), torch.float32, scale=0.5, offset=50.0)
    guide = randn((2, 3, 24, 40), torch.float32, scale=2.0, offset=-200.0)
    mean, var = ops.local_mean_var(x, kernel_size)
    ref_mean, ref_var = reference_mean_var(x.cpu(), kernel_size)
    torch.testing.assert_close(mean.cpu().double(), ref_mean, rtol=1e-4, atol=0)
    torch.testing.assert_close(var.cpu().double(), ref_var, rtol=1e-4, atol=0)
    out = ops.local_stat_transform(x, guide, kernel_size, EPS)
    ref = reference_transform(x.cpu(), guide.cpu(), kernel_size, EPS)
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-4, atol=0)


def test_offset_data_long_rows():
    x = randn((1, 2, 4, 5000), torch.float32, scale=0.5, offset=50.0)
    for k in (7, 65):
        mean, var = ops.local_mean_var(x, k)
        ref_mean, ref_var = reference_mean_var(x.cpu(), k)
        torch.testing.assert_close(mean.cpu().double(), ref_mean, rtol=1e-4, atol=0)
        torch.testing.assert_close(var.cpu().double(), ref_var, rtol=1e-4, atol=0)


LONG_ROWS = [  # rows longer than the kernels' shared memory holds: per-block scratch in global memory
    (1, 2, 3, 5000, 7),
    (1, 1, 2, 6200, 65),
    (1, 1, 2, 6200, 7),
    (1, 700, 2, 6200, 5),  # more tasks than the capped grid: blocks loop over them
    # Long enough for the one-quantity sweeps of local_mean_var's backward. One row and three-pixel windows:
    # local_stat_transform's gradient is ill-conditioned there (a window's variance can be far below its
    # terms'), so only local_mean_var runs on it.
    (1, 1, 1, 12500, 3),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", LONG_ROWS, ids=str)
def test_long_rows(shape, dtype):
    *size, k = shape
    x = randn(size, dtype).requires_grad_()
    grad = randn(size, dtype)
    x64 = x.detach().cpu().double().requires_grad_()

    if size[2] > 1:
        guide = randn(size, dtype, scale=0.5, offset=2.0).requires_grad_()
        g64 = guide.detach().cpu().double().requires_grad_()
        out = ops.local_stat_transform(x, guide, k, EPS)
        ref = reference_transform(x64, g64, k, EPS)
        assert_close(out, ref, dtype)
        gx, gg = torch.autograd.grad(out, (x, guide), grad)
        rx, rg = torch.autograd.grad(ref, (x64, g64), grad.cpu().double())
        assert_close(gx, rx, dtype)
        assert_close(gg, rg, dtype)

    mean, var = ops.local_mean_var(x, k)
    ref_mean, ref_var = reference_mean_var(x64, k)
    assert_close(mean, ref_mean, dtype)
    assert_close(var, ref_var, dtype)
    for gm, gv in ((grad, grad), (grad, None), (None, grad)):
        got = torch.ops.facekernels._local_mean_var_backward(gm, gv, x.detach(), k)
        outputs = [t for t, g in ((ref_mean, gm), (ref_var, gv)) if g is not None]
        grads = [g.cpu().double() for g in (gm, gv) if g is not None]
        (expected,) = torch.autograd.grad(outputs, x64, grads, retain_graph=True)
        assert_close(got, expected, dtype)


def test_more_planes_than_one_grid():
    """2^20 + planes of two pixels: more tasks than the launch grid, which then loops over them."""
    x = randn((1, (1 << 20) + 3, 1, 2), torch.float32)
    guide = randn((1, (1 << 20) + 3, 1, 2), torch.float32)
    mean, var = ops.local_mean_var(x, 3)
    ref_mean, ref_var = reference_mean_var(x.cpu(), 3)
    assert_close(mean, ref_mean, torch.float32)
    assert_close(var, ref_var, torch.float32)
    out = ops.local_stat_transform(x, guide, 3, 1e-2)
    assert_close(out, reference_transform(x.cpu(), guide.cpu(), 3, 1e-2), torch.float32)


# ---- layouts, shapes, flags ------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", [(0, 3, 5, 6), (2, 0, 5, 6), (2, 3, 0, 6), (2, 3, 5, 0)], ids=str)
def test_empty(shape, dtype):
    x = torch.randn(shape, device=DEVICE).to(dtype).requires_grad_()
    guide = torch.randn(shape, device=DEVICE).to(dtype).requires_grad_()
    out = ops.local_stat_transform(x, guide)
    assert out.shape == shape and out.dtype == dtype and out.device == x.device
    gx, gg = torch.autograd.grad(out.sum(), (x, guide))
    assert gx.shape == shape and gg.shape == shape
    mean, var = ops.local_mean_var(x)
    assert mean.shape == shape and var.shape == shape
    (gx,) = torch.autograd.grad(mean.sum() + var.sum(), x)
    assert gx.shape == shape
    grads = torch.ops.facekernels._local_stat_transform_backward(
        torch.zeros_like(x), x.detach(), guide.detach(), 7, EPS, True, False
    )
    assert grads[0].shape == shape and grads[1].shape == (0,)
    assert torch.ops.facekernels._local_mean_var_backward(None, None, x.detach(), 7).shape == shape


def test_strided_inputs():
    base = torch.randn(2, 8, 13, 14, device=DEVICE)
    x = base[:, ::2, 1:, ::2]  # channel-, height- and width-strided view [2, 4, 12, 7]
    guide = torch.randn(2, 4, 7, 12, device=DEVICE).transpose(2, 3)
    x_cl = torch.randn(2, 4, 12, 7, device=DEVICE).to(memory_format=torch.channels_last)
    for xi in (x, x_cl):
        assert not xi.is_contiguous() and not guide.is_contiguous()
        out = ops.local_stat_transform(xi, guide, 5, EPS)
        assert out.is_contiguous()
        assert_close(out, reference_transform(xi.cpu(), guide.cpu(), 5, EPS), torch.float32)
        mean, var = ops.local_mean_var(xi, 5)
        ref_mean, ref_var = reference_mean_var(xi.cpu(), 5)
        assert_close(mean, ref_mean, torch.float32)
        assert_close(var, ref_var, torch.float32)

    # Non-contiguous upstream gradients (an expanded one, as sum() gives, and a transposed one).
    xg = x.detach().clone().requires_grad_()
    gg = guide.detach().clone().requires_grad_()
    x64 = xg.detach().cpu().double().requires_grad_()
    g64 = gg.detach().cpu().double().requires_grad_()
    ref = reference_transform(x64, g64, 5, EPS)
    for grad in (
        torch.ones(1, device=DEVICE).expand(2, 4, 12, 7),
        torch.randn(2, 4, 7, 12, device=DEVICE).mT,
    ):
        assert not grad.is_contiguous()
        got = torch.autograd.grad(ops.local_stat_transform(xg, gg, 5, EPS), (xg, gg), grad)
        expected = torch.autograd.grad(ref, (x64, g64), grad.cpu().double(), retain_graph=True)
        for a, e in zip(got, expected):
            assert_close(a, e, torch.float32)
        mean_grad = torch.ops.facekernels._local_mean_var_backward(grad, grad, xg.detach(), 5)
        ref_mean, ref_var = reference_mean_var(x64, 5)
        (expected,) = torch.autograd.grad((ref_mean, ref_var), x64, (grad.cpu().double(),) * 2)
        assert_close(mean_grad, expected, torch.float32)


@pytest.mark.parametrize("kernel_size", [1, 3, 7, 11, 41])
def test_matches_cpu_kernel(kernel_size):
    x = torch.randn(3, 5, 19, 23, device=DEVICE)
    guide = torch.randn(3, 5, 19, 23, device=DEVICE) * 0.5 + 1
    grad = torch.randn_like(x)
    tol = {"atol": 2e-5, "rtol": 1e-4}
    torch.testing.assert_close(
        ops.local_stat_transform(x, guide, kernel_size).cpu(),
        ops.local_stat_transform(x.cpu(), guide.cpu(), kernel_size),
        **tol,
    )
    for a, e in zip(ops.local_mean_var(x, kernel_size), ops.local_mean_var(x.cpu(), kernel_size)):
        torch.testing.assert_close(a.cpu(), e, **tol)
    got = torch.ops.facekernels._local_stat_transform_backward(grad, x, guide, kernel_size, EPS, True, True)
    expected = torch.ops.facekernels._local_stat_transform_backward(
        grad.cpu(), x.cpu(), guide.cpu(), kernel_size, EPS, True, True
    )
    for a, e in zip(got, expected):
        torch.testing.assert_close(a.cpu(), e, atol=1e-4, rtol=1e-4)
    for gm, gv in ((grad, grad), (grad, None), (None, grad)):
        got = torch.ops.facekernels._local_mean_var_backward(gm, gv, x, kernel_size)
        expected = torch.ops.facekernels._local_mean_var_backward(
            None if gm is None else gm.cpu(), None if gv is None else gv.cpu(), x.cpu(), kernel_size
        )
        torch.testing.assert_close(got.cpu(), expected, atol=1e-4, rtol=1e-4)


def test_backward_op_flags():
    """Each gradient is computed only when asked for; the other comes back as an empty [0] tensor."""
    x = torch.randn(2, 3, 9, 11, device=DEVICE)
    guide = torch.randn(2, 3, 9, 11, device=DEVICE)
    grad = torch.randn_like(x)
    full = torch.ops.facekernels._local_stat_transform_backward(grad, x, guide, 5, EPS, True, True)
    for mask in itertools.product([True, False], repeat=2):
        out = torch.ops.facekernels._local_stat_transform_backward(grad, x, guide, 5, EPS, *mask)
        assert len(out) == 2
        for asked, got, whole in zip(mask, out, full):
            assert got.device == x.device and got.dtype == x.dtype
            if asked:
                assert got.shape == x.shape
                torch.testing.assert_close(got, whole, atol=1e-6, rtol=1e-6)
            else:
                assert got.shape == (0,)


def test_mean_var_backward_without_gradients_is_zero():
    x = torch.randn(2, 3, 6, 7, device=DEVICE).half()
    got = torch.ops.facekernels._local_mean_var_backward(None, None, x, 5)
    assert got.shape == x.shape and got.dtype == x.dtype and got.device == x.device
    torch.testing.assert_close(got, torch.zeros_like(x), atol=0, rtol=0)


def test_partial_gradients():
    x = torch.randn(2, 3, 8, 9, device=DEVICE, requires_grad=True)
    guide = torch.randn(2, 3, 8, 9, device=DEVICE)
    ops.local_stat_transform(x, guide).sum().backward()
    assert x.grad is not None and guide.grad is None
    x.grad = None
    mean, _ = ops.local_mean_var(x, 3)
    mean.sum().backward()  # only the mean is used: grad_x = box(1 / n), summing to H * W per plane
    torch.testing.assert_close(x.grad.sum(dim=(2, 3)), torch.full((2, 3), 72.0, device=DEVICE))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_deterministic(dtype):
    """No atomics: every run gives the same bits."""
    x = torch.randn(4, 8, 70, 90, device=DEVICE).to(dtype)
    guide = torch.randn(4, 8, 70, 90, device=DEVICE).to(dtype)
    grad = torch.randn_like(x)

    def run():
        return (
            ops.local_stat_transform(x, guide, 9),
            *torch.ops.facekernels._local_stat_transform_backward(grad, x, guide, 9, EPS, True, True),
            *ops.local_mean_var(x, 9),
            torch.ops.facekernels._local_mean_var_backward(grad, grad, x, 9),
        )

    first = run()
    for _ in range(2):
        for a, b in zip(first, run()):
            assert torch.equal(a, b)


# ---- the torch.library contract ---------------------------------------------------------------------------


@pytest.mark.parametrize("kernel_size", [3, 7])
def test_opcheck(kernel_size):
    x = torch.randn(2, 3, 6, 7, device=DEVICE, requires_grad=True)
    guide = torch.randn(2, 3, 6, 7, device=DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.facekernels.local_stat_transform.default, (x, guide, kernel_size, EPS))
    torch.library.opcheck(torch.ops.facekernels.local_mean_var.default, (x, kernel_size))
    grad = torch.randn(2, 3, 6, 7, device=DEVICE)
    for mask in itertools.product([True, False], repeat=2):
        torch.library.opcheck(
            torch.ops.facekernels._local_stat_transform_backward.default,
            (grad, x.detach(), guide.detach(), kernel_size, EPS, *mask),
        )
    for gm, gv in ((grad, grad), (grad, None), (None, grad), (None, None)):
        torch.library.opcheck(
            torch.ops.facekernels._local_mean_var_backward.default, (gm, gv, x.detach(), kernel_size)
        )


def test_torch_compile_fullgraph():
    def block(x, guide):
        mean, var = ops.local_mean_var(x, 5)
        return ops.local_stat_transform(x, guide, 7) + mean * var

    args = [torch.randn(2, 3, 10, 12, device=DEVICE, requires_grad=True) for _ in range(2)]
    assert_compiled_matches_eager(block, args, backend="aot_eager")


# ---- streams, graphs, devices -----------------------------------------------------------------------------


def _all_outputs(x, guide, grad):
    return (
        ops.local_stat_transform(x, guide, 7),
        *torch.ops.facekernels._local_stat_transform_backward(grad, x, guide, 7, EPS, True, True),
        *ops.local_mean_var(x, 65),  # prefixes along W
        torch.ops.facekernels._local_mean_var_backward(grad, grad, x, 7),
        torch.ops.facekernels._local_mean_var_backward(grad, None, x, 7),
    )


@pytest.mark.parametrize("width", [90, 5000], ids=["shared", "long_rows"])
def test_runs_on_the_current_stream(width):
    x = torch.randn(2, 4, 33, width, device=DEVICE)
    guide = torch.randn_like(x)
    grad = torch.randn_like(x)
    expected = _all_outputs(x, guide, grad)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        got = _all_outputs(x, guide, grad)
    torch.cuda.current_stream().wait_stream(side)
    for g, e in zip(got, expected):
        torch.testing.assert_close(g, e, atol=0, rtol=0)


def test_cuda_graph_capture():
    """Capture fails if anything is launched outside the capturing (current) stream; the workspace comes
    from torch's allocator, which serves captures from the graph's pool."""
    x = torch.randn(2, 4, 30, 5000, device=DEVICE)  # long rows: the workspace carries per-block scratch
    guide = torch.randn_like(x)
    grad = torch.randn_like(x)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        expected = _all_outputs(x, guide, grad)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = _all_outputs(x, guide, grad)
    graph.replay()
    torch.cuda.synchronize()
    for g, e in zip(captured, expected):
        torch.testing.assert_close(g, e, atol=0, rtol=0)


@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    """Tensors on cuda:1 while cuda:0 is current: the binding switches device and stream."""
    x = torch.randn(2, 3, 9, 10, device="cuda:1")
    guide = torch.randn(2, 3, 9, 10, device="cuda:1")
    with torch.cuda.device(0):
        out = ops.local_stat_transform(x, guide, 5)
        mean, var = ops.local_mean_var(x, 5)
    assert out.device == x.device and mean.device == x.device
    assert_close(out, reference_transform(x.cpu(), guide.cpu(), 5, EPS), torch.float32)
    ref_mean, ref_var = reference_mean_var(x.cpu(), 5)
    assert_close(mean, ref_mean, torch.float32)
    assert_close(var, ref_var, torch.float32)


def test_autocast_cuda():
    x = torch.randn(2, 3, 8, 8, device=DEVICE)
    guide = torch.randn(2, 3, 8, 8, device=DEVICE).half()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = ops.local_stat_transform(x, guide, 3)
        mean, var = ops.local_mean_var(x, 3)
    assert out.dtype == torch.bfloat16 and mean.dtype == torch.bfloat16 and var.dtype == torch.bfloat16
    xb, gb = x.bfloat16(), guide.bfloat16()
    assert_close(out, reference_transform(xb.cpu(), gb.cpu(), 3, EPS), torch.bfloat16)


# ---- bad inputs on CUDA ---------------------------------------------------------------------------------


def test_float64_refused():
    x = torch.randn(2, 3, 5, 6, device=DEVICE, dtype=torch.float64)
    bad = r"x must be float16, bfloat16 or float32 on CUDA, got float64"
    with pytest.raises(RuntimeError, match=r"local_stat_transform: " + bad):
        ops.local_stat_transform(x, x)
    with pytest.raises(RuntimeError, match=r"local_mean_var: " + bad):
        ops.local_mean_var(x)
    with pytest.raises(RuntimeError, match=r"_local_stat_transform_backward: " + bad):
        torch.ops.facekernels._local_stat_transform_backward(x, x, x, 7, EPS, True, True)
    with pytest.raises(RuntimeError, match=r"_local_mean_var_backward: " + bad):
        torch.ops.facekernels._local_mean_var_backward(x, None, x, 7)


def test_mixed_dtypes_and_devices_refused():
    x = torch.randn(2, 3, 5, 6, device=DEVICE)
    with pytest.raises(
        RuntimeError,
        match=r"local_stat_transform: guide must have the same dtype as x \(float32\), got float16",
    ):
        ops.local_stat_transform(x, x.half())
    with pytest.raises(
        RuntimeError,
        match=r"local_stat_transform: guide must be on the same device as x \(cuda:\d+\), got cpu",
    ):
        ops.local_stat_transform(x, x.cpu())
    with pytest.raises(
        RuntimeError, match=r"_local_mean_var_backward: grad_var must be on the same device as x"
    ):
        torch.ops.facekernels._local_mean_var_backward(None, x.cpu(), x, 7)
    with pytest.raises(
        RuntimeError, match=r"_local_stat_transform_backward: grad_out must have the shape of x"
    ):
        torch.ops.facekernels._local_stat_transform_backward(x[:, :, :4], x, x, 7, EPS, True, True)


def test_bad_arguments_on_cuda():
    x = torch.randn(2, 3, 5, 6, device=DEVICE)
    with pytest.raises(
        RuntimeError, match=r"local_stat_transform: kernel_size must be an odd integer >= 1, got 4"
    ):
        ops.local_stat_transform(x, x, 4)
    with pytest.raises(RuntimeError, match=r"local_mean_var: kernel_size must be an odd integer >= 1, got 0"):
        ops.local_mean_var(x, 0)
    with pytest.raises(RuntimeError, match=r"local_stat_transform: eps must be a finite number >= 0"):
        ops.local_stat_transform(x, x, 3, -1.0)
    with pytest.raises(RuntimeError, match=r"local_stat_transform: guide must have the same shape as x"):
        ops.local_stat_transform(x, x[..., :5])
