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
from .metrics import check_matching, matched_pairs, pair_counts, recognition_f1, spotting_scores, strs

ALL = "all"  # the dataset name when no file has a `dataset` column
REQUIRED = ("video", "onset", "offset")
OPTIONAL = ("apex", "emotion", "dataset", "subject")
# A video's key: (dataset, subject, video), with ALL and "" for a file without those columns.
Key = tuple[str, str, str]
GROUPS = ("dataset", "subject")  # the key columns besides video, in key order


class InputError(Exception):
    """A problem with the CSV files, reported as one line and exit status 2."""


@dataclass
class Video:
    intervals: list[tuple[int, int]] = field(default_factory=list)
    emotions: list[str] = field(default_factory=list)


@dataclass
class Table:
    has_dataset: bool
    has_subject: bool
    has_emotion: bool
    videos: dict[Key, Video]

    def has(self, column: str) -> bool:
        return self.has_dataset if column == "dataset" else self.has_subject


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
    """Read a CSV with columns video, onset, offset (apex, emotion, dataset, subject optional; any other
    column is refused, so a misspelt optional column is not silently dropped).

    Videos are keyed by (dataset, subject, video): equally named videos of different subjects (as in the
    STRS reference's files) stay apart. A row whose onset and offset are both empty declares a video
    without intervals. Rows keep their order
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
    header = ", ".join(columns) or "none"
    missing = [c for c in REQUIRED if c not in columns]
    if missing:
        raise InputError(f"{path}: missing column(s) {', '.join(missing)} (header: {header})")
    unknown = [c for c in columns if c not in REQUIRED + OPTIONAL]
    if unknown:
        raise InputError(f"{path}: unknown column(s) {', '.join(map(repr, unknown))} (header: {header}); the "
                         f"columns are {', '.join(REQUIRED)} (required) and {', '.join(OPTIONAL)} (optional)")
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if repeated:
        raise InputError(f"{path}: column(s) {', '.join(repeated)} given more than once (header: {header})")
    has_dataset, has_subject, has_emotion = "dataset" in columns, "subject" in columns, "emotion" in columns
    videos: dict[Key, Video] = {}
    for raw in reader:
        line = reader.line_num  # the line the row ends on (blank lines are skipped by the reader)
        if None in raw:  # DictReader files the fields past the header under the key None
            raise InputError(f"{path}:{line}: {len(columns) + len(raw[None])} fields, more than the "
                             f"{len(columns)} columns of the header ({', '.join(columns)})")
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items()}
        if not row["video"]:
            raise InputError(f"{path}:{line}: empty video name")
        if has_subject and not row["subject"]:
            raise InputError(f"{path}:{line}: empty subject")
        key = (row.get("dataset") or ALL, row.get("subject", ""), row["video"])
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
    return Table(has_dataset, has_subject, has_emotion, videos)


def _describe(key: Key, columns: Sequence[str]) -> str:
    named = " ".join(f"of {c} {key[GROUPS.index(c)]!r}" for c in columns)
    return f"video {key[2]!r}" + (f" {named}" if named else "")


def _resolve(pred: Table, gt: Table, pred_path: str) -> dict[Key, Video]:
    """Key the predictions like the ground truth. A dataset or subject column present in both files is
    part of the match; where the predictions lack one that the ground truth has, a prediction's video is
    looked up without it and must name one ground-truth video; a column only the predictions have is
    ignored."""
    shared = [c for c in GROUPS if pred.has(c) and gt.has(c)]
    lacking = [c for c in GROUPS if gt.has(c) and not pred.has(c)]

    def project(key: Key) -> tuple:
        return (*(key[GROUPS.index(c)] for c in shared), key[2])

    candidates: dict[tuple, list[Key]] = defaultdict(list)
    for key in gt.videos:
        candidates[project(key)].append(key)
    resolved: dict[Key, Video] = {}
    for key, video in pred.videos.items():
        keys = candidates.get(project(key), [])
        if not keys:
            hint = ("" if shared else "; declare videos without expressions by a ground-truth row with empty "
                    "onset and offset")
            raise InputError(f"{pred_path}: {_describe(key, shared)} has no ground-truth rows{hint}")
        if len(keys) > 1:
            differ = [c for c in lacking if len({k[GROUPS.index(c)] for k in keys}) > 1]
            values = sorted({tuple(k[GROUPS.index(c)] for c in differ) for k in keys})
            shown = [v[0] if len(v) == 1 else v for v in values]
            raise InputError(
                f"{pred_path}: {_describe(key, shared)} has ground truth in several "
                f"{' and '.join(c + 's' for c in differ)} {shown}; add a {' and a '.join(differ)} column to "
                "the predictions"
            )
        if keys[0] in resolved:
            raise InputError(f"{pred_path}: {_describe(key, shared)} is listed under several "
                             f"{' and '.join(c + 's' for c in GROUPS if pred.has(c) and not gt.has(c))}")
        resolved[keys[0]] = video
    return resolved


def evaluate(pred_path: str, gt_path: str, iou: float, classes: Sequence[str] | None,
             matching: str = "megc") -> dict:
    """Spotting counts and scores per dataset and overall; recognition and STRS when both files carry an
    emotion for every interval. ``matching``: ``"megc"`` (one-to-one) or ``"strs"`` (the STRS reference
    code's rule: every prediction / ground-truth pair over the threshold is a true positive, and the
    default classes are the union of both files' emotions, as that code takes them). Raises InputError for
    a file that cannot be read or does not match."""
    rule = check_matching(matching, "evaluate")
    gt = read_intervals(gt_path)
    pred_table = read_intervals(pred_path)
    pred = _resolve(pred_table, gt, pred_path)
    emotions = (
        gt.has_emotion and pred_table.has_emotion
        and all(all(v.emotions) for v in gt.videos.values())
        and all(all(v.emotions) for v in pred.values())
    )
    if emotions and classes is None:
        labelled = [*gt.videos.values(), *(pred.values() if rule == "strs" else ())]
        classes = sorted({e for v in labelled for e in v.emotions})
    datasets = list(dict.fromkeys(key[0] for key in gt.videos))
    counts = {d: [0, 0, 0, 0] for d in datasets}  # tp, fp, fn, videos
    pairs: dict[str, list[tuple[str, str]]] = {d: [] for d in datasets}
    for key, truth in gt.videos.items():
        guess = pred.get(key, Video())
        hits = matched_pairs(np.array(guess.intervals, dtype=np.int64).reshape(-1, 2),
                             np.array(truth.intervals, dtype=np.int64).reshape(-1, 2), iou, rule)
        tp, fp, fn = pair_counts(hits, len(guess.intervals), len(truth.intervals))
        c = counts[key[0]]
        c[0] += tp
        c[1] += fp
        c[2] += fn
        c[3] += 1
        if emotions:
            pairs[key[0]].extend((truth.emotions[g], guess.emotions[i]) for i, g in hits)

    def row(tp: int, fp: int, fn: int, videos: int, labelled: list[tuple[str, str]]) -> dict:
        result = {"videos": videos, **spotting_scores(tp, fp, fn)._asdict()}
        if emotions:
            rec = recognition_f1([t for t, _ in labelled], [q for _, q in labelled], classes)
            result.update(recognition_f1=rec.f1, uf1=rec.uf1, uar=rec.uar, strs=strs(result["f1"], rec.f1))
        return result

    report = {"iou_threshold": iou, "matching": rule, "classes": list(classes) if emotions else None,
              "datasets": {}}
    for d in datasets:
        report["datasets"][d] = row(*counts[d], pairs[d])
    totals = [sum(counts[d][i] for d in datasets) for i in range(4)]
    report["overall"] = row(*totals, [p for d in datasets for p in pairs[d]])
    return report


def format_evaluation(report: dict) -> str:
    rec = report["classes"] is not None
    rule = ("MEGC spotting" if report.get("matching", "megc") == "megc"
            else "spotting, every pair over the threshold (STRS reference rule)")
    lines = [f"{rule}, IoU >= {report['iou_threshold']}"]
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
