"""Triplet attention (Misra et al., "Rotate to Attend", WACV 2021) on the axis_pool and triplet_gate ops."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ..ops.triplet_attention import axis_pool, gate_conv, triplet_gate

__all__ = ["TripSE", "TripletAttention"]


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
        """The three branch gates of ``x`` as triplet_gate takes them: ``([B, H, W] or None, [B, C, W],
        [B, H, C])``, not yet divided by the number of branches."""
        pooled_c, pooled_h, pooled_w = axis_pool(x)
        gate_h = self.cw(pooled_h).squeeze(1)
        gate_w = self.hc(pooled_w).squeeze(1)
        gate_c = None if self.no_spatial else self.hw(pooled_c).squeeze(1)
        return gate_c, gate_h, gate_w

    def forward(self, x: Tensor) -> Tensor:
        if self.reference:
            return self.forward_reference(x)
        # The mean over the branches as triplet_gate's per-channel scale: a [B, C] constant instead of
        # a pass over each gate map.
        k = 0.5 if self.no_spatial else 1.0 / 3.0
        return triplet_gate(x, *self.gates(x), x.new_full((x.shape[0], x.shape[1]), k))

    def branches_reference(self, x: Tensor) -> tuple[Tensor | None, Tensor, Tensor]:
        """The original's three branch outputs ``x * s_hw`` (None without the spatial branch), ``x * s_cw``
        and ``x * s_hc``, computed as it computes them (permuted copies and back)."""
        out_cw = self.cw.reference(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        out_hc = self.hc.reference(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        out_hw = None if self.no_spatial else self.hw.reference(x)
        return out_hw, out_cw, out_hc

    def forward_reference(self, x: Tensor) -> Tensor:
        out_hw, out_cw, out_hc = self.branches_reference(x)
        if out_hw is None:
            return 0.5 * (out_cw + out_hc)
        return (1.0 / 3.0) * (out_hw + out_cw + out_hc)

    def extra_repr(self) -> str:
        return f"no_spatial={self.no_spatial}" + (", reference=True" if self.reference else "")


class _Excitation(nn.Module):
    """SE's excitation (Hu et al.): ``sigmoid(fc2(relu(fc1(z))))`` of a ``[B, C]`` squeeze to ``[B, C]``."""

    def __init__(self, channels: int, reduction: int) -> None:
        super().__init__()
        hidden = max(1, channels // reduction)
        self.fc1 = nn.Linear(channels, hidden)
        self.fc2 = nn.Linear(hidden, channels)

    def forward(self, z: Tensor) -> Tensor:
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(z))))


class TripSE(nn.Module):
    r"""TripSE: triplet attention combined with squeeze-and-excitation (Alhazmi and Altahhan, "Achieving 3D
    Attention via Triplet Squeeze and Excitation Block", 2025), four variants.

    The paper publishes no code, and its text was not at hand when this was written: the four variants
    are **our reading** of the four ways its title and abstract allow SE to be combined with triplet
    attention's three branch gates ``s_hw`` ([B, 1, H, W]), ``s_cw`` ([B, C, 1, W]), ``s_hc`` ([B, C, H, 1])
    (see :class:`TripletAttention`), with SE's channel excitation ``e(z) = sigmoid(W2 relu(W1 z))``
    (``reduction`` r: W1 is C -> C/r) of a squeeze ``z`` ([B, C])::

        variant 1 (parallel, product):   y = x * e(mean_hw x) * (s_hw + s_cw + s_hc) / 3
        variant 2 (SE as a 4th branch):  y = x * (s_hw + s_cw + s_hc + e(mean_hw x)) / 4
        variant 3 (SE in the channel-interaction branches):
                                         y = x * (s_hw + e(mean_hw x) * (s_cw + s_hc)) / 3
        variant 4 (sequential, SE after triplet attention):
                                         t = TA(x),  y = t * e(mean_hw t)

    Why these: SE recalibrates channels, and triplet attention's branches are one spatial (hw) and two
    channel-interaction (cw, hc) gates, so SE can multiply all of them (1), join them as a branch (2),
    multiply only the branches that involve C (3), or follow the whole block as in SE-ResNet (4). Variants
    1-3 take SE's squeeze from the input, which the pooled means already hold (``mean_hw x`` is the mean
    over W of the over-H mean map), so they cost what triplet attention costs: two passes over x
    (:func:`~facekernels.ops.axis_pool`, :func:`~facekernels.ops.triplet_gate`). Variant 4 needs
    ``mean_hw TA(x)``, which is ``(mean_hw(x s_hw) + mean_w(s_cw mean_h x) + mean_h(s_hc mean_w x)) / 3``:
    the last two terms come from the pooled maps, the first is one batched matrix-vector product over x
    (a third read).

    Parameters: ``triplet.{cw,hc,hw}.*`` (a :class:`TripletAttention`) and ``se.fc1.*``, ``se.fc2.*``.

    Args:
        channels: C of the input.
        variant: 1, 2, 3 or 4.
        reduction: SE's reduction ratio r (hidden width ``max(1, C // r)``).
        reference: compute with eager PyTorch from the formulas above (triplet attention as the original
            computes it): the tests' and the benchmark's peer.
    """

    def __init__(self, channels: int, variant: int = 1, reduction: int = 16, reference: bool = False) -> None:
        super().__init__()
        if variant not in (1, 2, 3, 4):
            raise ValueError(f"TripSE: variant must be 1, 2, 3 or 4, got {variant!r}")
        if channels < 1 or reduction < 1:
            raise ValueError(f"TripSE: channels and reduction must be >= 1, got {channels} and {reduction}")
        self.channels, self.variant, self.reduction, self.reference = channels, variant, reduction, reference
        self.triplet = TripletAttention(reference=reference)
        self.se = _Excitation(channels, reduction)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.shape[1] != self.channels:
            raise ValueError(f"TripSE: x must be [B, {self.channels}, H, W], got {list(x.shape)}")
        return self.forward_reference(x) if self.reference else self._forward_fused(x)

    def _forward_fused(self, x: Tensor) -> Tensor:
        t = self.triplet
        pooled_c, pooled_h, pooled_w = axis_pool(x)
        s_hw = t.hw(pooled_c).squeeze(1)   # [B, H, W]
        s_cw = t.cw(pooled_h).squeeze(1)   # [B, C, W]
        s_hc = t.hc(pooled_w).squeeze(1)   # [B, H, C]
        # The constant factors (1/3, 1/4) ride on triplet_gate's [B, C] scale, not on the gate maps.
        third = 1.0 / 3.0
        if self.variant == 4:
            mean_h, mean_w = pooled_h[:, 1], pooled_w[:, 1]  # [B, C, W] over H, [B, H, C] over W
            hw = x.shape[2] * x.shape[3]
            spatial = torch.einsum("bchw,bhw->bc", x, s_hw) / hw
            z = third * (spatial + (s_cw * mean_h).mean(2) + (s_hc * mean_w).mean(1))
            return triplet_gate(x, s_hw, s_cw, s_hc, self.se(z) * third)
        e = self.se(pooled_h[:, 1].mean(2))  # mean over W of the over-H mean map: mean_hw x
        if self.variant == 1:
            return triplet_gate(x, s_hw, s_cw, s_hc, e * third)
        constant = x.new_full((x.shape[0], x.shape[1]), 0.25 if self.variant == 2 else third)
        if self.variant == 2:
            return triplet_gate(x, s_hw, s_cw + e[:, :, None], s_hc, constant)
        return triplet_gate(x, s_hw, s_cw * e[:, :, None], s_hc * e[:, None, :], constant)

    def forward_reference(self, x: Tensor) -> Tensor:
        out_hw, out_cw, out_hc = self.triplet.branches_reference(x)
        if self.variant == 4:
            ta = (out_hw + out_cw + out_hc) / 3.0
            return ta * self.se(ta.mean((2, 3)))[:, :, None, None]
        e = self.se(x.mean((2, 3)))[:, :, None, None]
        if self.variant == 1:
            return (out_hw + out_cw + out_hc) / 3.0 * e
        if self.variant == 2:
            return (out_hw + out_cw + out_hc + x * e) / 4.0
        return (out_hw + e * (out_cw + out_hc)) / 3.0

    def extra_repr(self) -> str:
        return f"{self.channels}, variant={self.variant}, reduction={self.reduction}" + (
            ", reference=True" if self.reference else "")
