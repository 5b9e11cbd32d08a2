"""Causal temporal filters for animation curves: the One Euro filter and exponential smoothing, offline
over whole sequences and streaming (frame by frame or chunk by chunk, with state) with identical results.
The recurrences run in the CPU kernels of :mod:`facekernels.ops.temporal_filter`."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ..ops.temporal_filter import exponential_smoothing, one_euro_filter
from .rig import _fail, _shape

__all__ = ["ExponentialSmoother", "OneEuroFilter"]


def _as_sequences(where: str, x: Tensor, min_dim: int) -> tuple[Tensor, torch.Size]:
    """``[..., T, C]`` -> ``[B, T, C]`` and the leading shape."""
    if not isinstance(x, Tensor):
        _fail(TypeError, where, "x", "a tensor", type(x).__name__)
    if not x.is_floating_point():
        _fail(TypeError, where, "x", "a floating tensor", x.dtype)
    if x.dim() < min_dim:
        _fail(ValueError, where, "x", "[..., T, C]" if min_dim == 2 else "[..., C]", _shape(x))
    # math.prod, not -1: reshape cannot infer a -1 dimension of an empty tensor (T = 0 or a 0 leading size).
    return x.reshape(math.prod(x.shape[:-2]), x.shape[-2], x.shape[-1]), x.shape[:-2]


class _StreamingFilter:
    """The streaming frame of both filters: ``reset``, ``step`` (one frame ``[..., C]``) and ``__call__``
    (a chunk ``[..., T, C]``) continue one stream; ``filter`` is a fresh stream over a whole sequence."""

    _name = ""

    def __init__(self) -> None:
        self.state: Tensor | None = None
        self._lead: torch.Size | None = None
        self._call_lead = torch.Size()  # the leading shape of the call being filtered

    def reset(self) -> None:
        """Start a new stream (the next frame passes through)."""
        self.state = None
        self._lead = None

    def _run(self, x: Tensor, timestamps: Tensor | None, state: Tensor | None) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def __call__(self, x: Tensor, timestamps: Tensor | None = None) -> Tensor:
        """Filter the next chunk ``x`` ``[..., T, C]`` of the stream (``timestamps`` ``[T]`` or ``[..., T]``
        seconds, for the One Euro filter)."""
        where = f"{self._name}.__call__"
        seq, lead = _as_sequences(where, x, 2)
        if self.state is not None and lead != self._lead:
            _fail(ValueError, where, "x", f"[..., T, C] with the stream's leading shape {list(self._lead)}",
                  _shape(x))
        if self.state is not None and self.state.shape[-1] != seq.shape[-1]:
            _fail(ValueError, where, "x", f"C = {self.state.shape[-1]} channels (the stream's)", _shape(x))
        self._call_lead = lead
        y, state = self._run(seq, timestamps, self.state)
        if seq.shape[1] > 0:
            self.state, self._lead = state, lead
        return y.reshape(x.shape)

    def step(self, frame: Tensor, timestamp: float | Tensor | None = None) -> Tensor:
        """Filter one frame ``[..., C]`` of the stream."""
        if not isinstance(frame, Tensor) or frame.dim() < 1:
            _fail(ValueError, f"{self._name}.step", "frame", "a [..., C] tensor", getattr(frame, "shape", frame))
        t = None if timestamp is None else torch.as_tensor(timestamp, dtype=torch.float64)[..., None]
        return self(frame.unsqueeze(-2), t).squeeze(-2)

    def filter(self, x: Tensor, timestamps: Tensor | None = None) -> Tensor:
        """Filter whole sequences ``[..., T, C]`` (a fresh stream, leaving this one untouched)."""
        seq, self._call_lead = _as_sequences(f"{self._name}.filter", x, 2)
        return self._run(seq, timestamps, None)[0].reshape(x.shape)


class OneEuroFilter(_StreamingFilter):
    r"""The One Euro filter (Casiez, Roussel and Vogel, CHI 2012), per channel, batched and streaming.

    ``min_cutoff`` (Hz) sets the smoothing at rest, ``beta`` how fast the cutoff rises with speed (lag vs
    jitter), ``d_cutoff`` (Hz) the smoothing of the speed estimate; :func:`facekernels.ops.one_euro_filter`
    has the equations. Frames come at a fixed ``rate`` (Hz) or with ``timestamps`` (seconds, strictly
    increasing). ``raw_derivative=False`` follows the widely used reference Python implementation (speed
    from the previous filtered value); ``True`` the authors' C++ code (previous raw sample).

    ``filt.filter(x)`` filters whole sequences ``[..., T, C]``; ``filt(chunk)`` and ``filt.step(frame)``
    continue a stream, and any split of a sequence into chunks gives the offline result. CPU kernel; not
    differentiable.
    """

    _name = "OneEuroFilter"

    def __init__(self, min_cutoff: float = 1.0, beta: float = 0.0, d_cutoff: float = 1.0, rate: float = 30.0,
                 raw_derivative: bool = False) -> None:
        super().__init__()
        for arg, value, low in (("min_cutoff", min_cutoff, 0.0), ("d_cutoff", d_cutoff, 0.0), ("rate", rate, 0.0)):
            if not value > low:
                _fail(ValueError, "OneEuroFilter", arg, "> 0", value)
        if not beta >= 0.0:
            _fail(ValueError, "OneEuroFilter", "beta", ">= 0", beta)
        self.min_cutoff, self.beta, self.d_cutoff, self.rate = map(float, (min_cutoff, beta, d_cutoff, rate))
        self.raw_derivative = bool(raw_derivative)
        self._last_time: Tensor | None = None

    def reset(self) -> None:
        super().reset()
        self._last_time = None

    def _periods(self, x: Tensor, timestamps: Tensor | None, continuing: bool) -> Tensor | None:
        if timestamps is None:
            return None
        where = f"{self._name}"
        b, t = x.shape[0], x.shape[1]
        ts = torch.as_tensor(timestamps, dtype=torch.float64).to(x.device)
        lead = tuple(self._call_lead)
        if ts.shape not in ((t,), (*lead, t)):
            _fail(ValueError, where, "timestamps", f"[T] or [..., T] = {[*lead, t]} with T = {t} (x's frames)",
                  _shape(ts))
        ts = ts.expand(*lead, t).reshape(b, t)
        if t == 0:  # no frames: no periods (and the stream's last time stays)
            return ts.to(x.dtype)
        previous = self._last_time if continuing else None
        full = ts if previous is None else torch.cat([previous[:, None], ts], dim=1)
        gaps = full[:, 1:] - full[:, :-1]
        if gaps.numel() and not bool((gaps > 0).all()):
            _fail(ValueError, where, "timestamps", "strictly increasing (across chunks too)", "a step <= 0")
        if previous is None:
            gaps = torch.cat([gaps.new_full((b, 1), 1.0 / self.rate), gaps], dim=1)
        if t:
            self._pending_time = ts[:, -1].clone()
        return gaps.to(x.dtype)

    def _run(self, x: Tensor, timestamps: Tensor | None, state: Tensor | None) -> tuple[Tensor, Tensor]:
        self._pending_time = None
        periods = self._periods(x, timestamps, state is not None)
        return one_euro_filter(x, self.min_cutoff, self.beta, self.d_cutoff, rate=self.rate, periods=periods,
                               state=state, raw_derivative=self.raw_derivative)

    def __call__(self, x: Tensor, timestamps: Tensor | None = None) -> Tensor:
        y = super().__call__(x, timestamps)
        if self._pending_time is not None:
            self._last_time = self._pending_time
        return y


class ExponentialSmoother(_StreamingFilter):
    """Exponential smoothing ``y_t = alpha x_t + (1 - alpha) y_{t-1}`` per channel (the first frame passes
    through), batched and streaming like :class:`OneEuroFilter`. CPU kernel; not differentiable."""

    _name = "ExponentialSmoother"

    def __init__(self, alpha: float) -> None:
        super().__init__()
        if not 0.0 < alpha <= 1.0:
            _fail(ValueError, "ExponentialSmoother", "alpha", "in (0, 1]", alpha)
        self.alpha = float(alpha)

    def _run(self, x: Tensor, timestamps: Tensor | None, state: Tensor | None) -> tuple[Tensor, Tensor]:
        if timestamps is not None:
            _fail(ValueError, self._name, "timestamps", "None (a fixed-rate smoother)", "timestamps")
        return exponential_smoothing(x, self.alpha, state=state)
