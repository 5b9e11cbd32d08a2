"""Triplet attention (Misra et al., "Rotate to Attend", WACV 2021) on the axis_pool and triplet_gate ops."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops.triplet_attention import axis_pool, gate_conv, triplet_gate

__all__ = ["TripletAttention"]


class _ConvBN(nn.Module):
    """The original's ``BasicConv(2, 1, 7, padding=3, relu=False)``: a 7x7 convolution of the two pooled
    maps to one (no bias) and BatchNorm (eps 1e-5, momentum 0.01); parameters ``conv.weight``, ``bn.*``."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 1, kernel_size=7, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.bn(self.conv(pooled))


class AttentionGate(nn.Module):
    """One branch's gate: ``sigmoid(BN(conv7x7(Z-pool)))`` of a ``[B, 2, M, N]`` pooled map (max, mean) to
    ``[B, 1, M, N]``. Parameters ``conv.conv.weight``, ``conv.bn.*`` as in the original's AttentionGate."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = _ConvBN()

    def forward(self, pooled: Tensor) -> Tensor:
        # The convolution through facekernels.ops.gate_conv (torch's CPU conv2d is slow for 2 -> 1 maps).
        return torch.sigmoid(self.conv.bn(gate_conv(pooled, self.conv.conv.weight)))

    def reference(self, t: Tensor) -> Tensor:
        """The original's eager gate of ``t`` (pooled over dim 1): Z-pool, conv, BN, sigmoid, product."""
        z = torch.cat((torch.max(t, 1)[0].unsqueeze(1), torch.mean(t, 1).unsqueeze(1)), dim=1)
        return t * torch.sigmoid(self.conv(z))


class TripletAttention(nn.Module):
    r"""Triplet attention: three branches, each a 7x7 convolution gate over x pooled along one axis::

        y = (x * s_hw + x * s_cw + x * s_hc) / 3        (no_spatial: (x * s_cw + x * s_hc) / 2)

    with ``s_hw = hw(Z-pool_C x)`` broadcast over C (``[B, 1, H, W]``), ``s_cw = cw(Z-pool_H x)`` over H
    (``[B, C, 1, W]``) and ``s_hc = hc(Z-pool_W x)`` over W (``[B, C, H, 1]``), Z-pool = (max, mean) and each
    gate ``sigmoid(BN(conv7x7(.)))``. The forward is two passes over x: :func:`~facekernels.ops.axis_pool`
    (the three Z-pools in one read) and :func:`~facekernels.ops.triplet_gate` (the product, one read and
    one write); the convolutions run on the pooled maps only, which are C, H or W times smaller than x.

    Parameter and buffer names are the original's (landskape-ai/triplet-attention, ``cw.conv.conv.weight``,
    ``cw.conv.bn.{weight,bias,running_mean,running_var,num_batches_tracked}``, the same for ``hc`` and,
    unless ``no_spatial``, ``hw``), so its state_dicts load with ``strict=True``.

    Args:
        no_spatial: leave out the ``hw`` branch (the original's option).
        reference: run the original's eager computation (permuted copies, separate pools, three products)
            with the same parameters instead of the fused ops: the benchmark's and the tests' peer.
    """

    def __init__(self, no_spatial: bool = False, reference: bool = False) -> None:
        super().__init__()
        self.cw = AttentionGate()
        self.hc = AttentionGate()
        self.no_spatial = no_spatial
        self.reference = reference
        if not no_spatial:
            self.hw = AttentionGate()

    def gates(self, x: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        """The three branch gates of ``x`` as triplet_gate takes them, each already divided by the
        number of branches: ``([B, H, W] or None, [B, C, W], [B, H, C])``."""
        pooled_c, pooled_h, pooled_w = axis_pool(x)
        k = 0.5 if self.no_spatial else 1.0 / 3.0
        gate_h = self.cw(pooled_h).squeeze(1) * k
        gate_w = self.hc(pooled_w).squeeze(1) * k
        gate_c = None if self.no_spatial else self.hw(pooled_c).squeeze(1) * k
        return gate_c, gate_h, gate_w

    def forward(self, x: Tensor) -> Tensor:
        if self.reference:
            return self.forward_reference(x)
        return triplet_gate(x, *self.gates(x))

    def forward_reference(self, x: Tensor) -> Tensor:
        out_cw = self.cw.reference(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        out_hc = self.hc.reference(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        if self.no_spatial:
            return 0.5 * (out_cw + out_hc)
        return (1.0 / 3.0) * (self.hw.reference(x) + out_cw + out_hc)

    def extra_repr(self) -> str:
        return f"no_spatial={self.no_spatial}" + (", reference=True" if self.reference else "")
