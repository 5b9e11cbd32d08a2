"""The NIR-VIS vulnerability protocol: a threshold fixed on licit development scores, then verification and
attack metrics on the evaluation set, as a dict, a printed table and optionally a DET plot."""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from .._checks import LabelsLike, ScoresLike, as_orientation, as_rate, as_scores, as_sorted_scores, as_species
from .verification import _eer_sorted, _SortedScores, _threshold_at_fmr_sorted, _warn_if_swapped

__all__ = ["format_report", "vulnerability_report"]


def vulnerability_report(dev_genuine: ScoresLike, dev_impostor: ScoresLike, eval_genuine: ScoresLike,
                         eval_impostor: ScoresLike, eval_attack: ScoresLike | None, fmr: float = 1e-3,
                         attack_species: LabelsLike | None = None, *, plot: str | os.PathLike | None = None,
                         verbose: bool = False, higher_is_better: bool = True) -> dict[str, Any]:
    """Vulnerability of a verification system to presentation attacks, by the NIR-VIS study's protocol.

    1. On the development set, the licit scores only: t = threshold_at_fmr(dev_impostor, fmr), the
       lowest threshold with FMR_dev(t) <= fmr (the float just above a development impostor score).
    2. On the evaluation set, at that same t: FMR = #{eval_impostor >= t} / n, FNMR = #{eval_genuine < t}
       / n, IAPMR = #{eval_attack >= t} / n overall and per attack species.
    3. Threshold-free evaluation figures: the EER of (eval_genuine, eval_impostor) (see :func:`eer`) and
       TAR@FAR = 1 - FNMR_eval at threshold_at_fmr(eval_impostor, fmr), i.e. at the evaluation set's
       own threshold for the same target (an a-posteriori figure, unlike FNMR at the development t).

    Each array is sorted once and the sorted copies serve every metric (binary searches), so the cost is
    that of the sorts: O(n log n). An evaluation EER above 0.5 (genuine scores mostly below the impostor
    scores) gives a UserWarning, as :func:`eer` does.

    Args:
        dev_genuine, dev_impostor: development mated / non-mated scores, finite, non-empty.
        eval_genuine, eval_impostor: evaluation mated / non-mated scores, finite, non-empty.
        eval_attack: evaluation attack presentation scores (a presentation attack instrument probe
            against the target's bona fide reference), finite; None or empty gives NaN IAPMR.
        fmr: the target FMR fixing the threshold, in (0, 1).
        attack_species: one species label (str or int) per attack score, or None for no breakdown.
        plot: when given, a PNG path for the DET plot of the licit (genuine vs impostor) and attack
            (genuine vs attack) evaluation scores, with the operating points at t marked.
        verbose: print :func:`format_report` of the result.
        higher_is_better: False for distance-like scores (lower = more alike; a comparison or attack is
            then accepted when score <= threshold, and the threshold is the highest meeting the target).

    Returns:
        ``{"fmr_target", "threshold", "higher_is_better", "dev": {"genuine", "impostor", "fmr", "fnmr"}, "eval": {"genuine",
        "impostor", "attack", "fmr", "fnmr", "iapmr", "iapmr_per_species", "attack_per_species", "eer",
        "eer_threshold", "tar_at_far"}, "plot"}``: counts as int, rates and thresholds as float,
        per-species maps keyed by label (sorted), "plot" the PNG path as str or None.
    """
    function = "vulnerability_report"
    target = as_rate(fmr, function, "fmr")
    negate = as_orientation(higher_is_better, function)
    dev_genuine_array = as_scores(dev_genuine, function, "dev_genuine", negate=negate)
    dev_impostor_sorted = _SortedScores(as_sorted_scores(dev_impostor, function, "dev_impostor", negate=negate))
    eval_genuine_sorted = _SortedScores(as_sorted_scores(eval_genuine, function, "eval_genuine", negate=negate))
    eval_impostor_sorted = _SortedScores(as_sorted_scores(eval_impostor, function, "eval_impostor",
                                                          negate=negate))
    attack = as_scores([] if eval_attack is None else eval_attack, function, "eval_attack", allow_empty=True,
                       negate=negate)
    species = None if attack_species is None else as_species(attack_species, attack.size, function)

    # Everything below works on similarities (distance-like scores negated); thresholds are reported in
    # the caller's orientation.
    threshold = _threshold_at_fmr_sorted(dev_impostor_sorted, target)
    accepted_attacks = attack >= threshold
    iapmr_per_species: dict[Any, float] = {}
    attack_per_species: dict[Any, int] = {}
    if species is not None:
        labels, codes = species
        accepted = np.bincount(codes[accepted_attacks], minlength=len(labels))
        totals = np.bincount(codes, minlength=len(labels))
        for label, a, n in zip(labels, accepted, totals):
            iapmr_per_species[label] = int(a) / int(n)
            attack_per_species[label] = int(n)
    eer_value, eer_threshold = _eer_sorted(eval_genuine_sorted, eval_impostor_sorted)
    _warn_if_swapped(eer_value, function, "eval_genuine", "eval_impostor")
    eval_threshold = _threshold_at_fmr_sorted(eval_impostor_sorted, target)
    report: dict[str, Any] = {
        "fmr_target": target,
        "threshold": -threshold if negate else threshold,
        "higher_is_better": not negate,
        "dev": {
            "genuine": int(dev_genuine_array.size),
            "impostor": dev_impostor_sorted.size,
            "fmr": dev_impostor_sorted.rate_at_least(threshold),
            "fnmr": int(np.count_nonzero(dev_genuine_array < threshold)) / dev_genuine_array.size,
        },
        "eval": {
            "genuine": eval_genuine_sorted.size,
            "impostor": eval_impostor_sorted.size,
            "attack": int(attack.size),
            "fmr": eval_impostor_sorted.rate_at_least(threshold),
            "fnmr": eval_genuine_sorted.rate_below(threshold),
            "iapmr": int(np.count_nonzero(accepted_attacks)) / attack.size if attack.size else math.nan,
            "iapmr_per_species": iapmr_per_species,
            "attack_per_species": attack_per_species,
            "eer": eer_value,
            "eer_threshold": -eer_threshold if negate else eer_threshold,
            "tar_at_far": 1.0 - eval_genuine_sorted.rate_below(eval_threshold),
        },
        "plot": None,
    }
    if plot is not None:
        from .det import plot_det

        def given(scores: np.ndarray) -> np.ndarray:  # the caller's orientation again
            return np.negative(scores) if negate else scores

        curves = {"licit: genuine vs zero-effort impostor": (given(eval_genuine_sorted.values),
                                                             given(eval_impostor_sorted.values))}
        if attack.size:
            curves["attack: genuine vs presentation attack"] = (given(eval_genuine_sorted.values), given(attack))
        report["plot"] = str(plot_det(curves, plot, threshold=report["threshold"], higher_is_better=not negate,
                                      title=f"DET, evaluation set (threshold at FMR {target:g} on dev)"))
    if verbose:
        print(format_report(report))
    return report


def _percent(rate: float) -> str:
    return "n/a" if math.isnan(rate) else f"{100 * rate:.4g}%"


def format_report(report: dict[str, Any]) -> str:
    """The result of :func:`vulnerability_report` as a plain-text table (rates in percent)."""
    dev, evaluation = report["dev"], report["eval"]
    accept = "" if report.get("higher_is_better", True) else ", accept score <= t"
    rows = [
        ("threshold (dev, FMR <= " + f"{report['fmr_target']:g}{accept})", f"{report['threshold']:.10g}"),
        (f"dev   FMR  ({dev['impostor']:,} impostor)", _percent(dev["fmr"])),
        (f"dev   FNMR ({dev['genuine']:,} genuine)", _percent(dev["fnmr"])),
        (f"eval  FMR  ({evaluation['impostor']:,} impostor)", _percent(evaluation["fmr"])),
        (f"eval  FNMR ({evaluation['genuine']:,} genuine)", _percent(evaluation["fnmr"])),
        (f"eval  IAPMR ({evaluation['attack']:,} attack)", _percent(evaluation["iapmr"])),
    ]
    for label, rate in evaluation["iapmr_per_species"].items():
        rows.append((f"        {label} ({evaluation['attack_per_species'][label]:,})", _percent(rate)))
    rows += [
        ("eval  EER", f"{_percent(evaluation['eer'])} (threshold {evaluation['eer_threshold']:.10g})"),
        (f"eval  TAR @ FAR {report['fmr_target']:g}", _percent(evaluation["tar_at_far"])),
    ]
    if report.get("plot"):
        rows.append(("DET plot", report["plot"]))
    width = max(len(name) for name, _ in rows)
    title = "Vulnerability report (threshold fixed on the development set, applied to the evaluation set)"
    return "\n".join([title, "-" * len(title)] + [f"{name:<{width}}  {value}" for name, value in rows])
