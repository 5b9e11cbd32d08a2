"""st_graph_conv: the spatio-temporal multi-graph convolution of ST-GCN (a channel product per partition
followed by an aggregation over the graph), with the contraction order chosen by cost."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check, check_dim, check_floating_dtype, check_same_device, check_same_dtype, dtype_name
from ._checks import fail, shape_string, sym_and
from ._registration import refuse_double_backward, register_autocast, with_defaults

__all__ = ["st_graph_conv"]


def st_graph_conv(
    x: Tensor, weight: Tensor, adjacency: Tensor, bias: Tensor | None = None, mask: Tensor | None = None
) -> Tensor:
    r"""Multi-graph convolution over the nodes of a skeleton or landmark graph, frame by frame::

        out[n, c, t, w] = sum_k sum_v ( sum_i weight[k, c, i] x[n, i, t, v] + bias[k, c] ) A[(n,) k, v, w]

    With a ``mask`` (``m[n, t, v]``, True = the landmark was detected), a masked point sends no message
    and receives none::

        out[n, c, t, w] = m[n, t, w] sum_k sum_v m[n, t, v] ( sum_i weight[k, c, i] x[n, i, t, v]
                                                              + bias[k, c] ) A[(n,) k, v, w]

    i.e. the message of a masked source node, its channel product *and* its bias, is dropped whole (the
    bias term becomes ``bias[k, c] * sum_v m[n, t, v] A[k, v, w]``, so a node whose neighbours are all
    missing gets nothing, not a bias), and the output at a masked point is zero, so a later temporal
    convolution sees zeros there. x at masked points is never read (its values, NaN included, do not
    matter, and its gradient there is zero); no gradient reaches weight, bias or adjacency through a masked
    point. Without a mask (or with one that is True everywhere) the result is the unmasked op's, up to
    rounding.

    This is ST-GCN's ``ConvTemporalGraphical`` (a 1x1 convolution to ``K * Cout`` channels, then
    ``einsum('nkctv,kvw->nctw')``) with ``weight[k, c, i] = conv.weight[k * Cout + c, i]`` and
    ``bias[k, c] = conv.bias[k * Cout + c]``; the bias term is ``bias[k, c] * sum_v A[k, v, w]``.

    The op aggregates over the graph first when ``Cin < Cout`` (``K Cin T V^2`` multiply-adds for the
    aggregation) and multiplies channels first otherwise (``K Cout T V^2``); the channel product costs
    ``K Cin Cout T V`` either way. Nothing of size ``[N, K, Cout, T, V]`` is materialised: every sample
    goes through GEMMs into reused per-thread buffers.

    Args:
        x: ``[N, Cin, T, V]``; any strides (each sample is read in place when it is contiguous).
        weight: ``[K, Cout, Cin]``.
        adjacency: ``[K, V, V]`` shared by the batch, or ``[N, K, V, V]`` per sample (adaptive graphs).
        bias: ``[K, Cout]`` or None.
        mask: ``[N, T, V]`` bool, or None (every point valid). Only bool is taken: a float "mask" with
            values other than 0 and 1 would silently weight the messages, and checking the values would
            cost a device sync on every call.

        One dtype for all: float32/float64 on CPU, float16/bfloat16/float32 on CUDA (computed in float32).

    Returns:
        ``[N, Cout, T, V]``, contiguous. Differentiable in ``x``, ``weight``, ``adjacency`` and ``bias``
        (backward kernels); not twice differentiable.

    The mask is applied around the op, not inside its kernels: x is zeroed at masked points and, with a
    bias, extended by the mask as one more input channel whose weight is the bias (``[x m, m]`` against
    ``[weight, bias]``), which drops a masked node's bias with its message exactly; the output is
    multiplied by the mask. The extra channel costs ``K Cout T V`` multiply-adds (``1 / Cin`` of the channel
    product); the backward is the op's backward kernel through the same two products.
    """
    if mask is None:
        return torch.ops.facekernels.st_graph_conv.default(x, weight, adjacency, bias)
    if not torch.compiler.is_compiling():  # traced, the fake kernel checks the op's (extended) arguments
        _check_st_graph_conv("st_graph_conv", x, weight, adjacency, bias)
    _check_mask("st_graph_conv", mask, x)
    valid = mask.unsqueeze(1)                                               # [N, 1, T, V]
    m = valid.to(x.dtype)
    x_valid = torch.where(valid, x, 0.0)  # not x * m: a NaN at a masked point must not spread
    if bias is None:
        out = torch.ops.facekernels.st_graph_conv.default(x_valid, weight, adjacency, None)
    else:
        x_and_mask = torch.cat([x_valid, m], dim=1)                         # [N, Cin + 1, T, V]
        weight_and_bias = torch.cat([weight, bias.unsqueeze(2)], dim=2)     # [K, Cout, Cin + 1]
        out = torch.ops.facekernels.st_graph_conv.default(x_and_mask, weight_and_bias, adjacency, None)
    return out * m


def _check_mask(op: str, mask: Tensor, x: Tensor) -> None:
    n, _, frames, nodes = x.shape
    check(mask.dtype == torch.bool, op, "mask must be a bool tensor (True = valid point), got ",
          dtype_name(mask.dtype))
    # plain `and`, not sym_and: this runs in the traced Python function, not in a fake kernel
    check(mask.dim() == 3 and mask.shape[0] == n and mask.shape[1] == frames and mask.shape[2] == nodes, op,
          "mask must have shape [N, T, V] = [", n, ", ", frames, ", ", nodes, "], got shape ", shape_string(mask))
    check_same_device(op, "mask", mask, "x", x)


# The fake kernels' checks: csrc/st_graph_conv/st_graph_conv.cpp's, in its order and words (ops/_checks.py).
def _check_st_graph_conv(op: str, x: Tensor, weight: Tensor, adjacency: Tensor, bias: Tensor | None) -> None:
    check_dim(op, "x", x, 4, "[N, Cin, T, V]")
    check_dim(op, "weight", weight, 3, "[K, Cout, Cin]")
    if adjacency.dim() not in (3, 4):
        fail(op, "adjacency must be a 3-D tensor [K, V, V] (shared) or a 4-D tensor [N, K, V, V] ",
             "(per sample), got a ", adjacency.dim(), "-D tensor of shape ", shape_string(adjacency))
    check_floating_dtype(op, "x", x)
    check_same_device(op, "weight", weight, "x", x)
    check_same_device(op, "adjacency", adjacency, "x", x)
    check_same_dtype(op, "weight", weight, "x", x)
    check_same_dtype(op, "adjacency", adjacency, "x", x)
    n, cin, _, nodes = x.shape
    k, cout = weight.shape[0], weight.shape[1]
    check(weight.shape[2] == cin, op, "weight must have Cin = x.size(1) = ", cin,
          " input channels, [K, Cout, ", cin, "], got shape ", shape_string(weight))
    per_sample = adjacency.dim() == 4
    a0 = 1 if per_sample else 0
    if per_sample:
        check(adjacency.shape[0] == n, op, "adjacency must have N = x.size(0) = ", n,
              " samples when 4-D [N, K, V, V] (or be 3-D [K, V, V], shared), got shape ",
              shape_string(adjacency))
    check(adjacency.shape[a0] == k, op, "adjacency must have K = weight.size(0) = ", k,
          " partitions, got shape ", shape_string(adjacency))
    check(sym_and(adjacency.shape[a0 + 1] == nodes, adjacency.shape[a0 + 2] == nodes), op,
          "adjacency must be [", "N, " if per_sample else "", "K, V, V] with V = x.size(3) = ", nodes,
          " nodes, got shape ", shape_string(adjacency))
    if bias is not None:
        check_same_device(op, "bias", bias, "x", x)
        check_same_dtype(op, "bias", bias, "x", x)
        check(bias.dim() == 2 and sym_and(bias.shape[0] == k, bias.shape[1] == cout), op,
              "bias must have shape [K, Cout] = [", k, ", ", cout, "], got shape ", shape_string(bias))


def _check_st_graph_conv_grad_out(op: str, grad_out: Tensor, x: Tensor, weight: Tensor) -> None:
    """After :func:`_check_st_graph_conv`: grad_out [N, Cout, T, V] like x."""
    n, _, frames, nodes = x.shape
    cout = weight.shape[1]
    g = grad_out.shape
    ok = grad_out.dim() == 4 and sym_and(g[0] == n, g[1] == cout, g[2] == frames, g[3] == nodes)
    check(ok, op, "grad_out must have shape [N, Cout, T, V] = [", n, ", ", cout, ", ", frames, ", ", nodes,
          "], got shape ", shape_string(grad_out))
    check_same_device(op, "grad_out", grad_out, "x", x)
    check_same_dtype(op, "grad_out", grad_out, "x", x)


@torch.library.register_fake("facekernels::st_graph_conv")
def _st_graph_conv_fake(x: Tensor, weight: Tensor, adjacency: Tensor, bias: Tensor | None = None) -> Tensor:
    _check_st_graph_conv("st_graph_conv", x, weight, adjacency, bias)
    return x.new_empty((x.shape[0], weight.shape[1], x.shape[2], x.shape[3]))


@torch.library.register_fake("facekernels::_st_graph_conv_backward")
def _st_graph_conv_backward_fake(
    grad_out: Tensor,
    x: Tensor,
    weight: Tensor,
    adjacency: Tensor,
    bias: Tensor | None,
    need_x: bool,
    need_weight: bool,
    need_adjacency: bool,
    need_bias: bool,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    op = "_st_graph_conv_backward"
    _check_st_graph_conv(op, x, weight, adjacency, bias)
    _check_st_graph_conv_grad_out(op, grad_out, x, weight)
    need_bias = need_bias and bias is not None
    return (
        x.new_empty(x.shape if need_x else (0,)),
        x.new_empty(weight.shape if need_weight else (0,)),
        x.new_empty(adjacency.shape if need_adjacency else (0,)),
        x.new_empty(bias.shape if need_bias else (0,)),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, weight, adjacency, bias = with_defaults("st_graph_conv", inputs)
    ctx.has_bias = bias is not None
    ctx.save_for_backward(x, weight, adjacency, bias)


def _backward(ctx, grad_out: Tensor):
    x, weight, adjacency, bias = ctx.saved_tensors
    passed = len(ctx.needs_input_grad)
    need_x, need_weight, need_adjacency = ctx.needs_input_grad[:3]
    need_bias = bool(ctx.has_bias and passed > 3 and ctx.needs_input_grad[3])
    grads = [None] * passed
    if need_x or need_weight or need_adjacency or need_bias:
        grad_x, grad_weight, grad_adjacency, grad_bias = torch.ops.facekernels._st_graph_conv_backward.default(
            grad_out, x, weight, adjacency, bias, need_x, need_weight, need_adjacency, need_bias
        )
        grads[0] = grad_x if need_x else None
        grads[1] = grad_weight if need_weight else None
        grads[2] = grad_adjacency if need_adjacency else None
        if need_bias:
            grads[3] = grad_bias
    return tuple(grads)


torch.library.register_autograd("facekernels::st_graph_conv", _backward, setup_context=_setup_context)


refuse_double_backward("_st_graph_conv_backward", "st_graph_conv")
register_autocast("st_graph_conv")
