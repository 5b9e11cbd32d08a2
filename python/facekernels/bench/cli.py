"""`python -m facekernels bench`: time facekernels against its plain-PyTorch peers."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m facekernels bench", description=__doc__)
    p.add_argument("--ops", nargs="*", default=None, help="ops or workload names to run (default: all)")
    p.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="device to run on")
    p.add_argument("--quick", action="store_true", help="fewer repeats, smaller ceilings")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=None, help="samples per candidate (default 25, quick 8)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile'd peers")
    p.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for JSON and PNG results")
    p.add_argument("--list", action="store_true", help="list the workloads and exit")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
    harness.run(workloads, args.device, args.quick, args.out, compile_peers=not args.no_compile,
                repeats=args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
