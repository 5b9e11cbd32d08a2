"""Verification metrics: FMR/FNMR, the threshold at a target FMR, EER, TAR@FAR, the DET curve, IAPMR.

Scores are similarities: higher means more alike, and a comparison is accepted when score >= threshold.

    FMR(t)  = #{impostor scores >= t} / #impostor        (false match rate)
    FNMR(t) = #{genuine scores  <  t} / #genuine         (false non-match rate)
    IAPMR(t) = #{attack scores  >= t} / #attack          (impostor attack presentation match rate)

Every rate is an integer count divided by an integer size in float64 (one correctly rounded division), so
the results equal a brute-force count exactly, ties included. Searches run on sorted arrays: each array
is sorted once (O(n log n)); every rate after that costs one binary search, and the EER and the threshold
at a target FMR a few dozen (see :func:`_first_candidate`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from .._checks import ScoresLike, as_rate, as_scores, as_sorted_scores, as_threshold

__all__ = ["det_curve", "eer", "fmr_fnmr", "iapmr", "tar_at_far", "threshold_at_fmr"]


class _SortedScores:
    """One score array sorted ascending, with its counts above and below a threshold by binary search."""

    __slots__ = ("size", "values")

    def __init__(self, sorted_values: np.ndarray) -> None:
        self.values = sorted_values
        self.size = int(sorted_values.size)

    def count_at_least(self, threshold: float) -> int:
        return self.size - int(np.searchsorted(self.values, threshold, side="left"))

    def count_below(self, threshold: float) -> int:
        return int(np.searchsorted(self.values, threshold, side="left"))

    def rate_at_least(self, threshold: float) -> float:
        return self.count_at_least(threshold) / self.size

    def rate_below(self, threshold: float) -> float:
        return self.count_below(threshold) / self.size

    @property
    def largest(self) -> float:
        return float(self.values[-1])


def _above(value: float) -> float:
    """The next float64 above ``value``: the threshold that accepts nothing."""
    return float(np.nextafter(value, math.inf))


def _first_candidate(arrays: Sequence[np.ndarray], top: float, accept: Callable[[float], bool]) -> float:
    """The smallest candidate threshold t with ``accept(t)``, the candidates being every value of the
    sorted ``arrays`` and ``top`` (above all of them).

    ``accept`` must be monotone (false, then true, as t grows) and true at ``top``. One binary search over
    each array: O(log n) calls of ``accept``. Repeated values are harmless, as equal values give equal
    answers."""
    best = top
    for values in arrays:
        low, high = 0, int(values.size)
        while low < high:
            middle = (low + high) // 2
            if accept(float(values[middle])):
                high = middle
            else:
                low = middle + 1
        if low < values.size:
            best = min(best, float(values[low]))
    return best


def _threshold_at_fmr_sorted(impostor: _SortedScores, fmr: float) -> float:
    return _first_candidate([impostor.values], _above(impostor.largest),
                            lambda t: impostor.rate_at_least(t) <= fmr)


def _eer_sorted(genuine: _SortedScores, impostor: _SortedScores) -> tuple[float, float]:
    # gap(t) = FMR(t) - FNMR(t) is non-increasing in t, also as computed in float64 (a correctly rounded
    # division or subtraction is monotone in each operand). It is >= 0 at the smallest score (FNMR = 0)
    # and -1 at the top candidate. So |gap| is smallest either at `left`, the last candidate with
    # gap >= 0, or at `right`, the first with gap < 0; on a tie, and among candidates sharing left's gap,
    # the smallest threshold wins. (In exact arithmetic gap strictly decreases from one candidate to the
    # next, each being a score that leaves one of the sets, so the run of candidates sharing left's gap
    # is left alone unless rounding merges values, which needs sizes near 2^53; the search below keeps
    # the definition exact regardless.)
    arrays = [genuine.values, impostor.values]
    top = _above(max(genuine.largest, impostor.largest))

    def gap(t: float) -> float:
        return impostor.rate_at_least(t) - genuine.rate_below(t)

    right = _first_candidate(arrays, top, lambda t: gap(t) < 0.0)
    left = max(float(values[index - 1]) for values in arrays
               if (index := int(np.searchsorted(values, right, side="left"))) > 0)
    gap_left, gap_right = gap(left), gap(right)
    if gap_left <= -gap_right:
        threshold = _first_candidate(arrays, top, lambda t: gap(t) <= gap_left)
    else:
        threshold = right
    return (impostor.rate_at_least(threshold) + genuine.rate_below(threshold)) / 2.0, threshold


def fmr_fnmr(genuine: ScoresLike, impostor: ScoresLike, threshold: float) -> tuple[float, float]:
    """False match rate and false non-match rate at one threshold.

    Args:
        genuine: ``[n_genuine]`` mated comparison scores, finite, at least one.
        impostor: ``[n_impostor]`` non-mated comparison scores, finite, at least one.
        threshold: a real number (infinities allowed); a comparison is accepted when score >= threshold.

    Returns:
        ``(fmr, fnmr)`` with fmr = #{impostor >= threshold} / n_impostor and
        fnmr = #{genuine < threshold} / n_genuine, float64.
    """
    genuine_array = as_scores(genuine, "fmr_fnmr", "genuine")
    impostor_array = as_scores(impostor, "fmr_fnmr", "impostor")
    t = as_threshold(threshold, "fmr_fnmr")
    return (int(np.count_nonzero(impostor_array >= t)) / impostor_array.size,
            int(np.count_nonzero(genuine_array < t)) / genuine_array.size)


def threshold_at_fmr(impostor: ScoresLike, fmr: float) -> float:
    """The smallest threshold whose false match rate does not exceed ``fmr``.

    The candidates are the distinct impostor scores and the next float above the largest one
    (``np.nextafter(max, inf)``, where FMR = 0); the result is the smallest candidate t with
    FMR(t) = #{impostor >= t} / n_impostor <= fmr. Tied scores enter or leave the accepted set together,
    so with heavy ties the FMR reached can be well below ``fmr``.

    Args:
        impostor: ``[n_impostor]`` non-mated comparison scores, finite, at least one.
        fmr: the target, in the open interval (0, 1).

    Returns:
        The threshold, a float64 that is one of the impostor scores or the float just above the largest.
    """
    impostor_sorted = _SortedScores(as_sorted_scores(impostor, "threshold_at_fmr", "impostor"))
    return _threshold_at_fmr_sorted(impostor_sorted, as_rate(fmr, "threshold_at_fmr", "fmr"))


def eer(genuine: ScoresLike, impostor: ScoresLike) -> tuple[float, float]:
    """Equal error rate and its threshold.

    The candidates are every distinct genuine and impostor score and the next float above the largest of
    all; the threshold is the candidate minimising |FMR(t) - FNMR(t)| (the smallest one when several
    tie), and eer = (FMR(t) + FNMR(t)) / 2 there. On discrete scores FMR and FNMR rarely meet exactly;
    this is the point where they come closest, reported as their mean.

    Args:
        genuine: ``[n_genuine]`` mated scores, finite, at least one.
        impostor: ``[n_impostor]`` non-mated scores, finite, at least one.

    Returns:
        ``(eer, threshold)``, float64.
    """
    genuine_sorted = _SortedScores(as_sorted_scores(genuine, "eer", "genuine"))
    impostor_sorted = _SortedScores(as_sorted_scores(impostor, "eer", "impostor"))
    return _eer_sorted(genuine_sorted, impostor_sorted)


def tar_at_far(genuine: ScoresLike, impostor: ScoresLike, far: float) -> float:
    """True accept rate at a target false accept rate: ``1 - FNMR(threshold_at_fmr(impostor, far))``.

    Args:
        genuine: ``[n_genuine]`` mated scores, finite, at least one.
        impostor: ``[n_impostor]`` non-mated scores, finite, at least one.
        far: the target FAR (= FMR), in the open interval (0, 1).

    Returns:
        1 - #{genuine < t} / n_genuine at t = :func:`threshold_at_fmr` (impostor, far), float64.
    """
    genuine_array = as_scores(genuine, "tar_at_far", "genuine")
    impostor_sorted = _SortedScores(as_sorted_scores(impostor, "tar_at_far", "impostor"))
    t = _threshold_at_fmr_sorted(impostor_sorted, as_rate(far, "tar_at_far", "far"))
    return 1.0 - int(np.count_nonzero(genuine_array < t)) / genuine_array.size


def _det_curve_sorted(genuine: _SortedScores, impostor: _SortedScores
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    merged = np.sort(np.concatenate([genuine.values, impostor.values]), kind="stable")  # two sorted runs
    distinct = merged[np.concatenate([[True], merged[1:] != merged[:-1]])]
    thresholds = np.append(distinct, _above(float(distinct[-1])))
    fmr = (impostor.size - np.searchsorted(impostor.values, thresholds, side="left")) / impostor.size
    fnmr = np.searchsorted(genuine.values, thresholds, side="left") / genuine.size
    return fmr, fnmr, thresholds


def det_curve(genuine: ScoresLike, impostor: ScoresLike) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every operating point of the detection error trade-off.

    Args:
        genuine: ``[n_genuine]`` mated scores, finite, at least one.
        impostor: ``[n_impostor]`` non-mated scores, finite, at least one.

    Returns:
        ``(fmr, fnmr, thresholds)``, three float64 arrays of length m + 1, where m is the number of
        distinct scores: ``thresholds`` holds the distinct genuine and impostor scores ascending, then the
        next float above the largest; fmr[k] = FMR(thresholds[k]) (non-increasing, ending at 0) and
        fnmr[k] = FNMR(thresholds[k]) (non-decreasing, starting at 0, ending at 1).
    """
    genuine_sorted = _SortedScores(as_sorted_scores(genuine, "det_curve", "genuine"))
    impostor_sorted = _SortedScores(as_sorted_scores(impostor, "det_curve", "impostor"))
    return _det_curve_sorted(genuine_sorted, impostor_sorted)


def iapmr(attack: ScoresLike, threshold: float) -> float:
    """Impostor attack presentation match rate: the share of attack presentations accepted.

    An attack presentation is a probe made with a presentation attack instrument, compared with the
    targeted subject's bona fide reference; it is accepted when its score >= threshold.

    Args:
        attack: ``[n_attack]`` scores, finite; may be empty.
        threshold: a real number (infinities allowed).

    Returns:
        #{attack >= threshold} / n_attack, float64; NaN when there is no attack score (the rate is
        undefined, not 0).
    """
    attack_array = as_scores(attack, "iapmr", "attack", allow_empty=True)
    t = as_threshold(threshold, "iapmr")
    if attack_array.size == 0:
        return math.nan
    return int(np.count_nonzero(attack_array >= t)) / attack_array.size
