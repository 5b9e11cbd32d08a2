"""Timing of vulnerability_report on synthetic scores (``python -m facekernels metrics bench``)."""

from __future__ import annotations

import os
import platform

import numpy as np

from .._timing import summarize, time_repeats
from .report import format_report, vulnerability_report


def synthetic_scores(impostor: int, genuine: int, attack: int, species: int, seed: int
                     ) -> dict[str, np.ndarray]:
    """Development and evaluation score sets shaped like a face verification run (similarities in
    roughly [-0.4, 1]), with attack scores between the two populations and ``species`` species."""
    rng = np.random.default_rng(seed)
    names = np.array([f"species_{k}" for k in range(species)])
    return {
        "dev_genuine": rng.normal(0.65, 0.12, genuine),
        "dev_impostor": rng.normal(0.05, 0.10, impostor),
        "eval_genuine": rng.normal(0.63, 0.13, genuine),
        "eval_impostor": rng.normal(0.06, 0.10, impostor),
        "eval_attack": rng.normal(0.45, 0.15, attack),
        "attack_species": names[rng.integers(0, species, attack)],
    }


def bench_report(impostor: int = 10_000_000, genuine: int = 1_000_000, attack: int = 1_000_000,
                 species: int = 3, fmr: float = 1e-3, repeats: int = 5, seed: int = 0) -> dict:
    """Wall time of vulnerability_report on :func:`synthetic_scores`: one warm-up run (page faults of the
    first sorts' buffers; its report is returned), then ``repeats`` timed runs."""
    data = synthetic_scores(impostor, genuine, attack, species, seed)

    def run() -> dict:
        return vulnerability_report(data["dev_genuine"], data["dev_impostor"], data["eval_genuine"],
                                    data["eval_impostor"], data["eval_attack"], fmr=fmr,
                                    attack_species=data["attack_species"])

    report = run()
    times = time_repeats(run, repeats)
    return {"impostor": impostor, "genuine": genuine, "attack": attack, "species": species, "fmr": fmr,
            "seed": seed, "report": report, "times_s": times, **summarize(times),
            "numpy": np.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
            "cpu": platform.processor() or platform.machine()}


def format_bench(result: dict) -> str:
    return "\n".join([
        format_report(result["report"]),
        "",
        (f"vulnerability_report: dev and eval sets of {result['impostor']:,} impostor + {result['genuine']:,} "
        f"genuine scores each, {result['attack']:,} attack scores ({result['species']} species), "
        f"fmr {result['fmr']:g}"),
        (f"  median {result['median_s']:.3f} s, IQR {result['iqr_s']:.3f} s, min {result['min_s']:.3f} s, "
        f"max {result['max_s']:.3f} s over {result['samples']} runs (after 1 warm-up)"),
        f"  numpy {result['numpy']}, python {result['python']}, {result['cpus']} CPUs, {result['cpu']}",
    ])
