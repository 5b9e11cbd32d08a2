"""diff_attention on every device (tests/devices.py: CPU in float32/float64, CUDA in float32/float16/bfloat16,
the CUDA cases skipped without a GPU): values and gradients (q1, k1, q2, k2, v and lam) against one float64
reference that materialises both maps; T = 1, S = 1, T != S, causal, tile-boundary sizes, D != Dv, D up to
256, every accepted lam shape, explicit scales, strided, broadcast and empty inputs, the torch.library
contract and torch.compile. CPU only: the key-blocked path for long key ranges, the per-thread split of the
backward when there are fewer heads than threads, gradcheck (float64), inference mode, SIMD levels, autocast
and every bad input. CUDA only: more (b, h) pairs and rows than one tile holds, CPU/CUDA agreement, autocast
and the inputs the CUDA binding must refuse. The fake (meta) kernel's checks are at the end.

The CUDA kernels compute in float16/bfloat16/float32 only (float64 is refused), so gradcheck cannot run
there: every device's gradients are compared with the float64 reference's autograd instead.
"""

import facekernels
import pytest
import torch
from helpers import (
    assert_compiled_matches_eager,
    assert_fake_refuses_like_native,
    assert_tracing_refuses_like_native,
    run_at_each_cpu_capability,
)
from devices import DEVICE_DTYPES, DEVICES, tolerance
from facekernels.ops import diff_attention

ops = torch.ops.facekernels


def reference(q1, k1, q2, k2, v, lam, causal=False, scale=None):
    """float64 on the inputs' device, both T x S maps materialised (autograd flows to the inputs)."""
    q1, k1, q2, k2, v = (t.double() for t in (q1, k1, q2, k2, v))
    lam = torch.as_tensor(lam).double().expand(q1.shape[:2])
    scale = q1.shape[-1] ** -0.5 if scale is None else scale
    s1 = q1 @ k1.transpose(-1, -2) * scale
    s2 = q2 @ k2.transpose(-1, -2) * scale
    if causal:
        t, s = s1.shape[-2:]
        future = torch.ones(t, s, dtype=torch.bool).triu(1)
        s1 = s1.masked_fill(future, float("-inf"))
        s2 = s2.masked_fill(future, float("-inf"))
    return s1.softmax(-1) @ v - lam[..., None, None] * (s2.softmax(-1) @ v)


def reference_on_cpu(q1, k1, q2, k2, v, lam, causal=False, scale=None):
    """The reference from float64 CPU copies of the inputs: (result, the copies, leaves for autograd)."""
    leaves = [torch.as_tensor(t).detach().cpu().double().requires_grad_() for t in (q1, k1, q2, k2, v, lam)]
    return reference(*leaves, causal=causal, scale=scale), leaves


def make(b, h, t, s, d, dv, dtype=torch.float32, lam_shape=None, requires_grad=True, device="cpu"):
    # float16/bfloat16 inputs are drawn in float32 and rounded.
    drawn = dtype if dtype in (torch.float32, torch.float64) else torch.float32
    shapes = [(b, h, t, d), (b, h, s, d), (b, h, t, d), (b, h, s, d), (b, h, s, dv)]
    xs = [torch.randn(*sh, dtype=drawn, device=device).to(dtype) for sh in shapes]
    xs = [x.requires_grad_(requires_grad) for x in xs]
    lam = torch.rand(lam_shape if lam_shape is not None else (b, h), dtype=drawn, device=device) * 0.8 + 0.1
    lam = lam.to(dtype).requires_grad_(requires_grad)
    return xs, lam


# Outputs and gradients against the float64 reference, per (device, dtype): tests/devices.py's table,
# family "diff_attention" (the values this family's tests have always used; its rows say why).


def check_against_reference(xs, lam, causal=False, scale=None):
    """Output and the six gradients of diff_attention on xs' device and dtype against the float64 reference.
    On CUDA each gradient is compared relative to its largest entry (at least 1): the half dtypes round
    every input and every gradient."""
    device, dtype = xs[0].device.type, xs[0].dtype
    tol = tolerance(device, dtype, "diff_attention")
    out = diff_attention(*xs, lam, causal=causal, scale=scale)
    expected, leaves = reference_on_cpu(*xs, lam, causal=causal, scale=scale)
    assert out.shape == expected.shape and out.dtype == dtype and out.device == xs[0].device
    assert out.is_contiguous()
    torch.testing.assert_close(out.double().cpu(), expected, **tol)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [*xs, lam], grad)
    want = torch.autograd.grad(expected, leaves, grad.double().cpu())
    for name, g, w in zip(["q1", "k1", "q2", "k2", "v", "lam"], got, want):
        assert g.shape == w.shape and g.dtype == dtype, name
        norm = max(w.abs().max().item(), 1.0) if device == "cuda" else 1.0
        torch.testing.assert_close(
            g.double().cpu() / norm, w / norm, **tol, msg=lambda m, name=name: f"{name}: {m}"
        )


CASES = [  # (B, H, T, S, D, Dv, causal)
    (2, 3, 7, 9, 8, 5, False),
    (1, 2, 1, 1, 4, 4, False),       # T = S = 1
    (1, 2, 1, 13, 4, 6, False),      # one query
    (2, 1, 11, 1, 4, 6, False),      # one key
    (1, 2, 1, 1, 4, 4, True),
    (1, 2, 63, 63, 16, 32, True),    # tile boundaries
    (1, 1, 64, 64, 8, 8, True),
    (1, 1, 65, 65, 8, 16, True),
    (1, 2, 129, 129, 8, 8, True),
    (1, 2, 65, 129, 8, 8, False),
    (1, 1, 129, 7, 8, 24, False),
    (1, 1, 33, 300, 32, 64, False),
    (1, 1, 17, 17, 256, 256, True),  # the largest head dimensions
    (1, 1, 9, 21, 256, 3, False),
    (2, 2, 200, 300, 64, 128, False),
    (1, 1, 33, 33, 256, 256, True),
]


@pytest.mark.parametrize("device, dtype", DEVICE_DTYPES)
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_matches_reference(case, device, dtype):
    b, h, t, s, d, dv, causal = case
    xs, lam = make(b, h, t, s, d, dv, dtype, device=device)
    check_against_reference(xs, lam, causal)


@pytest.mark.parametrize("lam_shape", [(), (3,), (1, 3), (2, 1), (2, 3)])
@pytest.mark.parametrize("device", DEVICES)
def test_lam_shapes_and_gradient(device, lam_shape):
    dtype = torch.float64 if device == "cpu" else torch.float32  # CUDA has no float64
    xs, lam = make(2, 3, 10, 12, 8, 8, dtype, lam_shape=lam_shape, device=device)
    out = diff_attention(*xs, lam)
    (g,) = torch.autograd.grad(out.square().sum(), lam)
    expected, leaves = reference_on_cpu(*xs, lam)
    (w,) = torch.autograd.grad(expected.square().sum(), leaves[5])
    assert g.shape == lam.shape
    if device == "cpu":
        torch.testing.assert_close(out, expected)
        torch.testing.assert_close(g, w)
    else:
        torch.testing.assert_close(g.double().cpu(), w, atol=1e-3, rtol=1e-3)


def test_lam_as_a_number():
    xs, _ = make(1, 2, 5, 6, 4, 4, torch.float64, requires_grad=False)
    torch.testing.assert_close(diff_attention(*xs, 0.5), reference(*xs, torch.tensor(0.5)))


def test_lam_gradient_is_minus_sum_p2_dpv():
    """dlam[b, h] = -sum(P2 * (dO V^T)) written out with the maps."""
    xs, lam = make(2, 2, 6, 7, 4, 5, torch.float64)
    out = diff_attention(*xs, lam)
    go = torch.randn_like(out)
    (g,) = torch.autograd.grad(out, lam, go)
    q2, k2, v = xs[2], xs[3], xs[4]
    p2 = (q2 @ k2.transpose(-1, -2) / 2).softmax(-1)
    torch.testing.assert_close(g, -(p2 * (go @ v.transpose(-1, -2))).sum((-1, -2)))


# Each device in its most precise dtype (float64 on CPU, float32 on CUDA).
PRECISE = [p for p in DEVICE_DTYPES if p.values in (("cpu", torch.float64), ("cuda", torch.float32))]


@pytest.mark.parametrize("scale", [0.3, -0.7, 2.0, -0.6])
@pytest.mark.parametrize("device, dtype", PRECISE)
def test_explicit_scale(device, dtype, scale):
    xs, lam = make(1, 2, 9, 10, 8, 4, dtype, device=device)
    check_against_reference(xs, lam, scale=scale)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_key_blocked_path(monkeypatch, causal, dtype):
    """Long key ranges are split into key blocks (two passes); a small block size forces it here."""
    monkeypatch.setenv("FACEKERNELS_DIFF_ATTENTION_KEY_BLOCK", "16")
    xs, lam = make(2, 2, 50, 50, 8, 12, dtype)
    out = diff_attention(*xs, lam, causal=causal)
    expected = reference(*xs, lam, causal)
    torch.testing.assert_close(out.double(), expected, **tolerance("cpu", dtype, "diff_attention"))
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [*xs, lam], grad)
    want = torch.autograd.grad(expected, [*xs, lam], grad.double())
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w.double(), **tolerance("cpu", dtype, "diff_attention"))


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("causal", [False, True])
def test_thread_counts_agree(threads, causal):
    """One (b, h) pair and several threads: the backward splits the query blocks into partial dK, dV."""
    old = torch.get_num_threads()
    xs, lam = make(1, 1, 300, 300, 8, 8, torch.float64)
    try:
        torch.set_num_threads(threads)
        out = diff_attention(*xs, lam, causal=causal)
        got = torch.autograd.grad(out, [*xs, lam], torch.ones_like(out))
    finally:
        torch.set_num_threads(old)
    expected = reference(*xs, lam, causal)
    want = torch.autograd.grad(expected, [*xs, lam], torch.ones_like(expected))
    torch.testing.assert_close(out, expected)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


def test_gradcheck():
    xs, lam = make(1, 2, 5, 6, 3, 4, torch.float64)
    assert torch.autograd.gradcheck(lambda *a: diff_attention(*a[:5], a[5]), (*xs, lam))
    xs, lam = make(2, 1, 6, 6, 3, 2, torch.float64, lam_shape=(1,))
    assert torch.autograd.gradcheck(lambda *a: diff_attention(*a[:5], a[5], causal=True, scale=0.8), (*xs, lam))


@pytest.mark.parametrize("device", DEVICES)
def test_opcheck(device):
    xs, lam = make(2, 2, 5, 7, 4, 6, device=device)
    torch.library.opcheck(ops._diff_attention_forward.default, (*xs, lam))
    torch.library.opcheck(ops._diff_attention_forward.default, (*xs, lam, False, 0.5))
    xs_c, lam_c = make(1, 2, 6, 6, 4, 3, device=device)
    torch.library.opcheck(ops._diff_attention_forward.default, (*xs_c, lam_c, True, None))
    detached = [x.detach() for x in xs]
    out, lse1, lse2 = ops._diff_attention_forward(*detached, lam.detach())
    torch.library.opcheck(
        ops._diff_attention_backward.default,
        (torch.randn_like(out), *detached, lam.detach(), lse1, lse2, False, None),
    )


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    xs, lam = make(2, 2, 9, 11, 8, 4, device=device)

    def block(q1, k1, q2, k2, v, lam):
        return diff_attention(q1, k1, q2, k2, v, lam.abs()).tanh()

    assert_compiled_matches_eager(block, [*xs, lam])


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_causal(device):
    xs, lam = make(2, 2, 9, 9, 8, 4, device=device)

    def block(q1, k1, q2, k2, v, lam):
        return diff_attention(q1, k1, q2, k2, v, lam, causal=True).tanh()

    assert_compiled_matches_eager(block, [*xs, lam])


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph_causal_head_lam(device):
    xs, lam = make(1, 3, 12, 12, 4, 8, lam_shape=(3,), device=device)

    def block(q1, k1, q2, k2, v, lam):
        return diff_attention(q1, k1, q2, k2, v, lam, causal=True) * 2

    assert_compiled_matches_eager(block, [*xs, lam])


def test_strided_inputs_float64():
    """The layout users have: [B, T, H, D] projections viewed as [B, H, T, D]; also a non-unit last stride."""
    b, h, t, s, d, dv = 2, 3, 13, 10, 8, 16
    q1 = torch.randn(b, t, h, d, dtype=torch.float64).transpose(1, 2)
    k1 = torch.randn(b, s, h, d, dtype=torch.float64).transpose(1, 2)
    qkv = torch.randn(b, t, 2, h, d, dtype=torch.float64)
    q2 = qkv[:, :, 0].transpose(1, 2)
    k2 = torch.randn(b, h, d, s, dtype=torch.float64).transpose(2, 3)  # last stride != 1
    v = torch.randn(b, s, h, 2 * dv, dtype=torch.float64)[..., ::2].transpose(1, 2)
    lam = torch.rand(b, h, dtype=torch.float64).t().contiguous().t()
    xs = [x.requires_grad_() for x in (q1, k1, q2, k2, v)]
    out = diff_attention(*xs, lam, causal=False)
    expected = reference(*xs, lam)
    torch.testing.assert_close(out, expected)
    got = torch.autograd.grad(out, xs, torch.randn(b, t, h, dv, dtype=torch.float64).transpose(1, 2))
    want = torch.autograd.grad(expected, xs, torch.ones_like(expected))  # shapes only below
    for g, w, x in zip(got, want, xs):
        assert g.shape == w.shape == x.shape
    go = torch.randn(b, h, t, dv, dtype=torch.float64)
    got = torch.autograd.grad(diff_attention(*xs, lam), xs, go)
    want = torch.autograd.grad(reference(*xs, lam), xs, go)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


@pytest.mark.parametrize("device", DEVICES)
def test_strided_inputs(device):
    """[B, T, H, D] projections viewed as [B, H, T, D], a non-unit last stride and an [H] lam, in float32."""
    b, h, t, s, d = 2, 3, 13, 10, 8
    q1 = torch.randn(b, t, h, d, device=device).transpose(1, 2).requires_grad_()
    k1 = torch.randn(b, s, h, d, device=device).transpose(1, 2).requires_grad_()
    q2 = torch.randn(b, t, h, d, device=device).transpose(1, 2).requires_grad_()
    k2 = torch.randn(b, h, d, s, device=device).transpose(2, 3).requires_grad_()
    v = torch.randn(b, s, h, 12, device=device)[..., ::2].transpose(1, 2).requires_grad_()
    lam = torch.rand(h, device=device).requires_grad_()
    check_against_reference([q1, k1, q2, k2, v], lam)


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("device, dtype", PRECISE)
def test_broadcast_inputs(device, dtype, causal):
    """Inputs expanded over their rows (stride 0 over T or S: one query, key or value row repeated)."""
    b, h, t, d, dv = 2, 3, 6, 4, 3
    xs, lam = make(b, h, 1, 1, d, dv, dtype, device=device)
    q2 = torch.randn(b, h, t, d, dtype=dtype, device=device, requires_grad=True)
    k2 = torch.randn(b, h, t, d, dtype=dtype, device=device, requires_grad=True)
    q1, k1, v = xs[0].expand(b, h, t, d), xs[1].expand(b, h, t, d), xs[4].expand(b, h, t, dv)
    check_against_reference([q1, k1, q2, k2, v], lam, causal=causal)


@pytest.mark.parametrize("shape", [(0, 2, 5, 6), (2, 0, 5, 6), (1, 2, 0, 6)])
@pytest.mark.parametrize("device", DEVICES)
def test_empty(device, shape):
    b, h, t, s = shape
    xs, lam = make(b, h, t, s, 4, 3, device=device)
    out = diff_attention(*xs, lam)
    assert out.shape == (b, h, t, 3)
    out.sum().backward()
    for x in [*xs, lam]:
        assert x.grad.shape == x.shape and (x.grad == 0).all()


def test_inference_mode():
    """The per-tile GEMMs write into tensors made on the worker threads, outside inference mode's reach."""
    xs, lam = make(2, 3, 40, 40, 16, 8, requires_grad=False)
    with torch.inference_mode():
        out = diff_attention(*xs, lam, causal=True)
    torch.testing.assert_close(out.double(), reference(*xs, lam, True), **tolerance("cpu", torch.float32, "diff_attention"))


def test_large_logits_are_stable():
    xs, lam = make(1, 1, 20, 30, 8, 8, torch.float32, requires_grad=False)
    xs[0] = xs[0] * 40
    xs[2] = xs[2] * 40
    out = diff_attention(*xs, lam)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out.double(), reference(*xs, lam), atol=1e-4, rtol=1e-4)


def test_cpu_capabilities_agree(tmp_path):
    """The SIMD levels compiled in give the same result (run in subprocesses with the level lowered)."""
    script = (
        "import sys, torch, facekernels\n"
        "torch.manual_seed(0)\n"
        "shapes = [(2, 3, 37, 16), (2, 3, 41, 16), (2, 3, 37, 16), (2, 3, 41, 16), (2, 3, 41, 24)]\n"
        "xs = [torch.randn(*s).requires_grad_() for s in shapes]\n"
        "lam = torch.rand(2, 3).requires_grad_()\n"
        "out = facekernels.ops.diff_attention(*xs, lam)\n"
        "grads = torch.autograd.grad(out.square().sum(), [*xs, lam])\n"
        "torch.save((facekernels.build_info()['cpu_kernels']['diff_attention'], [out, *grads]), sys.argv[1])\n"
    )
    results = run_at_each_cpu_capability(script, tmp_path)
    base = results["default"][1]
    for level, (used, outs) in results.items():
        for a, b in zip(outs, base):
            torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4, msg=f"{level} ({used}) differs from default")


def test_autocast_cpu_runs_in_float32():
    xs, lam = make(1, 2, 6, 7, 8, 4, requires_grad=False)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = diff_attention(*(x.bfloat16() for x in xs), lam)
    assert out.dtype == torch.float32
    expected = reference(*(x.bfloat16() for x in xs), lam)
    torch.testing.assert_close(out.double(), expected, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
def test_autocast_cuda_runs_in_half():
    xs, lam = make(1, 2, 6, 7, 8, 4, device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = diff_attention(*xs, lam)
    assert out.dtype == torch.bfloat16


def test_build_info_lists_kernel():
    info = facekernels.build_info()
    assert info["cpu_kernels"]["diff_attention"] == info["cpu_capability"]


def test_double_backward_is_refused_not_wrong():
    xs, lam = make(1, 1, 4, 4, 2, 2, torch.float64)
    out = diff_attention(*xs, lam)
    (g,) = torch.autograd.grad(out.square().sum(), xs[0], create_graph=True)
    with pytest.raises(RuntimeError, match="diff_attention: double backward .* is not implemented"):
        torch.autograd.grad(g.sum(), xs[0])


def _args(**over):
    b, h, t, s, d, dv = 2, 3, 5, 6, 4, 7
    args = {
        "q1": torch.randn(b, h, t, d), "k1": torch.randn(b, h, s, d), "q2": torch.randn(b, h, t, d),
        "k2": torch.randn(b, h, s, d), "v": torch.randn(b, h, s, dv), "lam": torch.rand(b, h),
    }
    args.update(over)
    return args


BAD = [
    ("q1 3-D", _args(q1=torch.randn(3, 5, 4)),
     r"q1 must be a 4-D tensor \[B, H, T, D\], got a 3-D tensor of shape \[3, 5, 4\]"),
    ("v 5-D", _args(v=torch.randn(1, 2, 3, 6, 7)), r"v must be a 4-D tensor \[B, H, S, Dv\]"),
    ("k1 batch", _args(k1=torch.randn(1, 3, 6, 4)),
     r"k1 must have shape \[B, H, S, D\] = \[2, 3, \*, 4\], got \[1, 3, 6, 4\]"),
    ("k2 heads", _args(k2=torch.randn(2, 4, 6, 4)),
     r"k2 must have shape \[B, H, S, D\] = \[2, 3, 6, 4\], got \[2, 4, 6, 4\]"),
    ("q2 D", _args(q2=torch.randn(2, 3, 5, 5)),
     r"q2 must have shape \[B, H, T, D\] = \[2, 3, 5, 4\], got \[2, 3, 5, 5\]"),
    ("k1 D", _args(k1=torch.randn(2, 3, 6, 3)),
     r"k1 must have shape \[B, H, S, D\] = \[2, 3, \*, 4\], got \[2, 3, 6, 3\]"),
    ("v S", _args(v=torch.randn(2, 3, 5, 7)),
     r"v must have shape \[B, H, S, Dv\] = \[2, 3, 6, \*\], got \[2, 3, 5, 7\]"),
    ("k2 S", _args(k2=torch.randn(2, 3, 7, 4)),
     r"k2 must have shape \[B, H, S, D\] = \[2, 3, 6, 4\], got \[2, 3, 7, 4\]"),
    ("lam 3-D", _args(lam=torch.rand(1, 2, 3)),
     r"lam must be broadcastable to \[B, H\] = \[2, 3\] .*, got \[1, 2, 3\]"),
    ("lam wrong heads", _args(lam=torch.rand(4)), r"lam must be broadcastable to \[B, H\] = \[2, 3\] .*, got \[4\]"),
    ("lam [H, B]", _args(lam=torch.rand(3, 2)), r"lam must be broadcastable to \[B, H\] = \[2, 3\] .*, got \[3, 2\]"),
    ("D too large", _args(q1=torch.randn(2, 3, 5, 257), k1=torch.randn(2, 3, 6, 257), q2=torch.randn(2, 3, 5, 257),
                          k2=torch.randn(2, 3, 6, 257)),
     r"q1 must have a head dimension D in \[1, 256\], got D = 257"),
    ("Dv too large", _args(v=torch.randn(2, 3, 6, 300)), r"v must have a head dimension Dv in \[1, 256\], got Dv = 300"),
    ("integer q1", _args(q1=torch.ones(2, 3, 5, 4, dtype=torch.int64)),
     r"q1 must be float32 or float64 on CPU, got int64"),
    ("integer v", _args(v=torch.ones(2, 3, 6, 7, dtype=torch.int32)),
     r"v must have the same dtype as q1 \(float32\), got int32"),
    ("half on CPU", {k: t.half() for k, t in _args().items()}, r"q1 must be float32 or float64 on CPU, got float16"),
    ("mixed float dtypes", _args(k2=torch.randn(2, 3, 6, 4, dtype=torch.float64)),
     r"k2 must have the same dtype as q1 \(float32\), got float64"),
    ("lam dtype", _args(lam=torch.rand(2, 3, dtype=torch.float64)),
     r"lam must have the same dtype as q1 \(float32\), got float64"),
    ("no keys", _args(k1=torch.randn(2, 3, 0, 4), k2=torch.randn(2, 3, 0, 4), v=torch.randn(2, 3, 0, 7)),
     r"k1 must have at least one key \(S >= 1\), got S = 0"),
]


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_raise(name, args, match):
    with pytest.raises(RuntimeError, match=r"diff_attention: " + match):
        diff_attention(**args)


def test_bad_causal_and_scale():
    with pytest.raises(RuntimeError, match=r"diff_attention: q1 must have as many queries as k1 has keys for "
                                           r"causal=True \(T == S\), got T = 5 and S = 6"):
        diff_attention(**_args(), causal=True)
    with pytest.raises(RuntimeError, match=r"diff_attention: scale must be a finite number, got inf"):
        diff_attention(**_args(), scale=float("inf"))


def test_bad_input_mixed_devices():
    with pytest.raises(RuntimeError, match=r"diff_attention: v must be on the same device as q1 \(cpu\), got meta"):
        diff_attention(**_args(v=torch.randn(2, 3, 6, 7, device="meta")))
    with pytest.raises(RuntimeError, match=r"diff_attention: lam must be on the same device as q1 \(cpu\), got meta"):
        diff_attention(**_args(lam=torch.rand(2, 3, device="meta")))


def test_backward_op_checks_its_arguments():
    a = _args()
    xs = [a[k] for k in ("q1", "k1", "q2", "k2", "v")]
    out, lse1, lse2 = ops._diff_attention_forward(*xs, a["lam"])
    with pytest.raises(RuntimeError, match=r"_diff_attention_backward: grad_out must have shape \[B, H, T, Dv\] = "
                                           r"\[2, 3, 5, 7\], got \[2, 3, 5, 6\]"):
        ops._diff_attention_backward(torch.randn(2, 3, 5, 6), *xs, a["lam"], lse1, lse2, False, None)
    with pytest.raises(RuntimeError, match=r"_diff_attention_backward: lse2 must be float32 \(the forward's row "
                                           r"statistics\), got float64"):
        ops._diff_attention_backward(out, *xs, a["lam"], lse1, lse2.double(), False, None)
    with pytest.raises(RuntimeError, match=r"_diff_attention_backward: lse1 must have shape \[B, H, T\] = "
                                           r"\[2, 3, 5\], got \[2, 3, 4\]"):
        ops._diff_attention_backward(out, *xs, a["lam"], lse1[..., :4], lse2, False, None)


# ---- the fake kernels refuse what the native ops refuse, with the same exception and message, so that
# tracing, compiling and exporting fail where the eager call does (issue 17) ----------------------------

CALL_BAD = {
    **{name: (args, {}) for name, args, _ in BAD},
    "causal T != S": (_args(), {"causal": True}),
    "scale inf": (_args(), {"scale": float("inf")}),
    "scale nan": (_args(), {"scale": float("nan")}),
}


@pytest.mark.parametrize("args,options", CALL_BAD.values(), ids=CALL_BAD.keys())
def test_fake_kernel_refuses_bad_inputs(args, options):
    assert_fake_refuses_like_native(diff_attention, **args, **options)


def _forward_op_args(**over):
    a = _args()
    a.update(over)
    return tuple(a[k] for k in ("q1", "k1", "q2", "k2", "v", "lam"))


def _backward_op_args(**over):
    a = _args()
    out, lse1, lse2 = ops._diff_attention_forward(*_forward_op_args())
    a.update({"grad_out": out, "lse1": lse1, "lse2": lse2, "causal": False, "scale": None})
    a.update(over)
    names = ("grad_out", "q1", "k1", "q2", "k2", "v", "lam", "lse1", "lse2", "causal", "scale")
    return tuple(a[k] for k in names)


OP_BAD = {
    "forward lam [H]": ("_diff_attention_forward", _forward_op_args(lam=torch.rand(3))),
    "forward lam [H, B]": ("_diff_attention_forward", _forward_op_args(lam=torch.rand(3, 2))),
    "backward grad_out Dv": ("_diff_attention_backward", _backward_op_args(grad_out=torch.randn(2, 3, 5, 6))),
    "backward grad_out dtype": ("_diff_attention_backward",
                                _backward_op_args(grad_out=torch.randn(2, 3, 5, 7, dtype=torch.float64))),
    "backward lse2 dtype": ("_diff_attention_backward", _backward_op_args(lse2=torch.randn(2, 3, 5).double())),
    "backward lse1 T": ("_diff_attention_backward", _backward_op_args(lse1=torch.randn(2, 3, 4))),
    "backward lse1 2-D": ("_diff_attention_backward", _backward_op_args(lse1=torch.randn(2, 3))),
    "backward k1 heads": ("_diff_attention_backward", _backward_op_args(k1=torch.randn(2, 4, 6, 4))),
    "backward causal": ("_diff_attention_backward", _backward_op_args(causal=True)),
    "backward scale": ("_diff_attention_backward", _backward_op_args(scale=float("-inf"))),
}


@pytest.mark.parametrize("op,args", OP_BAD.values(), ids=OP_BAD.keys())
def test_op_fake_kernels_refuse_bad_inputs(op, args):
    assert_fake_refuses_like_native(getattr(ops, op).default, *args)


@pytest.mark.parametrize("name", ["k1 batch", "v S", "D too large", "mixed float dtypes", "no keys"])
def test_compile_and_export_refuse_bad_inputs(name):
    args = tuple(next(b[1] for b in BAD if b[0] == name).values())
    assert_tracing_refuses_like_native(diff_attention, *args)


# ---- layout (issue 17): [B, T, H, D] tensors stated as such; a provable mix-up named ------------------------


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("causal,t,s", [(False, 5, 7), (True, 6, 6)])
def test_layout_bthd(device, causal, t, s):
    """layout="BTHD" takes q [B, T, H, D], k [B, S, H, D], v [B, S, H, Dv] and gives [B, T, H, Dv]: the
    default layout's result on the transposed tensors, values and gradients, checked against the reference."""
    b, h, d, dv = 2, 3, 4, 6
    shapes = [(b, t, h, d), (b, s, h, d), (b, t, h, d), (b, s, h, d), (b, s, h, dv)]
    xs = [torch.randn(*shape, device=device, dtype=torch.float32, requires_grad=True) for shape in shapes]
    lam = (torch.rand(h, device=device) * 0.8 + 0.1).requires_grad_()
    out = diff_attention(*xs, lam, causal=causal, layout="BTHD")
    assert out.shape == (b, t, h, dv)
    expected, leaves = reference_on_cpu(*(x.transpose(1, 2) for x in xs), lam, causal=causal)
    tol = tolerance(out.device.type, out.dtype, "diff_attention")
    torch.testing.assert_close(out.transpose(1, 2).double().cpu(), expected, **tol)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [*xs, lam], grad)
    want = torch.autograd.grad(expected, leaves, grad.transpose(1, 2).double().cpu())
    for g, w, x in zip(got, want, [*xs, lam]):
        assert g.shape == x.shape
        g = g.transpose(1, 2) if g.dim() == 4 else g
        torch.testing.assert_close(g.double().cpu(), w, **tol)
    bhtd = diff_attention(*(x.transpose(1, 2) for x in xs), lam, causal=causal)
    assert torch.equal(out, bhtd.transpose(1, 2))


def test_layout_names_a_provable_mix_up():
    q, k, v = torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 4), torch.randn(2, 5, 3, 6)  # [B, T, H, D], H = 3
    with pytest.raises(RuntimeError, match=r"diff_attention: lam must be broadcastable to \[B, H\] = \[2, 5\] .*, "
                                           r"got \[3\]; q1 was read as \[B, H, T, D\] \(layout=\"BHTD\"\), giving "
                                           r"H = 5: for \[B, T, H, D\] tensors pass layout=\"BTHD\""):
        diff_attention(q, k, q, k, v, torch.rand(3))
    assert diff_attention(q, k, q, k, v, torch.rand(3), layout="BTHD").shape == (2, 5, 3, 6)
    qt, kt, vt = (x.transpose(1, 2).contiguous() for x in (q, k, v))  # [B, H, T, D] stated as BTHD
    with pytest.raises(RuntimeError, match=r"got \[2, 3\]; q1 was read as \[B, T, H, D\] \(layout=\"BTHD\"\), "
                                           r"giving H = 5: for \[B, H, T, D\] tensors pass layout=\"BHTD\""):
        diff_attention(qt, kt, qt, kt, vt, torch.rand(2, 3), layout="BTHD")
    # Keys of another length: their dimension 1 cannot be the queries' H.
    with pytest.raises(RuntimeError, match=r"k1 must have shape \[B, H, S, D\] = \[2, 5, \*, 4\], got \[2, 7, 3, 4\]"):
        diff_attention(q, torch.randn(2, 7, 3, 4), q, torch.randn(2, 7, 3, 4), torch.randn(2, 7, 3, 6), 0.5)
    with pytest.raises(ValueError, match=r"diff_attention: layout must be \"BHTD\" or \"BTHD\", got 'bthd'"):
        diff_attention(q, k, q, k, v, 0.5, layout="bthd")


def test_layout_bthd_compiles():
    xs = [torch.randn(2, 6, 3, 4, requires_grad=True) for _ in range(4)] + [torch.randn(2, 6, 3, 8, requires_grad=True)]
    assert_compiled_matches_eager(lambda *a: diff_attention(*a, 0.3, causal=True, layout="BTHD"), xs)


# ---- CUDA only --------------------------------------------------------------------------------------------


@pytest.mark.cuda
def test_many_tiles():
    """More (b, h) pairs x rows x keys than one float32 tile buffer holds: several pair chunks and query blocks."""
    xs, lam = make(6, 8, 700, 700, 32, 16, device="cuda")
    for causal in (False, True):
        check_against_reference(xs, lam, causal)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    xs, lam = make(2, 3, 40, 40, 16, 24, device="cuda")
    for causal in (False, True):
        out = diff_attention(*xs, lam, causal=causal)
        cpu_xs = [x.detach().cpu().requires_grad_() for x in xs]
        cpu_lam = lam.detach().cpu().requires_grad_()
        cpu_out = diff_attention(*cpu_xs, cpu_lam, causal=causal)
        torch.testing.assert_close(out.cpu(), cpu_out, atol=1e-5, rtol=1e-5)
        go = torch.randn_like(cpu_out)
        got = torch.autograd.grad(out, [*xs, lam], go.to("cuda"))
        want = torch.autograd.grad(cpu_out, [*cpu_xs, cpu_lam], go)
        for g, w in zip(got, want):
            torch.testing.assert_close(g.cpu(), w, atol=1e-4, rtol=1e-4)


@pytest.mark.cuda
def test_bad_inputs_cuda():
    xs, lam = make(1, 2, 5, 6, 4, 4, device="cuda")
    with pytest.raises(RuntimeError, match=r"diff_attention: q1 must be float16, bfloat16 or float32 on CUDA, got float64"):
        diff_attention(*[x.double() for x in xs], lam.double())
    with pytest.raises(RuntimeError, match=r"diff_attention: v must be on the same device as q1 \(cuda:0\), got cpu"):
        diff_attention(*xs[:4], xs[4].cpu(), lam)
    with pytest.raises(RuntimeError, match=r"diff_attention: k2 must have the same dtype as q1 \(float32\), got float16"):
        diff_attention(xs[0], xs[1], xs[2], xs[3].half(), xs[4], lam)
    with pytest.raises(RuntimeError, match=r"diff_attention: q1 must have as many queries as k1 has keys"):
        diff_attention(*xs, lam, causal=True)


# ---- fake (meta) kernel ------------------------------------------------------------------------------------


def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


def test_fake_checks():
    """The fake kernel refuses what the native kernels refuse, so traced and compiled calls fail like eager
    ones instead of returning a plausible shape."""
    q, k, v, lam = meta(1, 2, 3, 4), meta(1, 2, 5, 4), meta(1, 2, 5, 8), meta(1, 2)
    with pytest.raises(RuntimeError, match="dtype"):
        ops._diff_attention_forward(q, k, q, k, v.to(torch.float64), lam)
    with pytest.raises(RuntimeError, match=r"k2 must have shape \[B, H, S, D\] = \[1, 2, 5, 4\], got \[1, 2, 6, 4\]"):
        ops._diff_attention_forward(q, k, q, meta(1, 2, 6, 4), v, lam)
    with pytest.raises(RuntimeError, match=r"lam must have shape \[B, H\] = \[1, 2\] .*, got \[2\]"):
        ops._diff_attention_forward(q, k, q, k, v, meta(2))  # the op takes lam [B, H]; the wrapper broadcasts
    out, lse1, lse2 = ops._diff_attention_forward(q, k, q, k, v, lam)
    assert lse2.shape == lse1.shape
    assert out.shape == (1, 2, 3, 8) and lse1.shape == (1, 2, 3)


# ---- huge logits at every SIMD level (issue 17) -----------------------------------------------------------

HUGE_LOGITS_SCRIPT = """
import os, sys, torch, facekernels
torch.manual_seed(17)
cases = []
for dtype, magnitude in ((torch.float32, 1e5), (torch.float64, 1e10)):
    for causal in (False, True):
        for key_block in (None, "8"):
            if key_block is None:
                os.environ.pop("FACEKERNELS_DIFF_ATTENTION_KEY_BLOCK", None)
            else:
                os.environ["FACEKERNELS_DIFF_ATTENTION_KEY_BLOCK"] = key_block
            shapes = [(1, 2, 37, 8), (1, 2, 37, 8), (1, 2, 37, 8), (1, 2, 37, 8), (1, 2, 37, 5)]
            xs = [torch.randn(*s, dtype=dtype) * (magnitude if i < 4 else 1) for i, s in enumerate(shapes)]
            xs = [x.requires_grad_() for x in xs]
            lam = (torch.rand(1, 2, dtype=dtype) * 0.8 + 0.1).requires_grad_()
            out = facekernels.ops.diff_attention(*xs, lam, causal=causal)
            go = torch.randn_like(out)
            grads = torch.autograd.grad(out, [*xs, lam], go)
            cases.append((dtype, causal, key_block, [x.detach() for x in (*xs, lam)], go, out.detach(), grads))
torch.save((facekernels.build_info()['cpu_kernels']['diff_attention'], cases), sys.argv[1])
"""


def test_huge_logits_at_each_cpu_capability(tmp_path):
    """Finite inputs whose logits reach about 1e10 (float32) and 1e20 (float64): at every SIMD level, with
    and without causal masking, in one key tile and in key blocks, the output and all six gradients match
    the float64 eager softmax reference (no NaN). The row maximum and every exponent (forward, and the
    backward's recomputation of both maps from the saved lse) must use the same rounded logit: a fused
    multiply-subtract that uses the exact product instead overflows e^(logit - max) at the maximum."""
    results = run_at_each_cpu_capability(HUGE_LOGITS_SCRIPT, tmp_path)
    for level, (used, cases) in results.items():
        for dtype, causal, key_block, inputs, go, out, grads in cases:
            where = f"{level} ({used}), {dtype}, causal={causal}, key block {key_block}"
            leaves = [x.double().requires_grad_() for x in inputs]
            expected = reference(*leaves, causal=causal)
            want = torch.autograd.grad(expected, leaves, go.double())
            tol = tolerance("cpu", dtype, "diff_attention")
            assert torch.isfinite(out).all(), where
            torch.testing.assert_close(out.double(), expected, **tol, msg=lambda m: f"{where}: {m}")
            for name, g, w in zip(["q1", "k1", "q2", "k2", "v", "lam"], grads, want):
                assert torch.isfinite(g).all(), f"{where}: {name}"
                torch.testing.assert_close(g.double(), w, **tol, msg=lambda m, name=name: f"{where}: {name}: {m}")
