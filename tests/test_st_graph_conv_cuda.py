"""st_graph_conv on CUDA: values and all four gradients in float32/float16/bfloat16 against the literal
float64 einsum formula, both contraction orders, shared and per-sample adjacency, K = 1, T = 1, V = 1,
no bias, every subset of gradients, strided and empty inputs, CPU/CUDA agreement, the torch.library
contract, torch.compile, the current stream, autocast, and the bad inputs the CUDA binding must refuse.

The CUDA binding computes in float32 for every storage dtype (float64 is refused), so gradcheck, which
needs float64, cannot run here: gradients are compared with the float64 reference's autograd instead.
"""

import pytest
import torch
from conftest import assert_compiled_matches_eager
from facekernels.ops import st_graph_conv
from test_st_graph_conv import reference as cpu_reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEVICE = "cuda"


def reference(x, weight, adjacency, bias=None):
    """test_st_graph_conv's float64 reference, on the CPU."""
    return cpu_reference(x.cpu(), weight.cpu(), adjacency.cpu(), None if bias is None else bias.cpu())


# Relative to the largest reference value (float16/bfloat16 inputs and outputs are rounded once each;
# everything in between is float32).
TOL = {torch.float32: 2e-5, torch.float16: 4e-3, torch.bfloat16: 3e-2}

CASES = [  # (N, Cin, Cout, T, V, K, per_sample adjacency, bias)
    (2, 3, 5, 4, 6, 3, False, True),     # Cin < Cout: aggregate first
    (2, 6, 3, 4, 5, 2, False, True),     # Cin > Cout: channels first
    (3, 4, 4, 1, 7, 1, False, False),    # K = 1, T = 1, no bias
    (2, 3, 2, 5, 1, 2, True, True),      # V = 1, per-sample adjacency
    (5, 7, 5, 3, 9, 3, True, True),      # per sample, channels first
    (4, 64, 128, 29, 68, 3, False, True),  # the LRW workload's sizes
    (4, 64, 128, 29, 20, 3, True, True),   # lip graph, per sample
]


def make(case, dtype):
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


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_reference(case, dtype):
    x, weight, adjacency, bias = make(case, dtype)
    out = st_graph_conv(x, weight, adjacency, bias)
    assert out.dtype == dtype and out.device.type == "cuda" and out.is_contiguous()
    leaves = [t.detach().double().cpu().requires_grad_() for t in (x, weight, adjacency)]
    b64 = bias.detach().double().cpu().requires_grad_() if bias is not None else None
    ref = reference(*leaves, b64)
    assert_close_scaled(out, ref, TOL[dtype], "out")
    grad = torch.randn(ref.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    inputs = [x, weight, adjacency] + ([bias] if bias is not None else [])
    got = torch.autograd.grad(out, inputs, grad.to(DEVICE, dtype))
    want = torch.autograd.grad(ref, leaves + ([b64] if b64 is not None else []), grad.to(dtype).double())
    for name, g, w in zip(["x", "weight", "adjacency", "bias"], got, want):
        assert g.dtype == dtype and g.shape == w.shape
        assert_close_scaled(g, w, TOL[dtype] * 2, f"grad {name}")


@pytest.mark.parametrize("case", [CASES[0], CASES[1], CASES[4]], ids=str)
def test_matches_cpu_kernel_and_partial_gradients(case):
    x, weight, adjacency, bias = make(case, torch.float32)
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


def test_strided_inputs():
    n, cin, cout, t, v, k = 3, 5, 4, 6, 7, 2
    x = torch.randn(n, t, v, cin, device=DEVICE).permute(0, 3, 1, 2).requires_grad_()
    weight = torch.randn(k, cin, cout, device=DEVICE).transpose(1, 2).requires_grad_()
    adjacency = torch.rand(k, v, 2 * v, device=DEVICE)[:, :, ::2].requires_grad_()
    bias = torch.randn(cout, k, device=DEVICE).t().requires_grad_()
    out = st_graph_conv(x, weight, adjacency, bias)
    leaves = [a.detach().double().cpu().requires_grad_() for a in (x, weight, adjacency, bias)]
    ref = reference(*leaves)
    assert_close_scaled(out, ref, TOL[torch.float32], "out")
    grad = torch.randn(n, t, v, cout, dtype=torch.float64).permute(0, 3, 1, 2)
    got = torch.autograd.grad(out, [x, weight, adjacency, bias], grad.float().to(DEVICE))
    want = torch.autograd.grad(ref, leaves, grad)
    for g, w in zip(got, want):
        assert_close_scaled(g, w, 1e-4, "grad")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_empty_batch(dtype):
    x, weight, adjacency, bias = make((0, 3, 4, 5, 6, 2, False, True), dtype)
    out = st_graph_conv(x, weight, adjacency, bias)
    assert out.shape == (0, 4, 5, 6) and out.dtype == dtype
    out.sum().backward()
    for t in (weight, adjacency, bias):
        assert t.grad.shape == t.shape and not t.grad.any()


def test_opcheck():
    ops = torch.ops.facekernels
    x, weight, adjacency, bias = make(CASES[0], torch.float32)
    torch.library.opcheck(ops.st_graph_conv.default, (x, weight, adjacency, bias))
    torch.library.opcheck(ops.st_graph_conv.default, (x, weight, adjacency))
    grad = torch.randn(2, 5, 4, 6, device=DEVICE)
    plain = [t.detach() for t in (x, weight, adjacency, bias)]
    torch.library.opcheck(ops._st_graph_conv_backward.default, (grad, *plain, True, True, True, True))


def test_torch_compile_fullgraph():
    x, weight, adjacency, bias = make(CASES[1], torch.float32)

    def fn(x, weight, adjacency, bias):
        return torch.relu(st_graph_conv(x * 2, weight, adjacency, bias))

    assert_compiled_matches_eager(fn, (x, weight, adjacency, bias))


def test_runs_on_the_current_stream():
    x, weight, adjacency, bias = make(CASES[5], torch.float32)
    expected = st_graph_conv(x, weight, adjacency, bias)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        out = st_graph_conv(x, weight, adjacency, bias)
    torch.cuda.current_stream().wait_stream(stream)
    torch.testing.assert_close(out, expected)


def test_autocast_cuda():
    x, weight, adjacency, bias = make(CASES[0], torch.float32)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = st_graph_conv(x, weight.half(), adjacency, bias)
    assert out.dtype == torch.bfloat16


def test_float64_and_integers_refused():
    x, weight, adjacency, bias = make(CASES[0], torch.float32)
    with pytest.raises(RuntimeError, match=r"st_graph_conv: x must be float16, bfloat16 or float32 on CUDA, got float64"):
        st_graph_conv(x.double(), weight.double(), adjacency.double(), bias.double())
    with pytest.raises(RuntimeError, match=r"st_graph_conv: x must be float16, bfloat16 or float32 on CUDA, got int64"):
        st_graph_conv(x.long(), weight, adjacency, bias)


def test_mixed_dtypes_and_devices_refused():
    x, weight, adjacency, bias = (t.detach() for t in make(CASES[0], torch.float32))
    with pytest.raises(RuntimeError, match=r"st_graph_conv: weight must have the same dtype as x \(float32\), got float16"):
        st_graph_conv(x, weight.half(), adjacency, bias)
    with pytest.raises(RuntimeError, match=r"st_graph_conv: adjacency must be on the same device as x \(cuda:0\), got cpu"):
        st_graph_conv(x, weight, adjacency.cpu(), bias)
    with pytest.raises(RuntimeError, match=r"st_graph_conv: bias must be on the same device as x \(cuda:0\), got cpu"):
        st_graph_conv(x, weight, adjacency, bias.cpu())


def test_bad_shapes_on_cuda():
    x, weight, adjacency, bias = (t.detach() for t in make(CASES[0], torch.float32))
    with pytest.raises(RuntimeError, match=r"st_graph_conv: adjacency must have K = weight.size\(0\) = 3 partitions"):
        st_graph_conv(x, weight, adjacency[:2], bias)
    with pytest.raises(RuntimeError, match=r"st_graph_conv: adjacency must have N = x.size\(0\) = 2 samples"):
        st_graph_conv(x, weight, adjacency.expand(3, 3, 6, 6), bias)
    with pytest.raises(RuntimeError, match=r"st_graph_conv: weight must have Cin = x.size\(1\) = 3 input channels"):
        st_graph_conv(x, weight[:, :, :2], adjacency, bias)
