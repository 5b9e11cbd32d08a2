"""diff_attention through its CUDA binding (csrc/diff_attention/diff_attention_cuda.cpp, unmodified, compiled
on the CPU torch: tools/cudaemu/binding/) with the row epilogues of cuda/diff_attention in the emulator and the
GEMMs in torch's CPU mm/bmm (where cuBLAS runs on a GPU): the binding's tiling over (b, h) pairs and query
rows, causal key counts per row block, and the backward's walk over the query blocks from the last one
(the first block writes dk1, dk2, dv, later ones go through a temporary and diff_attention_accumulate), then
diff_attention_lam_gradient. Compared with torch.ops.facekernels' CPU ops in float64 on the same inputs with
tests/test_diff_attention.py's CUDA float32 tolerance (gradients relative to their largest entry, at least 1,
as there). float32 only: CPU tensors reach the binding only in float32 (the shared checks take the half
types on CUDA tensors only).

The binding's tiles hold kTileFloats = 2^24 floats ([pairs, rows, keys], rows at least min(T, 64)), so a
shape crosses a tile only with more than 2^24 scores: the two BIG shapes (plain build only, for time) are
the cheapest that do: few rows of many keys (the epilogues' warp collectives per row are what the emulator
pays for; the elementwise work per key is native code)."""

import pytest
import torch

import emu

ops = emu.binding("diff_attention")
F32 = torch.float32
TOL = {"atol": 1e-4, "rtol": 1e-4}  # tests/test_diff_attention.py's TOL[("cuda", torch.float32)]
CASES = [  # (B, H, T, S, D, Dv, causal): tests/test_diff_attention.py's CASES up to the larger head dims
    (2, 3, 7, 9, 8, 5, False), (1, 2, 1, 1, 4, 4, False), (1, 2, 1, 13, 4, 6, False), (2, 1, 11, 1, 4, 6, False),
    (1, 2, 1, 1, 4, 4, True), (1, 2, 63, 63, 16, 32, True), (1, 1, 64, 64, 8, 8, True), (1, 1, 65, 65, 8, 16, True),
    (1, 2, 129, 129, 8, 8, True), (1, 2, 65, 129, 8, 8, False), (1, 1, 129, 7, 8, 24, False),
    (1, 1, 33, 300, 32, 64, False), (1, 1, 17, 17, 256, 256, True), (1, 1, 9, 21, 256, 3, False),
]
if emu.build_mode() != "plain":  # race checker and ASan: the smaller half
    CASES = [c for c in CASES if c[0] * c[1] * c[2] * c[3] <= 4500]
BIG = {  # case: (forward launches, backward launches), i.e. tiles, and per tile the backward's
    # epilogue + 3 accumulations for every query block after the first one walked, + 1 lam_gradient.
    # 2 pairs of 65 queries x 131073 keys: 64 * 131073 * 2 > 2^24, so one pair per tile and two row blocks
    # (64 + 1): both loops of the binding, and the backward's accumulation of the second (first) block.
    (1, 2, 65, 131073, 4, 3, False): (4, 2 * (2 + 3) + 1),
    # causal 4200 x 4200: row blocks of 3994 (2^24 / 4200) and 206; the backward's last block sees every
    # key, the first one adds into a 3994-key prefix of dk1, dk2, dv.
    (1, 1, 4200, 4200, 4, 4, True): (2, 2 + 3 + 1),
}


def make(b, h, t, s, d, dv, seed):
    g = torch.Generator().manual_seed(seed)
    xs = [torch.randn(shape, generator=g, dtype=torch.float64).to(F32)
          for shape in ((b, h, t, d), (b, h, s, d), (b, h, t, d), (b, h, s, d), (b, h, s, dv))]
    lam = (torch.rand(b, h, generator=g, dtype=torch.float64) * 0.8 + 0.1).to(F32)
    go = torch.randn(b, h, t, dv, generator=g, dtype=torch.float64).to(F32)
    return xs, lam, go


def launches():
    return next(f for f in emu.loaded() if f.lib._name.endswith("libdiff_attention_binding_emu.so")).lib.cudaemu_launches()


def check(xs, lam, go, causal, scale=None, expect_launches=None):
    before = launches()
    out, lse1, lse2 = ops._diff_attention_forward(*xs, lam, causal, scale)
    forward_launches = launches() - before
    x64 = [x.double() for x in xs]
    rout, rlse1, rlse2 = torch.ops.facekernels._diff_attention_forward(*x64, lam.double(), causal, scale)
    assert out.dtype == F32 and lse1.dtype == F32 and out.shape == rout.shape and lse1.shape == rlse1.shape
    for a, r in ((out, rout), (lse1, rlse1), (lse2, rlse2)):
        assert not torch.isnan(a).any()
        torch.testing.assert_close(a.double(), r, **TOL)
    before = launches()
    got = ops._diff_attention_backward(go, *xs, lam, lse1, lse2, causal, scale)
    if expect_launches is not None:  # the shape really crossed the tiles it was chosen for
        assert (forward_launches, launches() - before) == expect_launches
    want = torch.ops.facekernels._diff_attention_backward(go.double(), *x64, lam.double(), rlse1, rlse2, causal,
                                                          scale)
    for name, g, w in zip(["q1", "k1", "q2", "k2", "v", "lam"], got, want):
        assert g.dtype == F32 and g.shape == w.shape, name
        assert not torch.isnan(g).any(), name
        norm = max(w.abs().max().item(), 1.0)
        torch.testing.assert_close(g.double() / norm, w / norm, **TOL, msg=lambda m, name=name: f"{name}: {m}")


@pytest.mark.parametrize("case", CASES, ids=str)
def test_matches_cpu_op(case):
    b, h, t, s, d, dv, causal = case
    xs, lam, go = make(b, h, t, s, d, dv, seed=sum(case))
    check(xs, lam, go, causal, expect_launches=(1, 2))  # one tile: epilogue (+ lam_gradient)


def test_scale_strides_and_empty():
    """An explicit scale; inputs laid out [B, T, H, D] and transposed (the binding's float32 contiguous
    copies); an empty query set (the binding returns before tiling)."""
    xs, lam, go = make(2, 3, 10, 12, 8, 8, seed=5)
    xs = [x.transpose(1, 2).contiguous().transpose(1, 2) for x in xs]
    assert not xs[0].is_contiguous()
    check(xs, lam, go, False, scale=0.3)
    check(xs, lam, go, False, scale=-1.5)
    xs, lam, go = make(1, 2, 0, 0, 4, 4, seed=6)
    out, lse1, _ = ops._diff_attention_forward(*xs, lam, True, None)
    assert out.shape == (1, 2, 0, 4) and lse1.shape == (1, 2, 0)
    grads = ops._diff_attention_backward(go, *xs, lam, lse1, lse1, True, None)
    assert grads[5].shape == (1, 2) and (grads[5] == 0).all()


@pytest.mark.skipif(emu.build_mode() != "plain", reason="2^24-score tiles: plain build only (time)")
@pytest.mark.parametrize("case", list(BIG), ids=str)
def test_several_tiles(case):
    b, h, t, s, d, dv, causal = case
    xs, lam, go = make(b, h, t, s, d, dv, seed=t)
    check(xs, lam, go, causal, expect_launches=BIG[case])
