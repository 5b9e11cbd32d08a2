"""local_stat_transform and local_mean_var on CPU: values and gradients against a float64 two-pass
reference, accuracy on offset data, the torch.library contract, torch.compile, strides, odd, size-1 and
empty shapes, every bad input, and the LocalSFFT / dafe_alignment_loss modules."""

import facekernels
import pytest
import torch
import torch.nn.functional as F
from conftest import assert_compiled_matches_eager, run_at_each_cpu_capability
from facekernels.nn import LocalSFFT, dafe_alignment_loss
from facekernels.ops import local_mean_var, local_stat_transform


def window_stats(t, kernel_size):
    """Plain float64 definition over clipped windows, two passes: the mean, then the mean squared
    deviation from it. Differentiable (used for reference gradients)."""
    t = t.double()
    r = kernel_size // 2
    H, W = t.shape[-2:]
    total = torch.zeros_like(t)
    count = torch.zeros(H, W, dtype=torch.float64)
    shifted = []
    for dy in range(-r, r + 1):
        for dx in range(-r, r + 1):
            if abs(dy) >= H or abs(dx) >= W:
                continue
            # value at (h + dy, w + dx) where it exists, as an (H, W) mask and a shifted copy
            mask = torch.zeros(H, W, dtype=torch.float64)
            mask[max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)] = 1
            moved = torch.zeros_like(t)
            moved[..., max(0, -dy):H - max(0, dy), max(0, -dx):W - max(0, dx)] = \
                t[..., max(0, dy):H - max(0, -dy), max(0, dx):W - max(0, -dx)]
            shifted.append((moved, mask))
            total = total + moved * mask
            count = count + mask
    mean = total / count
    squares = torch.zeros_like(t)
    for moved, mask in shifted:
        squares = squares + (moved - mean) ** 2 * mask
    return mean, squares / count


def reference(x, guide, kernel_size, eps):
    mu_x, var_x = window_stats(x, kernel_size)
    mu_g, var_g = window_stats(guide, kernel_size)
    return (x.double() - mu_x) / torch.sqrt(var_x + eps) * torch.sqrt(var_g + eps) + mu_g


# float32: the window sums are running and prefix sums (a cost independent of the window), so their
# rounding is relative to the values around a window rather than inside it; a few pixels whose window is
# nearly flat amplify it (out divides by the local deviation).
TOL = {torch.float32: {"atol": 1e-4, "rtol": 1e-4}, torch.float64: {"atol": 1e-11, "rtol": 1e-11}}

SHAPES = [  # (B, C, H, W)
    (2, 3, 9, 13),
    (1, 1, 1, 1),
    (1, 2, 1, 7),
    (1, 2, 6, 1),
    (2, 2, 16, 16),
    (1, 3, 17, 31),    # ragged vector tails
    (1, 2, 21, 40),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel_size", [1, 3, 7, 41])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_transform_matches_reference(shape, kernel_size, dtype):
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    guide = (torch.randn(shape, dtype=dtype) * 2 + 1).requires_grad_()
    eps = 1e-3
    out = local_stat_transform(x, guide, kernel_size, eps)
    assert out.shape == x.shape and out.dtype == dtype and out.is_contiguous()
    x64 = x.detach().double().requires_grad_()
    g64 = guide.detach().double().requires_grad_()
    ref = reference(x64, g64, kernel_size, eps)
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    grad = torch.randn_like(ref)
    out.backward(grad.to(dtype))
    ref.backward(grad)
    tol = {k: v * 10 for k, v in TOL[dtype].items()}
    torch.testing.assert_close(x.grad.double(), x64.grad, **tol)
    torch.testing.assert_close(guide.grad.double(), g64.grad, **tol)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("kernel_size", [1, 3, 7, 41])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_mean_var_matches_reference(shape, kernel_size, dtype):
    x = torch.randn(shape, dtype=dtype, requires_grad=True)
    mean, var = local_mean_var(x, kernel_size)
    assert mean.dtype == var.dtype == dtype and mean.is_contiguous() and var.is_contiguous()
    x64 = x.detach().double().requires_grad_()
    ref_mean, ref_var = window_stats(x64, kernel_size)
    torch.testing.assert_close(mean.double(), ref_mean, **TOL[dtype])
    torch.testing.assert_close(var.double(), ref_var, **TOL[dtype])
    gm, gv = torch.randn_like(ref_mean), torch.randn_like(ref_var)
    torch.autograd.backward((mean, var), (gm.to(dtype), gv.to(dtype)))
    torch.autograd.backward((ref_mean, ref_var), (gm, gv))
    torch.testing.assert_close(x.grad.double(), x64.grad, **{k: v * 10 for k, v in TOL[dtype].items()})


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
    ref_mean, ref_var = window_stats(x, kernel_size) if width * kernel_size < 10**5 else _pooled_stats(x, kernel_size)
    mean, var = local_mean_var(x.float(), kernel_size)
    torch.testing.assert_close(mean.double(), ref_mean, rtol=1e-4, atol=0)
    torch.testing.assert_close(var.double(), ref_var, rtol=1e-4, atol=0)


def _pooled_stats(x, kernel_size):
    """float64 two-pass statistics through avg_pool2d (for shapes too large for the loop reference)."""
    def pool(t):
        return F.avg_pool2d(t, kernel_size, 1, kernel_size // 2, count_include_pad=False)

    mean = pool(x)
    # two-pass: sum over the window of (x' - mean(center))^2 = pool(x^2) - 2 mean pool(x) + mean^2,
    # evaluated on data centred by its global mean so that float64 loses nothing here
    c = x - x.mean()
    m = pool(c)
    return mean, pool(c * c) - m * m


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
    ops = torch.ops.facekernels
    torch.library.opcheck(ops.local_stat_transform.default, (x, guide, 5, 1e-4))
    torch.library.opcheck(ops.local_stat_transform.default, (x, guide))
    torch.library.opcheck(ops.local_mean_var.default, (x, 3))
    torch.library.opcheck(ops.local_mean_var.default, (x,))
    for mask in ((True, True), (True, False), (False, True)):
        torch.library.opcheck(ops._local_stat_transform_backward.default, (grad, x.detach(), guide.detach(), 5, 1e-4, *mask))
    torch.library.opcheck(ops._local_mean_var_backward.default, (grad, grad, x.detach(), 3))
    torch.library.opcheck(ops._local_mean_var_backward.default, (None, grad, x.detach(), 3))
    torch.library.opcheck(ops._local_mean_var_backward.default, (grad, None, x.detach(), 3))


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


@pytest.mark.parametrize("shape", [(0, 3, 5, 6), (2, 0, 5, 6), (2, 3, 0, 6), (2, 3, 5, 0)])
def test_empty(shape):
    x = torch.randn(*shape, requires_grad=True)
    guide = torch.randn(*shape, requires_grad=True)
    out = local_stat_transform(x, guide, 3)
    assert out.shape == shape
    out.sum().backward()
    assert x.grad.shape == shape and guide.grad.shape == shape
    mean, var = local_mean_var(x, 3)
    assert mean.shape == var.shape == shape


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


@pytest.mark.parametrize(
    "x,kernel_size,match",
    [
        (torch.randn(8, 8), 3, r"x must be a 4-D tensor"),
        (torch.randn(1, 2, 8, 8), 2, r"kernel_size must be an odd integer >= 1, got 2"),
        (torch.randn(1, 2, 8, 8), -1, r"kernel_size must be an odd integer >= 1, got -1"),
        (torch.ones(1, 2, 8, 8, dtype=torch.uint8), 3, r"x must be float32 or float64 on CPU, got uint8"),
    ],
)
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
