"""correlation: FlowNetC's cost volume between two feature maps, as MOL's FlowNet computes it."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check, check_dim, check_floating_dtype, check_same_device, check_same_dtype, fail
from ._checks import same_shape, shape_string, sym_and
from ._registration import refuse_double_backward, register_autocast, with_defaults

__all__ = ["correlation"]


def correlation(x1: Tensor, x2: Tensor, patch_size: int = 21, dilation_patch: int = 2, kernel_size: int = 1) -> Tensor:
    r"""The correlation of every position of ``x1`` with a patch of displaced positions of ``x2``.

    With ``P = patch_size``, ``d = dilation_patch`` and ``R = P // 2``::

        out[b, i, j, h, w] = sum_c x1[b, c, h, w] * x2[b, c, h + (i - R) * d, w + (j - R) * d]

    for ``0 <= i, j < P``, zero where the displaced position falls outside the image. A drop-in for
    ``spatial_correlation_sampler.spatial_correlation_sample(x1, x2, kernel_size=1, patch_size=P,
    stride=1, padding=0, dilation_patch=d)`` (no normalisation by C: divide the result yourself, as
    FlowNetC does). MOL reshapes the output to ``[B, P * P, H, W]`` (``out.view(B, P * P, H, W)``, free
    on the contiguous result: channel ``i * P + j`` is displacement ``((i - R) d, (j - R) d)``), divides by
    C and applies a LeakyReLU.

    Args:
        x1, x2: ``[B, C, H, W]`` of the same shape, dtype and device; float32/float64 on CPU,
            float32/float16/bfloat16 on CUDA (float32 accumulation); any strides.
        patch_size: odd, ``>= 1`` (the displacements per axis).
        dilation_patch: ``>= 1``, the step between displacements, in pixels.
        kernel_size: must be 1 (one-pixel windows, the only kind FlowNetC and MOL use).

    Returns:
        ``[B, P, P, H, W]``, contiguous. Differentiable in ``x1`` and ``x2``.
    """
    return torch.ops.facekernels.correlation.default(x1, x2, patch_size, dilation_patch, kernel_size)


# The fake kernels' checks: csrc/correlation/correlation.cpp's, in its order and words (ops/_checks.py).
def _check_correlation(op: str, x1: Tensor, x2: Tensor, patch_size: int, dilation_patch: int,
                       kernel_size: int) -> None:
    check_dim(op, "x1", x1, 4, "[B, C, H, W]")
    check_dim(op, "x2", x2, 4, "[B, C, H, W]")
    check_floating_dtype(op, "x1", x1)
    check_same_dtype(op, "x2", x2, "x1", x1)
    check_same_device(op, "x2", x2, "x1", x1)
    check(same_shape(x2, x1), op, "x2 must have the shape of x1 ", shape_string(x1), ", got ", shape_string(x2))
    if kernel_size != 1:
        fail(op, "kernel_size must be 1 (only single-pixel windows are implemented), got ", kernel_size)
    if not (patch_size >= 1 and patch_size % 2 == 1):
        fail(op, "patch_size must be an odd number >= 1, got ", patch_size)
    if dilation_patch < 1:
        fail(op, "dilation_patch must be >= 1, got ", dilation_patch)


def _check_correlation_backward(grad_out: Tensor, x1: Tensor, x2: Tensor, patch_size: int,
                                dilation_patch: int) -> None:
    op = "_correlation_backward"
    _check_correlation(op, x1, x2, patch_size, dilation_patch, 1)
    check_dim(op, "grad_out", grad_out, 5, "[B, P, P, H, W]")
    b, _, h, w = x1.shape
    want = (b, patch_size, patch_size, h, w)
    ok = sym_and(*(grad_out.shape[i] == want[i] for i in range(5)))
    check(ok, op, "grad_out must have shape ", shape_string(want), ", got ", shape_string(grad_out))
    check_same_dtype(op, "grad_out", grad_out, "x1", x1)
    check_same_device(op, "grad_out", grad_out, "x1", x1)


@torch.library.register_fake("facekernels::correlation")
def _correlation_fake(x1: Tensor, x2: Tensor, patch_size: int = 21, dilation_patch: int = 2,
                      kernel_size: int = 1) -> Tensor:
    _check_correlation("correlation", x1, x2, patch_size, dilation_patch, kernel_size)
    b, _, h, w = x1.shape
    return x1.new_empty((b, patch_size, patch_size, h, w))


@torch.library.register_fake("facekernels::_correlation_backward")
def _correlation_backward_fake(grad_out: Tensor, x1: Tensor, x2: Tensor, patch_size: int, dilation_patch: int,
                               need_x1: bool, need_x2: bool) -> tuple[Tensor, Tensor]:
    _check_correlation_backward(grad_out, x1, x2, patch_size, dilation_patch)
    return x1.new_empty(x1.shape if need_x1 else (0,)), x2.new_empty(x2.shape if need_x2 else (0,))


def _setup_context(ctx, inputs, output) -> None:
    x1, x2, patch_size, dilation_patch, _ = with_defaults("correlation", inputs)
    ctx.save_for_backward(x1, x2)
    ctx.patch_size, ctx.dilation_patch = patch_size, dilation_patch


def _backward(ctx, grad_out: Tensor):
    x1, x2 = ctx.saved_tensors
    need_x1, need_x2 = ctx.needs_input_grad[:2]
    grads = [None] * len(ctx.needs_input_grad)
    if need_x1 or need_x2:
        grad_x1, grad_x2 = torch.ops.facekernels._correlation_backward.default(
            grad_out, x1, x2, ctx.patch_size, ctx.dilation_patch, need_x1, need_x2
        )
        grads[0] = grad_x1 if need_x1 else None
        grads[1] = grad_x2 if need_x2 else None
    return tuple(grads)


torch.library.register_autograd("facekernels::correlation", _backward, setup_context=_setup_context)
refuse_double_backward("_correlation_backward", "correlation")
register_autocast("correlation")
