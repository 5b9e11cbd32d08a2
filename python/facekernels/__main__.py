"""`python -m facekernels <command>`: `bench` runs the benchmark suite; `info` prints the build info."""

from __future__ import annotations

import json
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print("usage: python -m facekernels {bench,info} [options]\n"
              "  bench  time facekernels against its plain-PyTorch peers (see bench --help)\n"
              "  info   print how the native extension was built")
        return 0
    command, rest = argv[0], argv[1:]
    if command == "bench":
        from .bench.cli import main as bench_main

        return bench_main(rest)
    if command == "info":
        import facekernels

        print(json.dumps(facekernels.build_info(), indent=1))
        return 0
    print(f"python -m facekernels: unknown command {command!r} (expected bench or info)", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
