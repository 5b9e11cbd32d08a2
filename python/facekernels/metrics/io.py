"""Score files of the command line (``python -m facekernels metrics vuln``): CSV with a header naming at least
the columns ``score`` and ``label`` (any order, other columns ignored); label is ``genuine``, ``impostor``,
``attack`` or ``attack:<species>`` (case-insensitive keyword, species kept as written). Development files
may hold attack rows: they are ignored, as the threshold is fixed on licit scores only. Files are UTF-8,
with or without a byte order mark.
"""

from __future__ import annotations

import csv
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .._csvfile import not_utf8, open_csv
from .report import vulnerability_report

UNSPECIFIED_SPECIES = "unspecified"


class ScoreFileError(ValueError):
    """A score file that cannot be read: missing, no header, missing columns, bad score or label."""


@dataclass
class ScoreFile:
    genuine: list[float] = field(default_factory=list)
    impostor: list[float] = field(default_factory=list)
    attack: list[float] = field(default_factory=list)
    attack_species: list[str | None] = field(default_factory=list)

    def species(self) -> list[str] | None:
        """Species per attack row, or None when no row names one (then no per-species breakdown)."""
        if all(s is None for s in self.attack_species):
            return None
        return [UNSPECIFIED_SPECIES if s is None else s for s in self.attack_species]


def _label_sink(scores: ScoreFile, label: str, where: str) -> Callable[[float], None]:
    """Where a score with this label goes; raises ScoreFileError for an unknown label."""
    kind, colon, species = label.partition(":")
    kind, species = kind.strip().lower(), species.strip()
    if kind == "genuine" and not colon:
        return scores.genuine.append
    if kind == "impostor" and not colon:
        return scores.impostor.append
    if kind == "attack" and (species or not colon):
        named = species if colon else None

        def add_attack(score: float) -> None:
            scores.attack.append(score)
            scores.attack_species.append(named)

        return add_attack
    raise ScoreFileError(f"{where}: unknown label {label!r} (expected genuine, impostor, attack or "
                         "attack:<species>)")


def read_score_file(path: str | os.PathLike) -> ScoreFile:
    """Read a ``score,label`` CSV; raises ScoreFileError naming the file and line of any problem."""
    path = Path(path)
    try:
        handle = open_csv(path)
    except OSError as error:
        raise ScoreFileError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        try:
            return _read_scores(handle, path)
        except UnicodeDecodeError:
            line, found = not_utf8(path)
            raise ScoreFileError(f"{path}, line {line}: not UTF-8 text ({found}); save the file as UTF-8"
                                 ) from None


def _read_scores(handle: TextIO, path: Path) -> ScoreFile:
    reader = csv.reader(handle)
    try:
        return _read_rows(reader, path)
    except csv.Error as error:  # e.g. a field over csv's size limit
        raise ScoreFileError(f"{path}, line {reader.line_num}: {error}") from None


def _read_rows(reader: Any, path: Path) -> ScoreFile:
    scores = ScoreFile()
    header = next(reader, None)
    if header is None:
        raise ScoreFileError(f"{path}: empty file, expected a header with columns 'score' and 'label'")
    names = [name.strip().lower() for name in header]
    missing = [column for column in ("score", "label") if column not in names]
    if missing:
        raise ScoreFileError(f"{path}: the header must name the columns 'score' and 'label', missing "
                             f"{', '.join(repr(m) for m in missing)}; got {header}")
    score_column, label_column = names.index("score"), names.index("label")
    needed = max(score_column, label_column) + 1
    # One classification per distinct label text: the per-row work is a dict look-up, float() and an
    # append (a few million rows a second would be spent on label parsing otherwise).
    sinks: dict[str, Callable[[float], None]] = {}
    for row in reader:
        try:
            text, label = row[score_column], row[label_column]
        except IndexError:
            if all(not cell.strip() for cell in row):
                continue
            raise ScoreFileError(f"{path}, line {reader.line_num}: expected at least {needed} columns, "
                                 f"got {row}") from None
        sink = sinks.get(label)
        if sink is None:
            if all(not cell.strip() for cell in row):
                continue
            sink = sinks[label] = _label_sink(scores, label, f"{path}, line {reader.line_num}")
        try:
            score = float(text)
        except ValueError:
            raise ScoreFileError(f"{path}, line {reader.line_num}: score {text.strip()!r} is not a "
                                 "number") from None
        if not math.isfinite(score):
            raise ScoreFileError(f"{path}, line {reader.line_num}: score {text.strip()!r} is not finite")
        sink(score)
    return scores


def vulnerability_from_files(dev_path: str | os.PathLike, eval_path: str | os.PathLike, fmr: float = 1e-3,
                             plot: str | os.PathLike | None = None, verbose: bool = False, *,
                             higher_is_better: bool = True) -> dict:
    """:func:`vulnerability_report` on two score files: the threshold fixed at ``fmr`` on the development
    file's licit scores, the rates on the evaluation file's (per species where its attack rows name one).
    Raises ScoreFileError for a file that cannot be read or lacks genuine or impostor rows."""
    dev, evaluation = read_score_file(dev_path), read_score_file(eval_path)
    for name, scores in (("--dev", dev), ("--eval", evaluation)):
        for kind in ("genuine", "impostor"):
            if not getattr(scores, kind):
                raise ScoreFileError(f"{name} file has no {kind} rows (label {kind}); both genuine and "
                                     "impostor scores are needed")
    return vulnerability_report(
        np.asarray(dev.genuine), np.asarray(dev.impostor), np.asarray(evaluation.genuine),
        np.asarray(evaluation.impostor), np.asarray(evaluation.attack), fmr=fmr,
        attack_species=evaluation.species(), plot=plot, verbose=verbose, higher_is_better=higher_is_better)
