"""Writing results as strict JSON, the one meaning of every command's ``--json PATH``."""

from __future__ import annotations

import json
import math
import os
import sys
from typing import Any


def strict(value: Any) -> Any:
    """``value`` with every float NaN replaced by None (JSON null): strict JSON has no NaN, and an undefined
    rate (e.g. IAPMR without attacks) is one."""
    if isinstance(value, dict):
        return {key: strict(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [strict(item) for item in value]
    return None if isinstance(value, float) and math.isnan(value) else value


def write_json(value: Any, path: str | os.PathLike) -> None:
    """Write ``value`` as indented strict JSON to ``path``; ``-`` writes it to standard output."""
    text = json.dumps(strict(value), indent=1, allow_nan=False)
    if str(path) == "-":
        sys.stdout.write(text + "\n")
        return
    with open(path, "w", encoding="utf-8") as handle:
        handle.write(text + "\n")
