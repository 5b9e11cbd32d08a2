"""The local statistical feature transform block of weather-robust face restoration, and the
degradation-agnostic feature embedding (DAFE) alignment objective built on the same windowed statistics."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.local_stats import local_mean_var, local_stat_transform

__all__ = ["LocalSFFT", "dafe_alignment_loss"]


class LocalSFFT(nn.Module):
    r"""Local AdaIN of ``x`` towards the statistics of ``guide``, blended per channel::

        out = x + alpha[c] * (local_stat_transform(x, guide, kernel_size, eps) - x)

    ``alpha`` (``[channels]``) is learnable and starts at 1, so the block starts as the pure transform.

    Args:
        channels: C of the inputs.
        kernel_size: odd window side, >= 1.
        eps: added to both local variances.

    Shapes: ``x`` and ``guide`` are ``[B, C, H, W]``; the output too.
    """

    def __init__(self, channels: int, kernel_size: int = 7, eps: float = 1e-5) -> None:
        super().__init__()
        if not isinstance(channels, int) or channels < 1:
            raise ValueError(f"LocalSFFT: channels must be a positive int, got {channels!r}")
        if not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"LocalSFFT: kernel_size must be an odd int >= 1, got {kernel_size!r}")
        if not eps >= 0:
            raise ValueError(f"LocalSFFT: eps must be >= 0, got {eps!r}")
        self.channels = channels
        self.kernel_size = kernel_size
        self.eps = float(eps)
        self.alpha = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor, guide: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(
                f"LocalSFFT: x must be [B, {self.channels}, H, W], got {list(x.shape)}"
            )
        transformed = local_stat_transform(x, guide, self.kernel_size, self.eps)
        alpha = self.alpha.to(transformed.dtype).view(1, -1, 1, 1)
        return torch.lerp(x.to(transformed.dtype), transformed, alpha)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, kernel_size={self.kernel_size}, eps={self.eps}"


def dafe_alignment_loss(
    lq_feats: Sequence[Tensor] | Tensor,
    hq_feats: Sequence[Tensor] | Tensor,
    kernel_size: int = 7,
    eps: float = 1e-5,
) -> Tensor:
    r"""Degradation-agnostic feature embedding objective: align the low-quality encoder's features with
    the high-quality encoder's at every scale, in value and in local statistics::

        loss = mean over scales s of [ L1(lq_s, hq_s) + L1(mu(lq_s), mu(hq_s)) + L1(sd(lq_s), sd(hq_s)) ]

    with ``mu, var = local_mean_var(f, kernel_size)``, ``sd = sqrt(var + eps)`` (``eps`` keeps the gradient
    finite on flat windows) and L1 the mean absolute difference.

    This is our reading of the paper, which publishes no code: equal weights for the three terms and
    the scales. ``hq_feats`` are used as given: detach them when the HQ encoder is a frozen teacher.

    Args:
        lq_feats, hq_feats: one ``[B, C, H, W]`` tensor per scale (or a single tensor), pairwise of the
            same shape.
        kernel_size: odd window side, >= 1.
        eps: >= 0.

    Returns:
        A 0-d tensor.
    """
    if isinstance(lq_feats, Tensor):
        lq_feats = [lq_feats]
    if isinstance(hq_feats, Tensor):
        hq_feats = [hq_feats]
    lq_feats, hq_feats = list(lq_feats), list(hq_feats)
    if len(lq_feats) == 0 or len(lq_feats) != len(hq_feats):
        raise ValueError(
            "dafe_alignment_loss: lq_feats and hq_feats must hold the same, non-zero number of scales, "
            f"got {len(lq_feats)} and {len(hq_feats)}"
        )
    if not eps >= 0:
        raise ValueError(f"dafe_alignment_loss: eps must be >= 0, got {eps!r}")
    total = None
    for i, (lq, hq) in enumerate(zip(lq_feats, hq_feats)):
        if lq.shape != hq.shape:
            raise ValueError(
                f"dafe_alignment_loss: scale {i}: hq_feats must have the shape of lq_feats "
                f"{list(lq.shape)}, got {list(hq.shape)}"
            )
        mu_lq, var_lq = local_mean_var(lq, kernel_size)
        mu_hq, var_hq = local_mean_var(hq, kernel_size)
        term = (
            F.l1_loss(lq, hq)
            + F.l1_loss(mu_lq, mu_hq)
            + F.l1_loss(torch.sqrt(var_lq + eps), torch.sqrt(var_hq + eps))
        )
        total = term if total is None else total + term
    return total / len(lq_feats)
