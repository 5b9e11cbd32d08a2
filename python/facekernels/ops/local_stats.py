"""local_stat_transform and local_mean_var: windowed statistics over clipped square windows, and the local
AdaIN of the weather-robust face restoration work built on them."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check, check_dim, check_floating_dtype, check_same_device, check_same_dtype, fail
from ._checks import same_shape, shape_string
from ._registration import refuse_double_backward, register_autocast, with_defaults

__all__ = ["local_mean_var", "local_stat_transform"]


def local_stat_transform(x: Tensor, guide: Tensor, kernel_size: int = 7, eps: float = 1e-5) -> Tensor:
    r"""Re-normalise ``x`` to the local statistics of ``guide`` (a local AdaIN).

    For every ``(b, c, h, w)`` the window is the square of side ``kernel_size`` centred there and
    clipped to the image, ``n`` its number of pixels (``r = kernel_size // 2``)::

        mu_x  = (1/n) sum_window x                 var_x = (1/n) sum_window (x - mu_x)^2   (biased)
        mu_g, var_g likewise from guide
        out   = (x - mu_x) / sqrt(var_x + eps) * sqrt(var_g + eps) + mu_g

    A window larger than the image is legal: it covers the whole axis (per-channel AdaIN when it covers
    both). The cost per pixel does not depend on ``kernel_size`` (running box sums), and the sums are
    shifted by a value near the data, so float32 results stay accurate when the mean dwarfs the spread.

    Args:
        x, guide: ``[B, C, H, W]`` of one shape, dtype and device: float32/float64 on CPU,
            float16/bfloat16/float32 on CUDA (statistics in float32); any strides.
        kernel_size: odd, >= 1.
        eps: >= 0, added to both variances.

    Returns:
        ``[B, C, H, W]``, contiguous. Differentiable in ``x`` and ``guide`` (through the statistics too);
        not twice differentiable.
    """
    return torch.ops.facekernels.local_stat_transform.default(x, guide, kernel_size, eps)


def local_mean_var(x: Tensor, kernel_size: int = 7) -> tuple[Tensor, Tensor]:
    r"""Windowed mean and biased variance over clipped ``kernel_size`` squares (see
    :func:`local_stat_transform` for the window)::

        mean = (1/n) sum_window x        var = (1/n) sum_window (x - mean)^2

    Args:
        x: ``[B, C, H, W]``, float32/float64 on CPU, float16/bfloat16/float32 on CUDA; any strides.
        kernel_size: odd, >= 1.

    Returns:
        ``(mean, var)``, each ``[B, C, H, W]`` and contiguous; both differentiable in ``x`` (once).
    """
    return torch.ops.facekernels.local_mean_var.default(x, kernel_size)


# The fake kernels' checks: csrc/local_stats/local_stats.cpp's, in its order and words (ops/_checks.py).
def _check_local_mean_var(op: str, x: Tensor, kernel_size: int) -> None:
    check_dim(op, "x", x, 4, "[B, C, H, W]")
    check_floating_dtype(op, "x", x)
    if not (kernel_size >= 1 and kernel_size % 2 == 1):
        fail(op, "kernel_size must be an odd integer >= 1, got ", kernel_size)


def _check_local_stat_transform(op: str, x: Tensor, guide: Tensor, kernel_size: int, eps: float) -> None:
    check_dim(op, "x", x, 4, "[B, C, H, W]")
    check_dim(op, "guide", guide, 4, "[B, C, H, W]")
    check(same_shape(guide, x), op, "guide must have the same shape as x ", shape_string(x), ", got ",
          shape_string(guide))
    check_floating_dtype(op, "x", x)
    check_same_dtype(op, "guide", guide, "x", x)
    check_same_device(op, "guide", guide, "x", x)
    if not (eps >= 0 and math.isfinite(eps)):
        fail(op, "eps must be a finite number >= 0, got ", float(eps))
    _check_local_mean_var(op, x, kernel_size)


def _check_gradient_like(op: str, arg: str, grad: Tensor, x: Tensor) -> None:
    check_dim(op, arg, grad, 4, "[B, C, H, W]")
    check(same_shape(grad, x), op, arg, " must have the shape of x ", shape_string(x), ", got ",
          shape_string(grad))
    check_same_dtype(op, arg, grad, "x", x)
    check_same_device(op, arg, grad, "x", x)


@torch.library.register_fake("facekernels::local_stat_transform")
def _local_stat_transform_fake(x: Tensor, guide: Tensor, kernel_size: int = 7, eps: float = 1e-5) -> Tensor:
    _check_local_stat_transform("local_stat_transform", x, guide, kernel_size, eps)
    return x.new_empty(x.shape)


@torch.library.register_fake("facekernels::_local_stat_transform_backward")
def _local_stat_transform_backward_fake(
    grad_out: Tensor, x: Tensor, guide: Tensor, kernel_size: int, eps: float, need_x: bool, need_guide: bool
) -> tuple[Tensor, Tensor]:
    op = "_local_stat_transform_backward"
    _check_local_stat_transform(op, x, guide, kernel_size, eps)
    _check_gradient_like(op, "grad_out", grad_out, x)
    return x.new_empty(x.shape if need_x else (0,)), x.new_empty(x.shape if need_guide else (0,))


@torch.library.register_fake("facekernels::local_mean_var")
def _local_mean_var_fake(x: Tensor, kernel_size: int = 7) -> tuple[Tensor, Tensor]:
    _check_local_mean_var("local_mean_var", x, kernel_size)
    return x.new_empty(x.shape), x.new_empty(x.shape)


@torch.library.register_fake("facekernels::_local_mean_var_backward")
def _local_mean_var_backward_fake(
    grad_mean: Tensor | None, grad_var: Tensor | None, x: Tensor, kernel_size: int
) -> Tensor:
    op = "_local_mean_var_backward"
    _check_local_mean_var(op, x, kernel_size)
    for arg, grad in (("grad_mean", grad_mean), ("grad_var", grad_var)):
        if grad is not None:
            _check_gradient_like(op, arg, grad, x)
    return x.new_empty(x.shape)


def _transform_setup_context(ctx, inputs, output) -> None:
    x, guide, kernel_size, eps = with_defaults("local_stat_transform", inputs)
    ctx.save_for_backward(x, guide)
    ctx.kernel_size, ctx.eps = kernel_size, eps


def _transform_backward(ctx, grad_out: Tensor):
    x, guide = ctx.saved_tensors
    need_x, need_guide = ctx.needs_input_grad[:2]
    grads = [None] * len(ctx.needs_input_grad)
    if need_x or need_guide:
        grad_x, grad_guide = torch.ops.facekernels._local_stat_transform_backward.default(
            grad_out, x, guide, ctx.kernel_size, ctx.eps, need_x, need_guide
        )
        grads[0] = grad_x if need_x else None
        grads[1] = grad_guide if need_guide else None
    return tuple(grads)


torch.library.register_autograd(
    "facekernels::local_stat_transform", _transform_backward, setup_context=_transform_setup_context
)


def _mean_var_setup_context(ctx, inputs, output) -> None:
    x, kernel_size = with_defaults("local_mean_var", inputs)
    ctx.save_for_backward(x)
    ctx.kernel_size = kernel_size


def _mean_var_backward(ctx, grad_mean: Tensor | None, grad_var: Tensor | None):
    (x,) = ctx.saved_tensors
    grads = [None] * len(ctx.needs_input_grad)
    if ctx.needs_input_grad[0]:
        grads[0] = torch.ops.facekernels._local_mean_var_backward.default(grad_mean, grad_var, x, ctx.kernel_size)
    return tuple(grads)


torch.library.register_autograd(
    "facekernels::local_mean_var", _mean_var_backward, setup_context=_mean_var_setup_context
)


# Not twice differentiable: differentiating a gradient raises instead of silently treating the backward
# kernels as constants.
refuse_double_backward("_local_stat_transform_backward", "local_stat_transform")
refuse_double_backward("_local_mean_var_backward", "local_mean_var")
register_autocast("local_stat_transform")
register_autocast("local_mean_var")
