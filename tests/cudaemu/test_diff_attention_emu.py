"""cuda/diff_attention's row epilogues (unmodified kernels) run by the CPU emulator against float64
references of their contracts (cuda/diff_attention/diff_attention.h), on tiles that start inside the
(b, h) pairs and the queries as the binding's tiling makes them; CUDA float32 tolerance of
tests/devices.py."""

import math

import pytest
import torch

import emu

da = emu.family("diff_attention")
F32 = torch.float32
TILES = [  # (pairs, queries, first_bh, batches, q0, rows, cols, causal)
    (1, 1, 0, 1, 0, 1, 1, False), (2, 5, 0, 2, 0, 5, 5, True), (3, 9, 1, 2, 3, 4, 9, True),
    (4, 40, 0, 4, 0, 40, 33, False), (2, 70, 1, 1, 10, 60, 70, True), (5, 16, 2, 3, 0, 16, 130, False),
]
if da.racecheck():
    TILES = TILES[:5]


def masked(rows, cols, q0, causal):
    q = torch.arange(q0, q0 + rows)[:, None]
    k = torch.arange(cols)[None, :]
    return (k > q) if causal else torch.zeros(rows, cols, dtype=torch.bool)


@pytest.mark.parametrize("tile", TILES, ids=str)
def test_forward_and_backward_rows(tile):
    pairs, queries, first_bh, batches, q0, rows, cols, causal = tile
    scale = 1 / math.sqrt(8)
    s1, s2 = torch.randn(batches, rows, cols) * 3, torch.randn(batches, rows, cols) * 3
    lam = torch.rand(pairs) * 0.8
    lse1_0, lse2_0 = torch.randn(pairs, queries), torch.randn(pairs, queries)
    d1, lse1, lse2 = da.dev(s1), da.dev(lse1_0), da.dev(lse2_0)
    geo = (first_bh, batches, rows, cols, q0, queries, causal, scale)
    assert da("emu_da_forward_rows", d1, da.dev(s2), da.dev(lam), lse1, lse2, *geo) == 0

    m = masked(rows, cols, q0, causal)
    lam_t = lam.double()[first_bh:first_bh + batches, None, None]

    def lse(s):
        return torch.logsumexp((s.double() * scale).masked_fill(m, -math.inf), -1)

    L1, L2 = lse(s1), lse(s2)
    p1 = torch.exp((s1.double() * scale - L1[..., None])).masked_fill(m, 0)
    p2 = torch.exp((s2.double() * scale - L2[..., None])).masked_fill(m, 0)
    emu.check(d1.host(), (p1 - lam_t * p2).masked_fill(m, 0), F32)
    sl = (slice(first_bh, first_bh + batches), slice(q0, q0 + rows))
    ref1, ref2 = lse1_0.double().clone(), lse2_0.double().clone()
    ref1[sl], ref2[sl] = L1, L2
    emu.check(lse1.host(), ref1, F32)
    emu.check(lse2.host(), ref2, F32)

    # backward on the same tile with the lse just computed
    dpv = torch.randn(batches, rows, cols)
    b1, b2, bd = da.dev(s1), da.dev(s2), da.dev(dpv)
    row_d2_0 = torch.randn(pairs, queries)
    rd2 = da.dev(row_d2_0)
    assert da("emu_da_backward_rows", b1, b2, bd, da.dev(lam), lse1, lse2, rd2, *geo) == 0
    L1h, L2h = lse1.host().double()[sl], lse2.host().double()[sl]
    P1 = torch.exp(s1.double() * scale - L1h[..., None]).masked_fill(m, 0)
    P2 = torch.exp(s2.double() * scale - L2h[..., None]).masked_fill(m, 0)
    dp = dpv.double().masked_fill(m, 0)
    D1, D2 = (P1 * dp).sum(-1, keepdim=True), (P2 * dp).sum(-1, keepdim=True)
    sc = math.sqrt(cols)
    emu.check(b1.host(), (scale * P1 * (dp - D1)).masked_fill(m, 0), F32, sc)
    emu.check(b2.host(), (-lam_t * scale * P2 * (dp - D2)).masked_fill(m, 0), F32, sc)
    emu.check(bd.host(), (P1 - lam_t * P2).masked_fill(m, 0), F32)
    ref = row_d2_0.double().clone()
    ref[sl] = D2[..., 0]
    emu.check(rd2.host(), ref, F32, sc)


@pytest.mark.parametrize("pairs, queries", [(1, 1), (3, 7), (6, 300), (40, 33)])
def test_accumulate_and_lam_gradient(pairs, queries):
    dst0, src = torch.randn(pairs, queries + 3), torch.randn(pairs, queries + 5)
    dst = da.dev(dst0)
    assert da("emu_da_accumulate", dst, queries + 3, da.dev(src), queries + 5, pairs, queries) == 0
    ref = dst0.double().clone()
    ref[:, :queries] += src.double()[:, :queries]
    emu.check(dst.host(), ref, F32)
    row_d2 = torch.randn(pairs, queries)
    dlam = da.empty((pairs,), F32)
    assert da("emu_da_lam_gradient", da.dev(row_d2), pairs, queries, dlam) == 0
    emu.check(dlam.host(), -row_d2.double().sum(1), F32, math.sqrt(queries))


@pytest.mark.parametrize("causal", [False, True])
def test_rows_with_huge_logits(causal):
    """Scores whose logits reach about 1e10 (issue 17): the row maximum and every exponent (the forward's
    and the backward's recomputation from the saved lse) must see the same rounded logit. An exponent
    computed as fmaf(s, scale, -max) uses the exact product, up to half an ulp (512) above the rounded
    maximum: e^512 = inf and the row is NaN. Compared with float64 softmax of the float32 logits (one-hot
    rows, a float32 lse that equals the rounded maximum)."""
    pairs, queries, first_bh, batches, q0, rows, cols = 2, 9, 0, 2, 0, 9, 37
    scale = 1 / math.sqrt(8)
    g = torch.Generator().manual_seed(17)
    s1, s2 = (torch.randn(batches, rows, cols, generator=g) * 3e10 for _ in range(2))
    lam = torch.rand(pairs, generator=g) * 0.8
    d1, lse1, lse2 = da.dev(s1), da.dev(torch.zeros(pairs, queries)), da.dev(torch.zeros(pairs, queries))
    geo = (first_bh, batches, rows, cols, q0, queries, causal, scale)
    assert da("emu_da_forward_rows", d1, da.dev(s2), da.dev(lam), lse1, lse2, *geo) == 0
    m = masked(rows, cols, q0, causal)
    lam_t = lam.double()[first_bh:first_bh + batches, None, None]
    logits1, logits2 = ((s * scale).double().masked_fill(m, -math.inf) for s in (s1, s2))
    P1, P2 = logits1.softmax(-1), logits2.softmax(-1)
    emu.check(d1.host(), P1 - lam_t * P2, F32)
    emu.check(lse1.host(), torch.logsumexp(logits1, -1), F32)
    emu.check(lse2.host(), torch.logsumexp(logits2, -1), F32)

    dpv = torch.randn(batches, rows, cols, generator=g)
    b1, b2, bd, rd2 = da.dev(s1), da.dev(s2), da.dev(dpv), da.dev(torch.zeros(pairs, queries))
    assert da("emu_da_backward_rows", b1, b2, bd, da.dev(lam), lse1, lse2, rd2, *geo) == 0
    dp = dpv.double().masked_fill(m, 0)
    D1, D2 = (P1 * dp).sum(-1, keepdim=True), (P2 * dp).sum(-1, keepdim=True)
    sc = math.sqrt(cols)
    emu.check(b1.host(), scale * P1 * (dp - D1), F32, sc)
    emu.check(b2.host(), -lam_t * scale * P2 * (dp - D2), F32, sc)
    emu.check(bd.host(), P1 - lam_t * P2, F32)
    emu.check(rd2.host(), D2[..., 0], F32, sc)
