"""cosine_topk and edge_conv_max: the cosine k-nearest-neighbour graph and the EdgeConv-max map of MOL's
channel correspondence convolution (issue 5)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check, check_dim, check_floating_dtype, check_index_limit, check_same_device
from ._checks import check_same_dtype, dtype_name, shape_string, sym_and
from ._registration import refuse_double_backward, register_autocast, with_defaults

__all__ = ["cosine_topk", "edge_conv_max"]


def cosine_topk(x: Tensor, k: int, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""The ``k`` most cosine-similar columns of ``y`` for every column of ``x``.

    With ``xh = x / max(|x[b, :, n]|_2, 1e-12)`` and ``yh`` likewise (``F.normalize`` over the channels)::

        sim[b, n, m] = sum_c xh[b, c, n] yh[b, c, m]
        values[b, n, :], indices[b, n, :] = the k largest sim[b, n, :] over m, in descending order

    Ties go to the smaller ``m`` first, as ``torch.topk`` on the exact values: candidates near the k-th
    value are re-ranked by their similarity recomputed in float64 from the inputs, so duplicate columns
    of ``y`` tie exactly whatever rounding the tile GEMM gave them. A zero column has similarity 0 with
    everything. NaN similarities (from a NaN or inf in a column of ``x`` or ``y``) are never selected,
    and a row left with fewer than ``k`` finite similarities is an error: the op raises a RuntimeError
    naming the non-finite input and the row (``x and y must be finite (no NaN or inf): x[b, :, n] ...``),
    so every returned index is in ``[0, M)``. On CUDA that check synchronises the stream once per call.

    The ``[B, N, M]`` similarity matrix is never held: rows of ``x`` are taken in blocks against tiles of
    ``y`` (raw dot products by the backend's GEMM, scaled by the inverse norms in the epilogue, no
    normalised copy), so extra memory stays bounded whatever N and M (about 25 MiB on CPU for 4096 probes
    against 65536 gallery vectors of 512 dimensions) -- it serves 1:N face identification
    (``B = 1``, probes as the columns of ``x``, the gallery as the columns of ``y``).

    Args:
        x: ``[B, C, N]``, float32/float64 on CPU, float16/bfloat16/float32 on CUDA (float32 accumulation);
            any strides.
        k: ``1 <= k <= M``.
        y: ``[B, C, M]`` of the same dtype and device, or None for ``y = x``.

    Returns:
        ``(values, indices)``, ``[B, N, k]`` each: values in the dtype of ``x``, indices int64. Not
        differentiable (the outputs never require grad).
    """
    return torch.ops.facekernels.cosine_topk.default(x, k, y)


def edge_conv_max(
    x: Tensor, idx: Tensor, w_self: Tensor, w_edge: Tensor, bias: Tensor | None = None
) -> Tensor:
    r"""EdgeConv with a max over the neighbours, per channel, along the positions.

    ::

        out[b, c, m] = max_j ReLU( sum_n w_self[m, n] x[b, c, n]
                                   + sum_n w_edge[m, n] (x[b, c, idx[b, n, j]] - x[b, c, n]) + bias[m] )

    Computed as ``z_j = X W_j + bias`` with ``X = x[b]`` as ``[C, N]`` rows and
    ``W_j[p, m] = (w_self - w_edge)[m, p] + sum_{n: idx[b, n, j] = p} w_edge[m, n]``: the gather is folded
    into the weights, so each neighbour costs one ``[C, N] x [N, M]`` GEMM and neither the gathered
    ``[B, C, N, k]`` nor the ``[B, C, k, M]`` pre-activations are held beyond a tile.

    Gradients flow to ``x``, ``w_self``, ``w_edge`` and ``bias`` (``idx`` is an index): the max routes the
    gradient to the first maximal ``j`` (an exact duplicate neighbour list ``idx[b, :, j]`` counts as
    equal to its first occurrence), and ReLU's gradient is 0 where the maximal pre-activation is <= 0.
    The winners are saved by the forward, so the backward recomputes no forward GEMM. Not twice
    differentiable.

    Args:
        x: ``[B, C, N]``, float32/float64 on CPU, float16/bfloat16/float32 on CUDA (float32 accumulation);
            any strides.
        idx: int64 ``[B, N, k]``, values in ``[0, N)``, ``k >= 1`` (any neighbours: a kNN graph, random,
            repeated).
        w_self, w_edge: ``[M, N]``, the dtype and device of ``x``.
        bias: ``[M]`` or None.

    Returns:
        ``[B, C, M]``, contiguous, in the dtype of ``x``.
    """
    return torch.ops.facekernels.edge_conv_max.default(x, idx, w_self, w_edge, bias)[0]


# The fake kernels' checks: csrc/edge_conv/edge_conv.cpp's, in its order and words (ops/_checks.py). The
# range of idx and of winner are values, which only the kernels see.
def _check_cosine_topk(op: str, x: Tensor, k: int, y: Tensor | None) -> None:
    check_dim(op, "x", x, 3, "[B, C, N]")
    check_floating_dtype(op, "x", x)
    m = x.shape[2]
    if y is not None:
        check_dim(op, "y", y, 3, "[B, C, M]")
        check_same_device(op, "y", y, "x", x)
        check_same_dtype(op, "y", y, "x", x)
        check(sym_and(y.shape[0] == x.shape[0], y.shape[1] == x.shape[1]), op,
              "y must be [B, C, M] with B = ", x.shape[0], " and C = ", x.shape[1], " as x, got ",
              shape_string(y))
        m = y.shape[2]
    check(sym_and(k >= 1, k <= m), op, "k must be in [1, M] = [1, ", m, "], got ", k)
    check_index_limit(m, 2**31, op, "y must have fewer than 2^31 columns, got M = ", m)


def _check_edge_conv_max(
    op: str, x: Tensor, idx: Tensor, w_self: Tensor, w_edge: Tensor, bias: Tensor | None
) -> None:
    check_dim(op, "x", x, 3, "[B, C, N]")
    check_floating_dtype(op, "x", x)
    check_same_device(op, "idx", idx, "x", x)
    check(idx.dtype == torch.int64, op, "idx must be int64, got ", dtype_name(idx.dtype))
    check_dim(op, "idx", idx, 3, "[B, N, k]")
    b, n = x.shape[0], x.shape[2]
    check(sym_and(idx.shape[0] == b, idx.shape[1] == n), op, "idx must be [B, N, k] with B = ", b,
          " and N = ", n, " as x, got ", shape_string(idx))
    check(idx.shape[2] >= 1, op, "idx must have at least one neighbour (k >= 1), got ", shape_string(idx))
    check_same_device(op, "w_self", w_self, "x", x)
    check_same_dtype(op, "w_self", w_self, "x", x)
    check_dim(op, "w_self", w_self, 2, "[M, N]")
    check(w_self.shape[1] == n, op, "w_self must be [M, N] with N = ", n, " as x, got ", shape_string(w_self))
    m = w_self.shape[0]
    check_same_device(op, "w_edge", w_edge, "x", x)
    check_same_dtype(op, "w_edge", w_edge, "x", x)
    check(w_edge.dim() == 2 and sym_and(w_edge.shape[0] == m, w_edge.shape[1] == n), op,
          "w_edge must have the same shape as w_self ", shape_string(w_self), ", got ", shape_string(w_edge))
    if bias is not None:
        check_same_device(op, "bias", bias, "x", x)
        check_same_dtype(op, "bias", bias, "x", x)
        check(bias.dim() == 1 and bias.shape[0] == m, op, "bias must be [M] = [", m, "], got ",
              shape_string(bias))
    check_index_limit(n, 2**31, op, "x must have fewer than 2^31 positions, got N = ", n)


def _check_edge_conv_max_backward(
    op: str, grad_out: Tensor, x: Tensor, idx: Tensor, w_self: Tensor, w_edge: Tensor, winner: Tensor
) -> None:
    _check_edge_conv_max(op, x, idx, w_self, w_edge, None)
    b, c, m = x.shape[0], x.shape[1], w_self.shape[0]

    def is_bcm(t: Tensor):
        return t.dim() == 3 and sym_and(t.shape[0] == b, t.shape[1] == c, t.shape[2] == m)

    check(is_bcm(grad_out), op, "grad_out must be [B, C, M] = [", b, ", ", c, ", ", m, "], got ",
          shape_string(grad_out))
    check_same_dtype(op, "grad_out", grad_out, "x", x)
    check_same_device(op, "grad_out", grad_out, "x", x)
    check_same_device(op, "winner", winner, "x", x)
    check(winner.dtype == torch.int32 and is_bcm(winner), op, "winner must be int32 [B, C, M], got ",
          dtype_name(winner.dtype), " ", shape_string(winner))


@torch.library.register_fake("facekernels::cosine_topk")
def _cosine_topk_fake(x: Tensor, k: int, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    _check_cosine_topk("cosine_topk", x, k, y)
    shape = (x.shape[0], x.shape[2], k)
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int64)


@torch.library.register_fake("facekernels::edge_conv_max")
def _edge_conv_max_fake(
    x: Tensor, idx: Tensor, w_self: Tensor, w_edge: Tensor, bias: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    _check_edge_conv_max("edge_conv_max", x, idx, w_self, w_edge, bias)
    shape = (x.shape[0], x.shape[1], w_self.shape[0])
    return x.new_empty(shape), x.new_empty(shape, dtype=torch.int32)


@torch.library.register_fake("facekernels::_edge_conv_max_backward")
def _edge_conv_max_backward_fake(
    grad_out: Tensor,
    x: Tensor,
    idx: Tensor,
    w_self: Tensor,
    w_edge: Tensor,
    winner: Tensor,
    has_bias: bool,
    need_x: bool,
    need_weights: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    _check_edge_conv_max_backward("_edge_conv_max_backward", grad_out, x, idx, w_self, w_edge, winner)
    return (
        x.new_empty(x.shape if need_x else (0,)),
        x.new_empty(w_self.shape if need_weights else (0,)),
        x.new_empty(w_self.shape if need_weights else (0,)),
        x.new_empty((w_self.shape[0],) if has_bias else (0,)),
    )


# cosine_topk is not differentiable: the outputs are marked so (as torch does for topk's indices) rather
# than left to the dispatcher's fallback, which would hand back outputs requiring grad.
def _topk_setup_context(ctx, inputs, output) -> None:
    ctx.mark_non_differentiable(*output)


def _topk_backward(ctx, *grads):
    raise RuntimeError("cosine_topk is not differentiable")


torch.library.register_autograd("facekernels::cosine_topk", _topk_backward, setup_context=_topk_setup_context)


def _edge_setup_context(ctx, inputs, output) -> None:
    x, idx, w_self, w_edge, bias = with_defaults("edge_conv_max", inputs)
    winner = output[1]
    ctx.mark_non_differentiable(winner)
    ctx.save_for_backward(x, idx, w_self, w_edge, winner)
    ctx.has_bias = bias is not None


def _edge_backward(ctx, grad_out: Tensor, grad_winner: Tensor | None):
    x, idx, w_self, w_edge, winner = ctx.saved_tensors
    needs = ctx.needs_input_grad
    grads: list[Tensor | None] = [None] * len(needs)
    need_x = needs[0]
    need_weights = needs[2] or needs[3]
    need_bias = len(needs) > 4 and needs[4]
    if need_x or need_weights or need_bias:
        if grad_out is None:
            grad_out = x.new_zeros((x.shape[0], x.shape[1], w_self.shape[0]))
        grad_x, grad_self, grad_edge, grad_bias = torch.ops.facekernels._edge_conv_max_backward.default(
            grad_out, x, idx, w_self, w_edge, winner, ctx.has_bias, need_x, need_weights
        )
        grads[0] = grad_x if need_x else None
        grads[2] = grad_self if needs[2] else None
        grads[3] = grad_edge if needs[3] else None
        if need_bias:
            grads[4] = grad_bias
    return tuple(grads)


torch.library.register_autograd("facekernels::edge_conv_max", _edge_backward, setup_context=_edge_setup_context)


refuse_double_backward("_edge_conv_max_backward", "edge_conv_max")

register_autocast("cosine_topk")
register_autocast("edge_conv_max")
