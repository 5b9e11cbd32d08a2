"""Geometry-aware losses on rig weights that never build a vertex (through a rig's Gram matrices), and the
range penalty."""

from __future__ import annotations

from torch import Tensor

from .rig import Rig, _fail, _shape

__all__ = ["range_penalty", "temporal_smoothness", "vertex_mse"]


def vertex_mse(rig: Rig, w_pred: Tensor, w_target: Tensor, *, region: str | Tensor | None = None,
               translation_invariant: bool = False, reduction: str = "mean") -> Tensor:
    """:meth:`Rig.vertex_mse` as a function."""
    return rig.vertex_mse(w_pred, w_target, region=region, translation_invariant=translation_invariant,
                          reduction=reduction)


def _difference(w: Tensor, order: int) -> Tensor:
    if order == 1:
        return w[..., 1:, :] - w[..., :-1, :]
    return w[..., 2:, :] - 2 * w[..., 1:-1, :] + w[..., :-2, :]


def temporal_smoothness(w: Tensor, order: int = 1, rig: Rig | None = None, *, region: str | Tensor | None = None,
                        translation_invariant: bool = False) -> Tensor:
    r"""The mean squared ``order``-th temporal difference of a weight sequence ``w`` ``[..., T, K]``.

    Without a rig, in weight space: ``mean((D^order w)^2)`` over frames and weights, with
    ``D w_t = w_{t+1} - w_t`` (order 1, velocity) or ``w_{t+2} - 2 w_{t+1} + w_t`` (order 2, acceleration).

    With a rig, in vertex space: the mean over frames, vertices and xyz of the squared difference of the
    *meshes*, which are linear in the rig's features ``f(w)`` (neutral + basis^T f), so
    ``D^order vertices = basis^T D^order f(w)`` exactly and the loss is ``mean_t (D f)^T G (D f) / (3V)``
    with the rig's Gram matrix ``G`` (``region`` and ``translation_invariant`` as in :meth:`Rig.vertex_mse`).
    """
    where = "temporal_smoothness"
    if not isinstance(w, Tensor):
        _fail(TypeError, where, "w", "a tensor [..., T, K]", type(w).__name__)
    if not w.is_floating_point():
        _fail(TypeError, where, "w", "a floating tensor", w.dtype)
    if order not in (1, 2):
        _fail(ValueError, where, "order", "1 or 2", order)
    if w.dim() < 2 or w.shape[-2] <= order:
        _fail(ValueError, where, "w", f"[..., T, K] with T > order = {order} frames", _shape(w))
    if rig is None:
        if region is not None:
            _fail(ValueError, where, "region", "None without a rig (regions are the rig's vertices)", "a region")
        if translation_invariant:
            _fail(ValueError, where, "translation_invariant", "False without a rig (a vertex-space option)", True)
        return _difference(w, order).pow(2).mean()
    if not isinstance(rig, Rig):
        _fail(TypeError, where, "rig", "a facekernels.animation.Rig or None", type(rig).__name__)
    rig._check_weights(where, "w", w)
    d = _difference(rig.features(w), order)
    return rig._feature_loss(where, d, region, translation_invariant, "mean")


def range_penalty(w: Tensor, lower: Tensor | float = 0.0, upper: Tensor | float = 1.0) -> Tensor:
    """``mean(relu(lower - w)^2 + relu(w - upper)^2)``: zero inside the rig's range (``rig.lower``,
    ``rig.upper``, ``[K]`` or numbers), quadratic outside."""
    if not isinstance(w, Tensor):
        _fail(TypeError, "range_penalty", "w", "a tensor [..., K]", type(w).__name__)
    lo = w.new_tensor(lower) if not isinstance(lower, Tensor) else lower.to(w)
    hi = w.new_tensor(upper) if not isinstance(upper, Tensor) else upper.to(w)
    return ((lo - w).clamp_min(0).pow(2) + (w - hi).clamp_min(0).pow(2)).mean()
