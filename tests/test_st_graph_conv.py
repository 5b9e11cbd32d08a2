"""st_graph_conv: values and all four gradients against one literal float64 einsum formula, both
contraction orders (Cin < Cout and Cin > Cout), shared and per-sample adjacency, K = 1, T = 1, V = 1, no
bias, gradcheck, the torch.library contract, torch.compile, strided inputs, empty batches, the ST-GCN
ConvTemporalGraphical equivalence, the fake kernel's checks, and every bad input; on the CPU first, then
on CUDA (marked `cuda`, skipped without a GPU).

The CUDA binding computes in float32 for every storage dtype (float64 is refused), so gradcheck, which
needs float64, cannot run there: its gradients are compared with the float64 reference's autograd
instead, relative to the largest reference value. Tolerances: tests/devices.py's table, family
"st_graph_conv" (CPU: atol/rtol; CUDA: a bound on the largest error relative to the largest reference value,
its atol)."""

import facekernels
import pytest
import torch
from devices import tolerance
from helpers import (
    arguments,
    assert_compiled_matches_eager,
    assert_fake_refuses_like_native,
    assert_tracing_refuses_like_native,
    run_at_each_cpu_capability,
)
from facekernels.ops import st_graph_conv


def reference(x, weight, adjacency, bias=None):
    """out[n, c, t, w] = sum_k sum_v (sum_i weight[k, c, i] x[n, i, t, v] + bias[k, c]) A[(n,) k, v, w],
    written literally in float64 (differentiable, for reference gradients)."""
    x, weight, adjacency = x.cpu().double(), weight.cpu().double(), adjacency.cpu().double()
    z = torch.einsum("kci,nitv->nkctv", weight, x)
    if bias is not None:
        z = z + bias.cpu().double()[None, :, :, None, None]
    if adjacency.dim() == 3:
        return torch.einsum("nkctv,kvw->nctw", z, adjacency)
    return torch.einsum("nkctv,nkvw->nctw", z, adjacency)


CASES = [  # (N, Cin, Cout, T, V, K, per_sample adjacency, bias)
    (2, 3, 5, 4, 6, 3, False, True),     # Cin < Cout: aggregate first
    (2, 6, 3, 4, 5, 2, False, True),     # Cin > Cout: channels first
    (3, 4, 4, 1, 7, 1, False, False),    # K = 1, T = 1, no bias
    (2, 3, 2, 5, 1, 2, True, True),      # V = 1, per-sample adjacency
    (1, 5, 7, 3, 4, 3, True, False),     # batch of one, per sample, aggregate first
    (5, 7, 5, 3, 9, 3, True, True),      # per sample, channels first, more samples than threads
    (4, 1, 1, 2, 3, 1, False, True),     # one channel each
    (3, 8, 16, 7, 20, 3, False, True),   # lip-graph sized
]


def make(case, dtype=torch.float64, requires_grad=True):
    n, cin, cout, t, v, k, per_sample, has_bias = case
    x = torch.randn(n, cin, t, v, dtype=dtype)
    weight = torch.randn(k, cout, cin, dtype=dtype)
    adjacency = torch.rand(*((n,) if per_sample else ()), k, v, v, dtype=dtype)
    bias = torch.randn(k, cout, dtype=dtype) if has_bias else None
    tensors = [x, weight, adjacency] + ([bias] if has_bias else [])
    for t_ in tensors:
        t_.requires_grad_(requires_grad)
    return x, weight, adjacency, bias


def check_against_reference(x, weight, adjacency, bias, dtype):
    out = st_graph_conv(x, weight, adjacency, bias)
    assert out.shape == (x.shape[0], weight.shape[1], x.shape[2], x.shape[3])
    assert out.dtype == dtype and out.is_contiguous()
    leaves = [t.detach().double().requires_grad_() for t in (x, weight, adjacency)]
    b64 = bias.detach().double().requires_grad_() if bias is not None else None
    ref = reference(*leaves, b64)
    torch.testing.assert_close(out.double(), ref, **tolerance("cpu", dtype, "st_graph_conv"))
    grad = torch.randn_like(ref)
    inputs = [x, weight, adjacency] + ([bias] if bias is not None else [])
    ref_inputs = leaves + ([b64] if b64 is not None else [])
    got = torch.autograd.grad(out, inputs, grad.to(dtype))
    want = torch.autograd.grad(ref, ref_inputs, grad)
    for name, g, w in zip(["x", "weight", "adjacency", "bias"], got, want):
        assert g.dtype == dtype
        scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
        torch.testing.assert_close(g.double() / scale, w / scale, **tolerance("cpu", dtype, "st_graph_conv"), msg=f"grad {name}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(case, dtype):
    check_against_reference(*make(case, dtype), dtype)


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[5]], ids=str)
@pytest.mark.parametrize("wanted", [(0,), (1,), (2,), (3,), (0, 1), (0, 2), (1, 3), (1, 2)])
def test_partial_gradients(case, wanted):
    """Each subset of gradients. The backward picks its contraction order from the subset: with
    CASES[0] (Cin=3 < Cout=5) grad_x alone aggregates first like the forward, while grad_x with
    grad_weight is cheaper channels first."""
    x, weight, adjacency, bias = make(case, requires_grad=False)
    inputs = [x, weight, adjacency, bias]
    chosen = [inputs[i].requires_grad_() for i in wanted]
    out = st_graph_conv(x, weight, adjacency, bias)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, chosen, grad)
    ref = reference(x, weight, adjacency, bias)
    want = torch.autograd.grad(ref, chosen, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **tolerance("cpu", torch.float64, "st_graph_conv"))


def test_workload_shape_float32():
    """The LRW workload's channel and graph sizes on a few samples (BLAS-sized GEMMs, several threads)."""
    check_against_reference(*make((3, 64, 128, 5, 68, 3, False, True), torch.float32), torch.float32)


@pytest.mark.parametrize(
    "cin,cout,has_bias,per_sample",
    [(2, 3, True, False), (3, 2, True, True), (2, 3, False, True), (3, 2, False, False)],
    ids=["aggregate first", "channels first, per sample", "aggregate first, per sample, no bias",
         "channels first, no bias"],
)
def test_gradcheck(cin, cout, has_bias, per_sample):
    args = make((2, cin, cout, 3, 4, 2, per_sample, has_bias))
    assert torch.autograd.gradcheck(lambda *a: st_graph_conv(*a), args)


def test_opcheck():
    ops = torch.ops.facekernels
    for case in (CASES[0], CASES[3]):
        x, weight, adjacency, bias = make(case, torch.float32)
        torch.library.opcheck(ops.st_graph_conv.default, (x, weight, adjacency, bias))
        torch.library.opcheck(ops.st_graph_conv.default, (x, weight, adjacency))
        grad = torch.randn(x.shape[0], weight.shape[1], x.shape[2], x.shape[3])
        plain = [t.detach() for t in (x, weight, adjacency)]
        for mask in [(True, True, True, True), (False, True, True, False)]:
            torch.library.opcheck(ops._st_graph_conv_backward.default, (grad, *plain, bias.detach(), *mask))
        torch.library.opcheck(ops._st_graph_conv_backward.default, (grad, *plain, None, True, True, True, False))


def test_torch_compile_fullgraph():
    x, weight, adjacency, bias = make(CASES[0], torch.float32)

    def fn(x, weight, adjacency, bias):
        return torch.relu(st_graph_conv(x * 2, weight, adjacency, bias))

    assert_compiled_matches_eager(fn, (x, weight, adjacency, bias))


def test_strided_inputs():
    """x permuted from [N, T, V, C], a transposed weight, sliced adjacency and bias, a strided grad_out."""
    n, cin, cout, t, v, k = 3, 5, 4, 6, 7, 2
    x = torch.randn(n, t, v, cin, dtype=torch.float64).permute(0, 3, 1, 2).requires_grad_()
    weight = torch.randn(k, cin, cout, dtype=torch.float64).transpose(1, 2).requires_grad_()
    adjacency = torch.rand(k, v, 2 * v, dtype=torch.float64)[:, :, ::2].requires_grad_()
    bias = torch.randn(cout, k, dtype=torch.float64).t().requires_grad_()
    assert not (x.is_contiguous() or weight.is_contiguous() or adjacency.is_contiguous() or bias.is_contiguous())
    check_against_reference(x, weight, adjacency, bias, torch.float64)
    # Batch-strided x (a slice of a larger batch) is read in place.
    big = torch.randn(2 * n, cin, t, v, dtype=torch.float64)
    torch.testing.assert_close(st_graph_conv(big[::2], weight, adjacency, bias),
                               reference(big[::2], weight, adjacency, bias))
    # Per-sample adjacency transposed in its last two dimensions.
    per_sample = torch.rand(n, k, v, v, dtype=torch.float64).transpose(2, 3)
    torch.testing.assert_close(st_graph_conv(x, weight, per_sample, bias), reference(x, weight, per_sample, bias))
    # The backward op with a non-contiguous grad_out.
    grad = torch.randn(n, t, v, cout, dtype=torch.float64).permute(0, 3, 1, 2)
    got = torch.ops.facekernels._st_graph_conv_backward(grad, x, weight, adjacency, bias, True, True, True, True)
    leaves = [a.detach().requires_grad_() for a in (x, weight, adjacency, bias)]
    want = torch.autograd.grad(reference(*leaves), leaves, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("per_sample", [False, True])
def test_empty_batch(per_sample):
    x, weight, adjacency, bias = make((0, 3, 4, 5, 6, 2, per_sample, True))
    out = st_graph_conv(x, weight, adjacency, bias)
    assert out.shape == (0, 4, 5, 6)
    out.sum().backward()
    assert x.grad.shape == x.shape
    for t in (weight, adjacency, bias):
        assert t.grad.shape == t.shape and not t.grad.any()


def test_zero_frames():
    x, weight, adjacency, bias = make((2, 3, 4, 0, 6, 2, False, True))
    out = st_graph_conv(x, weight, adjacency, bias)
    assert out.shape == (2, 4, 0, 6)
    out.sum().backward()
    assert not weight.grad.any() and not adjacency.grad.any() and not bias.grad.any()


@pytest.mark.parametrize("case", [(2, 0, 3, 4, 5, 2, False, True), (2, 3, 4, 5, 6, 0, False, True)],
                         ids=["no input channels", "no partitions"])
def test_empty_sums(case):
    """Cin = 0 leaves only the bias term; K = 0 sums nothing (zeros, zero gradients)."""
    check_against_reference(*make(case), torch.float64)


def test_matches_st_gcn_conv_temporal_graphical():
    """ST-GCN's layer: a 1x1 Conv2d to K * Cout channels, then einsum('nkctv,kvw->nctw')."""
    n, cin, cout, t, v, k = 2, 6, 8, 5, 10, 3
    conv = torch.nn.Conv2d(cin, k * cout, kernel_size=1).double()
    x = torch.randn(n, cin, t, v, dtype=torch.float64)
    adjacency = torch.rand(k, v, v, dtype=torch.float64)
    y = conv(x).view(n, k, cout, t, v)
    expected = torch.einsum("nkctv,kvw->nctw", y, adjacency)
    weight = conv.weight.detach().view(k, cout, cin)
    bias = conv.bias.detach().view(k, cout)
    torch.testing.assert_close(st_graph_conv(x, weight, adjacency, bias), expected)


def test_inference_mode_and_threads():
    """Worker threads make their GEMM tensors themselves (inference tensors must not leak to them)."""
    x, weight, adjacency, bias = make(CASES[5], torch.float32, requires_grad=False)
    threads = torch.get_num_threads()
    try:
        for n_threads in (1, 2, 3):
            torch.set_num_threads(n_threads)
            with torch.inference_mode():
                out = st_graph_conv(x, weight, adjacency, bias)
            torch.testing.assert_close(out.double(), reference(x, weight, adjacency, bias), **tolerance("cpu", torch.float32, "st_graph_conv"))
    finally:
        torch.set_num_threads(threads)


def test_autocast_cpu_mixed_dtypes():
    x, weight, adjacency, bias = make(CASES[0], torch.float32, requires_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = st_graph_conv(x.bfloat16(), weight, adjacency.bfloat16(), bias)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(x.bfloat16(), weight, adjacency.bfloat16(), bias),
                               **tolerance("cpu", torch.float32, "st_graph_conv"))


def test_cpu_capabilities_agree(tmp_path):
    script = (
        "import sys, torch, facekernels\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(3, 4, 5, 7); w = torch.randn(2, 6, 4); a = torch.rand(3, 2, 7, 7); b = torch.randn(2, 6)\n"
        "g = torch.randn(3, 6, 5, 7)\n"
        "ops = torch.ops.facekernels\n"
        "outs = [ops.st_graph_conv(x, w, a, b), ops.st_graph_conv(x, w, a[0], b)]\n"
        "outs += list(ops._st_graph_conv_backward(g, x, w, a, b, True, True, True, True))\n"
        "outs += list(ops._st_graph_conv_backward(g, x, w, a[0], b, True, True, True, True))\n"
        "torch.save((facekernels.build_info()['cpu_kernels']['st_graph_conv'], outs), sys.argv[1])\n"
    )
    results = run_at_each_cpu_capability(script, tmp_path)
    base = results["default"][1]
    for level, (used, outs) in results.items():
        for a, b in zip(outs, base):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"{level} ({used}) differs from default")


# ---- the mask (issue 21) ------------------------------------------------------------------------------


def reference_masked(x, weight, adjacency, bias, mask):
    """The masked op written literally in float64: every message z[n, k, c, t, v] (channel product plus
    bias) of a masked source point is dropped, then the output at masked points is zeroed."""
    x = torch.where(mask[:, None].cpu(), x.cpu().double(), 0.0)
    weight, adjacency, m = weight.cpu().double(), adjacency.cpu().double(), mask.cpu().double()
    z = torch.einsum("kci,nitv->nkctv", weight, x)
    if bias is not None:
        z = z + bias.cpu().double()[None, :, :, None, None]
    z = z * m[:, None, None]
    if adjacency.dim() == 3:
        out = torch.einsum("nkctv,kvw->nctw", z, adjacency)
    else:
        out = torch.einsum("nkctv,nkvw->nctw", z, adjacency)
    return out * m[:, None]


def make_mask(n, t, v, fraction=0.3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, t, v, generator=g) >= fraction


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_masked_matches_reference(case, dtype):
    x, weight, adjacency, bias = make(case, dtype)
    n, _, _, t, v, *_ = case
    mask = make_mask(n, t, v)
    out = st_graph_conv(x, weight, adjacency, bias, mask=mask)
    assert out.shape == (n, weight.shape[1], t, v) and out.dtype == dtype
    leaves = [a.detach().double().requires_grad_() for a in (x, weight, adjacency)]
    b64 = bias.detach().double().requires_grad_() if bias is not None else None
    ref = reference_masked(*leaves, b64, mask)
    tol = tolerance("cpu", dtype, "st_graph_conv")
    torch.testing.assert_close(out.double(), ref, **tol)
    grad = torch.randn_like(ref)
    inputs = [x, weight, adjacency] + ([bias] if bias is not None else [])
    got = torch.autograd.grad(out, inputs, grad.to(dtype))
    want = torch.autograd.grad(ref, leaves + ([b64] if b64 is not None else []), grad)
    for name, g_, w in zip(["x", "weight", "adjacency", "bias"], got, want):
        scale = max(1.0, w.abs().max().item())
        torch.testing.assert_close(g_.double() / scale, w / scale, **tol, msg=f"grad {name}")


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[5]], ids=str)
def test_all_true_mask_equals_unmasked(case):
    """The issue's "masked and unmasked give equal results where no point is masked" (float32: the bias goes
    through the channel product instead of the bias table, so equal up to rounding)."""
    x, weight, adjacency, bias = make(case, torch.float32)
    mask = torch.ones(x.shape[0], x.shape[2], x.shape[3], dtype=torch.bool)
    plain = st_graph_conv(x, weight, adjacency, bias)
    masked = st_graph_conv(x, weight, adjacency, bias, mask=mask)
    torch.testing.assert_close(masked, plain, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(plain)
    for g_, w in zip(torch.autograd.grad(masked, [x, weight, adjacency, bias], grad),
                     torch.autograd.grad(plain, [x, weight, adjacency, bias], grad)):
        torch.testing.assert_close(g_, w, rtol=1e-5, atol=1e-4)


def test_masked_points_contribute_nothing():
    """Whatever x holds at masked points (NaN included) changes nothing; its gradient there is zero; the
    output at masked points is zero; a node whose every source is masked gets no bias."""
    x, weight, adjacency, bias = make(CASES[0], requires_grad=False)
    n, _, t, v = x.shape
    mask = make_mask(n, t, v, 0.4)
    mask[0, 1] = False                   # a whole frame missing: no message anywhere, output zero
    out = st_graph_conv(x, weight, adjacency, bias, mask=mask)
    noisy = torch.where(mask[:, None], x, torch.full_like(x, float("nan")))
    noisy.requires_grad_()
    out_noisy = st_graph_conv(noisy, weight, adjacency, bias, mask=mask)
    torch.testing.assert_close(out_noisy, out)
    assert (out.abs().sum(1)[~mask] == 0).all()
    assert (out[0, :, 1] == 0).all()
    (grad_x,) = torch.autograd.grad(out_noisy.sum(), [noisy])
    assert torch.isfinite(grad_x).all() and (grad_x.abs().sum(1)[~mask] == 0).all()


@pytest.mark.parametrize("has_bias,per_sample", [(True, False), (False, False), (True, True)],
                         ids=["bias", "no bias", "bias, per sample"])
def test_masked_gradcheck(has_bias, per_sample):
    x, weight, adjacency, bias = make((2, 2, 3, 3, 4, 2, per_sample, has_bias))
    mask = make_mask(2, 3, 4, 0.4, seed=1)
    assert torch.autograd.gradcheck(lambda *a: st_graph_conv(*a, mask=mask), (x, weight, adjacency, bias))


def test_masked_opcheck():
    """The op as the masked path calls it: x zeroed and extended by the mask channel, the bias as that
    channel's weight, no bias argument."""
    x, weight, adjacency, bias = make(CASES[0], torch.float32, requires_grad=False)
    mask = make_mask(x.shape[0], x.shape[2], x.shape[3]).unsqueeze(1)
    x_and_mask = torch.cat([torch.where(mask, x, 0.0), mask.float()], 1).requires_grad_()
    weight_and_bias = torch.cat([weight, bias.unsqueeze(2)], 2).requires_grad_()
    torch.library.opcheck(torch.ops.facekernels.st_graph_conv.default,
                          (x_and_mask, weight_and_bias, adjacency.requires_grad_()))


def test_masked_torch_compile_fullgraph():
    x, weight, adjacency, bias = make(CASES[0], torch.float32)
    mask = make_mask(x.shape[0], x.shape[2], x.shape[3])

    def fn(x, weight, adjacency, bias, mask):
        return torch.relu(st_graph_conv(x * 2, weight, adjacency, bias, mask=mask))

    assert_compiled_matches_eager(fn, (x, weight, adjacency, bias, mask))


@pytest.mark.parametrize("mask,match", [
    (torch.ones(2, 4, 5), r"mask must be a bool tensor \(True = valid point\), got float32"),
    (torch.ones(2, 4, dtype=torch.bool), r"mask must have shape \[N, T, V\] = \[2, 4, 5\], got shape \[2, 4\]"),
    (torch.ones(2, 5, 4, dtype=torch.bool), r"mask must have shape \[N, T, V\] = \[2, 4, 5\], got shape \[2, 5, 4\]"),
    (torch.ones(2, 4, 5, dtype=torch.bool, device="meta"), r"mask must be on the same device as x \(cpu\), got meta"),
], ids=["float", "2-D", "T and V swapped", "meta"])
def test_bad_mask_raises(mask, match):
    with pytest.raises(RuntimeError, match=r"st_graph_conv: " + match):
        st_graph_conv(**_args(), mask=mask)


def test_masked_checks_the_op_arguments_first():
    """A bad weight is reported as the op reports it, not as the extended weight of the masked path."""
    with pytest.raises(RuntimeError, match=r"weight must have Cin = x.size\(1\) = 3 input channels"):
        st_graph_conv(**_args(weight=torch.randn(2, 6, 4)), mask=torch.ones(2, 4, 5, dtype=torch.bool))


def test_build_info_lists_kernel():
    info = facekernels.build_info()
    assert info["cpu_kernels"]["st_graph_conv"] == info["cpu_capability"]


def _args(**over):
    args = {"x": torch.randn(2, 3, 4, 5), "weight": torch.randn(2, 6, 3), "adjacency": torch.rand(2, 5, 5),
            "bias": torch.randn(2, 6)}
    args.update(over)
    return args


BAD = [
    ("x 3-D", _args(x=torch.randn(3, 4, 5)), r"x must be a 4-D tensor \[N, Cin, T, V\], got a 3-D tensor of shape \[3, 4, 5\]"),
    ("weight 2-D", _args(weight=torch.randn(6, 3)), r"weight must be a 3-D tensor \[K, Cout, Cin\], got a 2-D tensor"),
    ("Cin mismatch", _args(weight=torch.randn(2, 6, 4)),
     r"weight must have Cin = x.size\(1\) = 3 input channels, \[K, Cout, 3\], got shape \[2, 6, 4\]"),
    ("K mismatch", _args(adjacency=torch.rand(3, 5, 5)),
     r"adjacency must have K = weight.size\(0\) = 2 partitions, got shape \[3, 5, 5\]"),
    ("V mismatch", _args(adjacency=torch.rand(2, 5, 4)),
     r"adjacency must be \[K, V, V\] with V = x.size\(3\) = 5 nodes, got shape \[2, 5, 4\]"),
    ("V mismatch per sample", _args(adjacency=torch.rand(2, 2, 6, 6)),
     r"adjacency must be \[N, K, V, V\] with V = x.size\(3\) = 5 nodes, got shape \[2, 2, 6, 6\]"),
    ("adjacency 2-D", _args(adjacency=torch.rand(5, 5)),
     r"adjacency must be a 3-D tensor \[K, V, V\] \(shared\) or a 4-D tensor \[N, K, V, V\] \(per sample\), got a 2-D"),
    ("adjacency 5-D", _args(adjacency=torch.rand(1, 2, 2, 5, 5)), r"adjacency must be a 3-D tensor \[K, V, V\]"),
    ("adjacency batch", _args(adjacency=torch.rand(3, 2, 5, 5)),
     (r"adjacency must have N = x.size\(0\) = 2 samples when 4-D \[N, K, V, V\] \(or be 3-D \[K, V, V\], shared\), "
      r"got shape \[3, 2, 5, 5\]")),
    ("bias shape", _args(bias=torch.randn(6)), r"bias must have shape \[K, Cout\] = \[2, 6\], got shape \[6\]"),
    ("bias transposed", _args(bias=torch.randn(6, 2)), r"bias must have shape \[K, Cout\] = \[2, 6\], got shape \[6, 2\]"),
    ("integer x", _args(x=torch.ones(2, 3, 4, 5, dtype=torch.int64)), r"x must be float32 or float64 on CPU, got int64"),
    ("integer weight", _args(weight=torch.ones(2, 6, 3, dtype=torch.int32)),
     r"weight must have the same dtype as x \(float32\), got int32"),
    ("half on CPU", _args(x=torch.randn(2, 3, 4, 5).half()), r"x must be float32 or float64 on CPU, got float16"),
    ("mixed float adjacency", _args(adjacency=torch.rand(2, 5, 5, dtype=torch.float64)),
     r"adjacency must have the same dtype as x \(float32\), got float64"),
    ("mixed float bias", _args(bias=torch.randn(2, 6, dtype=torch.float64)),
     r"bias must have the same dtype as x \(float32\), got float64"),
]


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_raise(name, args, match):
    with pytest.raises(RuntimeError, match=r"st_graph_conv: " + match):
        st_graph_conv(**args)


def test_bad_input_mixed_devices():
    with pytest.raises(RuntimeError, match=r"st_graph_conv: adjacency must be on the same device as x \(cpu\), got meta"):
        st_graph_conv(torch.randn(2, 3, 4, 5), torch.randn(2, 6, 3), torch.rand(2, 5, 5, device="meta"))


def test_backward_op_checks_grad_out():
    x, weight, adjacency, bias = (t.detach() for t in make(CASES[0], torch.float32))
    with pytest.raises(RuntimeError, match=r"_st_graph_conv_backward: grad_out must have shape \[N, Cout, T, V\] = "
                                           r"\[2, 5, 4, 6\], got shape \[2, 5, 4, 5\]"):
        torch.ops.facekernels._st_graph_conv_backward(torch.randn(2, 5, 4, 5), x, weight, adjacency, bias,
                                                      True, True, True, True)
    with pytest.raises(RuntimeError, match=r"_st_graph_conv_backward: grad_out must have the same dtype as x "
                                           r"\(float32\), got float64"):
        torch.ops.facekernels._st_graph_conv_backward(torch.randn(2, 5, 4, 6, dtype=torch.float64), x, weight,
                                                      adjacency, bias, True, True, True, True)


# ---- the fake kernels refuse what the native ops refuse, with the same exception and message, so that
# tracing, compiling and exporting fail where the eager call does (issue 17) ----------------------------


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_fake_kernel_refuses_bad_inputs(name, args, match):
    assert_fake_refuses_like_native(st_graph_conv, **args)


BACKWARD_GOOD = {"grad_out": torch.randn(2, 6, 4, 5), **_args(), "need_x": True, "need_weight": True,
                 "need_adjacency": True, "need_bias": True}
BACKWARD_BAD = {
    "grad_out shape": arguments(BACKWARD_GOOD, grad_out=torch.randn(2, 6, 4, 4)),
    "grad_out 3-D": arguments(BACKWARD_GOOD, grad_out=torch.randn(6, 4, 5)),
    "grad_out dtype": arguments(BACKWARD_GOOD, grad_out=torch.randn(2, 6, 4, 5, dtype=torch.float64)),
    "Cin mismatch": arguments(BACKWARD_GOOD, weight=torch.randn(2, 6, 4)),
    "adjacency batch": arguments(BACKWARD_GOOD, adjacency=torch.rand(3, 2, 5, 5)),
    "bias shape": arguments(BACKWARD_GOOD, bias=torch.randn(6)),
    "integer x": arguments(BACKWARD_GOOD, x=torch.ones(2, 3, 4, 5, dtype=torch.int64)),
}


@pytest.mark.parametrize("args", BACKWARD_BAD.values(), ids=BACKWARD_BAD.keys())
def test_backward_fake_kernel_refuses_bad_inputs(args):
    assert_fake_refuses_like_native(torch.ops.facekernels._st_graph_conv_backward.default, *args)


@pytest.mark.parametrize("name", ["Cin mismatch", "V mismatch per sample", "bias transposed", "mixed float adjacency"])
def test_compile_and_export_refuse_bad_inputs(name):
    args = next(b[1] for b in BAD if b[0] == name)
    args = (args["x"], args["weight"], args["adjacency"], args["bias"])
    assert_tracing_refuses_like_native(st_graph_conv, *args)


def test_double_backward_is_refused_not_wrong():
    x, weight, adjacency, bias = make(CASES[0])
    out = st_graph_conv(x, weight, adjacency, bias)
    (g,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="st_graph_conv: double backward .* is not implemented"):
        torch.autograd.grad(g.sum(), weight)


def test_fake_checks():
    """The fake (meta) kernel refuses what the native kernels refuse."""

    def meta(*shape, dtype=torch.float32):
        return torch.empty(*shape, device="meta", dtype=dtype)

    x, weight, adjacency = meta(2, 3, 4, 5), meta(2, 6, 3), meta(2, 5, 5)
    with pytest.raises(RuntimeError, match="Cin"):
        torch.ops.facekernels.st_graph_conv(x, meta(2, 6, 4), adjacency)
    with pytest.raises(RuntimeError, match="adjacency must have K = weight.size"):
        torch.ops.facekernels.st_graph_conv(x, weight, meta(3, 5, 5))
    with pytest.raises(RuntimeError, match="dtype"):
        torch.ops.facekernels.st_graph_conv(x, meta(2, 6, 3, dtype=torch.float64), adjacency)
    assert torch.ops.facekernels.st_graph_conv(x, weight, meta(2, 2, 5, 5)).shape == (2, 6, 4, 5)


# ---- CUDA ---------------------------------------------------------------------------------------------------

DEVICE = "cuda"


def cuda_tol(dtype, scale=1.0):
    """The largest error allowed relative to the largest reference value: tests/devices.py's
    ("st_graph_conv", "cuda", dtype) atol (float16/bfloat16 inputs and outputs are rounded once each;
    everything in between is float32), times `scale`."""
    return tolerance("cuda", dtype, "st_graph_conv", scale)["atol"]

CUDA_CASES = [  # (N, Cin, Cout, T, V, K, per_sample adjacency, bias)
    (2, 3, 5, 4, 6, 3, False, True),     # Cin < Cout: aggregate first
    (2, 6, 3, 4, 5, 2, False, True),     # Cin > Cout: channels first
    (3, 4, 4, 1, 7, 1, False, False),    # K = 1, T = 1, no bias
    (2, 3, 2, 5, 1, 2, True, True),      # V = 1, per-sample adjacency
    (5, 7, 5, 3, 9, 3, True, True),      # per sample, channels first
    (4, 64, 128, 29, 68, 3, False, True),  # the LRW workload's sizes
    (4, 64, 128, 29, 20, 3, True, True),   # lip graph, per sample
]


def make_cuda(case, dtype):
    n, cin, cout, t, v, k, per_sample, has_bias = case
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, cin, t, v, generator=g)
    weight = torch.randn(k, cout, cin, generator=g) / cin**0.5
    adjacency = torch.rand(*((n,) if per_sample else ()), k, v, v, generator=g) / v**0.5
    bias = torch.randn(k, cout, generator=g) if has_bias else None
    return tuple(None if t_ is None else t_.to(DEVICE, dtype).requires_grad_() for t_ in (x, weight, adjacency, bias))


def assert_close_scaled(got, want, tol, what):
    want = want.double()
    scale = max(1.0, want.abs().max().item())
    err = (got.double().cpu() - want).abs().max().item() / scale
    assert err <= tol, f"{what}: max error {err:.3g} (relative to {scale:.3g}) > {tol}"


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CUDA_CASES, ids=str)
def test_cuda_matches_reference(case, dtype):
    x, weight, adjacency, bias = make_cuda(case, dtype)
    out = st_graph_conv(x, weight, adjacency, bias)
    assert out.dtype == dtype and out.device.type == "cuda" and out.is_contiguous()
    leaves = [t.detach().double().cpu().requires_grad_() for t in (x, weight, adjacency)]
    b64 = bias.detach().double().cpu().requires_grad_() if bias is not None else None
    ref = reference(*leaves, b64)
    assert_close_scaled(out, ref, cuda_tol(dtype), "out")
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inputs = [x, weight, adjacency] + ([bias] if bias is not None else [])
    got = torch.autograd.grad(out, inputs, grad.to(DEVICE, dtype))
    want = torch.autograd.grad(ref, leaves + ([b64] if b64 is not None else []), grad.to(dtype).double())
    for name, g, w in zip(["x", "weight", "adjacency", "bias"], got, want):
        assert g.dtype == dtype and g.shape == w.shape
        assert_close_scaled(g, w, cuda_tol(dtype, 2), f"grad {name}")


@pytest.mark.cuda
@pytest.mark.parametrize("case", [CUDA_CASES[0], CUDA_CASES[1], CUDA_CASES[4]], ids=str)
def test_cuda_matches_cpu_kernel_and_partial_gradients(case):
    x, weight, adjacency, bias = make_cuda(case, torch.float32)
    grad = torch.randn(x.shape[0], weight.shape[1], x.shape[2], x.shape[3])
    cpu = [t.detach().cpu() for t in (x, weight, adjacency, bias)]
    torch.testing.assert_close(st_graph_conv(x, weight, adjacency, bias).cpu(), st_graph_conv(*cpu),
                               atol=1e-4, rtol=1e-4)
    ops = torch.ops.facekernels
    for mask in [(True, True, True, True), (True, False, False, False), (False, True, False, False),
                 (False, False, True, False), (False, False, False, True), (False, True, True, True)]:
        got = ops._st_graph_conv_backward(grad.to(DEVICE), x.detach(), weight.detach(), adjacency.detach(),
                                          bias.detach(), *mask)
        want = ops._st_graph_conv_backward(grad, *cpu, *mask)
        for g, w, wanted in zip(got, want, mask):
            assert g.shape == w.shape
            if wanted:
                torch.testing.assert_close(g.cpu(), w, atol=1e-3, rtol=1e-4)


@pytest.mark.cuda
def test_cuda_strided_inputs():
    n, cin, cout, t, v, k = 3, 5, 4, 6, 7, 2
    x = torch.randn(n, t, v, cin, device=DEVICE).permute(0, 3, 1, 2).requires_grad_()
    weight = torch.randn(k, cin, cout, device=DEVICE).transpose(1, 2).requires_grad_()
    adjacency = torch.rand(k, v, 2 * v, device=DEVICE)[:, :, ::2].requires_grad_()
    bias = torch.randn(cout, k, device=DEVICE).t().requires_grad_()
    out = st_graph_conv(x, weight, adjacency, bias)
    leaves = [a.detach().double().cpu().requires_grad_() for a in (x, weight, adjacency, bias)]
    ref = reference(*leaves)
    assert_close_scaled(out, ref, cuda_tol(torch.float32), "out")
    grad = torch.randn(n, t, v, cout, dtype=torch.float64).permute(0, 3, 1, 2)
    got = torch.autograd.grad(out, [x, weight, adjacency, bias], grad.float().to(DEVICE))
    want = torch.autograd.grad(ref, leaves, grad)
    for g, w in zip(got, want):
        assert_close_scaled(g, w, 1e-4, "grad")


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_cuda_empty_batch(dtype):
    x, weight, adjacency, bias = make_cuda((0, 3, 4, 5, 6, 2, False, True), dtype)
    out = st_graph_conv(x, weight, adjacency, bias)
    assert out.shape == (0, 4, 5, 6) and out.dtype == dtype
    out.sum().backward()
    for t in (weight, adjacency, bias):
        assert t.grad.shape == t.shape and not t.grad.any()


@pytest.mark.cuda
def test_cuda_opcheck():
    ops = torch.ops.facekernels
    x, weight, adjacency, bias = make_cuda(CUDA_CASES[0], torch.float32)
    torch.library.opcheck(ops.st_graph_conv.default, (x, weight, adjacency, bias))
    torch.library.opcheck(ops.st_graph_conv.default, (x, weight, adjacency))
    grad = torch.randn(2, 5, 4, 6, device=DEVICE)
    plain = [t.detach() for t in (x, weight, adjacency, bias)]
    torch.library.opcheck(ops._st_graph_conv_backward.default, (grad, *plain, True, True, True, True))


@pytest.mark.cuda
def test_cuda_torch_compile_fullgraph():
    x, weight, adjacency, bias = make_cuda(CUDA_CASES[1], torch.float32)

    def fn(x, weight, adjacency, bias):
        return torch.relu(st_graph_conv(x * 2, weight, adjacency, bias))

    assert_compiled_matches_eager(fn, (x, weight, adjacency, bias))


@pytest.mark.cuda
def test_cuda_runs_on_the_current_stream():
    x, weight, adjacency, bias = make_cuda(CUDA_CASES[5], torch.float32)
    expected = st_graph_conv(x, weight, adjacency, bias)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = st_graph_conv(x, weight, adjacency, bias)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(out, expected)


@pytest.mark.cuda
def test_cuda_autocast():
    x, weight, adjacency, bias = make_cuda(CUDA_CASES[0], torch.float32)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = st_graph_conv(x, weight.half(), adjacency, bias)
    assert out.dtype == torch.bfloat16


@pytest.mark.cuda
def test_cuda_float64_and_integers_refused():
    x, weight, adjacency, bias = make_cuda(CUDA_CASES[0], torch.float32)
    with pytest.raises(RuntimeError, match=r"st_graph_conv: x must be float16, bfloat16 or float32 on CUDA, got float64"):
        st_graph_conv(x.double(), weight.double(), adjacency.double(), bias.double())
    with pytest.raises(RuntimeError, match=r"st_graph_conv: x must be float16, bfloat16 or float32 on CUDA, got int64"):
        st_graph_conv(x.long(), weight, adjacency, bias)


@pytest.mark.cuda
def test_cuda_mixed_dtypes_and_devices_refused():
    x, weight, adjacency, bias = (t.detach() for t in make_cuda(CUDA_CASES[0], torch.float32))
    with pytest.raises(RuntimeError, match=r"st_graph_conv: weight must have the same dtype as x \(float32\), got float16"):
        st_graph_conv(x, weight.half(), adjacency, bias)
    with pytest.raises(RuntimeError, match=r"st_graph_conv: adjacency must be on the same device as x \(cuda:0\), got cpu"):
        st_graph_conv(x, weight, adjacency.cpu(), bias)
    with pytest.raises(RuntimeError, match=r"st_graph_conv: bias must be on the same device as x \(cuda:0\), got cpu"):
        st_graph_conv(x, weight, adjacency, bias.cpu())


@pytest.mark.cuda
def test_cuda_bad_shapes():
    x, weight, adjacency, bias = (t.detach() for t in make_cuda(CUDA_CASES[0], torch.float32))
    with pytest.raises(RuntimeError, match=r"st_graph_conv: adjacency must have K = weight.size\(0\) = 3 partitions"):
        st_graph_conv(x, weight, adjacency[:2], bias)
    with pytest.raises(RuntimeError, match=r"st_graph_conv: adjacency must have N = x.size\(0\) = 2 samples"):
        st_graph_conv(x, weight, adjacency.expand(3, 3, 6, 6), bias)
    with pytest.raises(RuntimeError, match=r"st_graph_conv: weight must have Cin = x.size\(1\) = 3 input channels"):
        st_graph_conv(x, weight[:, :, :2], adjacency, bias)


@pytest.mark.cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("case", [CUDA_CASES[0], CUDA_CASES[1], CUDA_CASES[4]], ids=str)
def test_cuda_masked_matches_reference(case, dtype):
    """The masked path on CUDA (the same wrapper around the CUDA kernels): values and gradients against the
    float64 masked reference."""
    x, weight, adjacency, bias = make_cuda(case, dtype)
    mask = make_mask(x.shape[0], x.shape[2], x.shape[3]).to(DEVICE)
    out = st_graph_conv(x, weight, adjacency, bias, mask=mask)
    leaves = [a.detach().double().cpu().requires_grad_() for a in (x, weight, adjacency)]
    b64 = bias.detach().double().cpu().requires_grad_() if bias is not None else None
    ref = reference_masked(*leaves, b64, mask.cpu())
    assert_close_scaled(out, ref, cuda_tol(dtype), "out")
    grad = torch.randn_like(ref)
    inputs = [x, weight, adjacency] + ([bias] if bias is not None else [])
    got = torch.autograd.grad(out, inputs, grad.to(DEVICE, dtype))
    want = torch.autograd.grad(ref, leaves + ([b64] if b64 is not None else []), grad)
    for name, g_, w in zip(["x", "weight", "adjacency", "bias"], got, want):
        assert_close_scaled(g_, w, cuda_tol(dtype, 4.0), f"grad {name}")
