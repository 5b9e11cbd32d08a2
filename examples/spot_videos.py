"""Spot micro-expressions in synthetic face videos, end to end: region flow features -> METST_SF per-frame
scores and classes -> intervals -> MEGC spotting, recognition and STRS.

    python examples/spot_videos.py [--videos 10] [--test-videos 3] [--frames 300] [--k 30] [--epochs 60]
                                   [--dim 32] [--scorer metst_sf|stand-in] [--workers 1]

Needs OpenCV (``pip install facekernels[data]``). Each video is ``facekernels.me.synthetic_face_video``: a
textured grey face with dlib-68 landmarks and events in which a bright blob on a brow or a mouth corner
rises and comes back; the events are the ground truth, labelled "brow" or "mouth".

The scorer is BoostingVRME's network, ``facekernels.models.METST_SF`` (on our selective_scan op): trained
here for a few epochs on the windows of the first videos (pseudo-labels from ``me.frame_labels``: spot 1 and
the event's class inside each interval, neutral elsewhere; the released loss with balanced class weights,
the neutral one times 6), then run on the held-out videos, whose per-window spotting scores are stitched
(``stitch_windows``), decoded (``spot_intervals``, strategy 1) and scored (``spotting_metrics``,
``recognition_f1``, ``strs``); an interval's class is the non-neutral class of highest mean logit over it.
The default width is 32 so that the example trains in about a minute on 2 CPU threads; ``--dim 128`` is
the released network. Synthetic videos and a few epochs: the numbers show the pipeline runs, not the
method's accuracy (on the defaults: TP 4, FP 3, FN 5, spotting F1 0.50, STRS 0.50, 92 s on 2 threads).

``--scorer stand-in`` replaces the network by the features' per-frame motion magnitude (the class: the
region group, brows or mouth, that moves more over the interval), a baseline with no training.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from facekernels import me
from facekernels.models import METST_SF, metst_sf_loss

CLASSES = ["brow", "mouth", "neutral"]  # neutral last, as the released labels
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


def window_targets(video: me.SyntheticVideo, windows: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-window frame targets [W, k]: spot pseudo-labels and class indices (``me.frame_labels``)."""
    n_frames = video.frames.shape[0]
    spot, labels = me.frame_labels(video.intervals, video.labels, n_frames)
    classes = np.array([CLASSES.index(c) for c in labels])
    starts = np.arange(windows) * (k // 2)
    index = starts[:, None] + np.arange(k)
    return spot[index].astype(np.float32), classes[index]


def train_metst_sf(features: np.ndarray, spot: np.ndarray, classes: np.ndarray, args) -> METST_SF:
    """A few epochs of the released loss on the training windows ([N, 36, k] features, [N, k] targets)."""
    torch.manual_seed(args.seed)
    net = METST_SF(out_channels=len(CLASSES), dim=args.dim).train()
    x = torch.from_numpy(features).unsqueeze(1)
    spot_t, class_t = torch.from_numpy(spot), torch.from_numpy(classes)
    counts = torch.bincount(class_t.flatten(), minlength=len(CLASSES)).clamp(min=1).float()
    weights = counts.sum() / (len(CLASSES) * counts)  # balanced weights ...
    weights[-1] *= 6.0  # ... the neutral class's times 6, as the released training
    one_hot = torch.nn.functional.one_hot(class_t, len(CLASSES)).float()
    optimizer = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    g = torch.Generator().manual_seed(args.seed)
    for epoch in range(args.epochs):
        total = 0.0
        for batch in torch.randperm(len(x), generator=g).split(args.batch):
            optimizer.zero_grad()
            loss = metst_sf_loss(*net(x[batch]), spot_t[batch], one_hot[batch], weights)
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        if epoch == 0 or (epoch + 1) % 10 == 0 or epoch + 1 == args.epochs:
            print(f"epoch {epoch + 1}: loss {total / len(x):.4f}")
    return net.eval()


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10)
    parser.add_argument("--test-videos", type=int, default=3, help="held-out videos (the last ones)")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--k", type=int, default=30,
                        help="window length (even; 30 as SAMM-LV, 50 as CAS(ME)^3)")
    parser.add_argument("--events", type=int, default=3, help="events per video")
    parser.add_argument("--event-length", type=int, default=12)
    parser.add_argument("--head-drift", type=float, default=0.0, help="random-walk pixels per frame")
    parser.add_argument("--scorer", choices=("metst_sf", "stand-in"), default="metst_sf")
    parser.add_argument("--dim", type=int, default=32, help="METST_SF's width (the released network: 128)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=3e-3)
    parser.add_argument("--workers", type=int, default=1, help="threads over windows for the features")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if not 1 <= args.test_videos <= args.videos - (args.scorer == "metst_sf"):
        parser.error("--test-videos must be at least 1 and leave a training video for metst_sf")

    k_p = args.event_length // 2  # BoostingVRME derives k_p from the dataset's mean interval length
    start = time.perf_counter()
    videos, features = [], []
    for v in range(args.videos):
        video = me.synthetic_face_video(args.frames, events=args.events, event_length=args.event_length,
                                        head_drift=args.head_drift, seed=args.seed + v)
        videos.append(video)
        features.append(me.region_flow_features(video.frames, video.landmarks, args.k, workers=args.workers))
    feature_seconds = time.perf_counter() - start
    n_train = args.videos - args.test_videos

    if args.scorer == "metst_sf":
        # features standardised by the training windows' per-feature scale (ours: the synthetic flows are
        # a few pixels, real ones as small; the network's first layer is a convolution without a norm)
        train_x = np.concatenate(features[:n_train])
        scale = train_x.std(axis=(0, 2), keepdims=True) + 1e-6
        targets = [window_targets(videos[v], len(features[v]), args.k) for v in range(n_train)]
        t = time.perf_counter()
        net = train_metst_sf((train_x / scale).astype(np.float32), np.concatenate([s for s, _ in targets]),
                             np.concatenate([c for _, c in targets]), args)
        train_seconds = time.perf_counter() - t

    predictions, truths, true_labels, pred_labels = [], [], [], []
    for v in range(n_train, args.videos):
        video, feats = videos[v], features[v]
        if args.scorer == "metst_sf":
            with torch.no_grad():
                spot, logits = net(torch.from_numpy((feats / scale).astype(np.float32)).unsqueeze(1))
            score_track = me.stitch_windows(spot.numpy(), args.k)
            class_tracks = {c: me.stitch_windows(logits[..., i].numpy(), args.k) for i, c in enumerate(CLASSES[:-1])}
        else:
            tracks = stand_in_scores(feats, args.k)
            score_track = tracks["face"]
            class_tracks = {c: tracks[c] for c in CLASSES[:-1]}
        intervals = me.spot_intervals(score_track, k_p=k_p)
        predictions.append([(onset, offset) for onset, offset, _ in intervals])
        truths.append([tuple(map(int, gt)) for gt in video.intervals])
        # recognition over the true positives: the class of highest mean score over the interval
        for (onset, offset), gt in zip(predictions[-1], me.match_intervals(predictions[-1], truths[-1])):
            if gt >= 0:
                moved = {c: track[max(onset, 0):offset + 1].mean() for c, track in class_tracks.items()}
                true_labels.append(video.labels[gt])
                pred_labels.append(max(moved, key=moved.get))
        print(f"video {v} (held out): {feats.shape[0]} windows; truth {truths[-1]}; predicted {predictions[-1]}")

    spotting = me.spotting_metrics(predictions, truths)
    recognition = me.recognition_f1(true_labels, pred_labels, CLASSES[:-1])
    score = me.strs(spotting.f1, recognition.f1)
    print(f"spotting (MEGC, IoU >= 0.5): TP {spotting.tp} FP {spotting.fp} FN {spotting.fn}, "
          f"F1 {spotting.f1:.3f}")
    print(f"recognition over the true positives: F1 {recognition.f1:.3f}, UAR {recognition.uar:.3f}")
    what = "METST_SF trained here" if args.scorer == "metst_sf" else "stand-in scorer"
    print(f"STRS {score:.3f}   ({what}, synthetic videos: not a result of the method)")
    total = time.perf_counter() - start
    timing = f"features {feature_seconds:.2f} s"
    if args.scorer == "metst_sf":
        timing += f", training {train_seconds:.2f} s"
    print(f"{timing}, total {total:.2f} s ({args.videos} videos, {args.frames} frames each)")
    return {"spotting": spotting, "recognition": recognition, "strs": score}


if __name__ == "__main__":
    main()
