"""Training pseudo-labels from annotated intervals."""

from __future__ import annotations

import numbers
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from .._checks import check_int, intervals_array


def frame_labels(
    intervals: Any, emotions: Sequence[Hashable], n_frames: int, neutral: Hashable = "neutral"
) -> tuple[np.ndarray, np.ndarray]:
    """BoostingVRME's per-frame pseudo-labels of one video.

    For each interval (onset, offset[, apex]), in the given order, frames onset+1 .. offset-1 (both ends
    excluded) get spot label 1 and the interval's class; a later interval overwrites an earlier one where
    they overlap. All other frames get 0 and ``neutral``. Frames at or past n_frames are dropped, as the
    published labelling drops them; an interval with offset - onset < 2 labels no frame.

    Args:
        intervals: sequence of (onset, offset) or (onset, offset, apex) integer frame indices, or an array
            [m, 2] / [m, 3]; 0 <= onset <= offset.
        emotions: one class label per interval (str or int).
        n_frames: integer >= 0, the video's length.
        neutral: the class of unlabelled frames.

    Returns:
        (spot, classes): spot, int64 [n_frames] of 0/1; classes [n_frames], int64 when ``neutral`` and all
        emotions are integers, else an object array holding the given labels.

    Raises:
        TypeError: n_frames not an integer; malformed intervals.
        ValueError: offset < onset; a negative onset (the published code would index from the end);
            len(emotions) != number of intervals; n_frames < 0.
    """
    func = "frame_labels"
    n_frames = check_int(n_frames, func, "n_frames", minimum=0)
    spans = intervals_array(intervals, func, "intervals")
    if isinstance(emotions, (str, bytes)) or not hasattr(emotions, "__len__"):
        raise TypeError(
            f"{func}: emotions must be a sequence with one label per interval, got {type(emotions).__name__}"
        )
    labels = list(emotions)
    if len(labels) != len(spans):
        raise ValueError(
            f"{func}: emotions must have one label per interval ({len(spans)}), got {len(labels)}"
        )
    negative = np.flatnonzero(spans[:, 0] < 0)
    if negative.size:
        i = int(negative[0])
        raise ValueError(f"{func}: intervals[{i}] has a negative onset {int(spans[i, 0])}")
    integral = all(isinstance(x, numbers.Integral) and not isinstance(x, bool) for x in [neutral, *labels])
    spot = np.zeros(n_frames, dtype=np.int64)
    classes = np.full(n_frames, neutral, dtype=np.int64 if integral else object)
    for (onset, offset), label in zip(spans.tolist(), labels, strict=True):
        first, stop = onset + 1, min(offset, n_frames)
        if first < stop:
            spot[first:stop] = 1
            classes[first:stop] = label
    return spot, classes
