"""`python -m facekernels.me ...`: the same as `python -m facekernels me ...` (see facekernels/cli.py)."""

import sys

from ..cli import main

if __name__ == "__main__":
    raise SystemExit(main(["me", *sys.argv[1:]]))
