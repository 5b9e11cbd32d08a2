"""`python -m facekernels {bench,me,metrics,info} ...` (see facekernels/cli.py)."""

from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
