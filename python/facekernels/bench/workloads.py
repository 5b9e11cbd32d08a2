"""The benchmark workloads: the paper shapes, declared once, with their FLOPs and minimal bytes.

Each family declares its workloads in its own module, ``workloads_<family>.py`` beside this one, which
exports ``WORKLOADS`` (a list of :class:`Workload`) and optionally ``QUICK`` (the names ``--quick`` runs);
this module discovers them (and sets each workload's ``family``: the chart's panel), so adding a family
adds no line here. A workload builds its inputs and the candidates to time on a device: facekernels and its
plain-PyTorch peers (defined in the family's module); the harness adds the torch.compile'd peers and times
forward and forward+backward.
"""

from __future__ import annotations

import importlib
import pkgutil

from .cases import Case, Workload, module_case  # noqa: F401  (the records, also used from here)

PREFIX = "workloads_"


def _discover() -> tuple[list[Workload], set[str]]:
    """Every ``workloads_<family>`` module of this package, by module name."""
    workloads: list[Workload] = []
    quick: set[str] = set()
    seen: dict[str, str] = {}
    package = importlib.import_module(__package__)
    names = sorted(m.name for m in pkgutil.iter_modules(package.__path__) if m.name.startswith(PREFIX))
    for name in names:
        module = importlib.import_module(f"{__package__}.{name}")
        for w in module.WORKLOADS:
            if w.name in seen:
                raise ValueError(f"benchmark workload {w.name!r} is declared in both {seen[w.name]} and {name}")
            seen[w.name] = name
            w.family = w.family or name[len(PREFIX):]
            workloads.append(w)
        quick.update(getattr(module, "QUICK", ()))
    return workloads, quick


WORKLOADS, QUICK = _discover()


def select(ops: list[str] | None = None, quick: bool = False) -> list[Workload]:
    chosen = [w for w in WORKLOADS if not ops or w.op in ops or w.name in ops]
    if quick:
        chosen = [w for w in chosen if w.name in QUICK]
    return chosen
