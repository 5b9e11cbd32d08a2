"""``python -m facekernels <command>``, the one command line of facekernels:

- ``bench``: time the ops against their plain-PyTorch peers (facekernels/bench);
- ``me evaluate | bench``: MEGC scores of interval CSV files, the spotting decoder's timing (facekernels/me);
- ``metrics vuln | bench``: the vulnerability protocol on score files, its timing (facekernels/metrics);
- ``info``: how the native extension was built.

Every command that writes a result takes ``--json PATH`` (``-`` for standard output). Each area declares
its own arguments (``add_parser``) and keeps its logic in library modules; ``python -m facekernels.me`` and
``python -m facekernels.metrics`` are aliases of the ``me`` and ``metrics`` commands.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from typing import Any


def command_group(commands: argparse._SubParsersAction, name: str, description: str
                  ) -> argparse._SubParsersAction:
    """A command with sub-commands of its own (``me evaluate``, ``metrics vuln``): returns where to add them."""
    group = commands.add_parser(name, help=description[0].lower() + description[1:].rstrip("."),
                                description=description)
    return group.add_subparsers(dest=f"{name}_command", required=True)


def emit(result: Any, text: Callable[[Any], str], json_path: str | os.PathLike | None) -> None:
    """Print ``text(result)``, and with ``--json PATH`` write ``result`` as JSON there (``-``: to stdout, in
    place of the text)."""
    from ._json import write_json

    if json_path is None or str(json_path) != "-":
        print(text(result))
    if json_path is not None:
        write_json(result, json_path)


def _info(args: argparse.Namespace) -> int:
    import json

    import facekernels

    emit(facekernels.build_info(), lambda info: json.dumps(info, indent=1), args.json)
    return 0


def build_parser() -> argparse.ArgumentParser:
    from .bench import cli as bench_cli
    from .me import cli as me_cli
    from .metrics import cli as metrics_cli

    parser = argparse.ArgumentParser(prog="python -m facekernels",
                                     description="facekernels: benchmarks, micro-expression spotting and "
                                     "verification metrics from the command line.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="{bench,me,metrics,info}")
    bench_cli.add_parser(commands)
    me_cli.add_parser(commands)
    metrics_cli.add_parser(commands)
    info = commands.add_parser("info", help="print how the native extension was built (JSON)")
    info.add_argument("--json", metavar="PATH", help="also write it to PATH")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(sys.argv[1:] if argv is None else argv)
    return args.run(args)
