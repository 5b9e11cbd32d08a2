"""st_graph_conv on CPU: values and all four gradients against the literal float64 einsum formula, both
contraction orders (Cin < Cout and Cin > Cout), shared and per-sample adjacency, K = 1, T = 1, V = 1, no
bias, gradcheck, the torch.library contract, torch.compile, strided inputs, empty batches, the ST-GCN
ConvTemporalGraphical equivalence, and every bad input."""

import facekernels
import pytest
import torch
from conftest import assert_compiled_matches_eager, run_at_each_cpu_capability
from facekernels.ops import st_graph_conv


def reference(x, weight, adjacency, bias=None):
    """out[n, c, t, w] = sum_k sum_v (sum_i weight[k, c, i] x[n, i, t, v] + bias[k, c]) A[(n,) k, v, w],
    written literally in float64 (differentiable, for reference gradients)."""
    x, weight, adjacency = x.double(), weight.double(), adjacency.double()
    z = torch.einsum("kci,nitv->nkctv", weight, x)
    if bias is not None:
        z = z + bias.double()[None, :, :, None, None]
    if adjacency.dim() == 3:
        return torch.einsum("nkctv,kvw->nctw", z, adjacency)
    return torch.einsum("nkctv,nkvw->nctw", z, adjacency)


TOL = {torch.float32: {"atol": 2e-4, "rtol": 2e-4}, torch.float64: {"atol": 1e-10, "rtol": 1e-10}}

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
    torch.testing.assert_close(out.double(), ref, **TOL[dtype])
    grad = torch.randn_like(ref)
    inputs = [x, weight, adjacency] + ([bias] if bias is not None else [])
    ref_inputs = leaves + ([b64] if b64 is not None else [])
    got = torch.autograd.grad(out, inputs, grad.to(dtype))
    want = torch.autograd.grad(ref, ref_inputs, grad)
    for name, g, w in zip(["x", "weight", "adjacency", "bias"], got, want):
        assert g.dtype == dtype
        scale = max(1.0, w.abs().max().item()) if w.numel() else 1.0
        torch.testing.assert_close(g.double() / scale, w / scale, **TOL[dtype], msg=f"grad {name}")


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
        torch.testing.assert_close(g, w, **TOL[torch.float64])


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
            torch.testing.assert_close(out.double(), reference(x, weight, adjacency, bias), **TOL[torch.float32])
    finally:
        torch.set_num_threads(threads)


def test_autocast_cpu_mixed_dtypes():
    x, weight, adjacency, bias = make(CASES[0], torch.float32, requires_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = st_graph_conv(x.bfloat16(), weight, adjacency.bfloat16(), bias)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out.double(), reference(x.bfloat16(), weight, adjacency.bfloat16(), bias),
                               **TOL[torch.float32])


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


def test_double_backward_is_refused_not_wrong():
    x, weight, adjacency, bias = make(CASES[0])
    out = st_graph_conv(x, weight, adjacency, bias)
    (g,) = torch.autograd.grad(out.square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="st_graph_conv: double backward .* is not implemented"):
        torch.autograd.grad(g.sum(), weight)
