"""alignment_energy: how consistently an attribute moves face embeddings, from every pair of attribute
curves (issue 8)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import check, check_dim, check_index_limit, check_same_device, check_same_dtype, dtype_name
from ._checks import fail, same_shape, shape_string, sym_and

__all__ = ["alignment_energy", "MODES", "METRICS"]

# The names of mode and metric; the native op takes their index here (int arguments: torch 2.13's
# stable-ABI conversion of a boxed `str` argument leaked two small objects per call, issue 17).
MODES = ("inverse_distance", "knn")
METRICS = ("cosine", "euclidean")


def alignment_energy(
    points: Tensor,
    directions: Tensor,
    mode: str = "inverse_distance",
    k: int = 10,
    metric: str = "cosine",
) -> tuple[Tensor, Tensor]:
    r"""Alignment energy of C attribute curves: do nearby curves move in the same direction?

    Curve ``c`` contributes an embedding ``p_c`` (at its central sample) and a finite-difference direction
    ``v_c = e(x2) - e(x0)``. With::

        D[c, c'] = 1 - <p_c / |p_c|, p_c' / |p_c'|>      (metric="cosine")
                 = |p_c - p_c'|                            (metric="euclidean")
        V[c, c'] = 1 - <v_c / |v_c|, v_c' / |v_c'|>

    the per-point energy is

    * ``mode="inverse_distance"``:
      ``E_c = sum_{c' != c, D > 0} V[c, c'] / D[c, c']  /  sum_{c' != c, D > 0} 1 / D[c, c']``
      (NaN when every other point coincides with ``c``);
    * ``mode="knn"``: the mean of ``V[c, c']`` over the ``k`` nearest ``c' != c`` by ``D``, the smaller
      index first among equal distances;

    and ``energy = mean_c E_c``. Near 1: the attribute moves embeddings in unrelated directions
    (invariance); near 0: a systematic, aligned dependence.

    Coincident points. ``D`` is computed in the input dtype, and rounding turns the 0 of coincident points
    into a tiny number of either sign, which ``1 / D`` would blow up. A computed cosine ``D <= (dim + 8) u``,
    or a squared Euclidean distance ``<= (dim + 8) u (|p|^2 + |p'|^2)`` (``u`` = 2**-24 for float32, 2**-53
    for float64; ``dim = D`` the embedding size), is therefore snapped to exactly 0 -- excluded by
    ``D > 0``, and tied at distance 0 (smaller index first) in knn. Exact duplicates, and for cosine points
    of the same direction, are thus handled reliably; distinct points closer than that bound cannot be
    told from duplicates in the dtype. Euclidean distances come from ``|p|^2 + |p'|^2 - 2 <p, p'>`` (a
    GEMM), whose error is about ``sqrt(dim) u (|p|^2 + |p'|^2)`` on the squared distance: accurate for
    distances comparable to the norms, less so for distances far below them (centre the data first if
    that matters).

    In knn, neighbours are ranked by ``D`` recomputed in float64 for every candidate the tile values put near
    the k-th distance, so identical rows tie exactly. NaN is propagated (a NaN row makes every
    inverse_distance ``E_c`` NaN); in knn a NaN distance is never among the nearest.

    Memory: the C x C matrices are never held; the op walks the upper triangle in fixed-size tiles (each
    pair computed once and credited to both points), so extra memory is two tiles plus O(C) per-point
    sums (O(C k) heaps for knn), whatever C is.

    Args:
        points: ``[C, D]``, float32 or float64, ``C >= 2``; any strides. A zero row is an error for
            ``metric="cosine"``.
        directions: ``[C, D]``, the same dtype and device; a zero row is an error.
        mode: ``"inverse_distance"`` or ``"knn"`` (the raw ``torch.ops.facekernels.alignment_energy`` takes
            their index in ``MODES``, 0 or 1, and of ``METRICS`` for metric).
        k: neighbours for ``mode="knn"``, ``1 <= k <= C - 1`` (ignored otherwise).
        metric: ``"cosine"`` or ``"euclidean"``.

    Returns:
        ``(energy, per_point)``: a 0-d tensor and a ``[C]`` tensor of the input dtype and device.
        Not differentiable: the outputs never require grad.
    """
    op = "alignment_energy"
    return torch.ops.facekernels.alignment_energy.default(
        points, directions, _code(op, "mode", mode, MODES), k, _code(op, "metric", metric, METRICS))


def _code(op: str, arg: str, name: str, names: tuple[str, ...]) -> int:
    """The native op's int code of a mode or metric name (its index in `names`)."""
    if not isinstance(name, str):
        raise TypeError(f"{op}: {arg} must be a str, one of {_quoted(names)}, got {type(name).__name__}")
    if name not in names:  # RuntimeError and these words: what the op raised when it took the name itself
        fail(op, arg, " must be ", _quoted(names), ' got "', name, '"')
    return names.index(name)


def _quoted(names: tuple[str, ...]) -> str:
    return " or ".join(f'"{n}"' for n in names) + ","


# The fake kernel's checks: csrc/alignment_energy/alignment_energy.cpp's, in its order and words
# (ops/_checks.py). The zero rows the native op refuses are values, which only the kernels see.
def _check_mode_and_metric(op: str, mode: int, metric: int) -> bool:
    """The native op's checks of the mode and metric codes; whether mode is knn."""
    if mode not in range(len(MODES)):
        fail(op, 'mode must be 0 ("inverse_distance") or 1 ("knn"), got ', mode)
    if metric not in range(len(METRICS)):
        fail(op, 'metric must be 0 ("cosine") or 1 ("euclidean"), got ', metric)
    return MODES[mode] == "knn"


def _check_alignment_energy(op: str, points: Tensor, directions: Tensor, knn: bool, k: int) -> None:
    """The checks of the tensors and k, after those of mode and metric."""
    check_dim(op, "points", points, 2, "[C, D]")
    check_dim(op, "directions", directions, 2, "[C, D]")
    check(same_shape(directions, points), op, "directions must have the same shape as points ",
          shape_string(points), ", got ", shape_string(directions))
    if points.dtype not in (torch.float32, torch.float64):
        fail(op, "points must be float32 or float64, got ", dtype_name(points.dtype))
    check_same_dtype(op, "directions", directions, "points", points)
    check_same_device(op, "directions", directions, "points", points)
    n = points.shape[0]
    check(n >= 2, op, "points must have at least 2 rows (C >= 2 curves), got C = ", n)
    check_index_limit(n, 2**31, op, "points must have fewer than 2^31 rows, got C = ", n)
    if knn:
        check(sym_and(k >= 1, k <= n - 1), op, "k must be in [1, C - 1] = [1, ", n - 1,
              '] for mode="knn", got ', k)


@torch.library.register_fake("facekernels::alignment_energy")
def _alignment_energy_fake(
    points: Tensor, directions: Tensor, mode: int = 0, k: int = 10, metric: int = 0
) -> tuple[Tensor, Tensor]:
    op = "alignment_energy"
    _check_alignment_energy(op, points, directions, _check_mode_and_metric(op, mode, metric), k)
    return points.new_empty(()), points.new_empty((points.shape[0],))


# Not differentiable. Without an autograd registration the dispatcher's fallback would hand back outputs
# that require grad and only fail (with a warning about a missing autograd kernel) on backward; instead
# the outputs are marked non-differentiable, as torch does for argmax or topk's indices.
def _setup_context(ctx, inputs, output) -> None:
    ctx.mark_non_differentiable(*output)


def _backward(ctx, *grads):
    raise RuntimeError("alignment_energy is not differentiable")


torch.library.register_autograd("facekernels::alignment_energy", _backward, setup_context=_setup_context)
