"""correlation: values and gradients against a float64 loop reference (odd sizes, displacements past the
border, P = 1, d = 1..3, MOL's shape), gradcheck, the torch.library contract, torch.compile, strided and
empty inputs, every bad input the op must refuse (natively and in the fake kernels alike), and the
CUDA-only checks where a GPU is present.
"""

import facekernels
import pytest
import torch
from devices import DEVICE_DTYPES, DEVICES, assert_close
from helpers import (
    arguments,
    assert_compiled_matches_eager,
    assert_fake_refuses_like_native,
    assert_tracing_refuses_like_native,
    run_at_each_cpu_capability,
)
from facekernels.ops import correlation


def reference(x1, x2, patch_size, dilation):
    """float64 on the CPU, from the definition, one displacement at a time:
    out[b, i, j, h, w] = sum_c x1[b, c, h, w] x2[b, c, h + (i - R) d, w + (j - R) d], zero outside."""
    x1, x2 = x1.detach().double().cpu(), x2.detach().double().cpu()
    b, _, h, w = x1.shape
    r = patch_size // 2
    out = torch.zeros(b, patch_size, patch_size, h, w, dtype=torch.float64)
    for i in range(patch_size):
        for j in range(patch_size):
            dy, dx = (i - r) * dilation, (j - r) * dilation
            for y in range(h):
                for x in range(w):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        out[:, i, j, y, x] = (x1[:, :, y, x] * x2[:, :, yy, xx]).sum(1)
    return out


def reference_grads(x1, x2, grad, patch_size, dilation):
    """The gradients from the definition by loops: each output term x1[c, p] x2[c, q] sends g x2[c, q] to
    grad_x1[c, p] and g x1[c, p] to grad_x2[c, q]."""
    x1, x2, grad = (t.detach().double().cpu() for t in (x1, x2, grad))
    g1, g2 = torch.zeros_like(x1), torch.zeros_like(x2)
    _, _, h, w = x1.shape
    r = patch_size // 2
    for i in range(patch_size):
        for j in range(patch_size):
            dy, dx = (i - r) * dilation, (j - r) * dilation
            for y in range(h):
                for x in range(w):
                    yy, xx = y + dy, x + dx
                    if 0 <= yy < h and 0 <= xx < w:
                        g = grad[:, i, j, y, x].unsqueeze(1)
                        g1[:, :, y, x] += g * x2[:, :, yy, xx]
                        g2[:, :, yy, xx] += g * x1[:, :, y, x]
    return g1, g2


SHAPES = [  # (B, C, H, W, P, d)
    (2, 3, 5, 7, 3, 1),
    (2, 5, 7, 5, 5, 2),     # odd sizes, classes of unequal size
    (1, 4, 6, 9, 7, 3),     # d = 3, displacements past the border
    (2, 3, 4, 4, 9, 2),     # the patch reaches past the image on every side
    (1, 2, 3, 3, 1, 1),     # P = 1: the per-position dot product
    (1, 3, 1, 1, 3, 2),     # a single position
    (2, 17, 11, 13, 5, 1),  # C not a multiple of the vector width, classes wider than the band
    (1, 33, 23, 40, 7, 2),  # band narrower than the rows: per-row runs
    (1, 8, 5, 6, 3, 7),     # d larger than the image: only the centre meets anything
    (2, 20, 16, 16, 21, 2),  # MOL's geometry (fewer channels)
    (2, 5, 7, 9, 11, 2),    # the window covers every class (BLAS plan), classes of unequal size
    (3, 6, 6, 5, 7, 3),     # the same at d = 3, a class one column wide
]
# The CPU op takes one of two plans by shape: when the window covers every residue class whole
# (ceil(H / d) - 1 <= P // 2 and the same for W) the class GEMMs on the BLAS, else the register tiles.
# Both are exercised above: (2, 3, 4, 4, 9, 2), (1, 3, 1, 1, 3, 2), (1, 8, 5, 6, 3, 7), MOL's geometry and
# the last two take the BLAS plan, the others the tiles.


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=["float32", "float64"])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_loop_reference(shape, dtype):
    b, c, h, w, p, d = shape
    g = torch.Generator().manual_seed(1)
    x1 = torch.randn(b, c, h, w, generator=g, dtype=dtype, requires_grad=True)
    x2 = torch.randn(b, c, h, w, generator=g, dtype=dtype, requires_grad=True)
    out = correlation(x1, x2, p, d)
    assert out.shape == (b, p, p, h, w) and out.dtype == dtype and out.is_contiguous()
    expected = reference(x1, x2, p, d)
    scale = max(1.0, c ** 0.5)  # a sum of C products of unit normals
    assert_close(out, expected, scale)
    grad = torch.randn(out.shape, generator=g, dtype=dtype)
    out.backward(grad)
    g1, g2 = reference_grads(x1, x2, grad, p, d)
    terms = max(1.0, (p * p) ** 0.5 * scale)
    assert_close(x1.grad, g1, terms)
    assert_close(x2.grad, g2, terms)


def test_mol_shape_float32():
    """MOL's FlowNet shape: B = 8 pairs, C = 256, 16 x 16, P = 21, d = 2, against the all-pairs float64 form."""
    g = torch.Generator().manual_seed(2)
    x1, x2 = torch.randn(2, 256, 16, 16, generator=g), torch.randn(2, 256, 16, 16, generator=g)
    out = correlation(x1, x2)
    # float64 all-pairs: S[p, q] = <x1[:, p], x2[:, q]>, then pick q = p + displacement.
    s = torch.einsum("bcp,bcq->bpq", x1.double().flatten(2), x2.double().flatten(2)).view(2, 16, 16, 16, 16)
    expected = torch.zeros(2, 21, 21, 16, 16, dtype=torch.float64)
    pos = torch.arange(16)
    for i in range(21):
        for j in range(21):
            ys, xs = pos + (i - 10) * 2, pos + (j - 10) * 2
            yk, xk = (ys >= 0) & (ys < 16), (xs >= 0) & (xs < 16)
            if yk.any() and xk.any():
                y, x = pos[yk].view(-1, 1), pos[xk].view(1, -1)
                expected[:, i, j, y, x] = s[:, y, x, ys[yk].view(-1, 1), xs[xk].view(1, -1)]
    assert_close(out, expected, 16.0)


@pytest.mark.parametrize("shape", [(1, 2, 5, 6, 3, 2), (2, 3, 4, 3, 5, 1), (1, 2, 3, 7, 1, 3)], ids=str)
def test_gradcheck(shape):
    b, c, h, w, p, d = shape
    x1 = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(b, c, h, w, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b_: correlation(a, b_, p, d), (x1, x2))


def test_partial_gradients():
    x1 = torch.randn(2, 3, 6, 5, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(2, 3, 6, 5, dtype=torch.float64)
    correlation(x1, x2, 5, 2).sum().backward()
    g1, _ = reference_grads(x1, x2, torch.ones(2, 5, 5, 6, 5), 5, 2)
    torch.testing.assert_close(x1.grad, g1)
    full = torch.ops.facekernels._correlation_backward(torch.ones(2, 5, 5, 6, 5, dtype=torch.float64), x1.detach(),
                                                       x2, 5, 2, True, True)
    only2 = torch.ops.facekernels._correlation_backward(torch.ones(2, 5, 5, 6, 5, dtype=torch.float64), x1.detach(),
                                                        x2, 5, 2, False, True)
    assert only2[0].shape == (0,)
    torch.testing.assert_close(only2[1], full[1])


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    x1 = torch.randn(2, 3, 7, 6, device=device, requires_grad=True)
    x2 = torch.randn(2, 3, 7, 6, device=device, requires_grad=True)
    torch.library.opcheck(torch.ops.facekernels.correlation.default, (x1, x2, 5, 2, 1))
    torch.library.opcheck(torch.ops.facekernels.correlation.default, (x1, x2))
    grad = torch.randn(2, 5, 5, 7, 6, device=device)
    torch.library.opcheck(torch.ops.facekernels._correlation_backward.default,
                          (grad, x1.detach(), x2.detach(), 5, 2, True, True))


def test_torch_compile_fullgraph():
    def block(a, b):
        out = correlation(a, b, 7, 2)
        return torch.nn.functional.leaky_relu(out.flatten(1, 2) / a.shape[1], 0.1)

    args = [torch.randn(2, 8, 9, 10, requires_grad=True), torch.randn(2, 8, 9, 10, requires_grad=True)]
    assert_compiled_matches_eager(block, args)


@pytest.mark.parametrize("patch", [5, 9], ids=["tiles", "class_gemm"])
def test_strided_inputs(patch):
    """Channel slices, transposed planes and channels-last inputs are read in place; grad_out may be strided."""
    g = torch.Generator().manual_seed(3)
    big = torch.randn(2, 10, 9, 8, generator=g, dtype=torch.float64)
    x1 = big[:, 1:8:2]                                                               # channel stride 2
    x2 = torch.randn(2, 4, 8, 9, generator=g, dtype=torch.float64).transpose(2, 3)   # H and W swapped
    x1.requires_grad_(); x2.requires_grad_()
    out = correlation(x1, x2, patch, 2)
    torch.testing.assert_close(out, reference(x1, x2, patch, 2))
    grad = torch.randn(2, 9, patch, patch, 8, generator=g, dtype=torch.float64).permute(0, 2, 3, 1, 4)  # strided
    out.backward(grad)
    g1, g2 = reference_grads(x1, x2, grad, patch, 2)
    torch.testing.assert_close(x1.grad, g1)
    torch.testing.assert_close(x2.grad, g2)
    cl1 = x1.detach().contiguous(memory_format=torch.channels_last)
    cl2 = x2.detach().contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(correlation(cl1, cl2, patch, 2), out.detach())


# The whole-class plan splits the work into tasks: a whole sample each when the batch gives two per thread
# (then whole planes are assembled in cache and streamed out), else groups of a sample's row and column
# classes (each task writing only its own elements), and smaller groups when a sample's matrices pass the
# scratch bound (C = 8192 at 8 x 8: 2 of the 4 classes per task). Thread counts change the split.
@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("shape", [(5, 6, 7, 9, 9, 2), (1, 6, 7, 9, 9, 2), (2, 5, 8, 7, 7, 3), (1, 8192, 8, 8, 9, 2)],
                         ids=str)
def test_class_plan_task_splits(shape, threads):
    b, c, h, w, p, d = shape
    g = torch.Generator().manual_seed(11)
    x1 = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    x2 = torch.randn(b, c, h, w, generator=g, dtype=torch.float64)
    grad = torch.randn(b, p, p, h, w, generator=g, dtype=torch.float64)
    expected = reference(x1, x2, p, d)
    g1, g2 = reference_grads(x1, x2, grad, p, d)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for layout in (torch.contiguous_format, torch.channels_last):
            a = x1.clone(memory_format=layout).requires_grad_()
            bb = x2.clone(memory_format=layout).requires_grad_()
            out = correlation(a, bb, p, d)
            torch.testing.assert_close(out, expected)
            out.backward(grad)
            torch.testing.assert_close(a.grad, g1)
            torch.testing.assert_close(bb.grad, g2)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("patch", [5, 21], ids=["tiles", "class_gemm"])
def test_inference_mode(patch):
    """The class plan's GEMMs run on the worker threads, into scratch views made there: under
    inference_mode (a thread-local mode the workers do not share) the results must be the same."""
    g = torch.Generator().manual_seed(5)
    x1, x2 = torch.randn(6, 32, 16, 16, generator=g), torch.randn(6, 32, 16, 16, generator=g)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        expected = correlation(x1, x2, patch, 2)
        with torch.inference_mode():
            got = correlation(x1, x2, patch, 2)
    finally:
        torch.set_num_threads(before)
    assert torch.equal(got, expected)


@pytest.mark.parametrize("patch", [3, 11], ids=["tiles", "class_gemm"])
@pytest.mark.parametrize("shape", [(0, 3, 5, 5), (2, 0, 5, 5), (2, 3, 0, 5), (2, 3, 5, 0)], ids=str)
def test_empty(shape, patch):
    x1 = torch.randn(shape, requires_grad=True)
    x2 = torch.randn(shape, requires_grad=True)
    out = correlation(x1, x2, patch, 1)
    assert out.shape == (shape[0], patch, patch, shape[2], shape[3])
    if shape[1] == 0:  # sums over no channels
        assert out.numel() > 0 and (out == 0).all()
    out.sum().backward()
    assert x1.grad.shape == shape and x2.grad.shape == shape


def test_cpu_capabilities_agree(tmp_path):
    script = (
        "import sys, torch, facekernels\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x1 = torch.randn(2, 19, 11, 12, generator=g, requires_grad=True)\n"
        "x2 = torch.randn(2, 19, 11, 12, generator=g, requires_grad=True)\n"
        "out = facekernels.ops.correlation(x1, x2, 7, 2)\n"
        "out.backward(torch.randn(out.shape, generator=g))\n"
        "y1 = torch.randn(5, 19, 11, 12, generator=g, requires_grad=True)\n"  # the whole-class plan
        "y2 = torch.randn(5, 19, 11, 12, generator=g, requires_grad=True)\n"
        "out2 = facekernels.ops.correlation(y1, y2, 13, 2)\n"
        "out2.backward(torch.randn(out2.shape, generator=g))\n"
        "torch.save((facekernels.build_info()['cpu_kernels']['correlation'],"
        " [out.detach(), x1.grad, x2.grad, out2.detach(), y1.grad, y2.grad]),"
        " sys.argv[1])\n"
    )
    results = run_at_each_cpu_capability(script, tmp_path)
    base = results["default"][1]
    for level, (used, outs) in results.items():
        for a, b in zip(outs, base):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5, msg=f"{level} ({used}) differs from default")


def test_autocast_cpu():
    x1, x2 = torch.randn(1, 4, 5, 5).bfloat16(), torch.randn(1, 4, 5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = correlation(x1, x2, 3, 1)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(x1.float(), x2, 3, 1), atol=1e-5, rtol=1e-5)


def test_double_backward_is_refused():
    x1 = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    x2 = torch.randn(1, 2, 4, 4, dtype=torch.float64, requires_grad=True)
    (g,) = torch.autograd.grad(correlation(x1, x2, 3, 1).square().sum(), x1, create_graph=True)
    with pytest.raises(RuntimeError, match="correlation: double backward"):
        g.sum().backward()


# ---- bad inputs: each raises with the op, the argument, what was expected and what came -------------

GOOD = {"x1": torch.randn(2, 3, 5, 6), "x2": torch.randn(2, 3, 5, 6), "patch_size": 5, "dilation_patch": 2,
        "kernel_size": 1}

BAD = [
    ("shapes differ", arguments(GOOD, x2=torch.randn(2, 3, 5, 7)), r"x2 must have the shape of x1 \[2, 3, 5, 6\], got \[2, 3, 5, 7\]"),
    ("x1 3-D", arguments(GOOD, x1=torch.randn(3, 5, 6)), r"x1 must be a 4-D tensor \[B, C, H, W\], got a 3-D tensor of shape \[3, 5, 6\]"),
    ("x2 5-D", arguments(GOOD, x2=torch.randn(1, 2, 3, 5, 6)), r"x2 must be a 4-D tensor \[B, C, H, W\], got a 5-D"),
    ("even patch_size", arguments(GOOD, patch_size=4), r"patch_size must be an odd number >= 1, got 4"),
    ("patch_size 0", arguments(GOOD, patch_size=0), r"patch_size must be an odd number >= 1, got 0"),
    ("patch_size -1", arguments(GOOD, patch_size=-1), r"patch_size must be an odd number >= 1, got -1"),
    ("dilation 0", arguments(GOOD, dilation_patch=0), r"dilation_patch must be >= 1, got 0"),
    ("kernel_size 3", arguments(GOOD, kernel_size=3), r"kernel_size must be 1 \(only single-pixel windows are implemented\), got 3"),
    ("integer x1", arguments(GOOD, x1=torch.ones(2, 3, 5, 6, dtype=torch.int32), x2=torch.ones(2, 3, 5, 6, dtype=torch.int32)),
     r"x1 must be float32 or float64 on CPU, got int32"),
    ("half on CPU", arguments(GOOD, x1=torch.randn(2, 3, 5, 6).half(), x2=torch.randn(2, 3, 5, 6).half()),
     r"x1 must be float32 or float64 on CPU, got float16"),
    ("mixed dtypes", arguments(GOOD, x2=torch.randn(2, 3, 5, 6, dtype=torch.float64)), r"x2 must have the same dtype as x1 \(float32\), got float64"),
]


@pytest.mark.parametrize("args,match", [b[1:] for b in BAD], ids=[b[0] for b in BAD])
def test_bad_inputs_raise(args, match):
    with pytest.raises(RuntimeError, match=r"correlation: " + match):
        correlation(*args)


def test_bad_input_mixed_devices():
    with pytest.raises(RuntimeError, match=r"correlation: x2 must be on the same device as x1 \(cpu\), got meta"):
        correlation(torch.randn(2, 3, 5, 6), torch.randn(2, 3, 5, 6, device="meta"))


@pytest.mark.parametrize("args", [b[1] for b in BAD], ids=[b[0] for b in BAD])
def test_fake_kernel_refuses_bad_inputs(args):
    assert_fake_refuses_like_native(correlation, *args)


BACKWARD_GOOD = {"grad_out": torch.randn(2, 5, 5, 5, 6), "x1": torch.randn(2, 3, 5, 6), "x2": torch.randn(2, 3, 5, 6),
                 "patch_size": 5, "dilation_patch": 2, "need_x1": True, "need_x2": True}
BACKWARD_BAD = {
    "grad_out shape": arguments(BACKWARD_GOOD, grad_out=torch.randn(2, 3, 5, 5, 6)),
    "grad_out 4-D": arguments(BACKWARD_GOOD, grad_out=torch.randn(2, 25, 5, 6)),
    "grad_out dtype": arguments(BACKWARD_GOOD, grad_out=torch.randn(2, 5, 5, 5, 6, dtype=torch.float64)),
    "x2 shape": arguments(BACKWARD_GOOD, x2=torch.randn(2, 3, 5, 5)),
    "even patch": arguments(BACKWARD_GOOD, patch_size=4),
}


def test_backward_op_checks_grad_shape():
    with pytest.raises(RuntimeError, match=r"_correlation_backward: grad_out must have shape \[2, 5, 5, 5, 6\], got \[2, 3, 5, 5, 6\]"):
        torch.ops.facekernels._correlation_backward(*BACKWARD_BAD["grad_out shape"])


@pytest.mark.parametrize("args", BACKWARD_BAD.values(), ids=BACKWARD_BAD.keys())
def test_backward_fake_kernel_refuses_bad_inputs(args):
    assert_fake_refuses_like_native(torch.ops.facekernels._correlation_backward.default, *args)


@pytest.mark.parametrize("name", ["shapes differ", "even patch_size", "mixed dtypes", "integer x1"])
def test_compile_and_export_refuse_bad_inputs(name):
    args = next(b[1] for b in BAD if b[0] == name)
    assert_tracing_refuses_like_native(correlation, *args)


def test_build_info_names_the_kernel_level():
    info = facekernels.build_info()
    assert info["cpu_kernels"]["correlation"].upper() in [c.upper() for c in info["cpu_capabilities_compiled"]]


# ---- CUDA (cuda/correlation; without a GPU these skip, and the kernels run under the emulator instead:
# tests/cudaemu/test_correlation*_emu.py) ------------------------------------------------------------------


@pytest.mark.parametrize("device,dtype", [p for p in DEVICE_DTYPES if p.id.startswith("cuda")])
def test_cuda_matches_reference(device, dtype):
    g = torch.Generator().manual_seed(4)
    for b, c, h, w, p, d in [(2, 5, 7, 9, 5, 2), (2, 40, 16, 16, 21, 2), (1, 3, 6, 5, 3, 3)]:
        x1 = torch.randn(b, c, h, w, generator=g).to(device, dtype).requires_grad_()
        x2 = torch.randn(b, c, h, w, generator=g).to(device, dtype).requires_grad_()
        out = correlation(x1, x2, p, d)
        scale = max(1.0, c ** 0.5)
        assert_close(out, reference(x1, x2, p, d), scale)
        grad = torch.randn(out.shape, generator=g).to(device, dtype)
        out.backward(grad)
        g1, g2 = reference_grads(x1, x2, grad, p, d)
        assert_close(x1.grad, g1, scale * p)
        assert_close(x2.grad, g2, scale * p)


@pytest.mark.cuda
def test_cuda_mixed_devices_refused():
    with pytest.raises(RuntimeError, match=r"correlation: x2 must be on the same device as x1 \(cuda:0\), got cpu"):
        correlation(torch.randn(1, 2, 4, 4, device="cuda"), torch.randn(1, 2, 4, 4))
