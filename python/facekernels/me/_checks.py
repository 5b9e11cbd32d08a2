"""Argument checks shared by facekernels.me: every error names the function, the argument, what was expected
and what came."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np


def to_numpy(value: Any, func: str, arg: str) -> np.ndarray:
    """`value` as a NumPy array; torch tensors are detached and moved to the CPU without importing torch."""
    if hasattr(value, "detach") and hasattr(value, "cpu") and hasattr(value, "numpy"):
        value = value.detach().cpu().numpy()
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as error:  # ragged nested lists, unconvertible objects
        raise ValueError(f"{func}: {arg} could not be read as an array ({error})") from None


def check_real_dtype(array: np.ndarray, func: str, arg: str) -> None:
    """Bool, integer or floating dtypes of at most 64 bits (a long double would be rounded silently)."""
    kind = array.dtype.kind
    if kind not in "biuf" or (kind == "f" and array.dtype.itemsize > 8):
        raise TypeError(
            f"{func}: {arg} must hold real numbers (bool, integer or float of at most 64 bits), "
            f"got dtype {array.dtype}"
        )


def check_int(value: Any, func: str, arg: str, minimum: int | None = None) -> int:
    """A Python or NumPy integer (not a bool), at least `minimum`; returned as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{func}: {arg} must be an integer, got {type(value).__name__} {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ValueError(f"{func}: {arg} must be >= {minimum}, got {value}")
    return value


def check_real(value: Any, func: str, arg: str, low: float | None = None, high: float | None = None) -> float:
    """A finite real number (not a bool) in [low, high]; returned as a Python float (exact for float32/64)."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{func}: {arg} must be a real number, got {type(value).__name__} {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{func}: {arg} must be finite, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{func}: {arg} must lie in [{low}, {high}], got {value}")
    return value


def frame_index(value: Any, func: str, arg: str) -> int:
    """A frame index: an integer, or an integral float (CSV readers give 12.0); returned as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{func}: {arg} must be an integer frame index, got {type(value).__name__} {value!r}")
    if isinstance(value, numbers.Integral):
        return int(value)
    if not math.isfinite(value) or not float(value).is_integer():
        raise ValueError(f"{func}: {arg} must be an integer frame index, got {value!r}")
    return int(value)


def intervals_array(intervals: Any, func: str, arg: str) -> np.ndarray:
    """Intervals as an int64 array [m, 2] of (onset, offset), frame-inclusive.

    Accepts a sequence of (onset, offset) or (onset, offset, apex) tuples, or an array [m, 2] / [m, 3]; the
    apex, when given, is read but not used. Raises for offset < onset.
    """
    if isinstance(intervals, np.ndarray) or (hasattr(intervals, "detach") and hasattr(intervals, "numpy")):
        array = to_numpy(intervals, func, arg)
        if array.size == 0:
            return np.zeros((0, 2), dtype=np.int64)
        if array.ndim != 2 or array.shape[1] not in (2, 3):
            raise ValueError(
                f"{func}: {arg} must be an array [m, 2] of (onset, offset) or [m, 3] of "
                f"(onset, offset, apex), got shape {tuple(array.shape)}"
            )
        rows = array.tolist()
    else:
        try:
            rows = list(intervals)
        except TypeError:
            raise TypeError(
                f"{func}: {arg} must be a sequence of (onset, offset[, apex]) tuples, "
                f"got {type(intervals).__name__}"
            ) from None
    out = np.empty((len(rows), 2), dtype=np.int64)
    for i, row in enumerate(rows):
        try:
            size = len(row)
        except TypeError:
            raise TypeError(
                f"{func}: {arg}[{i}] must be an (onset, offset[, apex]) tuple, "
                f"got {type(row).__name__} {row!r}"
            ) from None
        if size not in (2, 3):
            raise ValueError(
                f"{func}: {arg}[{i}] must have 2 or 3 entries (onset, offset[, apex]), got {size}"
            )
        onset = frame_index(row[0], func, f"{arg}[{i}] onset")
        offset = frame_index(row[1], func, f"{arg}[{i}] offset")
        if size == 3:
            frame_index(row[2], func, f"{arg}[{i}] apex")
        if offset < onset:
            raise ValueError(f"{func}: {arg}[{i}] has offset {offset} < onset {onset}")
        out[i] = onset, offset
    return out
