"""The fake (meta) kernels refuse what the native kernels refuse, so traced and compiled calls fail like
eager ones instead of returning a plausible shape."""

import facekernels  # noqa: F401  (registers the ops)
import pytest
import torch

ops = torch.ops.facekernels


def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


def test_cosine_topk_fake_checks():
    with pytest.raises(RuntimeError, match="k must be in"):
        ops.cosine_topk(meta(2, 4, 50), 99)
    with pytest.raises(RuntimeError, match="y must be"):
        ops.cosine_topk(meta(2, 4, 5), 2, meta(2, 3, 5))
    with pytest.raises(RuntimeError, match="dtype"):
        ops.cosine_topk(meta(2, 4, 5), 2, meta(2, 4, 5, dtype=torch.float64))
    values, indices = ops.cosine_topk(meta(2, 4, 5), 3, meta(2, 4, 7))
    assert values.shape == (2, 5, 3) and indices.dtype == torch.int64


def test_edge_conv_max_fake_checks():
    x, idx, w = meta(2, 3, 6), meta(2, 6, 2, dtype=torch.int64), meta(5, 6)
    with pytest.raises(RuntimeError, match="idx must be int64"):
        ops.edge_conv_max(x, meta(2, 6, 2), w, w)
    with pytest.raises(RuntimeError, match="w_self and w_edge"):
        ops.edge_conv_max(x, idx, w, meta(4, 6))
    with pytest.raises(RuntimeError, match="bias must be"):
        ops.edge_conv_max(x, idx, w, w, meta(4))
    out, winner = ops.edge_conv_max(x, idx, w, w, meta(5))
    assert out.shape == (2, 3, 5) and winner.dtype == torch.int32


def test_st_graph_conv_fake_checks():
    x, weight, adjacency = meta(2, 3, 4, 5), meta(2, 6, 3), meta(2, 5, 5)
    with pytest.raises(RuntimeError, match="Cin"):
        ops.st_graph_conv(x, meta(2, 6, 4), adjacency)
    with pytest.raises(RuntimeError, match="adjacency must be"):
        ops.st_graph_conv(x, weight, meta(3, 5, 5))
    with pytest.raises(RuntimeError, match="dtype"):
        ops.st_graph_conv(x, meta(2, 6, 3, dtype=torch.float64), adjacency)
    assert ops.st_graph_conv(x, weight, meta(2, 2, 5, 5)).shape == (2, 6, 4, 5)

