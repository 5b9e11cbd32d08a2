"""`python -m facekernels.metrics ...`: the same as `python -m facekernels metrics ...` (see facekernels/cli.py)."""

import sys

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(["metrics", *sys.argv[1:]]))
