"""Argument conversion and checks shared by the metrics: scores, thresholds, target rates, species labels.

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


def _to_numpy(values: Any, function: str, argument: str) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        if values.dtype == torch.bool or values.is_complex():
            raise TypeError(f"{function}: {argument} must hold real numbers, got a tensor of {values.dtype}")
        return values.detach().to(device="cpu", dtype=torch.float64).numpy()
    if isinstance(values, (str, bytes)):
        raise TypeError(f"{function}: {argument} must be an array of scores, got {type(values).__name__}")
    if values is None:
        raise TypeError(f"{function}: {argument} must be an array of scores, got None")
    try:
        return np.asarray(values)
    except (ValueError, TypeError) as error:  # ragged nested sequences
        raise ValueError(f"{function}: {argument} must be a 1-D array of scores, got {error}") from None


def as_scores(values: Any, function: str, argument: str, *, allow_empty: bool = False,
              check_finite: bool = True) -> np.ndarray:
    """``values`` as a 1-D float64 array (a view where no conversion is needed), checked.

    Raises TypeError for non-numeric data (bool, complex, strings, objects) and ValueError for a shape
    other than 1-D, an empty array (unless ``allow_empty``) and, with ``check_finite``, NaN or infinite
    scores. Callers that sort first pass ``check_finite=False`` and use :func:`check_sorted_finite`.
    """
    array = _to_numpy(values, function, argument)
    if array.dtype.kind not in "iuf":
        raise TypeError(f"{function}: {argument} must hold real numbers (int or float), got dtype {array.dtype}")
    if array.ndim != 1:
        raise ValueError(f"{function}: {argument} must be 1-D, got shape {tuple(array.shape)}")
    if array.size == 0 and not allow_empty:
        raise ValueError(f"{function}: {argument} must hold at least one score, got an empty array")
    array = array.astype(np.float64, copy=False)
    if check_finite and not np.isfinite(array).all():
        _raise_not_finite(array, function, argument)
    return array


def _raise_not_finite(array: np.ndarray, function: str, argument: str) -> None:
    nan = np.isnan(array)
    if nan.any():
        raise ValueError(f"{function}: {argument} must hold finite scores, got {int(nan.sum())} NaN "
                         f"(the first at index {int(np.flatnonzero(nan)[0])})")
    index = int(np.flatnonzero(np.isinf(array))[0])
    raise ValueError(f"{function}: {argument} must hold finite scores, got {array[index]} at index {index}")


def as_sorted_scores(values: Any, function: str, argument: str, *, allow_empty: bool = False) -> np.ndarray:
    """``values`` checked as by :func:`as_scores` and sorted ascending (a new array).

    The finiteness check costs O(1) after the sort: NaN sorts last and infinities sit at the ends."""
    array = np.sort(as_scores(values, function, argument, allow_empty=allow_empty, check_finite=False))
    if array.size and not (math.isfinite(array[0]) and math.isfinite(array[-1])):
        nan = int(np.isnan(array).sum())
        if nan:
            raise ValueError(f"{function}: {argument} must hold finite scores, got {nan} NaN")
        bad = array[0] if not math.isfinite(array[0]) else array[-1]
        raise ValueError(f"{function}: {argument} must hold finite scores, got {bad}")
    return array


def _as_real(value: Any, function: str, argument: str, expected: str) -> float:
    if isinstance(value, torch.Tensor):
        real = value.dtype.is_floating_point or (value.dtype != torch.bool and not value.is_complex())
        if value.ndim != 0 or not real:
            raise TypeError(f"{function}: {argument} must be {expected}, got a tensor of shape "
                            f"{tuple(value.shape)} and dtype {value.dtype}")
        return float(value.item())
    if isinstance(value, np.ndarray):
        if value.ndim != 0 or value.dtype.kind not in "iuf":
            raise TypeError(f"{function}: {argument} must be {expected}, got an array of shape "
                            f"{value.shape} and dtype {value.dtype}")
        return float(value.item())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{function}: {argument} must be {expected}, got {type(value).__name__} {value!r}")
    return float(value)


def as_threshold(value: Any, function: str, argument: str = "threshold") -> float:
    """A decision threshold: any real number but NaN (infinities are allowed)."""
    threshold = _as_real(value, function, argument, "a real number")
    if math.isnan(threshold):
        raise ValueError(f"{function}: {argument} must be a real number, got nan")
    return threshold


def as_rate(value: Any, function: str, argument: str) -> float:
    """A target error rate, strictly between 0 and 1."""
    rate = _as_real(value, function, argument, "a real number in (0, 1)")
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
        labels = labels.detach().cpu().numpy()
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
