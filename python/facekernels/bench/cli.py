"""The ``bench`` command of ``python -m facekernels``: time facekernels against its plain-PyTorch peers."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch


def add_parser(commands: argparse._SubParsersAction) -> None:
    from .harness import NOISY_IQR_OVER_MEDIAN

    p = commands.add_parser("bench", help="time facekernels against its plain-PyTorch peers",
                            description="Time facekernels against its plain-PyTorch peers (eager and "
                            "torch.compile'd) at the workloads of facekernels/bench/workloads_<family>.py.")
    p.add_argument("--ops", nargs="*", default=None, help="ops or workload names to run (default: all)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device to run on")
    p.add_argument("--quick", action="store_true", help="fewer repeats, smaller ceilings")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=None, help="samples per candidate (default 25, quick 8)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd peers")
    p.add_argument("--noisy", type=float, default=NOISY_IQR_OVER_MEDIAN, metavar="RATIO",
                   help="flag a candidate's timing NOISY (table, JSON, chart) when the IQR of its samples "
                   "exceeds RATIO x their median (default %(default)s)")
    p.add_argument("--out", type=Path, default=Path("bench/results"),
                   help="folder for the dated and latest-<device> JSON and PNG results (default bench/results)")
    p.add_argument("--json", metavar="PATH", help="also write the results as JSON to PATH ('-': stdout)")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from .._json import write_json
    from . import harness
    from .workloads import WORKLOADS, select

    if args.list:
        for w in WORKLOADS:
            print(f"{w.op:<15} {w.name:<18} {w.description}")
        return 0
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("facekernels bench: --device cuda but torch.cuda.is_available() is False")
    if args.threads:
        torch.set_num_threads(args.threads)
    workloads = select(args.ops, args.quick)
    if not workloads:
        raise SystemExit(f"facekernels bench: no workload matches --ops {args.ops}; see --list")
    if not args.noisy > 0:
        raise SystemExit(f"facekernels bench: --noisy must be a ratio > 0, got {args.noisy}")
    result = harness.run(workloads, args.device, args.quick, args.out, compile_peers=not args.no_compile,
                         repeats=args.repeats, noisy_threshold=args.noisy)
    if args.json is not None:
        write_json(result, args.json)
    return 0


def main(argv: list[str] | None = None) -> int:
    """``facekernels-bench ...``: the same as ``python -m facekernels bench ...``."""
    from ..cli import main as facekernels_main

    return facekernels_main(["bench", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    raise SystemExit(main())
