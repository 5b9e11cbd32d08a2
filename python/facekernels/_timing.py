"""The one timing loop of facekernels' benchmarks (the op harness, ``me bench``, ``metrics bench``): wall
time by ``time.perf_counter`` with the device synchronised inside the timed region, and the median and
IQR of the samples."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch


def synchronize(device: str) -> None:
    """Wait for the device's queued work (a no-op on the CPU)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_once(fn: Callable[[], object], device: str = "cpu", calls: int = 1) -> float:
    """Seconds per call of ``calls`` back-to-back calls of ``fn``, the device synchronised at both ends."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / calls


def time_repeats(fn: Callable[[], object], repeats: int, device: str = "cpu") -> list[float]:
    """``repeats`` samples of one call each (warm up first: the first sample is not dropped)."""
    return [time_once(fn, device) for _ in range(repeats)]


def summarize(times: list[float]) -> dict:
    """Median, interquartile range, min and max (seconds) and the number of samples."""
    quartiles = statistics.quantiles(times, n=4) if len(times) >= 2 else [times[0]] * 3
    return {"median_s": statistics.median(times), "iqr_s": quartiles[2] - quartiles[0], "min_s": min(times),
            "max_s": max(times), "samples": len(times)}
