"""Argument conversion and checks shared by facekernels.me and facekernels.metrics (and any non-kernel
Python API): arrays from NumPy, Python sequences or torch tensors, real scalars, integers, frame
intervals, scores, thresholds, rates and species labels.

Every error names the public function and the argument, says what was expected and what came, e.g.
``eer: impostor must hold at least one score, got an empty array``.
"""

from __future__ import annotations

import math
import numbers
from typing import Any, Union

import numpy as np
import torch

# What a score array may be given as: a NumPy array, a Python sequence, or a torch tensor (any device).
ScoresLike = Union[np.ndarray, torch.Tensor, "list[float]", "tuple[float, ...]"]
LabelsLike = Union[np.ndarray, torch.Tensor, "list[Any]", "tuple[Any, ...]"]

# ---- arrays and scalars ---------------------------------------------------------------------------------


def to_numpy(value: Any, func: str, arg: str, *, tensor_dtype: torch.dtype | None = None,
             unreadable: str = "could not be read as an array ({error})") -> np.ndarray:
    """``value`` as a NumPy array: a torch tensor (any device) detached and copied to the CPU (converted to
    ``tensor_dtype`` first when given), anything else through ``np.asarray``. What NumPy cannot read
    (ragged nested sequences, odd objects) raises ValueError ``"{func}: {arg} " + unreadable``."""
    if isinstance(value, torch.Tensor):
        value = value.detach()
        return (value.cpu() if tensor_dtype is None else value.to(device="cpu", dtype=tensor_dtype)).numpy()
    try:
        return np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValueError(f"{func}: {arg} " + unreadable.format(error=error)) from None


def as_real(value: Any, func: str, arg: str, expected: str = "a real number") -> float:
    """A real scalar as a Python float (exact for float32/64): a Python or NumPy real number, or a 0-d
    array or tensor of a real dtype; bools are not numbers here. Raises TypeError naming ``expected``."""
    if isinstance(value, torch.Tensor):
        real = value.dtype.is_floating_point or (value.dtype != torch.bool and not value.is_complex())
        if value.ndim != 0 or not real:
            raise TypeError(f"{func}: {arg} must be {expected}, got a tensor of shape "
                            f"{tuple(value.shape)} and dtype {value.dtype}")
        return float(value.item())
    if isinstance(value, np.ndarray):
        if value.ndim != 0 or value.dtype.kind not in "iuf":
            raise TypeError(f"{func}: {arg} must be {expected}, got an array of shape "
                            f"{value.shape} and dtype {value.dtype}")
        return float(value.item())
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{func}: {arg} must be {expected}, got {type(value).__name__} {value!r}")
    return float(value)


def check_real(value: Any, func: str, arg: str, low: float | None = None, high: float | None = None) -> float:
    """A finite real number (see :func:`as_real`) in [low, high]; returned as a Python float."""
    value = as_real(value, func, arg)
    if not math.isfinite(value):
        raise ValueError(f"{func}: {arg} must be finite, got {value}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{func}: {arg} must lie in [{low}, {high}], got {value}")
    return value


# ---- integers and frame intervals (facekernels.me) ----------------------------------------------------


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


# Frame indices lie in [-FRAME_LIMIT, FRAME_LIMIT], so interval lengths and the unions of two intervals stay
# below 2**53: exact in int64 and in float64, and an IoU computed from them is the correctly rounded one.
FRAME_LIMIT = 2**50
FRAME_RANGE = "[-2**50, 2**50]"


def frame_index(value: Any, func: str, arg: str) -> int:
    """A frame index: an integer, or an integral float (CSV readers give 12.0), of magnitude at most
    FRAME_LIMIT; returned as a Python int."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"{func}: {arg} must be an integer frame index, got {type(value).__name__} {value!r}")
    if not isinstance(value, numbers.Integral) and (not math.isfinite(value) or not float(value).is_integer()):
        raise ValueError(f"{func}: {arg} must be an integer frame index, got {value!r}")
    index = int(value)
    if abs(index) > FRAME_LIMIT:
        raise ValueError(f"{func}: {arg} must be a frame index in {FRAME_RANGE}, got {value!r}")
    return index


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


# ---- scores, thresholds, rates, species (facekernels.metrics) ------------------------------------------


def _score_array(values: Any, function: str, argument: str) -> np.ndarray:
    if isinstance(values, torch.Tensor) and (values.dtype == torch.bool or values.is_complex()):
        raise TypeError(f"{function}: {argument} must hold real numbers, got a tensor of {values.dtype}")
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{function}: {argument} must be an array of scores, got {type(values).__name__}")
    if values is None:
        raise TypeError(f"{function}: {argument} must be an array of scores, got None")
    return to_numpy(values, function, argument, tensor_dtype=torch.float64,
                    unreadable="must be a 1-D array of scores, got {error}")


def as_scores(values: Any, function: str, argument: str, *, allow_empty: bool = False,
              check_finite: bool = True, negate: bool = False) -> np.ndarray:
    """``values`` as a 1-D float64 array (a view where no conversion is needed), checked.

    Raises TypeError for non-numeric data (bool, complex, strings, objects) and ValueError for a shape
    other than 1-D, an empty array (unless ``allow_empty``) and, with ``check_finite``, NaN or infinite
    scores. Callers that sort first pass ``check_finite=False`` and use :func:`as_sorted_scores`.
    With ``negate`` the result is a new array of the negated scores (distance-like scores turned into
    similarities, see :func:`as_orientation`); negation is exact.
    """
    array = _score_array(values, function, argument)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{function}: {argument} must hold real numbers (int or float), got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{function}: {argument} must be 1-D, got shape {tuple(array.shape)}")
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{function}: {argument} must hold at least one score, got an empty array")
    array = array.astype(np.float64, copy=False)
    if check_finite and not np.isfinite(array).all():
        _raise_not_finite(array, function, argument)
    return np.negative(array) if negate else array


def _raise_not_finite(array: np.ndarray, function: str, argument: str) -> None:
    nan = np.isnan(array)
    if nan.any():
        raise ValueError(f"{function}: {argument} must hold finite scores, got {int(nan.sum())} NaN "
                         f"(the first at index {int(np.flatnonzero(nan)[0])})")
    index = int(np.flatnonzero(np.isinf(array))[0])
    raise ValueError(f"{function}: {argument} must hold finite scores, got {array[index]} at index {index}")


def as_sorted_scores(values: Any, function: str, argument: str, *, allow_empty: bool = False,
                     negate: bool = False) -> np.ndarray:
    """``values`` checked as by :func:`as_scores` and sorted ascending (a new array); with ``negate``, the
    negated scores sorted ascending.

    The finiteness check costs O(1) after the sort: NaN sorts last and infinities sit at the ends."""
    array = as_scores(values, function, argument, allow_empty=allow_empty, check_finite=False)
    array = np.negative(array) if negate else array.copy()
    array.sort()
    if array.size and not (math.isfinite(array[0]) and math.isfinite(array[-1])):
        nan = int(np.isnan(array).sum())
        if nan:
            raise ValueError(f"{function}: {argument} must hold finite scores, got {nan} NaN")
        bad = array[0] if not math.isfinite(array[0]) else array[-1]
        raise ValueError(f"{function}: {argument} must hold finite scores, got {-bad if negate else bad}")
    return array


def as_orientation(value: Any, function: str) -> bool:
    """The ``higher_is_better`` flag of the metrics: True (the default) for similarity-like scores, where
    higher means more alike (or more bona fide) and a comparison is accepted when score >= threshold;
    False for distance-like scores, accepted when score <= threshold. Returns whether to negate the scores
    (the metrics negate distance-like scores and thresholds, exactly, and work on similarities)."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{function}: higher_is_better must be a bool (True: similarity-like scores, higher = "
                        f"more alike; False: distance-like scores, lower = more alike), got "
                        f"{type(value).__name__} {value!r}")
    return not bool(value)


def as_threshold(value: Any, function: str, argument: str = "threshold") -> float:
    """A decision threshold: any real number but NaN (infinities are allowed)."""
    threshold = as_real(value, function, argument, "a real number")
    if math.isnan(threshold):
        raise ValueError(f"{function}: {argument} must be a real number, got nan")
    return threshold


def as_rate(value: Any, function: str, argument: str) -> float:
    """A target error rate, strictly between 0 and 1."""
    rate = as_real(value, function, argument, "a real number in (0, 1)")
    if not 0.0 < rate < 1.0:  # also false for NaN
        raise ValueError(f"{function}: {argument} must be in the open interval (0, 1), got {rate!r}")
    return rate


def as_species(labels: Any, count: int, function: str, argument: str = "attack_species"
               ) -> tuple[list[Any], np.ndarray]:
    """Species labels of ``count`` attack presentations as (distinct labels sorted, code of each).

    ``None`` means a single species, labelled ``"all"``. Labels may be strings or integers (any
    hashable NumPy can sort); the returned labels are Python objects (``str``, ``int``)."""
    if labels is None:
        return (["all"] if count else []), np.zeros(count, dtype=np.intp)
    if isinstance(labels, torch.Tensor):
        labels = to_numpy(labels, function, argument)
    if isinstance(labels, (str, bytes)):
        raise TypeError(f"{function}: {argument} must be a sequence of labels, one per attack score, "
                        f"got a single {type(labels).__name__}")
    array = np.asarray(labels)
    if array.ndim != 1 or array.size != count:
        raise ValueError(f"{function}: {argument} must be 1-D with one label per attack score ({count}), "
                         f"got shape {tuple(array.shape)}")
    if array.dtype.kind == "f" and np.isnan(array).any():
        raise ValueError(f"{function}: {argument} must not contain NaN labels")
    try:
        distinct, codes = np.unique(array, return_inverse=True)
    except TypeError as error:
        raise TypeError(f"{function}: {argument} must hold labels of one sortable kind (all str or all "
                        f"int), got {error}") from None
    return distinct.tolist(), codes.reshape(-1)
