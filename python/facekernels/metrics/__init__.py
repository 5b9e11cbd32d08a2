"""facekernels.metrics: exact face verification and presentation-attack metrics over millions of scores.

Pure Python + NumPy, float64 arithmetic, O(n log n) by sorting, exact with ties. Inputs may be NumPy
arrays, Python sequences or torch tensors (any device; converted with ``.detach().cpu()``).

Verification scores are similarities (higher = more alike) and a comparison is accepted when
score >= threshold; PAD scores are higher for more bona fide presentations, classified bona fide when
score >= threshold. See docs/metrics.md for the definitions, tie handling and the vulnerability protocol,
and ``python -m facekernels.metrics --help`` for the command line.
"""

from __future__ import annotations

from .det import plot_det, probit
from .pad import apcer_bpcer, bpcer_at_apcer
from .report import format_report, vulnerability_report
from .verification import det_curve, eer, fmr_fnmr, iapmr, tar_at_far, threshold_at_fmr

__all__ = [
    "apcer_bpcer",
    "bpcer_at_apcer",
    "det_curve",
    "eer",
    "fmr_fnmr",
    "format_report",
    "iapmr",
    "plot_det",
    "probit",
    "tar_at_far",
    "threshold_at_fmr",
    "vulnerability_report",
]
