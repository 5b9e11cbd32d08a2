"""DET plots: FNMR against FMR (or IAPMR) on probit (normal deviate) axes, written to a PNG with matplotlib.

matplotlib is imported only here, when a plot is asked for, and through its object-oriented API with the
Agg canvas: no pyplot, no change to the caller's matplotlib backend.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from .._checks import ScoresLike, as_orientation, as_sorted_scores, as_threshold
from .verification import _det_curve_sorted, _SortedScores

__all__ = ["plot_det", "probit"]

# Acklam's rational approximation of the inverse normal CDF (relative error below 1.2e-9 over (0, 1)):
# a central rational function for p in [P_LOW, 1 - P_LOW], and a rational function of sqrt(-2 log p) in
# each tail.
_A = (-3.969683028665376e01, 2.209460984245205e02, -2.759285104469687e02, 1.383577518672690e02,
      -3.066479806614716e01, 2.506628277459239e00)
_B = (-5.447609879822406e01, 1.615858368580409e02, -1.556989798598866e02, 6.680131188771972e01,
      -1.328068155288572e01)
_C = (-7.784894002430293e-03, -3.223964580411365e-01, -2.400758277161838e00, -2.549732539343734e00,
      4.374664141464968e00, 2.938163982698783e00)
_D = (7.784695709041462e-03, 3.224671290700398e-01, 2.445134137142996e00, 3.754408661907416e00)
_P_LOW = 0.02425


def _polynomial(coefficients: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    result = np.zeros_like(x)
    for c in coefficients:
        result = result * x + c
    return result


def probit(p: np.ndarray | float) -> np.ndarray:
    """The inverse of the standard normal CDF, vectorised, without scipy.

    Args:
        p: probabilities (any shape); 0 maps to -inf, 1 to +inf, values outside [0, 1] to NaN.

    Returns:
        float64 array of the same shape, within 1.2e-9 relative of ``statistics.NormalDist().inv_cdf``
        (Acklam's approximation; ample for plotting).
    """
    p = np.asarray(p, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    low = (p > 0) & (p < _P_LOW)
    high = (p > 1 - _P_LOW) & (p < 1)
    central = (p >= _P_LOW) & (p <= 1 - _P_LOW)
    q = p[central] - 0.5
    r = q * q
    out[central] = q * _polynomial(_A, r) / (_polynomial(_B, r) * r + 1.0)
    for mask, sign, tail in ((low, 1.0, p[low]), (high, -1.0, 1.0 - p[high])):
        s = np.sqrt(-2.0 * np.log(tail))
        out[mask] = sign * _polynomial(_C, s) / (_polynomial(_D, s) * s + 1.0)
    out[p == 0] = -np.inf
    out[p == 1] = np.inf
    return out


def _thin(x: np.ndarray, y: np.ndarray, cells: int = 4000) -> tuple[np.ndarray, np.ndarray]:
    """Drop the points of a monotone staircase that land in the same cell of a ``cells`` x ``cells`` grid
    as the point before (millions of operating points become a few thousand, the drawn curve unchanged)."""
    if x.size <= 2 * cells:
        return x, y

    def cell(v: np.ndarray) -> np.ndarray:
        span = float(v.max() - v.min()) or 1.0
        return np.floor((v - v.min()) / span * cells).astype(np.int64)

    cx, cy = cell(x), cell(y)
    keep = np.ones(x.size, dtype=bool)
    keep[1:] = (cx[1:] != cx[:-1]) | (cy[1:] != cy[:-1])
    keep[-1] = True
    return x[keep], y[keep]


_TICKS = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)


def _tick_label(p: float) -> str:
    return f"{100 * p:g}%"


def plot_det(curves: Mapping[str, tuple[ScoresLike, ScoresLike]], path: str | os.PathLike,
             *, threshold: float | None = None, title: str | None = None,
             x_label: str = "false match rate (FMR, or IAPMR for attacks)",
             y_label: str = "false non-match rate (FNMR)", dpi: int = 150, higher_is_better: bool = True
             ) -> Path:
    """Draw DET curves on probit axes and save them as a PNG.

    Each curve joins the operating points of :func:`det_curve`: x = #{negative >= t} / n_negative (FMR, or IAPMR when
    the negatives are attack scores), y = #{genuine < t} / n_genuine, both mapped through the inverse
    normal CDF (:func:`probit`). Rates of 0 or 1, which probit sends to infinity, are drawn at the axis
    edge; the axes span from the decade below the smallest nonzero rate (at least 1e-6, at most 10%) to
    99%. Degenerate curves are drawn too: when every rate is 0 or 1 (e.g. all scores tied: FMR 1 and
    FNMR 0, or FMR 0 and FNMR 1) the curve joins the corners of the 10%-99% axes.

    Args:
        curves: ``{label: (genuine, negative)}``, e.g. ``{"licit": (genuine, impostor), "attack":
            (genuine, attack)}``; every array finite and non-empty.
        path: the PNG to write (its folder must exist).
        threshold: when given, each curve's operating point at this threshold is marked.
        title, x_label, y_label: the figure's texts.
        dpi: resolution of the PNG.
        higher_is_better: False for distance-like scores (accepted when score <= t).

    Returns:
        The path written, as a ``pathlib.Path``.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if not isinstance(curves, Mapping) or not curves:
        raise TypeError(f"plot_det: curves must be a non-empty mapping of label -> (genuine, negative), got "
                        f"{type(curves).__name__}")
    negate = as_orientation(higher_is_better, "plot_det")
    t = None if threshold is None else as_threshold(threshold, "plot_det")
    prepared = []
    for label, pair in curves.items():
        if not (isinstance(pair, tuple) and len(pair) == 2):
            raise TypeError(f"plot_det: curves[{label!r}] must be a (genuine, negative) pair of score arrays, "
                            f"got {type(pair).__name__}")
        genuine = _SortedScores(as_sorted_scores(pair[0], "plot_det", f"curves[{label!r}][0] (genuine)",
                                                 negate=negate))
        negative = _SortedScores(as_sorted_scores(pair[1], "plot_det", f"curves[{label!r}][1] (negative)",
                                                  negate=negate))
        x, y, _ = _det_curve_sorted(genuine, negative)
        oriented = None if t is None else (-t if negate else t)
        point = None if t is None else (negative.rate_at_least(oriented), genuine.rate_below(oriented))
        prepared.append((str(label), x, y, point))

    smallest = min((float(v[v > 0].min()) for _, x, y, _ in prepared for v in (x, y) if (v > 0).any()),
                   default=1e-3)
    # The decade below the smallest nonzero rate, within [1e-6, 0.1]: when every nonzero rate is 1 (all
    # scores tied, or one score per class) that decade is 1 itself, past the top of the axes (99%).
    low = min(max(1e-6, 10.0 ** math.floor(math.log10(smallest))), 0.1)
    high = 0.99
    edge_low, edge_high = float(probit(low)), float(probit(high))

    figure = Figure(figsize=(6.4, 6.0))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for label, x, y, point in prepared:
        px, py = _thin(probit(np.clip(x, low, high)), probit(np.clip(y, low, high)))
        line = axes.plot(px, py, label=label, linewidth=1.5)[0]
        if point is not None:
            axes.plot(*probit(np.clip(np.array(point), low, high)), marker="o", color=line.get_color(),
                      markersize=6, linestyle="none")
    ticks = [p for p in _TICKS if low <= p <= high]
    for set_ticks, set_labels, set_limits in ((axes.set_xticks, axes.set_xticklabels, axes.set_xlim),
                                              (axes.set_yticks, axes.set_yticklabels, axes.set_ylim)):
        set_ticks(probit(np.array(ticks)))
        set_labels([_tick_label(p) for p in ticks])
        set_limits(edge_low, edge_high)
    axes.tick_params(axis="x", labelrotation=45)
    axes.grid(True, linestyle=":", linewidth=0.6)
    axes.set_xlabel(x_label)
    axes.set_ylabel(y_label)
    if title:
        axes.set_title(title)
    if t is not None:
        axes.plot([], [], marker="o", color="gray", linestyle="none", label=f"operating point (t = {t:.6g})")
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    out = Path(path)
    figure.savefig(out, dpi=dpi, format="png")
    return out
