"""cuda/edge_conv's kernels (unmodified) run by the CPU emulator through the family's CUDA binding
(csrc/edge_conv/edge_conv_cuda.cpp, unmodified, compiled on the CPU torch: tools/cudaemu/binding/), so the
binding's launch sequences run too: cosine_topk (inverse norms, per row block: list reset, column tiles
offered by cosine_topk_tile, cosine_topk_finish), edge_conv_max (index check with its host
synchronisation, transpose_weights, duplicate_neighbours, build_weights per (batch chunk, neighbour chunk),
max_group) and its backward (bias_gradient, index check, route_gradient, build_weights, accumulate,
accumulate_weight_grads, convert, finish_weight_grads). Compared with torch.ops.facekernels' CPU ops in
float64 on the same (rounded) inputs.

float32 only: the binding is reached with CPU tensors, and the shared argument checks (csrc/core/checks.h)
take float16/bfloat16 only on CUDA tensors, so the launchers' half paths are not run here (see
docs/design.md)."""

import pytest
import torch

import emu

ops = emu.binding("edge_conv")
F32 = torch.float32


def randn(*shape, seed):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(F32)


def check_topk(x, k, y=None):
    values, indices = ops.cosine_topk(x, k, y)
    ref_values, ref_indices = torch.ops.facekernels.cosine_topk(x.double(), k, None if y is None else y.double())
    assert values.dtype == F32 and indices.dtype == torch.int64 and values.shape == ref_values.shape
    torch.testing.assert_close(indices, ref_indices, rtol=0, atol=0)
    # tests/test_edge_conv.py's TOPK_ATOL for (cuda, float32): values are float64 recomputations.
    torch.testing.assert_close(values.double(), ref_values, rtol=0, atol=1e-6)


TOPK = [(2, 16, 37, 50, 5), (1, 3, 1, 1, 1), (3, 8, 20, 20, 20), (2, 7, 9, 33, 1), (2, 5, 40, 3, 2),
        (1, 12, 70, 300, 7)]  # (B, C, N, M, k)


@pytest.mark.parametrize("shape", TOPK, ids=str)
def test_topk_matches_cpu_op(shape):
    b, c, n, m, k = shape
    x, y = randn(b, c, n, seed=n), randn(b, c, m, seed=m + 1)
    check_topk(x, k, y)
    check_topk(x, min(k, n))


def test_topk_ties_zero_vectors_and_strides():
    """Small integers: exact, so equal columns tie exactly and the smaller index must win; zero vectors
    (inverse norm clamped); a non-contiguous x goes through the binding's contiguous copy."""
    g = torch.Generator().manual_seed(4)
    base = torch.randint(-3, 4, (2, 16, 30), generator=g).to(F32)
    y = base[:, :, torch.randint(0, 30, (400,), generator=g)]
    x = torch.randint(-3, 4, (2, 16, 25), generator=g).to(F32)
    x[:, :, 3] = y[:, :, 17]
    x[:, :, 4] = 0
    y[:, :, 9] = 0
    check_topk(x, 12, y)
    check_topk(x.transpose(1, 2).contiguous().transpose(1, 2), 5)


@pytest.mark.skipif(emu.build_mode() != "plain", reason="one larger case, plain build only (time)")
def test_topk_many_rows():
    check_topk(randn(1, 4, 2100, seed=5), 3, randn(1, 4, 40, seed=6))


def inputs(b, c, n, m, k, seed):
    x = randn(b, c, n, seed=seed)
    idx = torch.randint(0, n, (b, n, k), generator=torch.Generator().manual_seed(seed + 1))
    w_self, w_edge = randn(m, n, seed=seed + 2) / n**0.5, randn(m, n, seed=seed + 3) / n**0.5
    bias = randn(m, seed=seed + 4) * 0.1 - 0.05
    return x, idx, w_self, w_edge, bias


EDGE = [(2, 3, 5, 4, 2), (1, 1, 1, 1, 1), (3, 4, 6, 6, 6), (2, 5, 7, 3, 1), (2, 3, 9, 11, 4), (2, 8, 16, 16, 4),
        (1, 100, 8, 8, 2), (4, 16, 64, 64, 4), (3, 7, 13, 10, 9), (1, 3, 20, 3, 20)]  # (B, C, N, M, k)


@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", EDGE, ids=str)
def test_edge_conv_max_matches_cpu_op(shape, with_bias):
    x, idx, w_self, w_edge, bias = inputs(*shape, seed=sum(shape))
    bias = bias if with_bias else None
    out, winner = ops.edge_conv_max(x, idx, w_self, w_edge, bias)
    ref, ref_winner = torch.ops.facekernels.edge_conv_max(x.double(), idx, w_self.double(), w_edge.double(),
                                                          None if bias is None else bias.double())
    assert out.dtype == F32 and winner.dtype == torch.int32 and winner.shape == ref_winner.shape
    torch.testing.assert_close(out.double(), ref, rtol=1e-4, atol=1e-4)  # check_edge_cuda's float32 tolerance
    # Winners agree except on float32 near-ties; the backward below is fed the emulated winner on both sides.
    assert (winner == ref_winner).double().mean() > 0.95

    g = randn(*out.shape, seed=7)
    for need_x, need_w in ((True, True), (True, False), (False, True)):
        got = ops._edge_conv_max_backward(g, x, idx, w_self, w_edge, winner, bias is not None, need_x, need_w)
        want = torch.ops.facekernels._edge_conv_max_backward(g.double(), x.double(), idx, w_self.double(),
                                                             w_edge.double(), winner, bias is not None, need_x,
                                                             need_w)
        for a, r in zip(got, want):
            if r.numel():
                assert not torch.isnan(a).any()
                torch.testing.assert_close(a.double(), r, rtol=1e-3, atol=1e-3)


def test_index_out_of_range_is_refused():
    x, idx, w_self, w_edge, bias = inputs(2, 3, 5, 4, 2, seed=1)
    idx[1, 2, 1] = 5
    with pytest.raises(RuntimeError, match="idx"):
        ops.edge_conv_max(x, idx, w_self, w_edge, bias)
