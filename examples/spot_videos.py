"""Spot micro-expressions in synthetic face videos, end to end: region flow features -> per-frame scores ->
intervals -> MEGC spotting, recognition and STRS.

    python examples/spot_videos.py [--videos 4] [--frames 300] [--k 30] [--workers 1]

Needs OpenCV (``pip install facekernels[data]``). Each video is ``facekernels.me.synthetic_face_video``: a
textured grey face with dlib-68 landmarks and events in which a bright blob on a brow or a mouth corner
rises and comes back; the events are the ground truth, labelled "brow" or "mouth".

THE SCORER IS A STAND-IN, NOT A MODEL. BoostingVRME feeds the [W, 36, k] features to its trained network
(METST_SF), which predicts a spotting score and class logits per frame of each window. There is no trained
network here, so the per-frame score is the features' motion magnitude (the norm of the 36 values of a
frame), and the class is whichever region group (brows: rows 0-15, mouth: rows 16-27) moves more over the
interval. The pipeline around it is the real one: stitch_windows -> spot_intervals (strategy 1) ->
spotting_metrics, match_intervals, recognition_f1, strs.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from facekernels import me

BROW_ROWS = slice(0, 16)  # summaries 0-7: both brows and the windows round their points
MOUTH_ROWS = slice(16, 28)  # summaries 8-13: the mouth and the windows round its points


def stand_in_scores(features: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """STAND-IN scorer: per-frame motion magnitudes of the whole face, the brows and the mouth, stitched
    from the windows as a model's per-window predictions would be."""
    tracks = {}
    for name, rows in (("face", slice(None)), ("brow", BROW_ROWS), ("mouth", MOUTH_ROWS)):
        per_window = np.sqrt(np.square(features[:, rows]).sum(axis=1))  # [W, k]
        tracks[name] = me.stitch_windows(per_window, k)
    return tracks


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=4)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--k", type=int, default=30,
                        help="window length (even; 30 as SAMM-LV, 50 as CAS(ME)^3)")
    parser.add_argument("--events", type=int, default=3, help="events per video")
    parser.add_argument("--event-length", type=int, default=12)
    parser.add_argument("--head-drift", type=float, default=0.0, help="random-walk pixels per frame")
    parser.add_argument("--workers", type=int, default=1, help="threads over windows for the features")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    k_p = args.event_length // 2  # BoostingVRME derives k_p from the dataset's mean interval length
    predictions, truths, true_labels, pred_labels = [], [], [], []
    start = time.perf_counter()
    feature_seconds = 0.0
    for v in range(args.videos):
        video = me.synthetic_face_video(args.frames, events=args.events, event_length=args.event_length,
                                        head_drift=args.head_drift, seed=args.seed + v)
        t = time.perf_counter()
        features = me.region_flow_features(video.frames, video.landmarks, args.k, workers=args.workers)
        feature_seconds += time.perf_counter() - t
        tracks = stand_in_scores(features, args.k)
        intervals = me.spot_intervals(tracks["face"], k_p=k_p)
        predictions.append([(onset, offset) for onset, offset, _ in intervals])
        truths.append([tuple(map(int, gt)) for gt in video.intervals])
        # recognition over the true positives: the region group that moved more over the interval
        for (onset, offset), gt in zip(predictions[-1], me.match_intervals(predictions[-1], truths[-1])):
            if gt >= 0:
                moved = {name: tracks[name][max(onset, 0):offset + 1].sum() for name in ("brow", "mouth")}
                true_labels.append(video.labels[gt])
                pred_labels.append(max(moved, key=moved.get))
        print(f"video {v}: {features.shape[0]} windows; truth {truths[-1]}; predicted {predictions[-1]}")

    spotting = me.spotting_metrics(predictions, truths)
    recognition = me.recognition_f1(true_labels, pred_labels, ["brow", "mouth"])
    score = me.strs(spotting.f1, recognition.f1)
    print(f"spotting (MEGC, IoU >= 0.5): TP {spotting.tp} FP {spotting.fp} FN {spotting.fn}, "
          f"F1 {spotting.f1:.3f}")
    print(f"recognition over the true positives: F1 {recognition.f1:.3f}, UAR {recognition.uar:.3f}")
    print(f"STRS {score:.3f}   (stand-in scorer, synthetic videos: not a result of the method)")
    total = time.perf_counter() - start
    print(f"features {feature_seconds:.2f} s, total {total:.2f} s "
          f"({args.videos} videos, {args.frames} frames each)")
    return {"spotting": spotting, "recognition": recognition, "strs": score}


if __name__ == "__main__":
    main()
