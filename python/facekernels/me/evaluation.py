"""MEGC evaluation of interval CSV files (``python -m facekernels me evaluate``): spotting per dataset and
overall, and recognition / STRS when both files carry emotions (docs/me.md states the rules)."""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from .._checks import FRAME_LIMIT, FRAME_RANGE
from .._csvfile import not_utf8, open_csv
from .metrics import _match, recognition_f1, spotting_scores, strs

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
        value = int(text)  # exact for any number of digits
    except ValueError:
        try:
            number = float(text)
        except ValueError:
            number = math.nan
        if not number.is_integer():  # also NaN and infinities
            raise InputError(f"{path}:{line}: {column} must be an integer frame index, got {text!r}") from None
        value = int(number)
    if abs(value) > FRAME_LIMIT:
        raise InputError(f"{path}:{line}: {column} must be a frame index in {FRAME_RANGE}, got {text!r}")
    return value


def read_intervals(path: str) -> Table:
    """Read a CSV with columns video, onset, offset (apex, emotion, dataset optional; others ignored).

    A row whose onset and offset are both empty declares a video without intervals. Rows keep their order
    within a video (MEGC takes predictions in the given order). The file is UTF-8, with or without a byte
    order mark. Raises InputError naming the file and line of any problem.
    """
    try:
        handle = open_csv(path)
    except OSError as error:
        raise InputError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        reader = csv.DictReader(handle)
        try:
            return _read_rows(reader, path)
        except UnicodeDecodeError:
            line, found = not_utf8(path)
            raise InputError(f"{path}:{line}: not UTF-8 text ({found}); save the file as UTF-8") from None
        except csv.Error as error:  # e.g. a field over csv's size limit
            # (DictReader.line_num is updated only after a row was read; its reader's is current)
            raise InputError(f"{path}:{reader.reader.line_num}: {error}") from None


def _read_rows(reader: csv.DictReader, path: str) -> Table:
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in ("video", "onset", "offset") if c not in columns]
    if missing:
        header = ", ".join(columns) or "none"
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (header: {header})")
    has_dataset, has_emotion = "dataset" in columns, "emotion" in columns
    videos: dict[tuple[str, str], Video] = {}
    for raw in reader:
        line = reader.line_num  # the line the row ends on (blank lines are skipped by the reader)
        if None in raw:  # DictReader files the fields past the header under the key None
            raise InputError(f"{path}:{line}: {len(columns) + len(raw[None])} fields, more than the "
                             f"{len(columns)} columns of the header ({', '.join(columns)})")
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
    emotion for every interval. Raises InputError for a file that cannot be read or does not match."""
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


def format_evaluation(report: dict) -> str:
    rec = report["classes"] is not None
    lines = [f"MEGC spotting, IoU >= {report['iou_threshold']}"]
    if rec:
        lines.append(f"recognition over the true positives, classes: {', '.join(report['classes'])}")
    head = f"{'dataset':<16}{'videos':>7}{'TP':>7}{'FP':>7}{'FN':>7}{'precision':>11}{'recall':>9}{'F1':>9}"
    if rec:
        head += f"{'rec_F1':>9}{'UF1':>9}{'UAR':>9}{'STRS':>9}"
    lines.append(head)
    rows = list(report["datasets"].items())
    if len(rows) > 1 or rows[0][0] != ALL:
        rows.append(("overall", report["overall"]))
    for name, r in rows:
        line = (f"{name:<16}{r['videos']:>7}{r['tp']:>7}{r['fp']:>7}{r['fn']:>7}"
                f"{r['precision']:>11.4f}{r['recall']:>9.4f}{r['f1']:>9.4f}")
        if rec:
            line += f"{r['recognition_f1']:>9.4f}{r['uf1']:>9.4f}{r['uar']:>9.4f}{r['strs']:>9.4f}"
        lines.append(line)
    return "\n".join(lines)
