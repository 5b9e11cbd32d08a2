"""MEGC spotting metrics, recognition F1 over the spotted intervals, and STRS (see docs/me.md)."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from .._checks import check_int, check_real, frame_index, intervals_array


class SpottingResult(NamedTuple):
    """Spotting counts over one video or a dataset, with precision = TP / (TP + FP),
    recall = TP / (TP + FN) and F1 = 2 precision recall / (precision + recall) (each 0.0 when its
    denominator is 0)."""

    tp: int
    fp: int
    fn: int
    precision: float
    recall: float
    f1: float


class RecognitionResult(NamedTuple):
    """Recognition scores over the matched intervals.

    f1 = 2 P R / (P + R) with P and R the unweighted means of the per-class precision and recall (the
    number that enters STRS); uf1 = the mean of the per-class F1; uar = the mean per-class recall over the
    classes with support; classes = the classes that entered the means.
    """

    f1: float
    precision: float
    recall: float
    uf1: float
    uar: float
    classes: tuple


def interval_iou(a: tuple[int, int], b: tuple[int, int]) -> float:
    """MEGC's frame-inclusive IoU of two intervals (onset, offset):

        inter = max(0, min(offsets) - max(onsets) + 1),  IoU = inter / (len(a) + len(b) - inter),
        len(x) = offset - onset + 1.

    An interval with offset = onset - 1 holds no frame (len 0): its IoU with anything is 0.0, also with
    another empty interval (an empty union, defined as 0.0). Each interval may carry a third entry, the
    apex, which is ignored.

    Raises:
        TypeError: an interval that is not a pair (or triple) of integer frame indices.
        ValueError: a reversed interval, offset < onset - 1 (a negative length); a pair of the wrong size;
            a frame index beyond 2**50.
    """
    func = "interval_iou"
    (onset_a, offset_a), (onset_b, offset_b) = (_interval(x, func, name) for x, name in ((a, "a"), (b, "b")))
    inter = max(0, min(offset_a, offset_b) - max(onset_a, onset_b) + 1)
    union = (offset_a - onset_a + 1) + (offset_b - onset_b + 1) - inter
    return inter / union if union else 0.0


def _interval(value: Any, func: str, arg: str) -> tuple[int, int]:
    """(onset, offset) of an (onset, offset[, apex]) interval that may be empty (offset = onset - 1)."""
    try:
        size = len(value)
    except TypeError:
        raise TypeError(f"{func}: {arg} must be an (onset, offset[, apex]) tuple, got {type(value).__name__} "
                        f"{value!r}") from None
    if size not in (2, 3):
        raise ValueError(f"{func}: {arg} must have 2 or 3 entries (onset, offset[, apex]), got {size}")
    onset, offset = frame_index(value[0], func, f"{arg} onset"), frame_index(value[1], func, f"{arg} offset")
    if offset < onset - 1:
        raise ValueError(f"{func}: {arg} is reversed: offset {offset} < onset {onset} - 1 (a frame-inclusive "
                         "interval holds offset - onset + 1 >= 0 frames)")
    return onset, offset


def match_intervals(pred_intervals: Any, gt_intervals: Any, iou_threshold: float = 0.5) -> list[int]:
    """MEGC's matching of one video's predictions to its ground truth.

    Predictions are taken in the given order. Each is compared only with its highest-IoU ground truth
    (frame-inclusive IoU, see ``interval_iou``); on a tie, the first such ground truth in the given list
    (MEGC's evaluation code leaves ties to NumPy's unstable argsort, so the rule is fixed here). It is a
    true positive if that IoU >= iou_threshold and that ground truth is not yet matched, else a false
    positive, also when another, unmatched ground truth overlaps it as well.

    Args:
        pred_intervals, gt_intervals: sequences of (onset, offset) or (onset, offset, apex) tuples of
            integer frame indices (offset inclusive; the apex is ignored), or arrays [m, 2] / [m, 3]; in any
            order, overlapping, repeated, one-frame (offset == onset) and negative frames allowed.
        iou_threshold: real in [0, 1].

    Returns:
        For each prediction, the index of the ground truth it matched, or -1 for a false positive.

    Raises:
        TypeError: intervals that are not sequences of integer frame indices.
        ValueError: offset < onset; a tuple of other than 2 or 3 entries; iou_threshold outside [0, 1].
    """
    func = "match_intervals"
    threshold = check_real(iou_threshold, func, "iou_threshold", 0.0, 1.0)
    return _match(intervals_array(pred_intervals, func, "pred_intervals"),
                  intervals_array(gt_intervals, func, "gt_intervals"), threshold)


def _match(pred: np.ndarray, gt: np.ndarray, threshold: float) -> list[int]:
    if len(gt) == 0:
        return [-1] * len(pred)
    iou = _iou_matrix(pred, gt)
    best = np.argmax(iou, axis=1)  # the first maximum
    matched = np.zeros(len(gt), dtype=bool)
    result = []
    for row, g in enumerate(best.tolist()):
        if iou[row, g] >= threshold and not matched[g]:
            matched[g] = True
            result.append(g)
        else:
            result.append(-1)
    return result


MATCHING_RULES = ("megc", "strs")


def _iou_matrix(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """IoU of every prediction with every ground truth over inclusive frame ranges, [len(pred), len(gt)]."""
    onset_p, offset_p = pred[:, None, 0], pred[:, None, 1]
    onset_g, offset_g = gt[None, :, 0], gt[None, :, 1]
    inter = np.maximum(0, np.minimum(offset_p, offset_g) - np.maximum(onset_p, onset_g) + 1)
    union = (offset_p - onset_p + 1) + (offset_g - onset_g + 1) - inter
    return inter / union  # float64 of exact integers: the same rounding as MEGC's and as Python's


def matched_pairs(pred: np.ndarray, gt: np.ndarray, threshold: float, matching: str) -> list[tuple[int, int]]:
    """The (prediction, ground truth) index pairs credited as true positives of one video.

    ``"megc"``: MEGC's one-to-one rule (``match_intervals``). ``"strs"``: the rule of the STRS reference
    code: every pair with IoU >= threshold, so one prediction may be credited to several ground-truth
    intervals and one ground truth to several predictions; each pair is a true positive.
    """
    if matching == "megc":
        return [(i, g) for i, g in enumerate(_match(pred, gt, threshold)) if g >= 0]
    if len(pred) == 0 or len(gt) == 0:
        return []
    rows, cols = np.nonzero(_iou_matrix(pred, gt) >= threshold)
    return list(zip(rows.tolist(), cols.tolist(), strict=True))


def pair_counts(pairs: list[tuple[int, int]], predictions: int, truths: int) -> tuple[int, int, int]:
    """(TP, FP, FN) from the credited pairs: TP = the pairs, FP = the predictions in no pair, FN = the
    ground truths in no pair (under MEGC's one-to-one rule these are the usual counts)."""
    return len(pairs), predictions - len({i for i, _ in pairs}), truths - len({g for _, g in pairs})


def check_matching(matching: Any, func: str) -> str:
    if matching not in MATCHING_RULES:
        raise ValueError(f"{func}: matching must be one of {MATCHING_RULES}, got {matching!r}")
    return matching


def spotting_counts(
    pred_intervals: Any, gt_intervals: Any, iou_threshold: float = 0.5, matching: str = "megc"
) -> tuple[int, int, int]:
    """(TP, FP, FN) of one video. Under MEGC's rule (``matching="megc"``, see ``match_intervals``): TP =
    matched predictions, FP = the other predictions, FN = len(gt_intervals) - TP. Under the STRS reference
    code's rule (``"strs"``): TP = the (prediction, ground truth) pairs with IoU >= the threshold, FP = the
    predictions in no such pair, FN = the ground truths in none. Empty lists are allowed on either side."""
    func = "spotting_counts"
    threshold = check_real(iou_threshold, func, "iou_threshold", 0.0, 1.0)
    rule = check_matching(matching, func)
    pred = intervals_array(pred_intervals, func, "pred_intervals")
    gt = intervals_array(gt_intervals, func, "gt_intervals")
    return pair_counts(matched_pairs(pred, gt, threshold, rule), len(pred), len(gt))


def spotting_scores(tp: int, fp: int, fn: int) -> SpottingResult:
    """Precision, recall and F1 from summed counts, computed as the published evaluation computes them
    (precision and recall first, then F1 from them); 0.0 where a denominator is 0 (the published code
    divides by zero there).

    Raises:
        TypeError: a count that is not an integer (Python or NumPy; not a bool).
        ValueError: a negative count.
    """
    func = "spotting_scores"
    tp, fp, fn = (check_int(count, func, name, minimum=0) for count, name in ((tp, "tp"), (fp, "fp"), (fn, "fn")))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return SpottingResult(tp, fp, fn, precision, recall, f1)


def spotting_metrics(pred_by_video: Any, gt_by_video: Any, iou_threshold: float = 0.5,
                     matching: str = "megc") -> SpottingResult:
    """MEGC spotting over a dataset: per-video ``spotting_counts`` (under ``matching``) summed, then
    ``spotting_scores``.

    Args:
        pred_by_video, gt_by_video: either two mappings video -> intervals (a video missing on one side has
            no intervals there), or two sequences of per-video interval lists of the same length.
        iou_threshold: real in [0, 1].
        matching: ``"megc"`` (one-to-one) or ``"strs"`` (every pair over the threshold), as in
            ``spotting_counts``.

    Returns:
        SpottingResult(tp, fp, fn, precision, recall, f1).
    """
    func = "spotting_metrics"
    threshold = check_real(iou_threshold, func, "iou_threshold", 0.0, 1.0)
    rule = check_matching(matching, func)
    if isinstance(pred_by_video, Mapping) and isinstance(gt_by_video, Mapping):
        videos = list(dict.fromkeys([*gt_by_video, *pred_by_video]))
        pairs = [(pred_by_video.get(v, ()), gt_by_video.get(v, ()), v) for v in videos]
    elif isinstance(pred_by_video, Mapping) or isinstance(gt_by_video, Mapping):
        raise TypeError(f"{func}: pred_by_video and gt_by_video must both be mappings or both be sequences")
    else:
        preds, gts = list(pred_by_video), list(gt_by_video)
        if len(preds) != len(gts):
            raise ValueError(
                f"{func}: pred_by_video and gt_by_video must list the same videos, "
                f"got {len(preds)} and {len(gts)}"
            )
        pairs = [(p, g, i) for i, (p, g) in enumerate(zip(preds, gts, strict=True))]
    tp = fp = fn = 0
    for pred, gt, video in pairs:
        pred = intervals_array(pred, func, f"pred_by_video[{video!r}]")
        gt = intervals_array(gt, func, f"gt_by_video[{video!r}]")
        counts = pair_counts(matched_pairs(pred, gt, threshold, rule), len(pred), len(gt))
        tp, fp, fn = tp + counts[0], fp + counts[1], fn + counts[2]
    return spotting_scores(tp, fp, fn)


def recognition_f1(true_labels: Sequence[Hashable], pred_labels: Sequence[Hashable],
                   classes: Sequence[Hashable]) -> RecognitionResult:
    """Recognition over the matched (true-positive) intervals, as the published evaluation scores it.

    For each class c in ``classes``, one-vs-rest counts TP_c, FP_c, FN_c over the label pairs, and
        precision_c = TP_c / (TP_c + FP_c),  recall_c = TP_c / (TP_c + FN_c),
        F1_c = 2 TP_c / (2 TP_c + FP_c + FN_c),
    with 0/0 taken as 0. Then P = mean_c precision_c, R = mean_c recall_c and
        f1 = 2 P R / (P + R)      (not the mean of the F1_c: that is uf1),
        uar = the mean of recall_c over the classes with TP_c + FN_c > 0.

    Classes with zero support: a class that occurs in neither list (or is every label of both) is left
    out of all the means, as in the published code, where scikit-learn's confusion matrix for it has one
    cell and the class is skipped. A class that is predicted but never true enters P and R with
    recall 0 and F1_c 0, and is left out of uar (the published printout shows NaN there). Labels outside
    ``classes`` count as "not c" for every c. With no class left, or P + R = 0, the scores are 0.0.

    Args:
        true_labels, pred_labels: equal-length sequences of hashable labels (str or int).
        classes: the distinct classes to score, e.g. ("negative", "positive", "surprise", "others").

    Returns:
        RecognitionResult(f1, precision, recall, uf1, uar, classes).

    Raises:
        TypeError: a label list is not a sequence. ValueError: lengths differ; classes empty or repeated.
    """
    func = "recognition_f1"
    for arg, value in (("true_labels", true_labels), ("pred_labels", pred_labels), ("classes", classes)):
        if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
            raise TypeError(f"{func}: {arg} must be a sequence of labels, got {type(value).__name__}")
    true, pred, names = list(true_labels), list(pred_labels), list(classes)
    if len(true) != len(pred):
        raise ValueError(
            f"{func}: true_labels and pred_labels must have the same length, got {len(true)} and {len(pred)}"
        )
    if not names:
        raise ValueError(f"{func}: classes must name at least one class")
    if len(set(names)) != len(names):
        raise ValueError(f"{func}: classes must be distinct, got {names!r}")
    precision, recall, f1, supported_recall, used = [], [], [], [], []
    for c in names:
        is_true = [t == c for t in true]
        is_pred = [q == c for q in pred]
        if len(set(is_true) | set(is_pred)) < 2:
            continue
        tp = sum(t and q for t, q in zip(is_true, is_pred, strict=True))
        fp = sum(q and not t for t, q in zip(is_true, is_pred, strict=True))
        fn = sum(t and not q for t, q in zip(is_true, is_pred, strict=True))
        used.append(c)
        precision.append(tp / (tp + fp) if tp + fp else 0.0)
        recall.append(tp / (tp + fn) if tp + fn else 0.0)
        f1.append(2 * tp / (2 * tp + fp + fn))
        if tp + fn:
            supported_recall.append(recall[-1])
    if not used:
        return RecognitionResult(0.0, 0.0, 0.0, 0.0, 0.0, ())
    mean_p, mean_r = float(np.mean(precision)), float(np.mean(recall))
    score = 2 * mean_p * mean_r / (mean_p + mean_r) if mean_p + mean_r else 0.0
    uar = float(np.mean(supported_recall)) if supported_recall else 0.0
    return RecognitionResult(score, mean_p, mean_r, float(np.mean(f1)), uar, tuple(used))


def strs(spotting_f1: float, recognition_f1: float) -> float:
    """STRS (spot-then-recognise score) = spotting F1 x recognition F1; both must be reals in [0, 1]."""
    func = "strs"
    return check_real(spotting_f1, func, "spotting_f1", 0.0, 1.0) * check_real(
        recognition_f1, func, "recognition_f1", 0.0, 1.0
    )
