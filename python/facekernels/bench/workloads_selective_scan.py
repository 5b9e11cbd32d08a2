"""Benchmark workloads of selective_scan (Mamba's selective scan) and its plain-PyTorch peers.

The peers:

- ``reference``: the scan as mamba-ssm's pure-PyTorch ``selective_scan_ref`` computes it (written here from
  its semantics): the decays exp(dt A) and the inputs dt B u materialised for every step as [B, D, L, N]
  tensors, then a Python loop over L with an einsum per step. Its memory is O(B D N L) and autograd keeps
  every step's state, so its backward grows quickly with L: forward and backward are timed at L = 128, the
  forward alone at L = 1024.
- ``torch_loop``: the plain sequential scan a careful PyTorch user writes without those inefficiencies:
  dt, dt u and the per-step slices of B and C prepared once, then per step one [B, D, N] decay, update and
  a batched matrix-vector product for y.

Shapes: METST_SF (BoostingVRME's micro-expression spotter, network.py) runs mamba-ssm's Mamba with
d_state = 64, expand = 2 on its fast path (d_model 128: D = 256) over windows of k = 30 frames (SAMM-LV,
batch 32) and on its slow path (d_model 256: D = 512) over k / 2 = 15; a Mamba-130M layer is D = 1536,
N = 16 (d_model 768), here at batch 8 and L = 1024.

Also METST_SF's whole training step against the same network on the reference scan (``metst_sf_train_step``,
op ``metst_sf``; below).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..models.metst_sf import METST_SF, metst_sf_loss
from ..nn.mamba import Mamba
from ..ops.selective_scan import selective_scan
from .cases import Case, Workload, with_swapped


def _per_channel(m: Tensor, channels: int) -> Tensor:
    """B or C as [B, D, N, L]: the 3-D form shared by every channel, the grouped form repeated per group."""
    if m.dim() == 3:
        return m.unsqueeze(1).expand(m.shape[0], channels, *m.shape[1:])
    return m.repeat_interleave(channels // m.shape[1], dim=1)


def _steps(delta: Tensor, delta_bias: Tensor | None, delta_softplus: bool) -> Tensor:
    dt = delta if delta_bias is None else delta + delta_bias.unsqueeze(-1)
    return F.softplus(dt) if delta_softplus else dt


def _finish(y: Tensor, u: Tensor, D: Tensor | None, z: Tensor | None) -> Tensor:
    out = y if D is None else y + u * D.unsqueeze(-1)
    return out if z is None else out * F.silu(z)


def selective_scan_reference(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                             z: Tensor | None = None, delta_bias: Tensor | None = None,
                             delta_softplus: bool = False) -> Tensor:
    """The scan as mamba-ssm's ``selective_scan_ref`` computes it: every step's decay and input
    materialised as [B, D, L, N], then one einsum per step over the loop."""
    dtype = u.dtype
    u, delta = u.float(), delta.float()
    dt = _steps(delta, None if delta_bias is None else delta_bias.float(), delta_softplus)
    channels = u.shape[1]
    Bx, Cx = _per_channel(B.float(), channels), _per_channel(C.float(), channels)
    decay = torch.exp(torch.einsum("bdl,dn->bdln", dt, A.float()))
    inputs = torch.einsum("bdl,bdnl,bdl->bdln", dt, Bx, u)
    state = u.new_zeros(u.shape[0], channels, A.shape[1])
    ys = []
    for i in range(u.shape[2]):
        state = decay[:, :, i] * state + inputs[:, :, i]
        ys.append(torch.einsum("bdn,bdn->bd", state, Cx[:, :, :, i]))
    return _finish(torch.stack(ys, dim=2), u, D, z).to(dtype)


def selective_scan_torch_loop(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                              z: Tensor | None = None, delta_bias: Tensor | None = None,
                              delta_softplus: bool = False) -> Tensor:
    """A plain sequential scan over L without the reference's materialised [B, D, L, N] tensors: the steps'
    dt, dt u and B, C slices prepared once (L-major, contiguous), then per step a [B, D, N] decay and
    update and y as a batched matrix-vector product."""
    batch, channels, length = u.shape
    dt = _steps(delta, delta_bias, delta_softplus)
    dt_steps = dt.permute(2, 0, 1).unsqueeze(-1)  # [L, B, D, 1]
    dtu_steps = (dt * u).permute(2, 0, 1).unsqueeze(-1)
    # B's rows broadcast over the channels ([L, B, 1, N]); C's as [L, B, N, 1] columns for bmm. The grouped
    # forms are repeated per channel.
    if B.dim() == 3:
        B_steps = B.permute(2, 0, 1).unsqueeze(2).contiguous()
    else:
        B_steps = _per_channel(B, channels).permute(3, 0, 1, 2).contiguous()
    if C.dim() == 3:
        C_steps = C.permute(2, 0, 1).unsqueeze(-1).contiguous()
    else:
        C_steps = _per_channel(C, channels).permute(3, 0, 1, 2).unsqueeze(-1).contiguous()
    state = u.new_zeros(batch, channels, A.shape[1])
    ys = []
    for i in range(length):
        state = torch.exp(dt_steps[i] * A) * state + dtu_steps[i] * B_steps[i]
        # [B, D, 1]
        ys.append(torch.bmm(state, C_steps[i]) if C.dim() == 3 else (state.unsqueeze(-2) @ C_steps[i]).flatten(-2))
    return _finish(torch.stack(ys, dim=2).squeeze(-1), u, D, z)


_PEERS = {"reference": selective_scan_reference, "torch_loop": selective_scan_torch_loop}


def _case(batch: int, channels: int, length: int, state: int, peers: tuple[str, ...]) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)

        def leaf(t: Tensor) -> Tensor:
            return t.to(device).requires_grad_()

        u = leaf(torch.randn(batch, channels, length, generator=g))
        delta = leaf(torch.randn(batch, channels, length, generator=g) * 0.5 - 2)
        A = leaf(-torch.arange(1, state + 1, dtype=torch.float32).repeat(channels, 1))
        B = leaf(torch.randn(batch, state, length, generator=g))
        C = leaf(torch.randn(batch, state, length, generator=g))
        D = leaf(torch.ones(channels))
        z = leaf(torch.randn(batch, channels, length, generator=g))
        bias = leaf(torch.randn(channels, generator=g) * 0.1 - 2)
        inputs = [u, delta, A, B, C, D, z, bias]

        def run(fn: Callable) -> Callable:
            return lambda *t: fn(*t, delta_softplus=True)

        return Case(
            inputs=inputs,
            candidates={"facekernels": run(selective_scan), **{p: run(_PEERS[p]) for p in peers}},
            params=inputs,
        )

    return build


def _workload(name: str, batch: int, channels: int, length: int, state: int, what: str,
              peers: tuple[str, ...] = ("reference", "torch_loop"), compile_peers: tuple[str, ...] = ("torch_loop",),
              modes: tuple[str, ...] = ("forward", "forward+backward")) -> Workload:
    updates = batch * channels * length * state
    steps = batch * channels * length
    return Workload(
        op="selective_scan",
        name=name,
        description=f"{what}: B={batch}, D={channels}, L={length}, N={state}",
        # per state update: the decay's product and exponential, the update's two FMAs and C h
        flops_forward=8.0 * updates + 10.0 * steps,
        # u, delta, z read and out written; B and C read once per batch
        bytes_forward=4.0 * (4 * steps + 2 * batch * state * length),
        # the states recomputed, then the reverse recurrence (about twice the forward's arithmetic)
        flops_backward=24.0 * updates + 20.0 * steps,
        bytes_backward=4.0 * (9 * steps + 4 * batch * state * length),
        build=_case(batch, channels, length, state, peers),
        peers=peers,
        compile_peers=compile_peers,
        modes=modes,
    )


# ---- METST_SF's training step (issue 20) ------------------------------------------------------------
#
# The training step (forward, the released loss, backward) of
# BoostingVRME's spotting-and-recognition network at its default settings on a batch of 32 windows of
# T = 30 frames (SAMM-LV's window), against the same network whose Mamba blocks run the scan as mamba-ssm's
# ``selective_scan_ref`` computes it (:func:`selective_scan_reference`: the [B, D, L, N] decays and inputs
# materialised, a Python loop over L with an einsum per step). Everything else (projections, causal
# convolutions, norms, the stem and the heads) is the same code, so the ratio is what the scan op buys a
# training step.
#
# Drop path is set to 0 so both candidates compute the same function on every call (the released rate, 0.2,
# draws a random mask per call). Only forward+backward is timed (the goal is the training step); the
# compiled peer is left out (compiling a 24-block network whose scan unrolls over L takes minutes on a
# 2-core machine).


def metst_sf_on_reference_scan(model: METST_SF) -> METST_SF:
    """``model`` with every Mamba block's scan swapped for :func:`selective_scan_reference`."""
    return with_swapped(model, Mamba, "scan", selective_scan_reference)


def _metst_sf_case(b: int, t: int, classes: int) -> Callable[[str], Case]:
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

_METST_SF_STEP = [
    Workload(
        op="metst_sf",
        name="metst_sf_train_step",
        description=f"METST_SF training step (forward, the released loss, backward): B={_B} windows of T={_T} frames, "
                    "36 region features, dim 128, d_state 64, 2 x 12 Mamba blocks",
        flops_forward=_FLOPS_FORWARD,
        bytes_forward=4.0 * _PARAMETERS + 4.0 * _B * _T * 40,
        flops_backward=2.0 * _FLOPS_FORWARD,
        bytes_backward=8.0 * _PARAMETERS + 4.0 * _B * _T * 40,
        build=_metst_sf_case(_B, _T, 3),
        peers=("reference",),
        compile_peers=(),
        modes=("forward+backward",),
    ),
]


# The chart's panel of this family stays small (the whole chart must fit 1600 px): the compiled peer is the
# plain loop's, at METST_SF's length (compiling unrolls the loop over L; the reference's compiled form is
# no faster than the loop's); METST_SF's slow path has the fast path's number of state updates and is
# left out. METST_SF's training step is a row of this panel rather than a panel of its own.
WORKLOADS: list[Workload] = [
    _workload("metst_sf_fast", 32, 256, 30, 64, "METST_SF's fast-path Mamba (d_model 128, SAMM-LV windows)"),
    _workload("mamba130m_L128", 8, 1536, 128, 16, "a Mamba-130M layer at L = 128", compile_peers=()),
    # forward only: the reference's backward at L = 1024 takes minutes, the loop's tens of seconds
    _workload("mamba130m", 8, 1536, 1024, 16, "a Mamba-130M layer", compile_peers=(), modes=("forward",)),
    *_METST_SF_STEP,
]

QUICK = {"metst_sf_fast"}
