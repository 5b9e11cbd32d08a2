"""The benchmark workloads: the paper shapes, declared once, with their FLOPs and minimal bytes.

Each workload builds its inputs and the candidates to time on a device: facekernels and its plain-PyTorch
peers (see peers.py); the harness adds the torch.compile'd peers and times forward and forward+backward.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from ..nn.fcc import FCC
from ..ops.circular_conv import circular_conv
from . import peers


@dataclass
class Case:
    """Inputs and candidates of one workload on one device, ready to time."""

    inputs: list[torch.Tensor]
    candidates: dict[str, Callable[..., torch.Tensor]]  # name -> fn(*inputs); "facekernels" first
    peers: list[str]                                    # which candidates are plain-PyTorch peers
    compile_peers: list[str]                            # peers also measured torch.compile'd
    params: list[torch.Tensor] = field(default_factory=list)  # leaves whose grads the backward makes


@dataclass
class Workload:
    op: str
    name: str
    description: str
    flops_forward: float
    bytes_forward: float
    flops_backward: float   # of the backward alone
    bytes_backward: float
    build: Callable[[str], Case]
    modes: tuple[str, ...] = ("forward", "forward+backward")


def _circular_conv_case(b: int, c: int, h: int, w: int, taps: int, dim: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, c, h, w, generator=g).to(device).requires_grad_()
        weight = (torch.randn(c, taps, generator=g) / taps**0.5).to(device).requires_grad_()
        bias = torch.randn(c, generator=g).to(device).requires_grad_()
        return Case(
            inputs=[x, weight, bias],
            candidates={
                "facekernels": lambda x, w, bias: circular_conv(x, w, bias, dim),
                "conv2d": lambda x, w, bias: peers.circular_conv_conv2d(x, w, bias, dim),
                "fft": lambda x, w, bias: peers.circular_conv_fft(x, w, bias, dim),
            },
            peers=["conv2d", "fft"],
            compile_peers=["conv2d", "fft"],
            params=[x, weight, bias],
        )

    return build


def _circular_conv(name: str, b: int, c: int, h: int, w: int, taps: int, dim: int, what: str) -> Workload:
    n = b * c * h * w
    return Workload(
        op="circular_conv",
        name=name,
        description=what,
        flops_forward=2.0 * n * taps,
        bytes_forward=4.0 * (2 * n + c * taps + c),
        # grad_x (a correlation) and grad_weight (a reduction), each one product per tap
        flops_backward=4.0 * n * taps,
        bytes_backward=4.0 * (3 * n + 2 * c * taps + 2 * c),
        build=_circular_conv_case(b, c, h, w, taps, dim),
    )


def _fcc_case(b: int, dim: int, s: int, k: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        torch.manual_seed(0)
        ours = FCC(dim, k).to(device).train()
        peer = peers.FCCConv2d(dim, k).to(device).train()
        peer.load_state_dict(ours.state_dict())
        x = torch.randn(b, 2 * dim, s, s, device=device).requires_grad_()
        return Case(
            inputs=[x],
            candidates={"facekernels": ours, "conv2d": peer},
            peers=["conv2d"],
            compile_peers=["conv2d"],
            params=[x, *ours.parameters(), *peer.parameters()],
        )

    return build


def _fcc(name: str, b: int, dim: int, s: int, k: int) -> Workload:
    n = b * dim * s * s
    return Workload(
        op="fcc",
        name=name,
        description=f"FCC block (MOL), training mode, B={b}, 2x{dim} channels, {s}x{s}",
        flops_forward=4 * 2.0 * n * s,
        bytes_forward=4.0 * (2 * 2 * n),
        flops_backward=4 * 4.0 * n * s,
        bytes_backward=4.0 * (3 * 2 * n),
        build=_fcc_case(b, dim, s, k),
        modes=("forward+backward",),
    )


WORKLOADS: list[Workload] = [
    _circular_conv("fcc_branch_h", 32, 64, 16, 16, 16, 2, "one FCC branch along H: B=32, C=64, 16x16, L=16"),
    _circular_conv("fcc_branch_w", 32, 64, 16, 16, 16, 3, "one FCC branch along W: B=32, C=64, 16x16, L=16"),
    _fcc("fcc_block_train", 32, 64, 16, 32),
]

QUICK = {"fcc_branch_h", "fcc_branch_w", "fcc_block_train"}


def select(ops: list[str] | None = None, quick: bool = False) -> list[Workload]:
    chosen = [w for w in WORKLOADS if not ops or w.op in ops or w.name in ops]
    if quick:
        chosen = [w for w in chosen if w.name in QUICK]
    return chosen
