"""local_stat_transform and local_mean_var on every device: values and gradients against one float64
reference (float32/float64 on CPU, float32/float16/bfloat16 on CUDA), accuracy on offset data, long rows,
the torch.library contract, torch.compile, strides, odd, size-1 and empty shapes, every bad input, the
LocalSFFT / dafe_alignment_loss modules, and the CUDA-only checks (streams, CUDA graphs, the global-scratch
path, CPU/CUDA agreement, the bad inputs the CUDA binding must refuse).

The CUDA kernels compute in float16/bfloat16/float32 only (float64 is refused), so gradcheck, which needs
float64, runs on CPU; on CUDA gradients are compared with the float64 reference's autograd instead.
"""

import itertools

import facekernels
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    assert_compiled_matches_eager,
    assert_fake_refuses_like_native,
    assert_tracing_refuses_like_native,
    run_at_each_cpu_capability,
)
from devices import DTYPES, tolerance
from facekernels import ops
from facekernels.nn import LocalSFFT, dafe_alignment_loss
from facekernels.ops import local_mean_var, local_stat_transform

cuda_only = pytest.mark.cuda  # conftest skips these without a CUDA device
CUDA_DEVICE = "cuda"
EPS = 1e-5


# ---- the float64 reference -----------------------------------------------------------------------------


def window_mean(t, kernel_size):
    """Mean over the clipped kernel_size square around each pixel: average pooling over the zero-padded
    input that counts only the pixels inside the image. A window larger than the image covers it whole."""
    return F.avg_pool2d(t, kernel_size, stride=1, padding=kernel_size // 2, count_include_pad=False)


def window_stats(x, kernel_size):
    """float64 windowed mean and biased variance, on the CPU, differentiable (the reference gradients).
    The variance is computed from values centred by their plane's mean (a constant per plane does not
    change it), so the reference itself does not cancel on offset data."""
    x = x.double().cpu()
    mean = window_mean(x, kernel_size)
    centred = x - x.mean(dim=(2, 3), keepdim=True)
    centred_mean = window_mean(centred, kernel_size)
    return mean, window_mean(centred * centred, kernel_size) - centred_mean * centred_mean


def reference(x, guide, kernel_size, eps):
    mean_x, var_x = window_stats(x, kernel_size)
    mean_g, var_g = window_stats(guide, kernel_size)
    return (x.double().cpu() - mean_x) / torch.sqrt(var_x + eps) * torch.sqrt(var_g + eps) + mean_g


# ---- tolerances ------------------------------------------------------------------------------------------
# tests/devices.py's table, family "local_stats" (its rows say where and why they differ from the defaults).
# How they apply: on CPU gradients get 10x (atol and rtol); on CUDA atol is times the largest reference
# value (for results that cancel to near zero), rtol as it is.


def assert_close(actual, expected, dtype, gradient=False):
    """actual (an op's output in dtype, on its device) against the float64 reference, by the device's rule."""
    assert actual.dtype == dtype, (actual.dtype, dtype)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    device = actual.device.type
    if device == "cpu":
        factor = 10 if gradient else 1
        torch.testing.assert_close(actual.detach().double(), expected.detach(),
                                   **tolerance(device, dtype, "local_stats", factor))
    else:
        scale = max(1.0, expected.abs().max().item()) if expected.numel() else 1.0
        torch.testing.assert_close(actual.detach().cpu().double(), expected.detach(),
                                   **tolerance(device, dtype, "local_stats", atol_scale=scale))


def randn(shape, dtype, device, scale=1.0, offset=0.0):
    """Normal data made in float64 and rounded to dtype on device."""
    return (torch.randn(shape, dtype=torch.float64) * scale + offset).to(dtype).to(device)


# ---- values and gradients on every device ----------------------------------------------------------------
# Each device keeps the cases it was tested on: the CPU sweeps shapes x kernel sizes (odd and ragged
# vector tails), CUDA the shapes that reach its code paths (prefix segments, bands, windows larger than
# the image), each with its kernel size.

CPU_SHAPES = [  # (B, C, H, W), each with every kernel size of CPU_KERNEL_SIZES
    (2, 3, 9, 13),
    (1, 1, 1, 1),
    (1, 2, 1, 7),
    (1, 2, 6, 1),
    (2, 2, 16, 16),
    (1, 3, 17, 31),    # ragged vector tails
    (1, 2, 21, 40),
]
CPU_KERNEL_SIZES = [1, 3, 7, 41]

CUDA_SHAPES = [  # (B, C, H, W, kernel_size)
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


def _name(dtype):
    return str(dtype).removeprefix("torch.")


CASES = [
    pytest.param("cpu", dtype, shape, k, id=f"cpu-{_name(dtype)}-{shape}-k{k}")
    for dtype in DTYPES["cpu"] for shape in CPU_SHAPES for k in CPU_KERNEL_SIZES
] + [
    pytest.param("cuda", dtype, tuple(shape[:4]), shape[4], marks=cuda_only, id=f"cuda-{_name(dtype)}-{shape}")
    for dtype in DTYPES["cuda"] for shape in CUDA_SHAPES
]

# Inputs of the value tests per device: (guide scale, guide offset, eps).
GUIDE_AND_EPS = {"cpu": (2.0, 1.0, 1e-3), "cuda": (0.5, 2.0, EPS)}


@pytest.mark.parametrize("device,dtype,shape,kernel_size", CASES)
def test_transform_matches_reference(device, dtype, shape, kernel_size):
    guide_scale, guide_offset, eps = GUIDE_AND_EPS[device]
    x = randn(shape, dtype, device).requires_grad_()
    guide = randn(shape, dtype, device, scale=guide_scale, offset=guide_offset).requires_grad_()
    out = local_stat_transform(x, guide, kernel_size, eps)
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous() and out.device == x.device

    x64 = x.detach().cpu().double().requires_grad_()
    g64 = guide.detach().cpu().double().requires_grad_()
    ref = reference(x64, g64, kernel_size, eps)
    assert_close(out, ref, dtype)

    grad = randn(shape, dtype, device)
    gx, gg = torch.autograd.grad(out, (x, guide), grad)
    rx, rg = torch.autograd.grad(ref, (x64, g64), grad.cpu().double())
    assert_close(gx, rx, dtype, gradient=True)
    assert_close(gg, rg, dtype, gradient=True)


@pytest.mark.parametrize("device,dtype,shape,kernel_size", CASES)
def test_mean_var_matches_reference(device, dtype, shape, kernel_size):
    x = randn(shape, dtype, device).requires_grad_()
    mean, var = local_mean_var(x, kernel_size)
    for t in (mean, var):
        assert t.shape == x.shape and t.dtype == dtype and t.is_contiguous() and t.device == x.device

    x64 = x.detach().cpu().double().requires_grad_()
    ref_mean, ref_var = window_stats(x64, kernel_size)
    assert_close(mean, ref_mean, dtype)
    assert_close(var, ref_var, dtype)
    assert (var >= 0).all()

    grad_mean, grad_var = randn(shape, dtype, device), randn(shape, dtype, device)
    (gx,) = torch.autograd.grad((mean, var), x, (grad_mean, grad_var))
    (rx,) = torch.autograd.grad(
        (ref_mean, ref_var), x64, (grad_mean.cpu().double(), grad_var.cpu().double()), retain_graph=True
    )
    assert_close(gx, rx, dtype, gradient=True)

    # Either incoming gradient absent, through the backward op itself.
    for gm, gv in ((grad_mean, None), (None, grad_var)):
        got = torch.ops.facekernels._local_mean_var_backward(gm, gv, x.detach(), kernel_size)
        outputs = [t for t, g in ((ref_mean, gm), (ref_var, gv)) if g is not None]
        grads = [g.cpu().double() for g in (gm, gv) if g is not None]
        (expected,) = torch.autograd.grad(outputs, x64, grads, retain_graph=True)
        assert_close(got, expected, dtype, gradient=True)


EMPTY_SHAPES = [(0, 3, 5, 6), (2, 0, 5, 6), (2, 3, 0, 6), (2, 3, 5, 0)]
EMPTY_CASES = [pytest.param("cpu", torch.float32, shape, id=f"cpu-{shape}") for shape in EMPTY_SHAPES] + [
    pytest.param("cuda", dtype, shape, marks=cuda_only, id=f"cuda-{_name(dtype)}-{shape}")
    for dtype in DTYPES["cuda"] for shape in EMPTY_SHAPES
]


@pytest.mark.parametrize("device,dtype,shape", EMPTY_CASES)
def test_empty(device, dtype, shape):
    x = torch.randn(shape, device=device).to(dtype).requires_grad_()
    guide = torch.randn(shape, device=device).to(dtype).requires_grad_()
    out = local_stat_transform(x, guide, 3)
    assert out.shape == shape and out.dtype == dtype and out.device == x.device
    gx, gg = torch.autograd.grad(out.sum(), (x, guide))
    assert gx.shape == shape and gg.shape == shape
    mean, var = local_mean_var(x)
    assert mean.shape == var.shape == shape
    (gx,) = torch.autograd.grad(mean.sum() + var.sum(), x)
    assert gx.shape == shape
    grads = torch.ops.facekernels._local_stat_transform_backward(
        torch.zeros_like(x), x.detach(), guide.detach(), 7, EPS, True, False
    )
    assert grads[0].shape == shape and grads[1].shape == (0,)
    assert torch.ops.facekernels._local_mean_var_backward(None, None, x.detach(), 7).shape == shape


# ---- CPU --------------------------------------------------------------------------------------------------

def test_window_larger_than_image_is_per_channel_adain():
    x, guide = torch.randn(2, 3, 5, 6, dtype=torch.float64), torch.randn(2, 3, 5, 6, dtype=torch.float64)
    eps = 1e-5
    mx, vx = x.mean((2, 3), keepdim=True), x.var((2, 3), unbiased=False, keepdim=True)
    mg, vg = guide.mean((2, 3), keepdim=True), guide.var((2, 3), unbiased=False, keepdim=True)
    adain = (x - mx) / torch.sqrt(vx + eps) * torch.sqrt(vg + eps) + mg
    torch.testing.assert_close(local_stat_transform(x, guide, 11, eps), adain)
    torch.testing.assert_close(local_stat_transform(x, guide, 1001, eps), adain)


def test_kernel_size_one_returns_guide():
    x, guide = torch.randn(2, 3, 7, 9), torch.randn(2, 3, 7, 9)
    torch.testing.assert_close(local_stat_transform(x, guide, 1), guide)
    mean, var = local_mean_var(x, 1)
    torch.testing.assert_close(mean, x)
    assert var.abs().max() < 1e-5  # zero up to the rounding of the running and prefix sums


def test_offset_data_float32_accuracy():
    """Mean 100x the standard deviation: the float32 results stay within 1e-4 relative of float64."""
    torch.manual_seed(1)
    shape = (2, 4, 64, 67)
    x = 100 + torch.randn(shape, dtype=torch.float64)
    guide = -300 + 3 * torch.randn(shape, dtype=torch.float64)
    for kernel_size in (3, 7, 15):
        ref = reference(x, guide, kernel_size, 1e-5)
        out = local_stat_transform(x.float(), guide.float(), kernel_size, 1e-5).double()
        torch.testing.assert_close(out, ref, rtol=1e-4, atol=0)
        ref_mean, ref_var = window_stats(x, kernel_size)
        mean, var = local_mean_var(x.float(), kernel_size)
        torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-4, atol=0)
        torch.testing.assert_close(var.double(), ref_var, rtol=1e-4, atol=0)
        # The tolerance is discriminating: a one-pass float32 E[x^2] - mu^2 misses it.
        xf = x.float()
        def pool(t, k=kernel_size):
            return F.avg_pool2d(t, k, 1, k // 2, count_include_pad=False)

        naive_var = (pool(xf * xf) - pool(xf) ** 2).double()
        assert not torch.allclose(naive_var, ref_var, rtol=1e-4, atol=0)


@pytest.mark.parametrize("width,kernel_size", [(5000, 7), (20000, 3), (12500, 65)])
def test_offset_data_long_rows_float32(width, kernel_size):
    """Window sums along W come from prefix sums; their rounding must not grow with the row length."""
    torch.manual_seed(3)
    x = 100 + torch.randn(1, 2, 3, width, dtype=torch.float64)
    ref_mean, ref_var = window_stats(x, kernel_size)
    mean, var = local_mean_var(x.float(), kernel_size)
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-4, atol=0)
    torch.testing.assert_close(var.double(), ref_var, rtol=1e-4, atol=0)


def test_offset_data_gradients_float32():
    torch.manual_seed(2)
    shape = (1, 2, 40, 37)
    x = (100 + torch.randn(shape, dtype=torch.float64)).requires_grad_()
    guide = (50 + torch.randn(shape, dtype=torch.float64)).requires_grad_()
    grad = torch.randn(shape, dtype=torch.float64)
    reference(x, guide, 7, 1e-5).backward(grad)
    x32, g32 = x.detach().float().requires_grad_(), guide.detach().float().requires_grad_()
    local_stat_transform(x32, g32, 7, 1e-5).backward(grad.float())
    for got, want in ((x32.grad, x.grad), (g32.grad, guide.grad)):
        err = (got.double() - want).abs().max() / want.abs().max()
        assert err < 1e-4, err


@pytest.mark.parametrize("kernel_size", [1, 3, 5, 9])
def test_gradcheck(kernel_size):
    x = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    guide = torch.randn(2, 2, 6, 7, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: local_stat_transform(a, b, kernel_size, 1e-2), (x, guide))
    assert torch.autograd.gradcheck(lambda a: local_mean_var(a, kernel_size), (x,))
    # only one of the two outputs used: the other gradient arrives as None
    assert torch.autograd.gradcheck(lambda a: local_mean_var(a, kernel_size)[0], (x,))
    assert torch.autograd.gradcheck(lambda a: local_mean_var(a, kernel_size)[1], (x,))


def test_partial_gradients():
    x = torch.randn(2, 3, 8, 9, dtype=torch.float64, requires_grad=True)
    guide = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    grad = torch.randn(2, 3, 8, 9, dtype=torch.float64)
    local_stat_transform(x, guide, 3).backward(grad)
    full = torch.ops.facekernels._local_stat_transform_backward(grad, x.detach(), guide, 3, 1e-5, True, True)
    only_x = torch.ops.facekernels._local_stat_transform_backward(grad, x.detach(), guide, 3, 1e-5, True, False)
    only_g = torch.ops.facekernels._local_stat_transform_backward(grad, x.detach(), guide, 3, 1e-5, False, True)
    torch.testing.assert_close(x.grad, full[0])
    torch.testing.assert_close(only_x[0], full[0])
    torch.testing.assert_close(only_g[1], full[1])
    assert only_x[1].shape == (0,) and only_g[0].shape == (0,)
    none = torch.ops.facekernels._local_mean_var_backward(None, None, x.detach(), 3)
    assert torch.all(none == 0) and none.shape == x.shape


def test_opcheck():
    x = torch.randn(2, 3, 7, 9, requires_grad=True)
    guide = torch.randn(2, 3, 7, 9, requires_grad=True)
    grad = torch.randn(2, 3, 7, 9)
    fk = torch.ops.facekernels
    torch.library.opcheck(fk.local_stat_transform.default, (x, guide, 5, 1e-4))
    torch.library.opcheck(fk.local_stat_transform.default, (x, guide))
    torch.library.opcheck(fk.local_mean_var.default, (x, 3))
    torch.library.opcheck(fk.local_mean_var.default, (x,))
    for mask in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(fk._local_stat_transform_backward.default, (grad, x.detach(), guide.detach(), 5, 1e-4, *mask))
    torch.library.opcheck(fk._local_mean_var_backward.default, (grad, grad, x.detach(), 3))
    torch.library.opcheck(fk._local_mean_var_backward.default, (None, grad, x.detach(), 3))
    torch.library.opcheck(fk._local_mean_var_backward.default, (grad, None, x.detach(), 3))


def test_torch_compile_fullgraph():
    def block(x, guide):
        mean, var = local_mean_var(guide, 3)
        return local_stat_transform(x, guide, 5) * torch.sqrt(var + 1e-5) + mean

    args = [torch.randn(2, 3, 10, 11, requires_grad=True), torch.randn(2, 3, 10, 11, requires_grad=True)]
    assert_compiled_matches_eager(block, args)


def test_strided_inputs():
    base = torch.randn(2, 8, 13, 14, dtype=torch.float64)
    x = base[:, ::2]                                          # channel-strided, planes contiguous
    guide = torch.randn(2, 13, 4, 14, dtype=torch.float64).transpose(1, 2)  # planes not contiguous
    x_cl = torch.randn(2, 4, 13, 14, dtype=torch.float64).to(memory_format=torch.channels_last)
    for xi in (x, x_cl, base[:, 1::2, :, ::1]):
        torch.testing.assert_close(local_stat_transform(xi, guide, 5), reference(xi, guide, 5, 1e-5))
        mean, var = local_mean_var(xi, 5)
        ref_mean, ref_var = window_stats(xi, 5)
        torch.testing.assert_close(mean, ref_mean)
        torch.testing.assert_close(var, ref_var)
    xr = x.clone().requires_grad_()
    g_out = torch.randn(2, 13, 4, 14, dtype=torch.float64).transpose(1, 2)   # strided upstream gradient
    local_stat_transform(xr, guide, 5).backward(g_out)
    x64 = x.detach().clone().requires_grad_()
    reference(x64, guide, 5, 1e-5).backward(g_out)
    torch.testing.assert_close(xr.grad, x64.grad)


def test_many_planes_and_few_planes_agree():
    """Few planes are split into bands of rows across threads; the bands must join seamlessly."""
    x = torch.randn(1, 1, 300, 37, dtype=torch.float64)
    guide = torch.randn(1, 1, 300, 37, dtype=torch.float64)
    for k in (3, 9):
        torch.testing.assert_close(local_stat_transform(x, guide, k), reference(x, guide, k, 1e-5))
        xr = x.clone().requires_grad_()
        grad = torch.randn_like(x)
        local_stat_transform(xr, guide, k).backward(grad)
        x64 = x.clone().requires_grad_()
        reference(x64, guide, k, 1e-5).backward(grad)
        torch.testing.assert_close(xr.grad, x64.grad)


def test_nan_input_is_not_hidden():
    x = torch.randn(1, 1, 12, 12)
    x[0, 0, 5, 6] = float("nan")
    out = local_stat_transform(x, torch.randn_like(x), 3)
    assert torch.isnan(out[0, 0, 4:7, 5:8]).all()


def test_cpu_capabilities_agree(tmp_path):
    """The SIMD levels compiled in give the same result (run in subprocesses with the level lowered)."""
    script = (
        "import sys, torch, facekernels\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(3, 4, 19, 23); g = torch.randn(3, 4, 19, 23); go = torch.randn(3, 4, 19, 23)\n"
        "ops = torch.ops.facekernels\n"
        "outs = [facekernels.local_stat_transform(x, g, 5), *facekernels.local_mean_var(x, 7)]\n"
        "outs += list(ops._local_stat_transform_backward(go, x, g, 5, 1e-5, True, True))\n"
        "outs.append(ops._local_mean_var_backward(go, g, x, 7))\n"
        "torch.save((facekernels.build_info()['cpu_kernels']['local_stats'], outs), sys.argv[1])\n"
    )
    results = run_at_each_cpu_capability(script, tmp_path)
    base = results["default"][1]
    for level, (used, outs) in results.items():
        for a, b in zip(outs, base):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"{level} ({used}) differs from default")


def test_autocast_cpu_mixed_dtypes():
    x = torch.randn(2, 3, 6, 6).bfloat16()
    guide = torch.randn(2, 3, 6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = local_stat_transform(x, guide, 3)
        mean, _ = local_mean_var(x, 3)
    assert out.dtype == mean.dtype == torch.float32
    torch.testing.assert_close(out, reference(x.float(), guide, 3, 1e-5).float(), atol=1e-4, rtol=1e-4)


def test_build_info_lists_kernel():
    info = facekernels.build_info()
    assert info["cpu_kernels"]["local_stats"] == info["cpu_capability"]


def _args(**over):
    args = {"x": torch.randn(2, 3, 8, 8), "guide": torch.randn(2, 3, 8, 8), "kernel_size": 3, "eps": 1e-5}
    args.update(over)
    return args


BAD = [
    ("shapes differ", _args(guide=torch.randn(2, 3, 8, 9)),
     r"guide must have the same shape as x \[2, 3, 8, 8\], got \[2, 3, 8, 9\]"),
    ("x 3-D", _args(x=torch.randn(3, 8, 8)), r"x must be a 4-D tensor \[B, C, H, W\], got a 3-D tensor of shape \[3, 8, 8\]"),
    ("guide 5-D", _args(guide=torch.randn(1, 2, 3, 8, 8)), r"guide must be a 4-D tensor"),
    ("even kernel", _args(kernel_size=4), r"kernel_size must be an odd integer >= 1, got 4"),
    ("zero kernel", _args(kernel_size=0), r"kernel_size must be an odd integer >= 1, got 0"),
    ("negative kernel", _args(kernel_size=-3), r"kernel_size must be an odd integer >= 1, got -3"),
    ("negative eps", _args(eps=-1e-3), r"eps must be a finite number >= 0, got -0.001"),
    ("nan eps", _args(eps=float("nan")), r"eps must be a finite number >= 0, got nan"),
    ("integer x", _args(x=torch.ones(2, 3, 8, 8, dtype=torch.int64)), r"x must be float32 or float64 on CPU, got int64"),
    ("integer guide", _args(guide=torch.ones(2, 3, 8, 8, dtype=torch.int32)),
     r"guide must have the same dtype as x \(float32\), got int32"),
    ("half on CPU", _args(x=torch.randn(2, 3, 8, 8).half(), guide=torch.randn(2, 3, 8, 8).half()),
     r"x must be float32 or float64 on CPU, got float16"),
    ("dtypes differ", _args(guide=torch.randn(2, 3, 8, 8, dtype=torch.float64)),
     r"guide must have the same dtype as x \(float32\), got float64"),
]


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_raise(name, args, match):
    with pytest.raises(RuntimeError, match=r"local_stat_transform: " + match):
        local_stat_transform(**args)


MEAN_VAR_BAD = [
    (torch.randn(8, 8), 3, r"x must be a 4-D tensor"),
    (torch.randn(1, 2, 8, 8), 2, r"kernel_size must be an odd integer >= 1, got 2"),
    (torch.randn(1, 2, 8, 8), -1, r"kernel_size must be an odd integer >= 1, got -1"),
    (torch.ones(1, 2, 8, 8, dtype=torch.uint8), 3, r"x must be float32 or float64 on CPU, got uint8"),
]


@pytest.mark.parametrize("x,kernel_size,match", MEAN_VAR_BAD)
def test_mean_var_bad_inputs_raise(x, kernel_size, match):
    with pytest.raises(RuntimeError, match=r"local_mean_var: " + match):
        local_mean_var(x, kernel_size)


def test_bad_input_mixed_devices():
    with pytest.raises(RuntimeError, match=r"local_stat_transform: guide must be on the same device as x \(cpu\), got meta"):
        local_stat_transform(torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6, device="meta"))


def test_backward_ops_check_gradient_shapes():
    x = torch.randn(2, 3, 5, 6)
    with pytest.raises(RuntimeError, match=r"_local_stat_transform_backward: grad_out must have the shape of x \[2, 3, 5, 6\], got \[2, 3, 5, 5\]"):
        torch.ops.facekernels._local_stat_transform_backward(torch.randn(2, 3, 5, 5), x, x, 3, 1e-5, True, True)
    with pytest.raises(RuntimeError, match=r"_local_mean_var_backward: grad_var must have the same dtype as x \(float32\), got float64"):
        torch.ops.facekernels._local_mean_var_backward(None, x.double(), x, 3)


# ---- the fake kernels refuse what the native ops refuse, with the same exception and message, so that
# tracing, compiling and exporting fail where the eager call does (issue 17) ----------------------------


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_fake_kernel_refuses_bad_inputs(name, args, match):
    assert_fake_refuses_like_native(local_stat_transform, **args)


@pytest.mark.parametrize("x,kernel_size,match", MEAN_VAR_BAD)
def test_mean_var_fake_kernel_refuses_bad_inputs(x, kernel_size, match):
    assert_fake_refuses_like_native(local_mean_var, x, kernel_size)


_X = torch.randn(2, 3, 5, 6)
BACKWARD_BAD = {
    "transform grad_out shape": ("_local_stat_transform_backward", (torch.randn(2, 3, 5, 5), _X, _X, 3, 1e-5, True, True)),
    "transform grad_out dtype": ("_local_stat_transform_backward", (_X.double(), _X, _X, 3, 1e-5, True, True)),
    "transform grad_out 3-D": ("_local_stat_transform_backward", (_X[0], _X, _X, 3, 1e-5, True, True)),
    "transform guide shape": ("_local_stat_transform_backward", (_X, _X, _X[:1], 3, 1e-5, True, True)),
    "transform even kernel": ("_local_stat_transform_backward", (_X, _X, _X, 4, 1e-5, True, True)),
    "transform eps": ("_local_stat_transform_backward", (_X, _X, _X, 3, -1.0, True, True)),
    "mean_var grad_var dtype": ("_local_mean_var_backward", (None, _X.double(), _X, 3)),
    "mean_var grad_mean shape": ("_local_mean_var_backward", (_X[:, :2], None, _X, 3)),
    "mean_var x integer": ("_local_mean_var_backward", (None, None, _X.long(), 3)),
    "mean_var kernel": ("_local_mean_var_backward", (_X, _X, _X, 0)),
}


@pytest.mark.parametrize("op,args", BACKWARD_BAD.values(), ids=BACKWARD_BAD.keys())
def test_backward_fake_kernels_refuse_bad_inputs(op, args):
    assert_fake_refuses_like_native(getattr(torch.ops.facekernels, op).default, *args)


@pytest.mark.parametrize("name", ["shapes differ", "even kernel", "nan eps", "integer guide"])
def test_compile_and_export_refuse_bad_inputs(name):
    args = next(b[1] for b in BAD if b[0] == name)
    args = (args["x"], args["guide"], args["kernel_size"], args["eps"])
    assert_tracing_refuses_like_native(local_stat_transform, *args)
    x, kernel_size, _ = MEAN_VAR_BAD[1]
    assert_tracing_refuses_like_native(local_mean_var, x, kernel_size)


def test_double_backward_is_refused_not_wrong():
    x = torch.randn(1, 2, 6, 6, dtype=torch.float64, requires_grad=True)
    out = local_stat_transform(x, torch.randn_like(x), 3)
    (g,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="local_stat_transform: double backward .* is not implemented"):
        torch.autograd.grad(g.sum(), x)
    mean, var = local_mean_var(x, 3)
    (g,) = torch.autograd.grad((mean * var).sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="local_mean_var: double backward .* is not implemented"):
        torch.autograd.grad(g.sum(), x)


# ---- modules ---------------------------------------------------------------------------------------

def test_local_sfft_starts_as_the_transform_and_learns_alpha():
    block = LocalSFFT(4, kernel_size=5).double()
    assert torch.equal(block.alpha, torch.ones(4, dtype=torch.float64))
    assert set(block.state_dict()) == {"alpha"}
    x = torch.randn(2, 4, 9, 10, dtype=torch.float64, requires_grad=True)
    guide = torch.randn(2, 4, 9, 10, dtype=torch.float64)
    torch.testing.assert_close(block(x, guide), reference(x, guide, 5, 1e-5))
    with torch.no_grad():
        block.alpha.copy_(torch.tensor([0.0, 0.25, 0.5, 1.0]))
    out = block(x, guide)
    a = block.alpha.view(1, -1, 1, 1)
    torch.testing.assert_close(out, x + a * (reference(x, guide, 5, 1e-5) - x))
    out.sum().backward()
    assert block.alpha.grad is not None and x.grad is not None
    assert torch.autograd.gradcheck(lambda a, b, al: torch.lerp(a, local_stat_transform(a, b, 5), al.view(1, -1, 1, 1)),
                                    (x.detach().requires_grad_(), guide.requires_grad_(), block.alpha.detach().requires_grad_()))


def test_local_sfft_rejects_bad_configuration():
    with pytest.raises(ValueError, match="LocalSFFT: kernel_size must be an odd int >= 1, got 4"):
        LocalSFFT(3, kernel_size=4)
    with pytest.raises(ValueError, match="LocalSFFT: channels must be a positive int, got 0"):
        LocalSFFT(0)
    with pytest.raises(ValueError, match=r"LocalSFFT: x must be \[B, 3, H, W\], got \[2, 4, 5, 5\]"):
        LocalSFFT(3)(torch.randn(2, 4, 5, 5), torch.randn(2, 4, 5, 5))


def test_dafe_alignment_loss_matches_definition():
    lq = [torch.randn(2, 3, 16, 16, dtype=torch.float64, requires_grad=True),
          torch.randn(2, 5, 8, 8, dtype=torch.float64, requires_grad=True)]
    hq = [torch.randn(2, 3, 16, 16, dtype=torch.float64), torch.randn(2, 5, 8, 8, dtype=torch.float64)]
    loss = dafe_alignment_loss(lq, hq, kernel_size=5)
    expected = 0
    for a, b in zip(lq, hq):
        ma, va = window_stats(a, 5)
        mb, vb = window_stats(b, 5)
        expected = expected + (a - b).abs().mean() + (ma - mb).abs().mean() + \
            (torch.sqrt(va + 1e-5) - torch.sqrt(vb + 1e-5)).abs().mean()
    expected = expected / 2
    torch.testing.assert_close(loss, expected)
    loss.backward()
    assert all(t.grad is not None and torch.isfinite(t.grad).all() for t in lq)
    single = dafe_alignment_loss(lq[0].detach(), hq[0], 5)
    assert single.dim() == 0
    with pytest.raises(ValueError, match="same, non-zero number of scales, got 2 and 1"):
        dafe_alignment_loss(lq, hq[:1])
    with pytest.raises(ValueError, match=r"scale 0: hq_feats must have the shape of lq_feats \[2, 3, 16, 16\], got \[2, 3, 16, 8\]"):
        dafe_alignment_loss(lq[:1], [hq[0][..., :8]])


# ---- CUDA -------------------------------------------------------------------------------------------------




@cuda_only
@pytest.mark.parametrize("kernel_size", [3, 7, 15])
def test_offset_data_float32_accuracy_cuda(kernel_size):
    """Data whose mean is 100x its standard deviation: float32 results within 1e-4 relative of float64 (the
    sums are shifted by a value near the data; E[x^2] - mu^2 on raw values would lose about 1e-3 here)."""
    x = randn((2, 3, 24, 40), torch.float32, CUDA_DEVICE, scale=0.5, offset=50.0)
    guide = randn((2, 3, 24, 40), torch.float32, CUDA_DEVICE, scale=2.0, offset=-200.0)
    mean, var = ops.local_mean_var(x, kernel_size)
    ref_mean, ref_var = window_stats(x.cpu(), kernel_size)
    torch.testing.assert_close(mean.cpu().double(), ref_mean, rtol=1e-4, atol=0)
    torch.testing.assert_close(var.cpu().double(), ref_var, rtol=1e-4, atol=0)
    out = ops.local_stat_transform(x, guide, kernel_size, EPS)
    ref = reference(x.cpu(), guide.cpu(), kernel_size, EPS)
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-4, atol=0)


@cuda_only
def test_offset_data_long_rows():
    x = randn((1, 2, 4, 5000), torch.float32, CUDA_DEVICE, scale=0.5, offset=50.0)
    for k in (7, 65):
        mean, var = ops.local_mean_var(x, k)
        ref_mean, ref_var = window_stats(x.cpu(), k)
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


@cuda_only
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("shape", LONG_ROWS, ids=str)
def test_long_rows(shape, dtype):
    *size, k = shape
    x = randn(size, dtype, CUDA_DEVICE).requires_grad_()
    grad = randn(size, dtype, CUDA_DEVICE)
    x64 = x.detach().cpu().double().requires_grad_()

    if size[2] > 1:
        guide = randn(size, dtype, CUDA_DEVICE, scale=0.5, offset=2.0).requires_grad_()
        g64 = guide.detach().cpu().double().requires_grad_()
        out = ops.local_stat_transform(x, guide, k, EPS)
        ref = reference(x64, g64, k, EPS)
        assert_close(out, ref, dtype)
        gx, gg = torch.autograd.grad(out, (x, guide), grad)
        rx, rg = torch.autograd.grad(ref, (x64, g64), grad.cpu().double())
        assert_close(gx, rx, dtype)
        assert_close(gg, rg, dtype)

    mean, var = ops.local_mean_var(x, k)
    ref_mean, ref_var = window_stats(x64, k)
    assert_close(mean, ref_mean, dtype)
    assert_close(var, ref_var, dtype)
    for gm, gv in ((grad, grad), (grad, None), (None, grad)):
        got = torch.ops.facekernels._local_mean_var_backward(gm, gv, x.detach(), k)
        outputs = [t for t, g in ((ref_mean, gm), (ref_var, gv)) if g is not None]
        grads = [g.cpu().double() for g in (gm, gv) if g is not None]
        (expected,) = torch.autograd.grad(outputs, x64, grads, retain_graph=True)
        assert_close(got, expected, dtype)


@cuda_only
def test_more_planes_than_one_grid():
    """2^20 + planes of two pixels: more tasks than the launch grid, which then loops over them."""
    x = randn((1, (1 << 20) + 3, 1, 2), torch.float32, CUDA_DEVICE)
    guide = randn((1, (1 << 20) + 3, 1, 2), torch.float32, CUDA_DEVICE)
    mean, var = ops.local_mean_var(x, 3)
    ref_mean, ref_var = window_stats(x.cpu(), 3)
    assert_close(mean, ref_mean, torch.float32)
    assert_close(var, ref_var, torch.float32)
    out = ops.local_stat_transform(x, guide, 3, 1e-2)
    assert_close(out, reference(x.cpu(), guide.cpu(), 3, 1e-2), torch.float32)


# ---- layouts, shapes, flags ------------------------------------------------------------------------------


@cuda_only
def test_strided_inputs_cuda():
    base = torch.randn(2, 8, 13, 14, device=CUDA_DEVICE)
    x = base[:, ::2, 1:, ::2]  # channel-, height- and width-strided view [2, 4, 12, 7]
    guide = torch.randn(2, 4, 7, 12, device=CUDA_DEVICE).transpose(2, 3)
    x_cl = torch.randn(2, 4, 12, 7, device=CUDA_DEVICE).to(memory_format=torch.channels_last)
    for xi in (x, x_cl):
        assert not xi.is_contiguous() and not guide.is_contiguous()
        out = ops.local_stat_transform(xi, guide, 5, EPS)
        assert out.is_contiguous()
        assert_close(out, reference(xi.cpu(), guide.cpu(), 5, EPS), torch.float32)
        mean, var = ops.local_mean_var(xi, 5)
        ref_mean, ref_var = window_stats(xi.cpu(), 5)
        assert_close(mean, ref_mean, torch.float32)
        assert_close(var, ref_var, torch.float32)

    # Non-contiguous upstream gradients (an expanded one, as sum() gives, and a transposed one).
    xg = x.detach().clone().requires_grad_()
    gg = guide.detach().clone().requires_grad_()
    x64 = xg.detach().cpu().double().requires_grad_()
    g64 = gg.detach().cpu().double().requires_grad_()
    ref = reference(x64, g64, 5, EPS)
    for grad in (
        torch.ones(1, device=CUDA_DEVICE).expand(2, 4, 12, 7),
        torch.randn(2, 4, 7, 12, device=CUDA_DEVICE).mT,
    ):
        assert not grad.is_contiguous()
        got = torch.autograd.grad(ops.local_stat_transform(xg, gg, 5, EPS), (xg, gg), grad)
        expected = torch.autograd.grad(ref, (x64, g64), grad.cpu().double(), retain_graph=True)
        for a, e in zip(got, expected):
            assert_close(a, e, torch.float32)
        mean_grad = torch.ops.facekernels._local_mean_var_backward(grad, grad, xg.detach(), 5)
        ref_mean, ref_var = window_stats(x64, 5)
        (expected,) = torch.autograd.grad((ref_mean, ref_var), x64, (grad.cpu().double(),) * 2)
        assert_close(mean_grad, expected, torch.float32)


@cuda_only
@pytest.mark.parametrize("kernel_size", [1, 3, 7, 11, 41])
def test_matches_cpu_kernel(kernel_size):
    x = torch.randn(3, 5, 19, 23, device=CUDA_DEVICE)
    guide = torch.randn(3, 5, 19, 23, device=CUDA_DEVICE) * 0.5 + 1
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


@cuda_only
def test_backward_op_flags():
    """Each gradient is computed only when asked for; the other comes back as an empty [0] tensor."""
    x = torch.randn(2, 3, 9, 11, device=CUDA_DEVICE)
    guide = torch.randn(2, 3, 9, 11, device=CUDA_DEVICE)
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


@cuda_only
def test_mean_var_backward_without_gradients_is_zero():
    x = torch.randn(2, 3, 6, 7, device=CUDA_DEVICE).half()
    got = torch.ops.facekernels._local_mean_var_backward(None, None, x, 5)
    assert got.shape == x.shape and got.dtype == x.dtype and got.device == x.device
    torch.testing.assert_close(got, torch.zeros_like(x), atol=0, rtol=0)


@cuda_only
def test_partial_gradients_cuda():
    x = torch.randn(2, 3, 8, 9, device=CUDA_DEVICE, requires_grad=True)
    guide = torch.randn(2, 3, 8, 9, device=CUDA_DEVICE)
    ops.local_stat_transform(x, guide).sum().backward()
    assert x.grad is not None and guide.grad is None
    x.grad = None
    mean, _ = ops.local_mean_var(x, 3)
    mean.sum().backward()  # only the mean is used: grad_x = box(1 / n), summing to H * W per plane
    torch.testing.assert_close(x.grad.sum(dim=(2, 3)), torch.full((2, 3), 72.0, device=CUDA_DEVICE))


@cuda_only
@pytest.mark.parametrize("dtype", DTYPES["cuda"], ids=str)
def test_deterministic(dtype):
    """No atomics: every run gives the same bits."""
    x = torch.randn(4, 8, 70, 90, device=CUDA_DEVICE).to(dtype)
    guide = torch.randn(4, 8, 70, 90, device=CUDA_DEVICE).to(dtype)
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


@cuda_only
@pytest.mark.parametrize("kernel_size", [3, 7])
def test_opcheck_cuda(kernel_size):
    x = torch.randn(2, 3, 6, 7, device=CUDA_DEVICE, requires_grad=True)
    guide = torch.randn(2, 3, 6, 7, device=CUDA_DEVICE, requires_grad=True)
    torch.library.opcheck(torch.ops.facekernels.local_stat_transform.default, (x, guide, kernel_size, EPS))
    torch.library.opcheck(torch.ops.facekernels.local_mean_var.default, (x, kernel_size))
    grad = torch.randn(2, 3, 6, 7, device=CUDA_DEVICE)
    for mask in itertools.product([True, False], repeat=2):
        torch.library.opcheck(
            torch.ops.facekernels._local_stat_transform_backward.default,
            (grad, x.detach(), guide.detach(), kernel_size, EPS, *mask),
        )
    for gm, gv in ((grad, grad), (grad, None), (None, grad), (None, None)):
        torch.library.opcheck(
            torch.ops.facekernels._local_mean_var_backward.default, (gm, gv, x.detach(), kernel_size)
        )


@cuda_only
def test_torch_compile_fullgraph_cuda():
    def block(x, guide):
        mean, var = ops.local_mean_var(x, 5)
        return ops.local_stat_transform(x, guide, 7) + mean * var

    args = [torch.randn(2, 3, 10, 12, device=CUDA_DEVICE, requires_grad=True) for _ in range(2)]
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


@cuda_only
@pytest.mark.parametrize("width", [90, 5000], ids=["shared", "long_rows"])
def test_runs_on_the_current_stream(width):
    x = torch.randn(2, 4, 33, width, device=CUDA_DEVICE)
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


@cuda_only
def test_cuda_graph_capture():
    """Capture fails if anything is launched outside the capturing (current) stream; the workspace comes
    from torch's allocator, which serves captures from the graph's pool."""
    x = torch.randn(2, 4, 30, 5000, device=CUDA_DEVICE)  # long rows: the workspace carries per-block scratch
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


@cuda_only
@pytest.mark.skipif(torch.cuda.device_count() < 2, reason="needs two CUDA devices")
def test_second_device():
    """Tensors on cuda:1 while cuda:0 is current: the binding switches device and stream."""
    x = torch.randn(2, 3, 9, 10, device="cuda:1")
    guide = torch.randn(2, 3, 9, 10, device="cuda:1")
    with torch.cuda.device(0):
        out = ops.local_stat_transform(x, guide, 5)
        mean, var = ops.local_mean_var(x, 5)
    assert out.device == x.device and mean.device == x.device
    assert_close(out, reference(x.cpu(), guide.cpu(), 5, EPS), torch.float32)
    ref_mean, ref_var = window_stats(x.cpu(), 5)
    assert_close(mean, ref_mean, torch.float32)
    assert_close(var, ref_var, torch.float32)


@cuda_only
def test_autocast_cuda():
    x = torch.randn(2, 3, 8, 8, device=CUDA_DEVICE)
    guide = torch.randn(2, 3, 8, 8, device=CUDA_DEVICE).half()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = ops.local_stat_transform(x, guide, 3)
        mean, var = ops.local_mean_var(x, 3)
    assert out.dtype == torch.bfloat16 and mean.dtype == torch.bfloat16 and var.dtype == torch.bfloat16
    xb, gb = x.bfloat16(), guide.bfloat16()
    assert_close(out, reference(xb.cpu(), gb.cpu(), 3, EPS), torch.bfloat16)


# ---- bad inputs on CUDA ---------------------------------------------------------------------------------


@cuda_only
def test_float64_refused():
    x = torch.randn(2, 3, 5, 6, device=CUDA_DEVICE, dtype=torch.float64)
    bad = r"x must be float16, bfloat16 or float32 on CUDA, got float64"
    with pytest.raises(RuntimeError, match=r"local_stat_transform: " + bad):
        ops.local_stat_transform(x, x)
    with pytest.raises(RuntimeError, match=r"local_mean_var: " + bad):
        ops.local_mean_var(x)
    with pytest.raises(RuntimeError, match=r"_local_stat_transform_backward: " + bad):
        torch.ops.facekernels._local_stat_transform_backward(x, x, x, 7, EPS, True, True)
    with pytest.raises(RuntimeError, match=r"_local_mean_var_backward: " + bad):
        torch.ops.facekernels._local_mean_var_backward(x, None, x, 7)


@cuda_only
def test_mixed_dtypes_and_devices_refused():
    x = torch.randn(2, 3, 5, 6, device=CUDA_DEVICE)
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


@cuda_only
def test_bad_arguments_on_cuda():
    x = torch.randn(2, 3, 5, 6, device=CUDA_DEVICE)
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
