"""temporal_filter: causal per-channel filters over [B, T, C] sequences (the One Euro filter, exponential
smoothing), the real-time smoothing of animation curves (``facekernels.animation`` wraps them with state).

CPU kernels only: the recurrences are sequential over time, a real-time rig runs them on the CPU, and CUDA
inputs are filtered on the CPU and copied back (docs/animation.md). Neither op is differentiable:
differentiating through one raises (train with ``facekernels.animation.temporal_smoothness`` instead).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import (
    check,
    check_dim,
    check_floating_dtype,
    check_same_device,
    check_same_dtype,
    fail,
    shape_string,
    sym_and,
)
from ._registration import refuse_backward, register_autocast

__all__ = ["exponential_smoothing", "one_euro_filter"]


def _on_cpu(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.cpu()


def one_euro_filter(
    x: Tensor,
    min_cutoff: float = 1.0,
    beta: float = 0.0,
    d_cutoff: float = 1.0,
    *,
    rate: float = 30.0,
    periods: Tensor | None = None,
    state: Tensor | None = None,
    raw_derivative: bool = False,
) -> tuple[Tensor, Tensor]:
    r"""The One Euro filter (Casiez, Roussel and Vogel, CHI 2012) of every channel of ``B`` sequences.

    Per channel, with ``Te`` the frame's period (``1 / rate``, or ``periods[b, t]``) and
    ``alpha(f) = 1 / (1 + tau / Te) = r / (1 + r)``, ``tau = 1 / (2 pi f)``, ``r = 2 pi f Te``::

        dx_t     = (x_t - ref) / Te          ref = x_hat_{t-1} (default) or x_{t-1} (raw_derivative=True)
        dx_hat_t = alpha(d_cutoff) * dx_t + (1 - alpha(d_cutoff)) * dx_hat_{t-1}
        cutoff_t = min_cutoff + beta * |dx_hat_t|
        x_hat_t  = alpha(cutoff_t) * x_t + (1 - alpha(cutoff_t)) * x_hat_{t-1}

    The default derivative is the widely used reference Python implementation's (the difference to the
    previous *filtered* value); ``raw_derivative=True`` differences the previous *raw* sample, as the
    authors' C++ code does. Without ``state`` the first frame passes through (``x_hat_0 = x_0``,
    ``dx_hat_0 = 0``) and ``periods[:, 0]`` is unused.

    Args:
        x: ``[B, T, C]``, float32/float64 (CUDA tensors are filtered on the CPU and copied back).
        min_cutoff, beta, d_cutoff: the published parameters (Hz, s, Hz): ``min_cutoff > 0``,
            ``beta >= 0``, ``d_cutoff > 0``.
        rate: frames per second when ``periods`` is ``None``.
        periods: ``[B, T]`` seconds between frame ``t - 1`` and frame ``t`` (positive; any strides, e.g. a
            ``[T]`` tensor expanded), the dtype and device of ``x``.
        state: ``[B, 3, C]`` = (x_hat, dx_hat, previous raw sample) from a previous call, to continue a
            stream; ``None`` starts one.

    Returns:
        ``(y [B, T, C], state [B, 3, C])``: filtering a sequence in pieces, passing each call's state to the
        next, gives the same ``y`` as one call. Not differentiable.
    """
    if x.device.type == "cuda":
        y, s = one_euro_filter(x.cpu(), min_cutoff, beta, d_cutoff, rate=rate, periods=_on_cpu(periods),
                               state=_on_cpu(state), raw_derivative=raw_derivative)
        return y.to(x.device), s.to(x.device)
    return torch.ops.facekernels.one_euro_filter.default(
        x, periods, state, float(rate), float(min_cutoff), float(beta), float(d_cutoff), bool(raw_derivative)
    )


def exponential_smoothing(x: Tensor, alpha: float, *, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
    r"""Exponential smoothing of every channel of ``B`` sequences::

        y_t = alpha * x_t + (1 - alpha) * y_{t-1},   0 < alpha <= 1

    Without ``state`` the first frame passes through (``y_0 = x_0``).

    Args:
        x: ``[B, T, C]``, float32/float64 (CUDA tensors are filtered on the CPU and copied back).
        alpha: the smoothing factor in ``(0, 1]`` (1: no smoothing).
        state: ``[B, C]``, the last output of a previous call; ``None`` starts a stream.

    Returns:
        ``(y [B, T, C], state [B, C])``; streaming in pieces equals one call. Not differentiable.
    """
    if x.device.type == "cuda":
        y, s = exponential_smoothing(x.cpu(), alpha, state=_on_cpu(state))
        return y.to(x.device), s.to(x.device)
    return torch.ops.facekernels.exponential_smoothing.default(x, state, float(alpha))


# The fake kernels' checks: csrc/temporal_filter/temporal_filter.cpp's, in its order and words.
def _check_sequence(op: str, x: Tensor) -> None:
    check_dim(op, "x", x, 3, "[B, T, C]")
    check_floating_dtype(op, "x", x)


def _check_positive(op: str, arg: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0.0):
        fail(op, arg, " must be positive and finite, got ", float(value))


def _check_state(op: str, state: Tensor | None, x: Tensor, rows: int) -> None:
    if state is None:
        return
    batch, channels = x.shape[0], x.shape[2]
    if rows > 0:
        check(state.dim() == 3 and sym_and(state.shape[0] == batch, state.shape[1] == rows,
                                           state.shape[2] == channels),
              op, "state must have shape [", batch, ", ", rows, ", ", channels, "] ([B, ", rows, ", C] of x), got ",
              shape_string(state))
    else:
        check(state.dim() == 2 and sym_and(state.shape[0] == batch, state.shape[1] == channels), op,
              "state must have shape [", batch, ", ", channels, "] ([B, C] of x), got ", shape_string(state))
    check_same_dtype(op, "state", state, "x", x)
    check_same_device(op, "state", state, "x", x)


def _check_one_euro_filter(x: Tensor, periods: Tensor | None, state: Tensor | None, rate: float,
                           min_cutoff: float, beta: float, d_cutoff: float) -> None:
    op = "one_euro_filter"
    _check_sequence(op, x)
    _check_positive(op, "rate", rate)
    _check_positive(op, "min_cutoff", min_cutoff)
    if not (math.isfinite(beta) and beta >= 0.0):
        fail(op, "beta must be finite and >= 0, got ", float(beta))
    _check_positive(op, "d_cutoff", d_cutoff)
    batch, frames = x.shape[0], x.shape[1]
    if periods is not None:
        check(periods.dim() == 2 and sym_and(periods.shape[0] == batch, periods.shape[1] == frames), op,
              "periods must have shape [", batch, ", ", frames, "] ([B, T] of x), got ", shape_string(periods))
        check_same_dtype(op, "periods", periods, "x", x)
        check_same_device(op, "periods", periods, "x", x)
        # The values of periods (finite, > 0 where the kernel reads them) are checked by the native op only:
        # a fake tensor has none.
    _check_state(op, state, x, 3)


def _check_exponential_smoothing(x: Tensor, state: Tensor | None, alpha: float) -> None:
    op = "exponential_smoothing"
    _check_sequence(op, x)
    if not (alpha > 0.0 and alpha <= 1.0):
        fail(op, "alpha must be in (0, 1], got ", float(alpha))
    _check_state(op, state, x, 0)


@torch.library.register_fake("facekernels::one_euro_filter")
def _one_euro_filter_fake(x: Tensor, periods: Tensor | None, state: Tensor | None, rate: float,
                          min_cutoff: float, beta: float, d_cutoff: float,
                          raw_derivative: bool) -> tuple[Tensor, Tensor]:
    _check_one_euro_filter(x, periods, state, rate, min_cutoff, beta, d_cutoff)
    return x.new_empty(x.shape), x.new_empty((x.shape[0], 3, x.shape[2]))


@torch.library.register_fake("facekernels::exponential_smoothing")
def _exponential_smoothing_fake(x: Tensor, state: Tensor | None, alpha: float) -> tuple[Tensor, Tensor]:
    _check_exponential_smoothing(x, state, alpha)
    return x.new_empty(x.shape), x.new_empty((x.shape[0], x.shape[2]))


for _name in __all__:
    refuse_backward(
        _name,
        f"{_name}: not differentiable (a causal filter for inference and real time); for a training signal use "
        "facekernels.animation.temporal_smoothness",
    )
    register_autocast(_name)
del _name
