"""Presentation attack detection metrics (ISO/IEC 30107-3): APCER per species, BPCER, BPCER at an APCER.

PAD scores say how bona fide a presentation looks: higher is more bona fide, and a presentation is
classified bona fide when score >= threshold (with ``higher_is_better=False``, for scores where lower is
more bona fide, when score <= threshold: the ">= t" below read "<= t", "< t" read "> t").

    APCER_s(t) = #{attack presentations of species s with score >= t} / #{attack presentations of s}
    APCER(t)   = max over species s of APCER_s(t)             (the worst species, as ISO 30107-3 reports)
    BPCER(t)   = #{bona fide presentations with score < t} / #{bona fide presentations}
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._checks import (
    LabelsLike,
    ScoresLike,
    as_orientation,
    as_rate,
    as_scores,
    as_sorted_scores,
    as_species,
    as_threshold,
)
from .verification import _SortedScores, _threshold_at_fmr_sorted

__all__ = ["apcer_bpcer", "bpcer_at_apcer"]


def _species_at_least(attack: np.ndarray, codes: np.ndarray, species_count: int, threshold: float
                      ) -> tuple[np.ndarray, np.ndarray]:
    """Per species: (attack presentations with score >= threshold, all attack presentations)."""
    accepted = np.bincount(codes[attack >= threshold], minlength=species_count)
    return accepted, np.bincount(codes, minlength=species_count)


def apcer_bpcer(attack_scores: ScoresLike, attack_species: LabelsLike | None, bonafide_scores: ScoresLike,
                threshold: float, *, higher_is_better: bool = True) -> tuple[float, dict[Any, float], float]:
    """APCER (worst species and per species) and BPCER at one threshold.

    Args:
        attack_scores: ``[n_attack]`` PAD scores of attack presentations, finite; may be empty.
        attack_species: ``[n_attack]`` the presentation attack instrument species of each (str or int
            labels), or None for a single species labelled ``"all"``.
        bonafide_scores: ``[n_bonafide]`` PAD scores of bona fide presentations, finite, at least one.
        threshold: a real number; score >= threshold is classified bona fide.
        higher_is_better: False for scores where lower is more bona fide (score <= threshold is then
            classified bona fide).

    Returns:
        ``(apcer_max, apcer_per_species, bpcer)``: apcer_per_species maps each species label (sorted) to
        #{its attacks >= threshold} / #{its attacks}; apcer_max is the largest of these; bpcer =
        #{bona fide < threshold} / n_bonafide. With no attack presentation apcer_max is NaN and the
        mapping is empty.
    """
    function = "apcer_bpcer"
    negate = as_orientation(higher_is_better, function)
    attack = as_scores(attack_scores, function, "attack_scores", allow_empty=True, negate=negate)
    labels, codes = as_species(attack_species, attack.size, function)
    bonafide = as_scores(bonafide_scores, function, "bonafide_scores", negate=negate)
    t = as_threshold(threshold, function)
    t = -t if negate else t
    accepted, totals = _species_at_least(attack, codes, len(labels), t)
    per_species = {label: int(a) / int(n) for label, a, n in zip(labels, accepted, totals)}
    apcer_max = max(per_species.values()) if per_species else math.nan
    return apcer_max, per_species, int(np.count_nonzero(bonafide < t)) / bonafide.size


def bpcer_at_apcer(attack_scores: ScoresLike, attack_species: LabelsLike | None,
                   bonafide_scores: ScoresLike, apcer: float = 0.05, *, higher_is_better: bool = True
                   ) -> tuple[float, float]:
    """BPCER at the operating point where the worst species' APCER reaches a target (ISO/IEC 30107-3).

    ``apcer=0.05`` gives BPCER20, ``apcer=0.1`` BPCER10. The threshold is the lowest one with
    APCER_s(t) <= apcer for every species s (i.e. max_s APCER_s(t) <= apcer): per species, the lowest such
    threshold is :func:`threshold_at_fmr` of its attack scores at ``apcer`` (the float just above one of
    them), and t is the largest of these. BPCER only grows with t, so BPCER(t) is the lowest BPCER any
    threshold meeting the target gives.

    Args:
        attack_scores: ``[n_attack]`` PAD scores of attack presentations, finite, at least one.
        attack_species: ``[n_attack]`` species labels (str or int), or None for a single species.
        bonafide_scores: ``[n_bonafide]`` PAD scores of bona fide presentations, finite, at least one.
        apcer: the APCER target, in the open interval (0, 1).
        higher_is_better: False for scores where lower is more bona fide (t is then the highest threshold
            meeting the target, just below an attack score).

    Returns:
        ``(bpcer, threshold)``, float64.
    """
    function = "bpcer_at_apcer"
    negate = as_orientation(higher_is_better, function)
    attack = as_scores(attack_scores, function, "attack_scores", negate=negate)
    labels, codes = as_species(attack_species, attack.size, function)
    bonafide = as_sorted_scores(bonafide_scores, function, "bonafide_scores", negate=negate)
    target = as_rate(apcer, function, "apcer")
    # Group by species (a stable sort of the small-integer codes), then sort each group's scores.
    order = np.argsort(codes, kind="stable")
    bounds = np.cumsum(np.bincount(codes, minlength=len(labels)))[:-1]
    threshold = max(_threshold_at_fmr_sorted(_SortedScores(np.sort(group)), target)
                    for group in np.split(attack[order], bounds))
    bpcer = int(np.searchsorted(bonafide, threshold, side="left")) / bonafide.size
    return bpcer, -threshold if negate else threshold
