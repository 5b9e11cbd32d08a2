"""Timing of the interval decoder on a synthetic dataset (``python -m facekernels me bench``)."""

from __future__ import annotations

import numpy as np

from .._timing import summarize, time_repeats
from .decode import spot_intervals


def synthetic_tracks(videos: int, frames: int, k_p: int, seed: int) -> np.ndarray:
    """Score tracks like a spotting model's: uniform noise in [0, 0.2) plus 8 raised-cosine bumps per video,
    half-widths k_p .. 4 k_p, heights 0.3 .. 1."""
    rng = np.random.default_rng(seed)
    tracks = rng.random((videos, frames)) * 0.2
    t = np.arange(frames)
    for _ in range(8):
        centre = rng.integers(0, frames, size=(videos, 1))
        half = rng.integers(k_p, 4 * k_p + 1, size=(videos, 1))
        height = rng.uniform(0.3, 1.0, size=(videos, 1))
        phase = np.clip((t[None, :] - centre) / half, -1.0, 1.0)
        tracks += height * 0.5 * (1.0 + np.cos(np.pi * phase))
    return tracks


def bench_decoder(videos: int, frames: int, k_p: int, p: float = 0.55, strategy: int = 1, repeats: int = 5,
                  seed: int = 0) -> dict:
    """Wall time of spot_intervals on a list of `videos` synthetic tracks of `frames` frames: one warm-up
    call, then `repeats` timed calls (``times_s``, their median and IQR)."""
    tracks = list(synthetic_tracks(videos, frames, k_p, seed))
    found = spot_intervals(tracks, k_p, p, strategy)  # warm-up, not timed
    times = time_repeats(lambda: spot_intervals(tracks, k_p, p, strategy), repeats)
    stats = summarize(times)
    return {"videos": videos, "frames": frames, "k_p": k_p, "p": p, "strategy": strategy, "seed": seed,
            "intervals": sum(len(v) for v in found), "times_s": times, "median_s": stats["median_s"],
            "iqr_s": stats["iqr_s"]}


def format_bench(result: dict) -> str:
    per_video_ms = 1e3 * result["median_s"] / result["videos"]
    return "\n".join([
        (f"spot_intervals: {result['videos']} videos x {result['frames']} frames, k_p={result['k_p']}, "
        f"p={result['p']}, strategy={result['strategy']}, {result['intervals']} intervals"),
        "runs (s): " + ", ".join(f"{t:.3f}" for t in result["times_s"]),
        f"median: {result['median_s']:.3f} s ({per_video_ms:.3f} ms per video)",
    ])
