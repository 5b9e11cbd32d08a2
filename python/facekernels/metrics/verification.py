"""Verification metrics: FMR/FNMR, the threshold at a target FMR, EER, TAR@FAR, the DET curve, IAPMR.

Scores are similarities by default: higher means more alike, and a comparison is accepted when
score >= threshold.

    FMR(t)  = #{impostor scores >= t} / #impostor        (false match rate)
    FNMR(t) = #{genuine scores  <  t} / #genuine         (false non-match rate)
    IAPMR(t) = #{attack scores  >= t} / #attack          (impostor attack presentation match rate)

Every function takes ``higher_is_better=False`` for distance-like scores (lower = more alike): a comparison
is then accepted when score <= threshold, and every ">= t" above reads "<= t" ("< t" reads "> t"). It is
computed on the negated scores and thresholds, which is exact.

Every rate is an integer count divided by an integer size in float64 (one correctly rounded division), so
the results equal a brute-force count exactly, ties included. Searches run on sorted arrays: each array
is sorted once (O(n log n)); every rate after that costs one binary search, and the EER and the threshold
at a target FMR a few dozen (see :func:`_first_candidate`).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence

import numpy as np

from .._checks import ScoresLike, as_orientation, as_rate, as_scores, as_sorted_scores, as_threshold

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
    # FMR(t) only changes at an impostor score u, where it drops from #{>= u} to #{> u} just above u. So the
    # lowest threshold with FMR(t) <= fmr is the float just above the smallest impostor score u with
    # #{impostor > u} / n <= fmr (which holds at the largest score: FMR 0 above it); no float lies between
    # u and that threshold, so every higher threshold meeting the target accepts fewer or equal genuine
    # scores. One binary search over the sorted scores.
    values, size = impostor.values, impostor.size
    u = _first_candidate([values], impostor.largest,
                         lambda t: (size - int(np.searchsorted(values, t, side="right"))) / size <= fmr)
    return _above(u)


def _warn_if_swapped(eer_value: float, function: str, genuine: str = "genuine", impostor: str = "impostor"
                     ) -> None:
    """A UserWarning when the EER exceeds 0.5: at the EER threshold more than half of the genuine scores
    lie below it and more than half of the impostor scores at or above it, i.e. the genuine scores sit
    mostly below the impostor scores (arguments swapped, or distance-like scores read as similarities)."""
    if eer_value > 0.5:
        warnings.warn(
            f"{function}: EER {eer_value:.4g} > 0.5: the {genuine} scores sit mostly below the {impostor} "
            f"scores. Are {genuine} and {impostor} swapped, or are these distance-like scores (lower = more "
            "alike: pass higher_is_better=False, or --no-higher-is-better on the command line)?", UserWarning,
            stacklevel=3)


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


def fmr_fnmr(genuine: ScoresLike, impostor: ScoresLike, threshold: float, *,
             higher_is_better: bool = True) -> tuple[float, float]:
    """False match rate and false non-match rate at one threshold.

    Args:
        genuine: ``[n_genuine]`` mated comparison scores, finite, at least one.
        impostor: ``[n_impostor]`` non-mated comparison scores, finite, at least one.
        threshold: a real number (infinities allowed); a comparison is accepted when score >= threshold.
        higher_is_better: False for distance-like scores: accepted when score <= threshold.

    Returns:
        ``(fmr, fnmr)`` with fmr = #{impostor >= threshold} / n_impostor and
        fnmr = #{genuine < threshold} / n_genuine, float64 (<= and > for distance-like scores).
    """
    function = "fmr_fnmr"
    negate = as_orientation(higher_is_better, function)
    genuine_array = as_scores(genuine, function, "genuine", negate=negate)
    impostor_array = as_scores(impostor, function, "impostor", negate=negate)
    t = as_threshold(threshold, function)
    t = -t if negate else t
    return (int(np.count_nonzero(impostor_array >= t)) / impostor_array.size,
            int(np.count_nonzero(genuine_array < t)) / genuine_array.size)


def threshold_at_fmr(impostor: ScoresLike, fmr: float, *, higher_is_better: bool = True) -> float:
    """The lowest threshold whose false match rate does not exceed ``fmr``.

    A comparison is accepted when score >= threshold, so FMR(t) = #{impostor >= t} / n_impostor falls as t
    grows, and every threshold at or above the result meets the target. The result is the float just above
    the smallest impostor score u with #{impostor > u} / n_impostor <= fmr (``np.nextafter(u, inf)``): it
    rejects u and every lower impostor score, and accepts every score above u. Of all thresholds with
    FMR <= fmr it accepts the most genuine scores, so :func:`tar_at_far` at it is the best TAR reachable.
    Tied impostor scores enter or leave the accepted set together, so with heavy ties the FMR reached can
    be well below ``fmr``.

    Args:
        impostor: ``[n_impostor]`` non-mated comparison scores, finite, at least one.
        fmr: the target, in the open interval (0, 1).
        higher_is_better: False for distance-like scores (accepted when score <= threshold): the result is
            then the highest threshold with FMR <= fmr, the float just below an impostor score.

    Returns:
        The threshold, a float64 just above one of the impostor scores (just below, for distances).
    """
    function = "threshold_at_fmr"
    negate = as_orientation(higher_is_better, function)
    impostor_sorted = _SortedScores(as_sorted_scores(impostor, function, "impostor", negate=negate))
    t = _threshold_at_fmr_sorted(impostor_sorted, as_rate(fmr, function, "fmr"))
    return -t if negate else t


def eer(genuine: ScoresLike, impostor: ScoresLike, *, higher_is_better: bool = True) -> tuple[float, float]:
    """Equal error rate and its threshold.

    The candidates are every distinct genuine and impostor score and the next float above the largest of
    all; the threshold is the candidate minimising |FMR(t) - FNMR(t)| (the smallest one when several
    tie), and eer = (FMR(t) + FNMR(t)) / 2 there. On discrete scores FMR and FNMR rarely meet exactly;
    this is the point where they come closest, reported as their mean.

    An EER above 0.5 means the genuine scores sit mostly below the impostor scores: a UserWarning then
    names the likely cause (the arguments swapped, or distance-like scores without
    ``higher_is_better=False``); the result is returned as computed.

    Args:
        genuine: ``[n_genuine]`` mated scores, finite, at least one.
        impostor: ``[n_impostor]`` non-mated scores, finite, at least one.
        higher_is_better: False for distance-like scores (accepted when score <= threshold; the candidates
            are then the distinct scores and the float below the smallest, and ties go to the largest).

    Returns:
        ``(eer, threshold)``, float64.
    """
    function = "eer"
    negate = as_orientation(higher_is_better, function)
    genuine_sorted = _SortedScores(as_sorted_scores(genuine, function, "genuine", negate=negate))
    impostor_sorted = _SortedScores(as_sorted_scores(impostor, function, "impostor", negate=negate))
    value, threshold = _eer_sorted(genuine_sorted, impostor_sorted)
    _warn_if_swapped(value, function)
    return value, -threshold if negate else threshold


def tar_at_far(genuine: ScoresLike, impostor: ScoresLike, far: float, *, higher_is_better: bool = True) -> float:
    """True accept rate at a target false accept rate: the largest share of genuine scores accepted by a
    threshold whose FAR (= FMR) does not exceed ``far``.

    That threshold is :func:`threshold_at_fmr` (impostor, far), the lowest one meeting the target, so
    TAR = 1 - FNMR there = #{genuine > u} / n_genuine with u the impostor score just below it.

    Args:
        genuine: ``[n_genuine]`` mated scores, finite, at least one.
        impostor: ``[n_impostor]`` non-mated scores, finite, at least one.
        far: the target FAR (= FMR), in the open interval (0, 1).
        higher_is_better: False for distance-like scores (accepted when score <= threshold).

    Returns:
        1 - #{genuine < t} / n_genuine at t = :func:`threshold_at_fmr` (impostor, far), float64.
    """
    function = "tar_at_far"
    negate = as_orientation(higher_is_better, function)
    genuine_array = as_scores(genuine, function, "genuine", negate=negate)
    impostor_sorted = _SortedScores(as_sorted_scores(impostor, function, "impostor", negate=negate))
    t = _threshold_at_fmr_sorted(impostor_sorted, as_rate(far, function, "far"))
    return 1.0 - int(np.count_nonzero(genuine_array < t)) / genuine_array.size


def _det_curve_sorted(genuine: _SortedScores, impostor: _SortedScores
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    merged = np.sort(np.concatenate([genuine.values, impostor.values]), kind="stable")  # two sorted runs
    distinct = merged[np.concatenate([[True], merged[1:] != merged[:-1]])]
    thresholds = np.append(distinct, _above(float(distinct[-1])))
    fmr = (impostor.size - np.searchsorted(impostor.values, thresholds, side="left")) / impostor.size
    fnmr = np.searchsorted(genuine.values, thresholds, side="left") / genuine.size
    return fmr, fnmr, thresholds


def det_curve(genuine: ScoresLike, impostor: ScoresLike, *, higher_is_better: bool = True
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every operating point of the detection error trade-off.

    Args:
        genuine: ``[n_genuine]`` mated scores, finite, at least one.
        impostor: ``[n_impostor]`` non-mated scores, finite, at least one.
        higher_is_better: False for distance-like scores (accepted when score <= threshold).

    Returns:
        ``(fmr, fnmr, thresholds)``, three float64 arrays of length m + 1, where m is the number of
        distinct scores: ``thresholds`` holds the distinct genuine and impostor scores ascending, then the
        next float above the largest; fmr[k] = FMR(thresholds[k]) (non-increasing, ending at 0) and
        fnmr[k] = FNMR(thresholds[k]) (non-decreasing, starting at 0, ending at 1). For distance-like
        scores the thresholds run the other way: the distinct scores descending, then the float below the
        smallest, so that fmr and fnmr run as above.
    """
    function = "det_curve"
    negate = as_orientation(higher_is_better, function)
    genuine_sorted = _SortedScores(as_sorted_scores(genuine, function, "genuine", negate=negate))
    impostor_sorted = _SortedScores(as_sorted_scores(impostor, function, "impostor", negate=negate))
    fmr, fnmr, thresholds = _det_curve_sorted(genuine_sorted, impostor_sorted)
    return fmr, fnmr, np.negative(thresholds, out=thresholds) if negate else thresholds


def iapmr(attack: ScoresLike, threshold: float, *, higher_is_better: bool = True) -> float:
    """Impostor attack presentation match rate: the share of attack presentations accepted.

    An attack presentation is a probe made with a presentation attack instrument, compared with the
    targeted subject's bona fide reference; it is accepted when its score >= threshold.

    Args:
        attack: ``[n_attack]`` scores, finite; may be empty.
        threshold: a real number (infinities allowed).
        higher_is_better: False for distance-like scores (accepted when score <= threshold).

    Returns:
        #{attack >= threshold} / n_attack, float64; NaN when there is no attack score (the rate is
        undefined, not 0).
    """
    function = "iapmr"
    negate = as_orientation(higher_is_better, function)
    attack_array = as_scores(attack, function, "attack", allow_empty=True, negate=negate)
    t = as_threshold(threshold, function)
    if attack_array.size == 0:
        return math.nan
    return int(np.count_nonzero(attack_array >= (-t if negate else t))) / attack_array.size
