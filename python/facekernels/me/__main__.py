"""`python -m facekernels.me <command>`: `evaluate` scores predicted intervals against ground truth (MEGC
spotting per dataset and overall, and recognition / STRS when both files carry emotions); `bench` times the
decoder on a synthetic dataset."""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from . import recognition_f1, spot_intervals, spotting_scores, strs
from .metrics import _match

ALL = "all"  # the dataset name when no file has a `dataset` column


class InputError(Exception):
    """A problem with the CSV files, reported as one line and exit status 2."""


@dataclass
class Video:
    intervals: list[tuple[int, int]] = field(default_factory=list)
    emotions: list[str] = field(default_factory=list)


@dataclass
class Table:
    has_dataset: bool
    has_emotion: bool
    videos: dict[tuple[str, str], Video]


def _frame(text: str, path: str, line: int, column: str) -> int:
    try:
        value = float(text)
    except ValueError:
        raise InputError(f"{path}:{line}: {column} must be an integer frame index, got {text!r}") from None
    if not value.is_integer():
        raise InputError(f"{path}:{line}: {column} must be an integer frame index, got {text!r}")
    return int(value)


def read_intervals(path: str) -> Table:
    """Read a CSV with columns video, onset, offset (apex, emotion, dataset optional; others ignored).

    A row whose onset and offset are both empty declares a video without intervals. Rows keep their order
    within a video (MEGC takes predictions in the given order).
    """
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 (closed below)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror}") from None
    with handle:
        reader = csv.DictReader(handle)
        columns = [c.strip() for c in (reader.fieldnames or [])]
        missing = [c for c in ("video", "onset", "offset") if c not in columns]
        if missing:
            header = ", ".join(columns) or "none"
            raise InputError(f"{path}: missing column(s) {', '.join(missing)} (header: {header})")
        has_dataset, has_emotion = "dataset" in columns, "emotion" in columns
        videos: dict[tuple[str, str], Video] = {}
        for line, raw in enumerate(reader, start=2):
            row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
            if not row["video"]:
                raise InputError(f"{path}:{line}: empty video name")
            key = (row.get("dataset") or ALL, row["video"])
            video = videos.setdefault(key, Video())
            onset, offset = row["onset"], row["offset"]
            if not onset and not offset:
                continue
            if not onset or not offset:
                raise InputError(f"{path}:{line}: onset and offset must both be given or both be empty")
            start, end = _frame(onset, path, line, "onset"), _frame(offset, path, line, "offset")
            if end < start:
                raise InputError(f"{path}:{line}: offset {end} < onset {start}")
            video.intervals.append((start, end))
            video.emotions.append(row.get("emotion", ""))
    return Table(has_dataset, has_emotion, videos)


def _resolve(pred: Table, gt: Table, pred_path: str) -> dict[tuple[str, str], Video]:
    """Key the predictions like the ground truth: by (dataset, video) when both files name datasets, else
    by video name, looked up in the ground truth."""
    by_name = defaultdict(list)
    for key in gt.videos:
        by_name[key[1]].append(key)
    resolved: dict[tuple[str, str], Video] = {}
    for (dataset, name), video in pred.videos.items():
        if pred.has_dataset and gt.has_dataset:
            key = (dataset, name)
            if key not in gt.videos:
                raise InputError(
                    f"{pred_path}: video {name!r} of dataset {dataset!r} has no ground-truth rows"
                )
        else:
            keys = by_name.get(name, [])
            if not keys:
                raise InputError(
                    f"{pred_path}: video {name!r} has no ground-truth rows; declare videos without "
                    "expressions by a ground-truth row with empty onset and offset"
                )
            if len(keys) > 1:
                raise InputError(
                    f"{pred_path}: video {name!r} has ground truth in several datasets "
                    f"{[k[0] for k in keys]}; add a dataset column to the predictions"
                )
            key = keys[0]
            if key in resolved:
                raise InputError(f"{pred_path}: video {name!r} is listed under several datasets")
        resolved[key] = video
    return resolved


def evaluate(pred_path: str, gt_path: str, iou: float, classes: Sequence[str] | None) -> dict:
    """Spotting counts and scores per dataset and overall; recognition and STRS when both files carry an
    emotion for every interval."""
    gt = read_intervals(gt_path)
    pred_table = read_intervals(pred_path)
    pred = _resolve(pred_table, gt, pred_path)
    emotions = (
        gt.has_emotion and pred_table.has_emotion
        and all(all(v.emotions) for v in gt.videos.values())
        and all(all(v.emotions) for v in pred.values())
    )
    if emotions and classes is None:
        classes = sorted({e for v in gt.videos.values() for e in v.emotions})
    datasets = list(dict.fromkeys(key[0] for key in gt.videos))
    counts = {d: [0, 0, 0, 0] for d in datasets}  # tp, fp, fn, videos
    pairs: dict[str, list[tuple[str, str]]] = {d: [] for d in datasets}
    for key, truth in gt.videos.items():
        guess = pred.get(key, Video())
        matches = _match(np.array(guess.intervals, dtype=np.int64).reshape(-1, 2),
                         np.array(truth.intervals, dtype=np.int64).reshape(-1, 2), iou)
        hits = [(i, g) for i, g in enumerate(matches) if g >= 0]
        c = counts[key[0]]
        c[0] += len(hits)
        c[1] += len(matches) - len(hits)
        c[2] += len(truth.intervals) - len(hits)
        c[3] += 1
        if emotions:
            pairs[key[0]].extend((truth.emotions[g], guess.emotions[i]) for i, g in hits)

    def row(tp: int, fp: int, fn: int, videos: int, labelled: list[tuple[str, str]]) -> dict:
        result = {"videos": videos, **spotting_scores(tp, fp, fn)._asdict()}
        if emotions:
            rec = recognition_f1([t for t, _ in labelled], [q for _, q in labelled], classes)
            result.update(recognition_f1=rec.f1, uf1=rec.uf1, uar=rec.uar, strs=strs(result["f1"], rec.f1))
        return result

    report = {"iou_threshold": iou, "classes": list(classes) if emotions else None, "datasets": {}}
    for d in datasets:
        report["datasets"][d] = row(*counts[d], pairs[d])
    totals = [sum(counts[d][i] for d in datasets) for i in range(4)]
    report["overall"] = row(*totals, [p for d in datasets for p in pairs[d]])
    return report


def _print_report(report: dict) -> None:
    rec = report["classes"] is not None
    head = f"{'dataset':<16}{'videos':>7}{'TP':>7}{'FP':>7}{'FN':>7}{'precision':>11}{'recall':>9}{'F1':>9}"
    if rec:
        head += f"{'rec_F1':>9}{'UF1':>9}{'UAR':>9}{'STRS':>9}"
    print(f"MEGC spotting, IoU >= {report['iou_threshold']}")
    if rec:
        print(f"recognition over the true positives, classes: {', '.join(report['classes'])}")
    print(head)
    rows = list(report["datasets"].items())
    if len(rows) > 1 or rows[0][0] != ALL:
        rows.append(("overall", report["overall"]))
    for name, r in rows:
        line = (f"{name:<16}{r['videos']:>7}{r['tp']:>7}{r['fp']:>7}{r['fn']:>7}"
                f"{r['precision']:>11.4f}{r['recall']:>9.4f}{r['f1']:>9.4f}")
        if rec:
            line += f"{r['recognition_f1']:>9.4f}{r['uf1']:>9.4f}{r['uar']:>9.4f}{r['strs']:>9.4f}"
        print(line)


def synthetic_tracks(videos: int, frames: int, k_p: int, seed: int) -> np.ndarray:
    """Score tracks like a spotting model's: uniform noise in [0, 0.2) plus 8 raised-cosine bumps per video,
    half-widths k_p .. 4 k_p, heights 0.3 .. 1."""
    rng = np.random.default_rng(seed)
    tracks = rng.random((videos, frames)) * 0.2
    t = np.arange(frames)
    for _ in range(8):
        centre = rng.integers(0, frames, size=(videos, 1))
        half = rng.integers(k_p, 4 * k_p + 1, size=(videos, 1))
        height = rng.uniform(0.3, 1.0, size=(videos, 1))
        phase = np.clip((t[None, :] - centre) / half, -1.0, 1.0)
        tracks += height * 0.5 * (1.0 + np.cos(np.pi * phase))
    return tracks


def bench(videos: int, frames: int, k_p: int, p: float, strategy: int, repeats: int, seed: int) -> dict:
    """Median wall time of spot_intervals on a list of `videos` synthetic tracks of `frames` frames."""
    tracks = list(synthetic_tracks(videos, frames, k_p, seed))
    found = spot_intervals(tracks, k_p, p, strategy)  # warm-up, not timed
    times = []
    for _ in range(repeats):
        begin = time.perf_counter()
        spot_intervals(tracks, k_p, p, strategy)
        times.append(time.perf_counter() - begin)
    return {"videos": videos, "frames": frames, "k_p": k_p, "p": p, "strategy": strategy, "seed": seed,
            "intervals": sum(len(v) for v in found), "times_s": times, "median_s": statistics.median(times)}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m facekernels.me",
        description="Micro-expression spotting: MEGC evaluation of interval CSV files, and the decoder's timing.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    ev = commands.add_parser("evaluate", help="MEGC spotting (and recognition, STRS) from CSV files",
                             description="CSV columns: video, onset, offset, apex, emotion; an optional "
                             "dataset column splits the report (see docs/me.md).")
    ev.add_argument("--pred", required=True, help="predicted intervals (CSV)")
    ev.add_argument("--gt", required=True, help="ground-truth intervals (CSV)")
    ev.add_argument("--iou", type=float, default=0.5, help="IoU threshold of a true positive (default 0.5)")
    ev.add_argument("--classes", help="comma-separated emotion classes for recognition "
                    "(default: the distinct ground-truth emotions, sorted)")
    ev.add_argument("--json", action="store_true", help="print the report as JSON")
    be = commands.add_parser("bench", help="time spot_intervals on a synthetic dataset")
    be.add_argument("--videos", type=int, default=1000)
    be.add_argument("--frames", type=int, default=3000)
    be.add_argument("--k-p", type=int, default=6)
    be.add_argument("--p", type=float, default=0.55)
    be.add_argument("--strategy", type=int, default=1, choices=(0, 1))
    be.add_argument("--repeats", type=int, default=5)
    be.add_argument("--seed", type=int, default=0)
    be.add_argument("--json", action="store_true", help="print the result as JSON")
    args = parser.parse_args(argv)

    if args.command == "evaluate":
        if not 0.0 <= args.iou <= 1.0:
            parser.error(f"--iou must lie in [0, 1], got {args.iou}")
        classes = [c.strip() for c in args.classes.split(",") if c.strip()] if args.classes else None
        try:
            report = evaluate(args.pred, args.gt, args.iou, classes)
        except InputError as error:
            print(f"python -m facekernels.me evaluate: {error}", file=sys.stderr)
            return 2
        if args.json:
            print(json.dumps(report, indent=1))
        else:
            _print_report(report)
        return 0

    if args.videos < 1 or args.frames < 1 or args.k_p < 1 or args.repeats < 1:
        parser.error("--videos, --frames, --k-p and --repeats must be >= 1")
    result = bench(args.videos, args.frames, args.k_p, args.p, args.strategy, args.repeats, args.seed)
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(f"spot_intervals: {result['videos']} videos x {result['frames']} frames, k_p={result['k_p']}, "
              f"p={result['p']}, strategy={result['strategy']}, {result['intervals']} intervals")
        print("runs (s): " + ", ".join(f"{t:.3f}" for t in result["times_s"]))
        per_video_ms = 1e3 * result["median_s"] / result["videos"]
        print(f"median: {result['median_s']:.3f} s ({per_video_ms:.3f} ms per video)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
