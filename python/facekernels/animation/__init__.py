"""Stylised blendshape animation: linear rigs with correctives (:class:`Rig`, loading ARKit-52 style rigs),
geometry-aware losses on rig weights that never build a vertex (through the rig's Gram matrices), and
causal temporal filters for real time (:class:`OneEuroFilter`, :class:`ExponentialSmoother`).
docs/animation.md has the derivations."""

from .filters import ExponentialSmoother, OneEuroFilter
from .losses import range_penalty, temporal_smoothness, vertex_mse
from .rig import ARKIT_52, Rig, toy_rig

__all__ = ["ARKIT_52", "ExponentialSmoother", "OneEuroFilter", "Rig", "range_penalty", "temporal_smoothness",
           "toy_rig", "vertex_mse"]
