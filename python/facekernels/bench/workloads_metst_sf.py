"""Benchmark workload of METST_SF (issue 20): the training step (forward, the released loss, backward) of
BoostingVRME's spotting-and-recognition network at its default settings on a batch of 32 windows of
T = 30 frames (SAMM-LV's window), against the same network whose Mamba blocks run the scan as mamba-ssm's
``selective_scan_ref`` computes it (:func:`selective_scan_reference`: the [B, D, L, N] decays and inputs
materialised, a Python loop over L with an einsum per step). Everything else (projections, causal
convolutions, norms, the stem and the heads) is the same code, so the ratio is what the scan op buys a
training step.

Drop path is set to 0 so both candidates compute the same function on every call (the released rate, 0.2,
draws a random mask per call). Only forward+backward is timed (the issue's goal is the training step); the
compiled peer is left out (compiling a 24-block network whose scan unrolls over L takes minutes on a
2-core machine).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..models.metst_sf import METST_SF, metst_sf_loss
from ..nn.mamba import Mamba
from .cases import Case, Workload
from .workloads_selective_scan import selective_scan_reference


def metst_sf_on_reference_scan(model: METST_SF) -> METST_SF:
    """``model`` with every Mamba block's scan swapped for :func:`selective_scan_reference`."""
    for module in model.modules():
        if isinstance(module, Mamba):
            module.scan = selective_scan_reference
    return model


def _case(b: int, t: int, classes: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        torch.manual_seed(0)
        ours = METST_SF(out_channels=classes, drop_path=0.0).to(device).train()
        peer = metst_sf_on_reference_scan(METST_SF(out_channels=classes, drop_path=0.0)).to(device).train()
        peer.load_state_dict(ours.state_dict())
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, 1, 36, t, generator=g).to(device)
        spot_target = torch.rand(b, t, generator=g).to(device)
        one_hot = torch.nn.functional.one_hot(torch.randint(0, classes, (b, t), generator=g), classes).float()
        one_hot = one_hot.to(device)
        weights = torch.ones(classes, device=device)
        weights[-1] = 6.0  # the released neutral class's weight

        def step(net: METST_SF) -> Callable[[Tensor], Tensor]:
            return lambda v: metst_sf_loss(*net(v), spot_target, one_hot, weights)

        return Case(inputs=[x], candidates={"facekernels": step(ours), "reference": step(peer)},
                    params=[*ours.parameters(), *peer.parameters()])

    return build


# Forward FLOPs of the network at B = 32, T = 30 counted by torch.utils.flop_counter.FlopCounterMode
# (convolutions and matmuls: 9.05 GFLOP) plus the scans' (8 per state update: 2 x 12 blocks x 32 x
# (256 x 30 + 512 x 15) x 64 updates); the backward counted as twice the forward. 8.37 M parameters.
_B, _T = 32, 30
_SCAN_UPDATES = 12 * _B * (256 * _T + 512 * _T // 2) * 64
_FLOPS_FORWARD = 9.05e9 + 8.0 * _SCAN_UPDATES
_PARAMETERS = 8.37e6

WORKLOADS: list[Workload] = [
    Workload(
        op="metst_sf",
        name="metst_sf_train_step",
        description=f"METST_SF training step (forward, the released loss, backward): B={_B} windows of T={_T} frames, "
                    "36 region features, dim 128, d_state 64, 2 x 12 Mamba blocks",
        flops_forward=_FLOPS_FORWARD,
        bytes_forward=4.0 * _PARAMETERS + 4.0 * _B * _T * 40,
        flops_backward=2.0 * _FLOPS_FORWARD,
        bytes_backward=8.0 * _PARAMETERS + 4.0 * _B * _T * 40,
        build=_case(_B, _T, 3),
        peers=("reference",),
        compile_peers=(),
        modes=("forward+backward",),
    ),
]

QUICK: set[str] = set()  # a second or more per step: full runs only
