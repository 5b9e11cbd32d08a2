"""`python -m facekernels.metrics <command>`.

- ``vuln --dev dev.csv --eval eval.csv [--fmr 1e-3] [--plot det.png] [--json report.json]``: the NIR-VIS
  vulnerability protocol (:func:`facekernels.metrics.vulnerability_report`) on score files.
- ``bench [--impostor N] [--genuine N] [--attack N] [--repeats R]``: time vulnerability_report on synthetic
  scores (10^7 impostor and 10^6 genuine scores per set by default).

Score files are CSV with a header naming at least the columns ``score`` and ``label`` (any order, other
columns ignored); label is ``genuine``, ``impostor``, ``attack`` or ``attack:<species>`` (case-insensitive
keyword, species kept as written). Development files may hold attack rows: they are ignored, as the
threshold is fixed on licit scores only.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

PROG = "python -m facekernels.metrics"
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
    scores = ScoreFile()
    try:
        handle = open(path, newline="", encoding="utf-8")  # noqa: SIM115 (closed by the with below)
    except OSError as error:
        raise ScoreFileError(f"cannot read {path}: {error.strerror or error}") from None
    with handle:
        reader = csv.reader(handle)
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


def _nan_to_none(value: object) -> object:
    """NaN (an undefined rate, e.g. IAPMR without attacks) as JSON null: strict JSON has no NaN."""
    if isinstance(value, dict):
        return {key: _nan_to_none(item) for key, item in value.items()}
    return None if isinstance(value, float) and math.isnan(value) else value


def _vuln(args: argparse.Namespace) -> int:
    from . import vulnerability_report

    dev, evaluation = read_score_file(args.dev), read_score_file(args.eval)
    for name, scores in (("--dev", dev), ("--eval", evaluation)):
        for kind in ("genuine", "impostor"):
            if not getattr(scores, kind):
                raise ScoreFileError(f"{name} file has no {kind} rows (label {kind}); both genuine and "
                                     "impostor scores are needed")
    report = vulnerability_report(
        np.asarray(dev.genuine), np.asarray(dev.impostor), np.asarray(evaluation.genuine),
        np.asarray(evaluation.impostor), np.asarray(evaluation.attack), fmr=args.fmr,
        attack_species=evaluation.species(), plot=args.plot, verbose=True)
    if args.json is not None:
        with open(args.json, "w", encoding="utf-8") as handle:
            json.dump(_nan_to_none(report), handle, indent=1)
    return 0


def synthetic_scores(impostor: int, genuine: int, attack: int, species: int, seed: int
                     ) -> dict[str, np.ndarray]:
    """Development and evaluation score sets shaped like a face verification run (similarities in
    roughly [-0.4, 1]), with attack scores between the two populations and ``species`` species."""
    rng = np.random.default_rng(seed)
    names = np.array([f"species_{k}" for k in range(species)])
    return {
        "dev_genuine": rng.normal(0.65, 0.12, genuine),
        "dev_impostor": rng.normal(0.05, 0.10, impostor),
        "eval_genuine": rng.normal(0.63, 0.13, genuine),
        "eval_impostor": rng.normal(0.06, 0.10, impostor),
        "eval_attack": rng.normal(0.45, 0.15, attack),
        "attack_species": names[rng.integers(0, species, attack)],
    }


def _bench(args: argparse.Namespace) -> int:
    from . import format_report, vulnerability_report

    data = synthetic_scores(args.impostor, args.genuine, args.attack, args.species, args.seed)

    def run() -> dict:
        return vulnerability_report(data["dev_genuine"], data["dev_impostor"], data["eval_genuine"],
                                    data["eval_impostor"], data["eval_attack"], fmr=args.fmr,
                                    attack_species=data["attack_species"])

    report = run()  # warm-up (page faults of the first sorts' buffers), and the table printed below
    times = []
    for _ in range(args.repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    print(format_report(report))
    print()
    print(f"vulnerability_report: dev and eval sets of {args.impostor:,} impostor + {args.genuine:,} genuine "
          f"scores each, {args.attack:,} attack scores ({args.species} species), fmr {args.fmr:g}")
    quartiles = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    print(f"  median {statistics.median(times):.3f} s, IQR {quartiles[2] - quartiles[0]:.3f} s, "
          f"min {min(times):.3f} s, max {max(times):.3f} s over {len(times)} runs (after 1 warm-up)")
    print(f"  numpy {np.__version__}, python {platform.python_version()}, {os.cpu_count()} CPUs, "
          f"{platform.processor() or platform.machine()}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Face verification and presentation attack "
                                     "vulnerability metrics (see docs/metrics.md).")
    commands = parser.add_subparsers(dest="command", required=True)
    vuln = commands.add_parser(
        "vuln", help="the vulnerability protocol on score files",
        description="Fix the threshold at --fmr on the development set's licit scores, then report FMR, "
        "FNMR, IAPMR (overall and per species), EER and TAR@FAR on the evaluation set. Files: CSV with "
        "columns score,label; label genuine, impostor, attack or attack:<species>.")
    vuln.add_argument("--dev", required=True, type=Path, help="development scores (CSV)")
    vuln.add_argument("--eval", required=True, type=Path, help="evaluation scores (CSV)")
    vuln.add_argument("--fmr", type=float, default=1e-3, help="target FMR fixing the threshold (default 1e-3)")
    vuln.add_argument("--plot", type=Path, default=None, help="write a DET plot (PNG) of the evaluation set")
    vuln.add_argument("--json", type=Path, default=None, help="also write the report as JSON")
    bench = commands.add_parser(
        "bench", help="time vulnerability_report on synthetic scores",
        description="Time vulnerability_report (threshold on dev, then FMR, FNMR, IAPMR per species, EER, "
        "TAR@FAR on eval) on synthetic normal scores: one warm-up run, then --repeats timed runs; prints "
        "the report and the median, IQR, min and max.")
    bench.add_argument("--impostor", type=int, default=10_000_000, help="impostor scores per set (10^7)")
    bench.add_argument("--genuine", type=int, default=1_000_000, help="genuine scores per set (10^6)")
    bench.add_argument("--attack", type=int, default=1_000_000, help="attack scores (10^6)")
    bench.add_argument("--species", type=int, default=3, help="attack species (3)")
    bench.add_argument("--fmr", type=float, default=1e-3, help="target FMR (1e-3)")
    bench.add_argument("--repeats", type=int, default=5, help="timed runs (5)")
    bench.add_argument("--seed", type=int, default=0, help="random seed (0)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        for name in ("impostor", "genuine", "species", "repeats"):
            if getattr(args, name) < 1:
                print(f"{PROG} bench: --{name} must be at least 1, got {getattr(args, name)}", file=sys.stderr)
                return 2
        if args.attack < 0:
            print(f"{PROG} bench: --attack must be at least 0, got {args.attack}", file=sys.stderr)
            return 2
    try:
        return _bench(args) if args.command == "bench" else _vuln(args)
    except (ValueError, TypeError, OSError) as error:  # ScoreFileError is a ValueError
        print(f"{PROG} {args.command}: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
