"""The ``metrics`` commands of ``python -m facekernels``: ``metrics vuln`` (the NIR-VIS vulnerability protocol
on score files, see metrics/io.py for their format) and ``metrics bench`` (vulnerability_report's timing on
synthetic scores, 10^7 impostor and 10^6 genuine scores per set by default)."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable
from pathlib import Path

from ..cli import command_group, emit

PROG = "python -m facekernels metrics"


def add_parser(commands: argparse._SubParsersAction) -> None:
    sub = command_group(commands, "metrics", "Face verification and presentation attack vulnerability "
                        "metrics (see docs/metrics.md).")
    vuln = sub.add_parser(
        "vuln", help="the vulnerability protocol on score files",
        description="Fix the threshold at --fmr on the development set's licit scores, then report FMR, "
        "FNMR, IAPMR (overall and per species), EER and TAR@FAR on the evaluation set. Files: CSV with "
        "columns score,label; label genuine, impostor, attack or attack:<species>.")
    vuln.add_argument("--dev", required=True, type=Path, help="development scores (CSV)")
    vuln.add_argument("--eval", required=True, type=Path, help="evaluation scores (CSV)")
    vuln.add_argument("--fmr", type=float, default=1e-3, help="target FMR fixing the threshold (default 1e-3)")
    vuln.add_argument("--plot", type=Path, default=None, help="write a DET plot (PNG) of the evaluation set")
    vuln.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH ('-': stdout)")
    vuln.add_argument("--higher-is-better", action=argparse.BooleanOptionalAction, default=True,
                      help="scores are similarities, higher = more alike, accepted when score >= threshold "
                      "(the default); --no-higher-is-better for distance-like scores, lower = more alike, "
                      "accepted when score <= threshold (higher_is_better=False in Python)")
    vuln.set_defaults(run=_vuln)
    bench = sub.add_parser(
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
    bench.add_argument("--json", metavar="PATH", help="also write the timings and the report as JSON to PATH "
                       "('-': stdout, instead of the text)")
    bench.set_defaults(run=_bench)


def _vuln(args: argparse.Namespace) -> int:
    from .._json import write_json
    from .io import vulnerability_from_files

    def work() -> None:
        # verbose prints the report as a table, unless the JSON goes to stdout instead
        report = vulnerability_from_files(args.dev, args.eval, args.fmr, args.plot, verbose=args.json != "-",
                                          higher_is_better=args.higher_is_better)
        if args.json is not None:
            write_json(report, args.json)

    return _run("vuln", work)


def _bench(args: argparse.Namespace) -> int:
    from .benchmark import bench_report, format_bench

    for name in ("impostor", "genuine", "species", "repeats"):
        if getattr(args, name) < 1:
            print(f"{PROG} bench: --{name} must be at least 1, got {getattr(args, name)}", file=sys.stderr)
            return 2
    if args.attack < 0:
        print(f"{PROG} bench: --attack must be at least 0, got {args.attack}", file=sys.stderr)
        return 2

    def work() -> None:
        result = bench_report(args.impostor, args.genuine, args.attack, args.species, args.fmr, args.repeats,
                              args.seed)
        emit(result, format_bench, args.json)

    return _run("bench", work)


def _run(command: str, work: Callable[[], None]) -> int:
    """``work()`` and 0, or 2 after printing a bad input (unreadable file, bad --fmr) as one line. Warnings
    (e.g. an EER above 0.5: genuine and impostor labels swapped, or distance-like scores) are printed as
    one line each, ``... <command>: warning: <message>``."""

    def show(message: Warning | str, category: type[Warning], *_: object, **__: object) -> None:
        print(f"{PROG} {command}: warning: {message}", file=sys.stderr)

    with warnings.catch_warnings():
        warnings.simplefilter("default")
        warnings.showwarning = show
        try:
            work()
        except (ValueError, TypeError, OSError) as error:  # ScoreFileError is a ValueError
            print(f"{PROG} {command}: {error}", file=sys.stderr)
            return 2
    return 0
