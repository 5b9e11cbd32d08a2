"""diff_attention on CUDA: values and gradients in float32/float16/bfloat16 against a float64 reference that
materialises both maps (T = 1, S = 1, T != S, causal, tile boundaries, D != Dv, D = 256, every lam shape),
more (b, h) pairs and rows than one tile holds, CPU/CUDA agreement, strided and empty inputs, the
torch.library contract, torch.compile, autocast, and the bad inputs the CUDA binding must refuse.

The CUDA kernels compute in float16/bfloat16/float32 only (float64 is refused), so gradcheck, which needs
float64, cannot run here: gradients are compared with the float64 reference's autograd instead.
"""

import pytest
import torch
from conftest import assert_compiled_matches_eager
from facekernels.ops import diff_attention
from test_diff_attention import reference as cpu_reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEVICE = "cuda"
ops = torch.ops.facekernels


def reference(q1, k1, q2, k2, v, lam, causal=False, scale=None):
    """test_diff_attention's float64 reference on the CPU, with the leaves its gradients are taken for."""
    leaves = [t.detach().cpu().double().requires_grad_() for t in (q1, k1, q2, k2, v, lam)]
    return cpu_reference(*leaves, causal=causal, scale=scale), leaves


def make(b, h, t, s, d, dv, dtype=torch.float32, lam_shape=None):
    shapes = [(b, h, t, d), (b, h, s, d), (b, h, t, d), (b, h, s, d), (b, h, s, dv)]
    xs = [torch.randn(*sh, device=DEVICE).to(dtype).requires_grad_() for sh in shapes]
    lam = (torch.rand(lam_shape if lam_shape is not None else (b, h), device=DEVICE) * 0.8 + 0.1).to(dtype)
    return xs, lam.requires_grad_()


# float32 GEMMs follow torch's matmul precision (full float32 by default); half inputs are rounded to their
# dtype on the way in and out, the arithmetic in between is float32.
TOL = {
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.float16: {"atol": 5e-3, "rtol": 5e-3},
    torch.bfloat16: {"atol": 4e-2, "rtol": 4e-2},
}

CASES = [  # (B, H, T, S, D, Dv, causal)
    (2, 3, 7, 9, 8, 5, False),
    (1, 2, 1, 1, 4, 4, False),
    (1, 2, 1, 13, 4, 6, False),
    (2, 1, 11, 1, 4, 6, False),
    (1, 2, 1, 1, 4, 4, True),
    (1, 2, 63, 63, 16, 32, True),
    (1, 1, 64, 64, 8, 8, True),
    (1, 1, 65, 65, 8, 16, True),
    (1, 2, 129, 129, 8, 8, True),
    (1, 2, 65, 129, 8, 8, False),
    (2, 2, 200, 300, 64, 128, False),
    (1, 1, 33, 33, 256, 256, True),
]


def check_against_reference(xs, lam, causal, dtype, scale=None):
    out = diff_attention(*xs, lam, causal=causal, scale=scale)
    expected, ref_inputs = reference(*[x.float() for x in xs], lam.float(), causal, scale)
    assert out.dtype == dtype and out.device.type == "cuda" and out.is_contiguous()
    torch.testing.assert_close(out.double().cpu(), expected, **TOL[dtype])
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, [*xs, lam], grad)
    want = torch.autograd.grad(expected, ref_inputs, grad.double().cpu())
    for name, g, w in zip(["q1", "k1", "q2", "k2", "v", "lam"], got, want):
        assert g.dtype == dtype, name
        scale_of = max(w.abs().max().item(), 1.0)
        torch.testing.assert_close(g.double().cpu() / scale_of, w / scale_of, **TOL[dtype], msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", CASES, ids=[str(c) for c in CASES])
def test_matches_reference(case, dtype):
    b, h, t, s, d, dv, causal = case
    xs, lam = make(b, h, t, s, d, dv, dtype)
    check_against_reference(xs, lam, causal, dtype)


@pytest.mark.parametrize("lam_shape", [(), (3,), (1, 3), (2, 1), (2, 3)])
def test_lam_shapes_and_gradient(lam_shape):
    xs, lam = make(2, 3, 10, 12, 8, 8, lam_shape=lam_shape)
    out = diff_attention(*xs, lam)
    (g,) = torch.autograd.grad(out.square().sum(), lam)
    expected, ref_inputs = reference(*xs, lam)
    (w,) = torch.autograd.grad(expected.square().sum(), ref_inputs[5])
    assert g.shape == lam.shape
    torch.testing.assert_close(g.double().cpu(), w, atol=1e-3, rtol=1e-3)


def test_explicit_scale():
    xs, lam = make(1, 2, 9, 10, 8, 4)
    check_against_reference(xs, lam, False, torch.float32, scale=-0.6)


def test_many_tiles(monkeypatch):
    """More (b, h) pairs x rows x keys than one float32 tile buffer holds: several pair chunks and query blocks."""
    xs, lam = make(6, 8, 700, 700, 32, 16)
    for causal in (False, True):
        check_against_reference(xs, lam, causal, torch.float32)


def test_matches_cpu():
    xs, lam = make(2, 3, 40, 40, 16, 24)
    for causal in (False, True):
        out = diff_attention(*xs, lam, causal=causal)
        cpu_xs = [x.detach().cpu().requires_grad_() for x in xs]
        cpu_lam = lam.detach().cpu().requires_grad_()
        cpu_out = diff_attention(*cpu_xs, cpu_lam, causal=causal)
        torch.testing.assert_close(out.cpu(), cpu_out, atol=1e-5, rtol=1e-5)
        go = torch.randn_like(cpu_out)
        got = torch.autograd.grad(out, [*xs, lam], go.to(DEVICE))
        want = torch.autograd.grad(cpu_out, [*cpu_xs, cpu_lam], go)
        for g, w in zip(got, want):
            torch.testing.assert_close(g.cpu(), w, atol=1e-4, rtol=1e-4)


def test_strided_inputs():
    b, h, t, s, d = 2, 3, 13, 10, 8
    q1 = torch.randn(b, t, h, d, device=DEVICE).transpose(1, 2).requires_grad_()
    k1 = torch.randn(b, s, h, d, device=DEVICE).transpose(1, 2).requires_grad_()
    q2 = torch.randn(b, t, h, d, device=DEVICE).transpose(1, 2).requires_grad_()
    k2 = torch.randn(b, h, d, s, device=DEVICE).transpose(2, 3).requires_grad_()
    v = torch.randn(b, s, h, 12, device=DEVICE)[..., ::2].transpose(1, 2).requires_grad_()
    lam = torch.rand(h, device=DEVICE).requires_grad_()
    check_against_reference([q1, k1, q2, k2, v], lam, False, torch.float32)


@pytest.mark.parametrize("shape", [(0, 2, 5, 6), (2, 0, 5, 6), (1, 2, 0, 6)])
def test_empty(shape):
    b, h, t, s = shape
    xs, lam = make(b, h, t, s, 4, 3)
    out = diff_attention(*xs, lam)
    assert out.shape == (b, h, t, 3)
    out.sum().backward()
    for x in [*xs, lam]:
        assert x.grad.shape == x.shape and (x.grad == 0).all()


def test_opcheck():
    xs, lam = make(2, 2, 5, 7, 4, 6)
    torch.library.opcheck(ops._diff_attention_forward.default, (*xs, lam))
    torch.library.opcheck(ops._diff_attention_forward.default, (*xs, lam, False, 0.5))
    detached = [x.detach() for x in xs]
    out, lse1, lse2 = ops._diff_attention_forward(*detached, lam.detach())
    torch.library.opcheck(
        ops._diff_attention_backward.default,
        (torch.randn_like(out), *detached, lam.detach(), lse1, lse2, False, None),
    )


def test_torch_compile_fullgraph():
    xs, lam = make(2, 2, 9, 9, 8, 4)

    def block(q1, k1, q2, k2, v, lam):
        return diff_attention(q1, k1, q2, k2, v, lam, causal=True).tanh()

    assert_compiled_matches_eager(block, [*xs, lam])


def test_autocast_cuda_runs_in_half():
    xs, lam = make(1, 2, 6, 7, 8, 4)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = diff_attention(*xs, lam)
    assert out.dtype == torch.bfloat16


def test_bad_inputs():
    xs, lam = make(1, 2, 5, 6, 4, 4)
    with pytest.raises(RuntimeError, match=r"diff_attention: q1 must be float16, bfloat16 or float32 on CUDA, got float64"):
        diff_attention(*[x.double() for x in xs], lam.double())
    with pytest.raises(RuntimeError, match=r"diff_attention: v must be on the same device as q1 \(cuda:0\), got cpu"):
        diff_attention(*xs[:4], xs[4].cpu(), lam)
    with pytest.raises(RuntimeError, match=r"diff_attention: k2 must have the same dtype as q1 \(float32\), got float16"):
        diff_attention(xs[0], xs[1], xs[2], xs[3].half(), xs[4], lam)
    with pytest.raises(RuntimeError, match=r"diff_attention: q1 must have as many queries as k1 has keys"):
        diff_attention(*xs, lam, causal=True)
