"""st_graph_conv: the spatio-temporal multi-graph convolution of ST-GCN (a channel product per partition
followed by an aggregation over the graph), with the contraction order chosen by cost."""

from __future__ import annotations

import torch
from torch import Tensor

from ._registration import check_same_device, check_same_dtype, refuse_double_backward, register_autocast

__all__ = ["st_graph_conv"]


def st_graph_conv(x: Tensor, weight: Tensor, adjacency: Tensor, bias: Tensor | None = None) -> Tensor:
    r"""Multi-graph convolution over the nodes of a skeleton or landmark graph, frame by frame::

        out[n, c, t, w] = sum_k sum_v ( sum_i weight[k, c, i] x[n, i, t, v] + bias[k, c] ) A[(n,) k, v, w]

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

        One dtype for all: float32/float64 on CPU, float16/bfloat16/float32 on CUDA (computed in float32).

    Returns:
        ``[N, Cout, T, V]``, contiguous. Differentiable in ``x``, ``weight``, ``adjacency`` and ``bias``
        (backward kernels); not twice differentiable.
    """
    return torch.ops.facekernels.st_graph_conv.default(x, weight, adjacency, bias)


@torch.library.register_fake("facekernels::st_graph_conv")
def _st_graph_conv_fake(x: Tensor, weight: Tensor, adjacency: Tensor, bias: Tensor | None = None) -> Tensor:
    check_same_device("st_graph_conv", x=x, weight=weight, adjacency=adjacency, bias=bias)
    torch._check(x.dim() == 4, lambda: f"st_graph_conv: x must be a 4-D tensor [N, Cin, T, V], got {x.dim()}-D")
    torch._check(weight.dim() == 3, lambda: "st_graph_conv: weight must be a 3-D tensor [K, Cout, Cin]")
    check_same_dtype("st_graph_conv", x=x, weight=weight, adjacency=adjacency, bias=bias)
    torch._check(
        weight.shape[2] == x.shape[1],
        lambda: f"st_graph_conv: weight must be [K, Cout, Cin] with Cin = {x.shape[1]}, got {list(weight.shape)}",
    )
    torch._check(
        adjacency.dim() in (3, 4) and adjacency.shape[-3] == weight.shape[0]
        and adjacency.shape[-2] == x.shape[3] and adjacency.shape[-1] == x.shape[3]
        and (adjacency.dim() == 3 or adjacency.shape[0] == x.shape[0]),
        lambda: f"st_graph_conv: adjacency must be [K, V, V] or [N, K, V, V] with K = {weight.shape[0]}, "
        f"V = {x.shape[3]}, got {list(adjacency.shape)}",
    )
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
    check_same_device(
        "_st_graph_conv_backward", grad_out=grad_out, x=x, weight=weight, adjacency=adjacency, bias=bias
    )
    need_bias = need_bias and bias is not None
    return (
        x.new_empty(x.shape if need_x else (0,)),
        x.new_empty(weight.shape if need_weight else (0,)),
        x.new_empty(adjacency.shape if need_adjacency else (0,)),
        x.new_empty(bias.shape if need_bias else (0,)),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, weight, adjacency = inputs[:3]
    # The dispatcher drops a trailing bias=None; fill it back in.
    bias = inputs[3] if len(inputs) > 3 else None
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
