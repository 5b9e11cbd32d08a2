"""MOL's landmark and optical-flow losses, vectorised and on the input's device."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["flow_epe", "landmark_nme_loss"]

# The 68-point (iBUG / dlib) layout MOL's landmarks use: eye contours 36-41 and 42-47.
LEFT_EYE = tuple(range(36, 42))
RIGHT_EYE = tuple(range(42, 48))


def _check_same(name: str, pred: Tensor, target: Tensor) -> None:
    if pred.shape != target.shape:
        raise ValueError(f"{name}: pred and target must have the same shape, got {list(pred.shape)} and "
                         f"{list(target.shape)}")
    if not pred.is_floating_point() or not target.is_floating_point():
        raise TypeError(f"{name}: pred and target must be floating point, got {pred.dtype} and {target.dtype}")
    if pred.device != target.device:
        raise ValueError(f"{name}: pred and target must be on one device, got {pred.device} and {target.device}")


def landmark_nme_loss(pred: Tensor, target: Tensor, left_eye: Sequence[int] = LEFT_EYE,
                      right_eye: Sequence[int] = RIGHT_EYE) -> Tensor:
    r"""MOL's landmark loss: per face, the L1 distance over all coordinates divided by the inter-pupil
    distance of the target, summed over faces and frames, divided by (B K).

    ``pred`` and ``target`` are ``[B, 2K, *frames]`` with the coordinates of point k at rows ``2k`` (x)
    and ``2k + 1`` (y) (MOL: ``[B, 136, 7]``). With the pupils the means of the ``left_eye`` and
    ``right_eye`` points of the target::

        ipd[b, f]  = || mean_{k in right_eye} t[b, k, f] - mean_{k in left_eye} t[b, k, f] ||_2
        loss = sum_{b, f} ( sum_r |pred[b, r, f] - target[b, r, f]| / ipd[b, f] ) / (B K)

    which is the released train.py's per-sample, per-frame loop (``L1Loss(reduction='sum') /
    get_pupil_distance``) in one expression. The distance carries no gradient (the released code
    computes it as a Python float). Returns a 0-d tensor on the inputs' device.
    """
    _check_same("landmark_nme_loss", pred, target)
    if pred.dim() < 2 or pred.shape[1] % 2 != 0:
        raise ValueError(f"landmark_nme_loss: pred must be [B, 2K, ...] with an even coordinate axis, got "
                         f"{list(pred.shape)}")
    points = pred.shape[1] // 2
    for name, idx in (("left_eye", left_eye), ("right_eye", right_eye)):
        if len(idx) == 0 or not all(0 <= int(i) < points for i in idx):
            raise ValueError(f"landmark_nme_loss: {name} must hold point indices in [0, {points}), got {list(idx)}")
    with torch.no_grad():
        xy = target.unflatten(1, (points, 2))  # [B, K, 2, *frames]
        left = xy[:, list(left_eye)].mean(1)
        right = xy[:, list(right_eye)].mean(1)
        ipd = torch.linalg.vector_norm(right - left, dim=1)  # [B, *frames]
    l1 = (pred - target).abs().sum(1)  # [B, *frames]
    return (l1 / ipd).sum() / (pred.shape[0] * points)


def flow_epe(pred: Tensor, target: Tensor) -> Tensor:
    r"""The mean end-point error of flow fields ``[B, 2, *spatial]`` (u, v on axis 1)::

        epe = mean_{b, position} sqrt( (u - u*)^2 + (v - v*)^2 )

    Returns a 0-d tensor on the inputs' device. (MOL itself trains on the mean squared error of the
    flows; :func:`facekernels.models.mol_loss` uses that by default.)
    """
    _check_same("flow_epe", pred, target)
    if pred.dim() < 2 or pred.shape[1] != 2:
        raise ValueError(f"flow_epe: pred must be [B, 2, ...] (u, v on axis 1), got {list(pred.shape)}")
    return torch.linalg.vector_norm(pred - target, dim=1).mean()
