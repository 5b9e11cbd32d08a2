"""facekernels.nn.MultiheadDiffAttention and MD2A against plainly written float64 references: the Diff
Transformer's layer as its reference implementation computes it (interleaved head pairs, materialised
softmax maps, RMSNorm, (1 - lambda_init)), re-written here from its description with the same parameter
names, and MD2A's noise feature and partner map by hand."""

import math

import pytest
import torch
from helpers import assert_compiled_matches_eager
from facekernels.nn import MD2A, MultiheadDiffAttention
from torch import nn

# ---------------------------------------------------------------------------------------------------
# references


class ReferenceDiffAttn(nn.Module):
    """The Diff Transformer layer as published: q/k viewed as 2H heads of width d, the [B, 2H, T, S]
    softmax maps viewed as [B, H, 2, T, S] and differenced, then RMSNorm (float32 or wider), times
    (1 - lambda_init), out projection. `affine=False` is the plain layer's weightless RMSNorm."""

    def __init__(self, embed_dim, depth, num_heads, affine=True):
        super().__init__()
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads // 2
        self.lambda_init = 0.8 - 0.6 * math.exp(-0.3 * depth)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.lambda_q1 = nn.Parameter(torch.randn(self.head_dim) * 0.1)
        self.lambda_k1 = nn.Parameter(torch.randn(self.head_dim) * 0.1)
        self.lambda_q2 = nn.Parameter(torch.randn(self.head_dim) * 0.1)
        self.lambda_k2 = nn.Parameter(torch.randn(self.head_dim) * 0.1)
        self.subln = nn.Module()
        if affine:
            self.subln.weight = nn.Parameter(1 + 0.2 * torch.randn(2 * self.head_dim))
        else:
            self.subln.weight = None

    def lam(self):
        return (torch.exp((self.lambda_q1 * self.lambda_k1).sum())
                - torch.exp((self.lambda_q2 * self.lambda_k2).sum()) + self.lambda_init)

    def rms_norm(self, a):
        out = a * torch.rsqrt(a.pow(2).mean(-1, keepdim=True) + 1e-5)
        return out if self.subln.weight is None else out * self.subln.weight

    def tail(self, maps, v):
        """maps [B, 2H, T, S] (pair h = rows 2h, 2h+1), v [B, T, H, 2d] -> [B, T, E]."""
        b, _, t, s = maps.shape
        maps = maps.view(b, self.num_heads, 2, t, s)
        diff = maps[:, :, 0] - self.lam() * maps[:, :, 1]
        attn = diff @ v.transpose(1, 2)
        attn = self.rms_norm(attn) * (1 - self.lambda_init)
        return self.out_proj(attn.transpose(1, 2).reshape(b, t, -1))

    def forward(self, x, causal, rotary=None):
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, 2 * self.num_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, 2 * self.num_heads, self.head_dim)
        v = self.v_proj(x).view(b, t, self.num_heads, 2 * self.head_dim)
        if rotary is not None:
            q, k = rotary(q, k)
        q = q.transpose(1, 2) * self.head_dim**-0.5
        k = k.transpose(1, 2)
        scores = q @ k.transpose(-1, -2)
        if causal:
            scores = scores + torch.full((t, t), float("-inf"), dtype=x.dtype).triu(1)
        return self.tail(torch.softmax(scores, dim=-1), v)


def reference_diff_attention(q1, k1, q2, k2, v, lam, causal=False, scale=None):
    """The op's contract, materialised: softmax(q1 k1^T s + M) v - lam * softmax(q2 k2^T s + M) v."""
    scale = q1.shape[-1] ** -0.5 if scale is None else scale

    def probs(q, k):
        s = q @ k.transpose(-1, -2) * scale
        if causal:
            s = s.masked_fill(torch.ones(s.shape[-2:], dtype=torch.bool).triu(1), float("-inf"))
        return torch.softmax(s, dim=-1)

    lam = torch.as_tensor(lam, dtype=q1.dtype)
    lam = lam.reshape(*lam.shape, 1, 1) if lam.dim() else lam
    return probs(q1, k1) @ v - lam * (probs(q2, k2) @ v)


def reference_md2a(ref: ReferenceDiffAttn, x, index, num_modalities):
    """MD2A by loops: Xn per sample/token, then the Diff Transformer tail with q2, k2 from Xn."""
    b, n, _ = x.shape
    per = n // num_modalities
    xn = torch.empty_like(x)
    for i in range(b):
        for tok in range(n):
            j = tok % per
            mean = sum(x[i, m * per + j] for m in range(num_modalities)) / num_modalities
            xn[i, tok] = (x[index[i], tok] + mean) / 2
    h, d = ref.num_heads, ref.head_dim
    qx = ref.q_proj(x).view(b, n, 2 * h, d).transpose(1, 2)
    kx = ref.k_proj(x).view(b, n, 2 * h, d).transpose(1, 2)
    qn = ref.q_proj(xn).view(b, n, 2 * h, d).transpose(1, 2)
    kn = ref.k_proj(xn).view(b, n, 2 * h, d).transpose(1, 2)
    scores = torch.empty(b, 2 * h, n, n, dtype=x.dtype)
    for head in range(2 * h):
        q, k = (qx, kx) if head % 2 == 0 else (qn, kn)
        scores[:, head] = q[:, head] @ k[:, head].transpose(-1, -2) * d**-0.5
    v = ref.v_proj(x).view(b, n, h, 2 * d)
    return ref.tail(torch.softmax(scores, dim=-1), v), xn


def _pair(embed_dim, depth, num_heads, causal=False, cls=MultiheadDiffAttention, affine=True, **kw):
    ref = ReferenceDiffAttn(embed_dim, depth, num_heads, affine=affine).double()
    if cls is MultiheadDiffAttention:
        ours = MultiheadDiffAttention(embed_dim, depth, num_heads, causal=causal, **kw)
    else:
        ours = MD2A(embed_dim, num_heads, depth=depth, **kw)
    ours = ours.double()
    result = ours.load_state_dict(ref.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return ref, ours


def _assert_grads_match(ref, ours, x_ref, x_ours, **tol):
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **tol)
    ref_params = dict(ref.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, ref_params[name].grad, **tol, msg=name)


# ---------------------------------------------------------------------------------------------------
# MultiheadDiffAttention


@pytest.mark.parametrize("causal", [False, True])
@pytest.mark.parametrize("b,t,embed_dim,num_heads,depth", [
    (2, 7, 16, 2, 0), (1, 1, 8, 1, 3), (3, 5, 24, 3, 11), (2, 13, 32, 1, 1), (1, 9, 12, 6, 2),
])
def test_outputs_and_gradients_match_reference(causal, b, t, embed_dim, num_heads, depth):
    ref, ours = _pair(embed_dim, depth, num_heads, causal)
    x = torch.randn(b, t, embed_dim, dtype=torch.float64)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected = ref(x_ref, causal)
    out = ours(x_ours)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    expected.backward(grad)
    out.backward(grad)
    _assert_grads_match(ref, ours, x_ref, x_ours)


def test_float32_matches_reference():
    ref, ours = _pair(32, 2, 2, causal=True)
    x = torch.randn(2, 11, 32, dtype=torch.float64)
    expected = ref(x, True)
    out = ours.float()(x.float())
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, expected.float(), atol=1e-4, rtol=1e-4)


def _interleaved_rotary(t):
    """A plain rotary embedding on [B, T, heads, d] with interleaved pairs (x0, x1), (x2, x3), ..."""
    _, n, _, d = t.shape
    freq = 1.0 / (10000 ** (torch.arange(0, d, 2, dtype=t.dtype) / d))
    angle = torch.arange(n, dtype=t.dtype)[:, None] * freq[None, :]
    cos, sin = angle.cos()[None, :, None, :], angle.sin()[None, :, None, :]
    even, odd = t[..., 0::2], t[..., 1::2]
    return torch.stack((even * cos - odd * sin, even * sin + odd * cos), dim=-1).flatten(-2)


def test_rotary_hook_matches_reference_layout():
    ref, ours = _pair(16, 1, 2, causal=True)
    x = torch.randn(2, 6, 16, dtype=torch.float64)
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    calls = []

    def rotary(q, k):
        calls.append((q.shape, k.shape))
        return _interleaved_rotary(q), _interleaved_rotary(k)

    expected = ref(x_ref, True, rotary)
    out = ours(x_ours, rotary=rotary)
    assert calls[-1] == (torch.Size([2, 6, 4, 4]), torch.Size([2, 6, 4, 4]))
    torch.testing.assert_close(out, expected)
    expected.sum().backward()
    out.sum().backward()
    _assert_grads_match(ref, ours, x_ref, x_ours)
    # the rotary changes the result (it is not silently dropped)
    assert not torch.allclose(out, ours(x))


def test_state_dict_of_reference_loads():
    ref = ReferenceDiffAttn(64, 3, 4)
    ours = MultiheadDiffAttention(64, 3, 4)
    assert set(ours.state_dict()) == set(ref.state_dict())
    for name, value in ref.state_dict().items():
        assert ours.state_dict()[name].shape == value.shape, name
    ours.load_state_dict(ref.state_dict(), strict=True)
    for name, value in ref.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[name], value)


def test_state_dict_of_weightless_rmsnorm_reference_loads():
    ref, ours = _pair(16, 4, 2, causal=True, affine=False)
    assert "subln.weight" not in ref.state_dict()
    torch.testing.assert_close(ours.subln.weight, torch.ones(8, dtype=torch.float64))
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(ours(x), ref(x, True))


@pytest.mark.parametrize("depth", [0, 1, 2, 5, 11, 23])
def test_lambda_init_per_depth(depth):
    layer = MultiheadDiffAttention(16, depth, 2)
    expected = 0.8 - 0.6 * math.exp(-0.3 * depth)
    assert layer.lambda_init == pytest.approx(expected, abs=1e-15)
    md2a = MD2A(16, 2, depth=depth)
    assert md2a.lambda_init == pytest.approx(expected, abs=1e-15)
    with torch.no_grad():
        lam = (torch.exp((layer.lambda_q1 * layer.lambda_k1).sum())
               - torch.exp((layer.lambda_q2 * layer.lambda_k2).sum()) + expected)
    torch.testing.assert_close(layer.lambda_full(), lam)


def test_initialisation():
    layer = MultiheadDiffAttention(4096, 0, 2)
    assert layer.head_dim == 1024
    for name in ("lambda_q1", "lambda_k1", "lambda_q2", "lambda_k2"):
        p = getattr(layer, name)
        assert p.shape == (1024,)
        assert abs(p.mean().item()) < 0.02 and 0.09 < p.std().item() < 0.11, name
    assert torch.equal(layer.subln.weight, torch.ones(2048))
    for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
        assert getattr(layer, proj).bias is None
    assert MultiheadDiffAttention(48, 0, 3).head_dim == 8


def test_empty_batch():
    layer = MultiheadDiffAttention(16, 0, 2)
    assert layer(torch.randn(0, 4, 16)).shape == (0, 4, 16)


def test_compiled_matches_eager():
    layer = MultiheadDiffAttention(16, 1, 2, causal=True)
    x = torch.randn(2, 6, 16, requires_grad=True)
    assert_compiled_matches_eager(layer, [x])


# ---------------------------------------------------------------------------------------------------
# MD2A


def test_noise_feature_by_hand():
    md2a = MD2A(2, 1, num_modalities=3)
    # B=2, three modalities of two tokens, E=2: x[b, m*2 + j] = (100 b + 10 m + j, -(100 b + 10 m + j))
    x = torch.tensor([[[100.0 * b + 10 * m + j, -(100.0 * b + 10 * m + j)]
                       for m in range(3) for j in range(2)] for b in range(2)])
    index = torch.tensor([1, 0])
    xn = md2a.noise_feature(x, index)
    # mean over modalities of token j of sample b: 100 b + 10 + j; the partner's token: 100 (1-b) + 10 m + j
    for b in range(2):
        for m in range(3):
            for j in range(2):
                value = (100.0 * (1 - b) + 10 * m + j + 100.0 * b + 10 + j) / 2
                torch.testing.assert_close(xn[b, m * 2 + j], torch.tensor([value, -value]))
    # the identity map: Xn = (x + Xbar) / 2
    xn_self = md2a.noise_feature(x, torch.tensor([0, 1]))
    xbar = x.view(2, 3, 2, 2).mean(1, keepdim=True).expand(2, 3, 2, 2).reshape(2, 6, 2)
    torch.testing.assert_close(xn_self, (x + xbar) / 2)


def test_partner_index_stays_within_domains():
    md2a = MD2A(8, 1)
    domain = torch.tensor([0, 1, 0, 2, 1, 0, 0, 3])
    seen = set()
    for seed in range(20):
        pi = md2a.partner_index(8, domain, torch.Generator().manual_seed(seed))
        assert pi.dtype == torch.int64 and pi.shape == (8,)
        assert torch.equal(domain[pi], domain)
        for i in range(8):
            alone = (domain == domain[i]).sum() == 1
            assert (pi[i] == i) == alone, (seed, i)
        seen.update(pi.tolist()[:1])
    assert seen == {2, 5, 6}  # sample 0 reaches every other member of its domain


def test_partner_index_without_domains_and_single_sample():
    md2a = MD2A(8, 1)
    pi = md2a.partner_index(5, None, torch.Generator().manual_seed(0))
    assert (pi != torch.arange(5)).all()
    assert torch.equal(md2a.partner_index(1, None), torch.tensor([0]))
    assert torch.equal(md2a.partner_index(1, torch.tensor([7])), torch.tensor([0]))
    assert torch.equal(md2a.partner_index(3, torch.tensor([0, 1, 2])), torch.tensor([0, 1, 2]))


def test_md2a_empty_batch():
    """Issue 17: an empty batch gives an empty output and gradients, as nn.MultiheadAttention's does
    (MD2A raised torch.multinomial's "cannot sample n_sample > prob_dist.size(-1)" drawing the partners)."""
    md2a = MD2A(16, 2, num_modalities=3)
    x = torch.randn(0, 6, 16, requires_grad=True)
    for domain in (None, torch.empty(0, dtype=torch.int64)):
        y = md2a(x, domain)
        assert y.shape == (0, 6, 16)
        y.sum().backward()
        assert x.grad.shape == x.shape and md2a.q_proj.weight.grad is not None
    assert md2a(x.detach(), generator=torch.Generator().manual_seed(0)).shape == (0, 6, 16)
    assert md2a.partner_index(0).shape == (0,) and md2a.partner_index(0).dtype == torch.int64


def test_reproducible_with_seeded_generator():
    md2a = MD2A(16, 2, num_modalities=2)
    x = torch.randn(6, 4, 16)
    domain = torch.tensor([0, 0, 1, 1, 1, 0])
    a = md2a(x, domain, generator=torch.Generator().manual_seed(3))
    b = md2a(x, domain, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    pi_a = md2a.partner_index(6, domain, torch.Generator().manual_seed(3))
    torch.testing.assert_close(md2a(x, index=pi_a), a)
    torch.manual_seed(5)
    c = md2a(x, domain)
    torch.manual_seed(5)
    assert torch.equal(md2a(x, domain), c)


@pytest.mark.parametrize("b,m,per,embed_dim,num_heads,depth", [
    (3, 3, 2, 16, 2, 0), (2, 1, 5, 8, 1, 4), (4, 2, 3, 24, 3, 7), (1, 3, 1, 8, 2, 1),
])
def test_md2a_outputs_and_gradients_match_reference(b, m, per, embed_dim, num_heads, depth):
    ref, ours = _pair(embed_dim, depth, num_heads, cls=MD2A, num_modalities=m)
    x = torch.randn(b, m * per, embed_dim, dtype=torch.float64)
    domain = torch.arange(b) % 2
    index = ours.partner_index(b, domain, torch.Generator().manual_seed(1))
    x_ref, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    expected, xn = reference_md2a(ref, x_ref, index, m)
    torch.testing.assert_close(ours.noise_feature(x, index), xn.detach())
    out = ours(x_ours, index=index)
    torch.testing.assert_close(out, expected)
    grad = torch.randn_like(out)
    expected.backward(grad)
    out.backward(grad)
    _assert_grads_match(ref, ours, x_ref, x_ours)


def test_md2a_reduces_to_diff_transformer_when_noise_is_the_input():
    # one modality and the identity map: Xn = (x + x) / 2 = x
    md2a = MD2A(16, 2, num_modalities=1, depth=3).double()
    layer = MultiheadDiffAttention(16, 3, 2).double()
    layer.load_state_dict(md2a.state_dict())
    x = torch.randn(3, 5, 16, dtype=torch.float64)
    torch.testing.assert_close(md2a(x, index=torch.arange(3)), layer(x))


def test_md2a_gradients_reach_every_parameter():
    md2a = MD2A(16, 2, num_modalities=3)
    x = torch.randn(4, 6, 16, requires_grad=True)
    md2a(x, torch.tensor([0, 0, 1, 1]), generator=torch.Generator().manual_seed(0)).square().sum().backward()
    assert x.grad.abs().sum() > 0
    for name, p in md2a.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # both halves of q_proj and k_proj (the x half and the Xn half) are trained
    for proj in (md2a.q_proj, md2a.k_proj):
        g = proj.weight.grad.view(2, 2, 4, 16)
        assert g[:, 0].abs().sum() > 0 and g[:, 1].abs().sum() > 0


def test_md2a_compiled_matches_eager():
    md2a = MD2A(16, 2, num_modalities=2)
    index = torch.tensor([1, 0, 2])
    x = torch.randn(3, 4, 16, requires_grad=True)
    assert_compiled_matches_eager(lambda x: md2a(x, index=index), [x])


# ---------------------------------------------------------------------------------------------------
# bad inputs


def test_bad_constructor_arguments():
    message = r"MultiheadDiffAttention: embed_dim must be divisible by 2 \* num_heads = 6, got 16"
    with pytest.raises(ValueError, match=message):
        MultiheadDiffAttention(16, 0, 3)
    with pytest.raises(ValueError,
                       match=r"MultiheadDiffAttention: embed_dim and num_heads must be >= 1, got 16 and 0"):
        MultiheadDiffAttention(16, 0, 0)
    with pytest.raises(ValueError, match=r"MultiheadDiffAttention: depth must be >= 0, got -1"):
        MultiheadDiffAttention(16, -1, 2)
    with pytest.raises(ValueError, match=r"MD2A: embed_dim must be divisible by 2 \* num_heads = 4, got 10"):
        MD2A(10, 2)
    with pytest.raises(ValueError, match=r"MD2A: num_modalities must be >= 1, got 0"):
        MD2A(8, 2, num_modalities=0)


def test_bad_inputs():
    layer = MultiheadDiffAttention(16, 0, 2)
    with pytest.raises(ValueError, match=r"MultiheadDiffAttention: x must be \[B, T, 16\], got \[4, 16\]"):
        layer(torch.randn(4, 16))
    with pytest.raises(ValueError, match=r"MultiheadDiffAttention: x must be \[B, T, 16\], got \[2, 4, 12\]"):
        layer(torch.randn(2, 4, 12))
    with pytest.raises(ValueError, match=r"MultiheadDiffAttention: rotary must return q \[2, 4, 4, 4\]"):
        layer(torch.randn(2, 4, 16), rotary=lambda q, k: (q[:, :2], k))

    md2a = MD2A(16, 2, num_modalities=3)
    with pytest.raises(ValueError, match=r"MD2A: x must be \[B, N, 16\], got \[2, 3, 6, 16\]"):
        md2a(torch.randn(2, 3, 6, 16))
    with pytest.raises(ValueError, match=r"MD2A: x must be \[B, N, 16\], got \[2, 6, 8\]"):
        md2a(torch.randn(2, 6, 8))
    with pytest.raises(ValueError,
                       match=r"MD2A: the token count N must be divisible by num_modalities = 3, got 7"):
        md2a(torch.randn(2, 7, 16))
    with pytest.raises(ValueError, match=r"MD2A: domain must be \[B\] = \[2\] integer labels, got \[3\]"):
        md2a(torch.randn(2, 6, 16), torch.tensor([0, 1, 2]))
    with pytest.raises(ValueError,
                       match=r"MD2A: domain must be \[B\] = \[2\] integer labels, got \[2\] torch.float32"):
        md2a(torch.randn(2, 6, 16), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"MD2A: index must be \[B\] = \[2\] int64, got \[3\]"):
        md2a(torch.randn(2, 6, 16), index=torch.tensor([0, 1, 0]))
