"""circular_conv: the global circular depthwise convolution of MOL's FCC block."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check, check_dim, check_floating_dtype, check_same_device, check_same_dtype, fail
from ._checks import same_shape, shape_string, sym_and
from ._registration import register_autocast, with_defaults

__all__ = ["circular_conv"]


def circular_conv(x: Tensor, weight: Tensor, bias: Tensor | None = None, dim: int = 2) -> Tensor:
    r"""Circular depthwise convolution along H (``dim=2``/``-2``) or W (``dim=3``/``-1``).

    For ``dim=2``::

        y[b, c, h, w] = bias[c] + sum_{t=0}^{L-1} weight[c, t] * x[b, c, (h + t) mod H, w]

    and the same along W for ``dim=3``. This is MOL's "fully-connected convolution": with L = H it mixes
    every position of a column (row) with a per-channel kernel, as ``F.conv2d`` over the input
    concatenated with its own first ``L - 1`` rows (columns) with ``groups=C`` computes it.

    Args:
        x: ``[B, C, H, W]``, float32/float64 on CPU, float16/bfloat16/float32 on CUDA; any strides.
        weight: ``[C, L]`` with ``1 <= L <= x.size(dim)``, the same dtype and device as ``x``.
        bias: ``[C]`` or ``None``.
        dim: the convolved axis, one of 2, 3, -2, -1.

    Returns:
        ``[B, C, H, W]``, contiguous. Differentiable in ``x``, ``weight`` and ``bias``.
    """
    return torch.ops.facekernels.circular_conv.default(x, weight, bias, dim)


# The fake kernels' checks: csrc/circular_conv/circular_conv.cpp's, in its order and words (ops/_checks.py).
def _check_circular_conv(op: str, x: Tensor, weight: Tensor, bias: Tensor | None, dim: int) -> None:
    check_dim(op, "x", x, 4, "[B, C, H, W]")
    check_dim(op, "weight", weight, 2, "[C, L]")
    if dim not in (2, 3, -2, -1):
        fail(op, "dim must be one of 2, 3, -2, -1 (H or W), got ", dim)
    axis = dim + 4 if dim < 0 else dim
    check_floating_dtype(op, "x", x)
    check_same_dtype(op, "weight", weight, "x", x)
    check_same_device(op, "weight", weight, "x", x)
    channels, length, taps = x.shape[1], x.shape[axis], weight.shape[1]
    check(weight.shape[0] == channels, op, "weight must have shape [C, L] with C = x.size(1) = ", channels,
          ", got ", shape_string(weight))
    check(sym_and(taps >= 1, taps <= length), op, "weight must have 1 <= L <= x.size(", axis, ") = ", length,
          " taps, got L = ", taps, " (weight shape ", shape_string(weight), ", x shape ", shape_string(x),
          ")")
    if bias is not None:
        check(bias.dim() == 1 and bias.shape[0] == channels, op, "bias must have shape [", channels,
              "] (C of x), got ", shape_string(bias))
        check_same_dtype(op, "bias", bias, "x", x)
        check_same_device(op, "bias", bias, "x", x)


def _check_circular_conv_backward(grad_out: Tensor, x: Tensor, weight: Tensor, dim: int) -> None:
    op = "_circular_conv_backward"
    _check_circular_conv(op, x, weight, None, dim)
    check_dim(op, "grad_out", grad_out, 4, "[B, C, H, W]")
    check(same_shape(grad_out, x), op, "grad_out must have the shape of x ", shape_string(x), ", got ",
          shape_string(grad_out))
    check_same_dtype(op, "grad_out", grad_out, "x", x)
    check_same_device(op, "grad_out", grad_out, "x", x)


@torch.library.register_fake("facekernels::circular_conv")
def _circular_conv_fake(x: Tensor, weight: Tensor, bias: Tensor | None = None, dim: int = 2) -> Tensor:
    _check_circular_conv("circular_conv", x, weight, bias, dim)
    return x.new_empty(x.shape)


@torch.library.register_fake("facekernels::_circular_conv_backward")
def _circular_conv_backward_fake(
    grad_out: Tensor, x: Tensor, weight: Tensor, dim: int, need_x: bool, need_weight: bool, need_bias: bool
) -> tuple[Tensor, Tensor, Tensor]:
    _check_circular_conv_backward(grad_out, x, weight, dim)
    return (
        x.new_empty(x.shape if need_x else (0,)),
        weight.new_empty(weight.shape if need_weight else (0,)),
        weight.new_empty((weight.shape[0] if need_bias else 0,)),
    )


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, dim = with_defaults("circular_conv", inputs)
    ctx.save_for_backward(x, weight)
    ctx.dim = dim
    ctx.has_bias = bias is not None


def _backward(ctx, grad_out: Tensor):
    x, weight = ctx.saved_tensors
    # The dispatcher drops trailing arguments equal to their defaults (bias=None, dim=2), so
    # needs_input_grad may be shorter than the schema; answer exactly as many as were passed.
    passed = len(ctx.needs_input_grad)
    need_x, need_weight = ctx.needs_input_grad[:2]
    need_bias = bool(ctx.has_bias and passed > 2 and ctx.needs_input_grad[2])
    grads = [None] * passed
    if need_x or need_weight or need_bias:
        grad_x, grad_weight, grad_bias = torch.ops.facekernels._circular_conv_backward.default(
            grad_out, x, weight, ctx.dim, need_x, need_weight, need_bias
        )
        grads[0] = grad_x if need_x else None
        grads[1] = grad_weight if need_weight else None
        if need_bias:
            grads[2] = grad_bias
    return tuple(grads)


torch.library.register_autograd("facekernels::circular_conv", _backward, setup_context=_setup_context)


# Double backward. The backward is bilinear in (grad_out, x) and (grad_out, weight):
#   grad_x = A_w^T gy,  grad_weight[c, t] = <gy, x shifted by t>,  grad_bias[c] = sum gy,
# so its own gradients are again circular convolutions and their backward:
#   d/d gy = circular_conv(gg_x, w) + circular_conv(x, gg_weight, gg_bias)
#   d/d x  = the grad_x formula with gg_weight as the taps
#   d/d w  = the grad_weight formula with gg_x in place of x
# Written with the differentiable ops, so higher orders follow (gradient penalties need the second).
def _backward_setup_context(ctx, inputs, output) -> None:
    grad_out, x, weight, dim, need_x, need_weight, need_bias = inputs
    ctx.save_for_backward(grad_out, x, weight)
    ctx.dim = dim
    ctx.mask = (need_x, need_weight, need_bias)


def _backward_backward(ctx, gg_x: Tensor | None, gg_weight: Tensor | None, gg_bias: Tensor | None):
    grad_out, x, weight = ctx.saved_tensors
    need_x, need_weight, need_bias = ctx.mask
    dim = ctx.dim
    gg_x = gg_x if need_x else None
    gg_weight = gg_weight if need_weight else None
    gg_bias = gg_bias if need_bias else None
    wants_grad_out, wants_x, wants_weight = ctx.needs_input_grad[:3]
    d_grad_out = d_x = d_weight = None
    if wants_grad_out:
        if gg_x is not None:
            d_grad_out = circular_conv(gg_x, weight, None, dim)
        if gg_weight is not None or gg_bias is not None:
            taps = gg_weight if gg_weight is not None else torch.zeros_like(weight)
            term = circular_conv(x, taps, gg_bias, dim)
            d_grad_out = term if d_grad_out is None else d_grad_out + term
    if wants_x and gg_weight is not None:
        d_x = torch.ops.facekernels._circular_conv_backward.default(
            grad_out, x, gg_weight, dim, True, False, False
        )[0]
    if wants_weight and gg_x is not None:
        d_weight = torch.ops.facekernels._circular_conv_backward.default(
            grad_out, gg_x, weight, dim, False, True, False
        )[1]
    return d_grad_out, d_x, d_weight, None, None, None, None


torch.library.register_autograd(
    "facekernels::_circular_conv_backward", _backward_backward, setup_context=_backward_setup_context
)
register_autocast("circular_conv")
