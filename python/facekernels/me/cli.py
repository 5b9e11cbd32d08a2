"""The ``me`` commands of ``python -m facekernels``: ``me evaluate`` (MEGC scores of interval CSV files) and
``me bench`` (the decoder's timing). The logic lives in me/evaluation.py and me/benchmark.py."""

from __future__ import annotations

import argparse
import sys

from ..cli import command_group, emit

PROG = "python -m facekernels me"


def add_parser(commands: argparse._SubParsersAction) -> None:
    sub = command_group(commands, "me", "Micro-expression spotting: MEGC evaluation of interval CSV files, "
                        "and the decoder's timing.")
    ev = sub.add_parser("evaluate", help="MEGC spotting (and recognition, STRS) from CSV files",
                        description="CSV columns: video, onset, offset, apex, emotion; an optional "
                        "dataset column splits the report, an optional subject column keys videos by "
                        "(subject, video) (see docs/me.md).")
    ev.add_argument("--pred", required=True, help="predicted intervals (CSV)")
    ev.add_argument("--gt", required=True, help="ground-truth intervals (CSV)")
    ev.add_argument("--iou", type=float, default=0.5, help="IoU threshold of a true positive (default 0.5)")
    ev.add_argument("--classes", action="append", help="comma-separated emotion classes for recognition, "
                    "each once (default: the distinct ground-truth emotions, sorted)")
    ev.add_argument("--matching", choices=("megc", "strs"), default="megc",
                    help="megc: MEGC's one-to-one matching (default); strs: the STRS reference code's rule, "
                    "every prediction / ground-truth pair with IoU >= --iou is a true positive")
    ev.add_argument("--json", metavar="PATH", help="also write the report as JSON to PATH ('-': stdout, "
                    "instead of the table)")
    ev.set_defaults(run=_evaluate, parser=ev)
    be = sub.add_parser("bench", help="time spot_intervals on a synthetic dataset")
    be.add_argument("--videos", type=int, default=1000)
    be.add_argument("--frames", type=int, default=3000)
    be.add_argument("--k-p", type=int, default=6)
    be.add_argument("--p", type=float, default=0.55)
    be.add_argument("--strategy", type=int, default=1, choices=(0, 1))
    be.add_argument("--repeats", type=int, default=5)
    be.add_argument("--seed", type=int, default=0)
    be.add_argument("--json", metavar="PATH", help="also write the result as JSON to PATH ('-': stdout, "
                    "instead of the text)")
    be.set_defaults(run=_bench, parser=be)


def _evaluate(args: argparse.Namespace) -> int:
    from .evaluation import InputError, evaluate, format_evaluation

    if not 0.0 <= args.iou <= 1.0:
        args.parser.error(f"--iou must lie in [0, 1], got {args.iou}")
    try:
        classes = _classes(args.classes)
        report = evaluate(args.pred, args.gt, args.iou, classes, args.matching)
    except InputError as error:
        print(f"{PROG} evaluate: {error}", file=sys.stderr)
        return 2
    emit(report, format_evaluation, args.json)
    return 0


def _classes(given: list[str] | None) -> list[str] | None:
    """The --classes list: one option, naming at least one class, each once."""
    from .evaluation import InputError

    if given is None:
        return None
    if len(given) > 1:
        raise InputError(f"--classes given {len(given)} times ({' '.join(repr(g) for g in given)}); give the "
                         "classes once, comma-separated")
    classes = [c.strip() for c in given[0].split(",") if c.strip()]
    if not classes:
        raise InputError(f"--classes names no class, got {given[0]!r}")
    repeated = next((c for i, c in enumerate(classes) if c in classes[:i]), None)
    if repeated is not None:
        raise InputError(f"--classes names {repeated!r} more than once, got {given[0]!r}")
    return classes


def _bench(args: argparse.Namespace) -> int:
    from .benchmark import bench_decoder, format_bench

    if args.videos < 1 or args.frames < 1 or args.k_p < 1 or args.repeats < 1:
        args.parser.error("--videos, --frames, --k-p and --repeats must be >= 1")
    result = bench_decoder(args.videos, args.frames, args.k_p, args.p, args.strategy, args.repeats, args.seed)
    emit(result, format_bench, args.json)
    return 0
