"""triplet_attention: the two passes of a triplet-attention / TripSE block over x, ``axis_pool`` (pool) and
``triplet_gate`` (apply), each with its own backward kernel."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check, check_dim, check_floating_dtype, check_same_device, check_same_dtype, fail
from ._checks import same_shape, shape_string, sym_and
from ._registration import refuse_double_backward, register_autocast, with_defaults

__all__ = ["axis_pool", "gate_conv", "triplet_gate"]


def axis_pool(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    r"""Max and mean of ``x`` over each of its three axes C, H and W, in one read of ``x``.

    For ``x`` of shape ``[B, C, H, W]``::

        pooled_c[b, :, h, w] = (max_c x[b, c, h, w], mean_c x[b, c, h, w])     # [B, 2, H, W]
        pooled_h[b, :, c, w] = (max_h x[b, c, h, w], mean_h x[b, c, h, w])     # [B, 2, C, W]
        pooled_w[b, :, h, c] = (max_w x[b, c, h, w], mean_w x[b, c, h, w])     # [B, 2, H, C]

    i.e. triplet attention's Z-pool of ``x`` (over C), of ``x.permute(0, 2, 1, 3)`` (over H) and of
    ``x.permute(0, 3, 2, 1)`` (over W), without the permuted copies. The gradient of each max goes to the
    first index holding it along the pooled axis (the index ``torch.max(x, dim)`` returns on CPU); a NaN
    counts as the largest value (the first NaN wins), so the max propagates NaN as ``torch.max`` does.

    Args:
        x: ``[B, C, H, W]`` with ``C, H, W >= 1``; float32/float64 on CPU, float16/bfloat16/float32 on CUDA;
            any strides (NCHW planes and channels_last are read in place, other layouts copied first).

    Returns:
        ``(pooled_c, pooled_h, pooled_w)``, contiguous, differentiable in ``x``.
    """
    pooled_c, pooled_h, pooled_w, _, _, _ = torch.ops.facekernels.axis_pool.default(x)
    return pooled_c, pooled_h, pooled_w


def triplet_gate(
    x: Tensor,
    gate_c: Tensor | None = None,
    gate_h: Tensor | None = None,
    gate_w: Tensor | None = None,
    scale: Tensor | None = None,
) -> Tensor:
    r"""``x`` times the sum of three broadcast gates and a per-channel scale, in one read of ``x``::

        y[b, c, h, w] = x[b, c, h, w] * scale[b, c] * (gate_c[b, h, w] + gate_h[b, c, w] + gate_w[b, h, c])

    An absent gate counts as 0 and an absent scale as 1; at least one gate is needed. Triplet attention is
    ``triplet_gate(x, s_hw, s_cw, s_hc, scale)`` with its three sigmoid maps and ``scale`` = 1/3 (``gate_c`` is the map of
    the branch that pools over C, the original's ``hw``; ``gate_h`` its ``cw``; ``gate_w`` its ``hc``).

    Args:
        x: ``[B, C, H, W]``, any strides.
        gate_c: ``[B, H, W]`` or ``None``.
        gate_h: ``[B, C, W]`` or ``None``.
        gate_w: ``[B, H, C]`` or ``None``.
        scale: ``[B, C]`` or ``None``.

    Returns:
        ``[B, C, H, W]``, channels_last when ``x`` is channels_last (and not also NCHW-planar), else
        contiguous. Differentiable in every tensor argument.
    """
    return torch.ops.facekernels.triplet_gate.default(x, gate_c, gate_h, gate_w, scale)


def gate_conv(x: Tensor, weight: Tensor) -> Tensor:
    r"""A K x K convolution of a few maps to one, zero padding K // 2, stride 1, no bias::

        y[b, 0, m, n] = sum_{k, i, j} weight[0, k, i, j] * x[b, k, m + i - K // 2, n + j - K // 2]

    ``F.conv2d(x, weight, padding=K // 2)`` for the shapes of triplet attention's gates (2 maps in, 1 out,
    7x7), where torch's CPU convolution goes through im2col buffers 49 times the size of the maps and a
    slow weight gradient. The weight gradient is reduced over the batch in a fixed order (deterministic).

    Args:
        x: ``[B, Cin, M, N]``.
        weight: ``[1, Cin, K, K]`` with K odd, the dtype and device of ``x``.

    Returns:
        ``[B, 1, M, N]``, contiguous; differentiable in ``x`` and ``weight``.
    """
    return torch.ops.facekernels.gate_conv.default(x, weight)


# ---- layouts (csrc/triplet_attention/triplet_attention.cpp's rules) -------------------------------------


def _is_planar(t: Tensor) -> bool:
    h, w = t.shape[2], t.shape[3]
    return (w == 1 or t.stride(3) == 1) and (h == 1 or t.stride(2) == w)


def _is_channels_last(t: Tensor) -> bool:
    c, h, w = t.shape[1], t.shape[2], t.shape[3]
    return (c == 1 or t.stride(1) == 1) and (w == 1 or t.stride(3) == c) and (h == 1 or t.stride(2) == w * c)


def _reads_channels_last(x: Tensor) -> bool:
    """Whether the kernels read (and write x-shaped outputs) channels_last: x is channels_last and not
    also planar; anything neither is copied to contiguous first."""
    return not _is_planar(x) and _is_channels_last(x)


def _new_4d(like: Tensor, sizes, channels_last: bool) -> Tensor:
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    return torch.empty(sizes, dtype=like.dtype, device=like.device, memory_format=fmt)


# ---- the fake kernels' checks: triplet_attention.cpp's, in its order and words ----------------------------


def _check_axis_pool(op: str, x: Tensor) -> None:
    check_dim(op, "x", x, 4, "[B, C, H, W]")
    check_floating_dtype(op, "x", x)
    check(sym_and(x.shape[1] >= 1, x.shape[2] >= 1, x.shape[3] >= 1), op,
          "x must have C, H and W >= 1 (the max over an empty axis is undefined), got shape ", shape_string(x))
    limit = 1 << 31
    if not any(isinstance(s, torch.SymInt) for s in x.shape[1:]):
        check(x.shape[1] < limit and x.shape[2] < limit and x.shape[3] < limit, op,
              "x must have C, H and W < 2^31 (argmax indices are int32), got shape ", shape_string(x))


def _check_map(op: str, arg: str, t: Tensor, planes: int, b, m, n, layout: str) -> None:
    if planes == 0:
        ok = t.dim() == 3 and sym_and(t.shape[0] == b, t.shape[1] == m, t.shape[2] == n)
        check(ok, op, arg, " must have shape ", layout, " = [", b, ", ", m, ", ", n, "], got ", shape_string(t))
    else:
        ok = t.dim() == 4 and sym_and(t.shape[0] == b, t.shape[1] == planes, t.shape[2] == m, t.shape[3] == n)
        check(ok, op, arg, " must have shape ", layout, " = [", b, ", ", planes, ", ", m, ", ", n, "], got ",
              shape_string(t))


def _check_index_map(op: str, arg: str, t: Tensor, b, m, n, layout: str, ref: Tensor) -> None:
    _check_map(op, arg, t, 0, b, m, n, layout)
    if t.dtype != torch.int32:
        fail(op, arg, " must be int32, got ", str(t.dtype).removeprefix("torch."))
    check_same_device(op, arg, t, "grad_c", ref)


def _check_axis_pool_backward(grad_c, grad_h, grad_w, arg_c, arg_h, arg_w) -> None:
    op = "_axis_pool_backward"
    check_dim(op, "grad_c", grad_c, 4, "[B, 2, H, W]")
    check_dim(op, "grad_h", grad_h, 4, "[B, 2, C, W]")
    check_floating_dtype(op, "grad_c", grad_c)
    b, h, w, c = grad_c.shape[0], grad_c.shape[2], grad_c.shape[3], grad_h.shape[2]
    _check_map(op, "grad_c", grad_c, 2, b, h, w, "[B, 2, H, W]")
    _check_map(op, "grad_h", grad_h, 2, b, c, w, "[B, 2, C, W]")
    _check_map(op, "grad_w", grad_w, 2, b, h, c, "[B, 2, H, C]")
    check_same_dtype(op, "grad_h", grad_h, "grad_c", grad_c)
    check_same_dtype(op, "grad_w", grad_w, "grad_c", grad_c)
    check_same_device(op, "grad_h", grad_h, "grad_c", grad_c)
    check_same_device(op, "grad_w", grad_w, "grad_c", grad_c)
    _check_index_map(op, "arg_c", arg_c, b, h, w, "[B, H, W]", grad_c)
    _check_index_map(op, "arg_h", arg_h, b, c, w, "[B, C, W]", grad_c)
    _check_index_map(op, "arg_w", arg_w, b, h, c, "[B, H, C]", grad_c)
    check(sym_and(c >= 1, h >= 1, w >= 1), op, "the pooled maps must have C, H and W >= 1, got grad_c ",
          shape_string(grad_c), " and grad_h ", shape_string(grad_h))


def _check_triplet_gate(op: str, x, gate_c, gate_h, gate_w, scale) -> None:
    check_dim(op, "x", x, 4, "[B, C, H, W]")
    check_floating_dtype(op, "x", x)
    b, c, h, w = x.shape
    if gate_c is None and gate_h is None and gate_w is None:
        fail(op, "at least one of gate_c, gate_h, gate_w must be given, got none")
    for name, t, m, n, layout in (
        ("gate_c", gate_c, h, w, "[B, H, W]"),
        ("gate_h", gate_h, c, w, "[B, C, W]"),
        ("gate_w", gate_w, h, c, "[B, H, C]"),
    ):
        if t is None:
            continue
        _check_map(op, name, t, 0, b, m, n, layout)
        check_same_dtype(op, name, t, "x", x)
        check_same_device(op, name, t, "x", x)
    if scale is not None:
        check(scale.dim() == 2 and sym_and(scale.shape[0] == b, scale.shape[1] == c), op,
              "scale must have shape [B, C] = [", b, ", ", c, "], got ", shape_string(scale))
        check_same_dtype(op, "scale", scale, "x", x)
        check_same_device(op, "scale", scale, "x", x)


def _check_triplet_gate_backward(grad_y, x, gate_c, gate_h, gate_w, scale) -> None:
    op = "_triplet_gate_backward"
    _check_triplet_gate(op, x, gate_c, gate_h, gate_w, scale)
    check_dim(op, "grad_y", grad_y, 4, "[B, C, H, W]")
    check(same_shape(grad_y, x), op, "grad_y must have the shape of x ", shape_string(x), ", got ",
          shape_string(grad_y))
    check_same_dtype(op, "grad_y", grad_y, "x", x)
    check_same_device(op, "grad_y", grad_y, "x", x)


def _check_gate_conv(op: str, x: Tensor, weight: Tensor) -> None:
    check_dim(op, "x", x, 4, "[B, Cin, M, N]")
    check_dim(op, "weight", weight, 4, "[1, Cin, K, K]")
    check_floating_dtype(op, "x", x)
    check_same_dtype(op, "weight", weight, "x", x)
    check_same_device(op, "weight", weight, "x", x)
    k = weight.shape[2]
    check(sym_and(weight.shape[0] == 1, weight.shape[1] == x.shape[1], weight.shape[3] == k, k % 2 == 1), op,
          "weight must have shape [1, Cin, K, K] with Cin = x.size(1) = ", x.shape[1], " and K odd, got ",
          shape_string(weight))


def _check_gate_conv_backward(grad_y: Tensor, x: Tensor, weight: Tensor) -> None:
    op = "_gate_conv_backward"
    _check_gate_conv(op, x, weight)
    check_dim(op, "grad_y", grad_y, 4, "[B, 1, M, N]")
    b, _, m, n = x.shape
    check(sym_and(grad_y.shape[0] == b, grad_y.shape[1] == 1, grad_y.shape[2] == m, grad_y.shape[3] == n), op,
          "grad_y must have shape [B, 1, M, N] = [", b, ", 1, ", m, ", ", n, "], got ", shape_string(grad_y))
    check_same_dtype(op, "grad_y", grad_y, "x", x)
    check_same_device(op, "grad_y", grad_y, "x", x)


# ---- fake kernels ------------------------------------------------------------------------------------------


@torch.library.register_fake("facekernels::axis_pool")
def _axis_pool_fake(x: Tensor):
    _check_axis_pool("axis_pool", x)
    b, c, h, w = x.shape
    return (
        x.new_empty((b, 2, h, w)),
        x.new_empty((b, 2, c, w)),
        x.new_empty((b, 2, h, c)),
        x.new_empty((b, h, w), dtype=torch.int32),
        x.new_empty((b, c, w), dtype=torch.int32),
        x.new_empty((b, h, c), dtype=torch.int32),
    )


@torch.library.register_fake("facekernels::_axis_pool_backward")
def _axis_pool_backward_fake(grad_c, grad_h, grad_w, arg_c, arg_h, arg_w, channels_last: bool):
    _check_axis_pool_backward(grad_c, grad_h, grad_w, arg_c, arg_h, arg_w)
    b, h, w, c = grad_c.shape[0], grad_c.shape[2], grad_c.shape[3], grad_h.shape[2]
    return _new_4d(grad_c, (b, c, h, w), channels_last)


@torch.library.register_fake("facekernels::triplet_gate")
def _triplet_gate_fake(x, gate_c=None, gate_h=None, gate_w=None, scale=None):
    _check_triplet_gate("triplet_gate", x, gate_c, gate_h, gate_w, scale)
    return _new_4d(x, x.shape, _reads_channels_last(x))


@torch.library.register_fake("facekernels::_triplet_gate_backward")
def _triplet_gate_backward_fake(grad_y, x, gate_c, gate_h, gate_w, scale, need_x: bool):
    _check_triplet_gate_backward(grad_y, x, gate_c, gate_h, gate_w, scale)
    b, c, h, w = x.shape
    return (
        _new_4d(x, x.shape, _reads_channels_last(x)) if need_x else x.new_empty((0,)),
        x.new_empty((b, h, w) if gate_c is not None else (0,)),
        x.new_empty((b, c, w) if gate_h is not None else (0,)),
        x.new_empty((b, h, c) if gate_w is not None else (0,)),
        x.new_empty((b, c) if scale is not None else (0,)),
    )


@torch.library.register_fake("facekernels::gate_conv")
def _gate_conv_fake(x, weight):
    _check_gate_conv("gate_conv", x, weight)
    return x.new_empty((x.shape[0], 1, x.shape[2], x.shape[3]))


@torch.library.register_fake("facekernels::_gate_conv_backward")
def _gate_conv_backward_fake(grad_y, x, weight, need_x: bool, need_weight: bool):
    _check_gate_conv_backward(grad_y, x, weight)
    return x.new_empty(x.shape if need_x else (0,)), weight.new_empty(weight.shape if need_weight else (0,))


# ---- autograd ----------------------------------------------------------------------------------------------


def _axis_pool_setup_context(ctx, inputs, output) -> None:
    (x,) = inputs
    ctx.save_for_backward(*output[3:])
    ctx.channels_last = _reads_channels_last(x)


def _axis_pool_backward(ctx, grad_c, grad_h, grad_w, *unused):
    arg_c, arg_h, arg_w = ctx.saved_tensors
    if not ctx.needs_input_grad[0]:
        return None
    grad_x = torch.ops.facekernels._axis_pool_backward.default(
        grad_c, grad_h, grad_w, arg_c, arg_h, arg_w, ctx.channels_last
    )
    return grad_x


torch.library.register_autograd(
    "facekernels::axis_pool", _axis_pool_backward, setup_context=_axis_pool_setup_context
)


def _gate_setup_context(ctx, inputs, output) -> None:
    x, gate_c, gate_h, gate_w, scale = with_defaults("triplet_gate", inputs)
    ctx.save_for_backward(x, gate_c, gate_h, gate_w, scale)


def _gate_backward(ctx, grad_y):
    x, gate_c, gate_h, gate_w, scale = ctx.saved_tensors
    # The dispatcher drops trailing arguments equal to their defaults (None), so needs_input_grad may be
    # shorter than the schema; answer exactly as many as were passed.
    needs = list(ctx.needs_input_grad)
    if not any(needs):
        return tuple(None for _ in needs)
    grads = torch.ops.facekernels._triplet_gate_backward.default(
        grad_y, x, gate_c, gate_h, gate_w, scale, needs[0]
    )
    return tuple(g if need else None for g, need in zip(grads, needs))


torch.library.register_autograd("facekernels::triplet_gate", _gate_backward, setup_context=_gate_setup_context)
def _conv_setup_context(ctx, inputs, output) -> None:
    ctx.save_for_backward(*inputs)


def _conv_backward(ctx, grad_y):
    x, weight = ctx.saved_tensors
    need_x, need_weight = ctx.needs_input_grad[:2]
    if not (need_x or need_weight):
        return None, None
    grad_x, grad_weight = torch.ops.facekernels._gate_conv_backward.default(grad_y, x, weight, need_x, need_weight)
    return (grad_x if need_x else None), (grad_weight if need_weight else None)


torch.library.register_autograd("facekernels::gate_conv", _conv_backward, setup_context=_conv_setup_context)
refuse_double_backward("_gate_conv_backward", "gate_conv")
register_autocast("gate_conv")
refuse_double_backward("_axis_pool_backward", "axis_pool")
refuse_double_backward("_triplet_gate_backward", "triplet_gate")
register_autocast("axis_pool")
register_autocast("triplet_gate")
