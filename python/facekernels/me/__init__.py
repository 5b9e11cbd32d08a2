"""Micro-expression spotting and recognition: BoostingVRME's video-level interval decoder, the MEGC spotting
metrics, recognition F1 and STRS, in NumPy (docs/me.md has the exact algorithm and the rules fixed here).

- ``stitch_windows(window_scores, k)``: a video's frame scores from its overlapping window predictions.
- ``spot_intervals(scores, k_p, p=0.55, strategy=1)``: (onset, offset, apex) intervals from a score track,
  or from a batch of them.
- ``match_intervals``, ``spotting_counts``, ``spotting_metrics``, ``spotting_scores``: MEGC spotting.
- ``recognition_f1``: F1 = 2PR/(P+R) over the matched intervals, with UF1 and UAR.
- ``strs``: spotting F1 x recognition F1.
- ``frame_labels``: the per-frame pseudo-labels used for training.
- ``region_flow_features(frames, landmarks, k)``: the released spotting features, [windows, 36, k]
  (needs OpenCV, the ``[data]`` extra); ``synthetic_face_video`` makes test videos for it.

``python -m facekernels.me evaluate --pred preds.csv --gt gt.csv`` scores CSV files;
``python -m facekernels.me bench`` times the decoder.
"""

from __future__ import annotations

from .decode import Interval, spot_intervals, stitch_windows
from .features import region_flow_features, window_starts
from .labels import frame_labels
from .metrics import (
    RecognitionResult,
    SpottingResult,
    interval_iou,
    match_intervals,
    recognition_f1,
    spotting_counts,
    spotting_metrics,
    spotting_scores,
    strs,
)
from .synthetic import SyntheticVideo, synthetic_face_video

__all__ = [
    "Interval",
    "RecognitionResult",
    "SpottingResult",
    "SyntheticVideo",
    "frame_labels",
    "interval_iou",
    "match_intervals",
    "recognition_f1",
    "region_flow_features",
    "spot_intervals",
    "spotting_counts",
    "spotting_metrics",
    "spotting_scores",
    "stitch_windows",
    "strs",
    "synthetic_face_video",
    "window_starts",
]
