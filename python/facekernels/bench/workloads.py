"""The benchmark workloads: the paper shapes, declared once, with their FLOPs and minimal bytes.

Each workload builds its inputs and the candidates to time on a device: facekernels and its plain-PyTorch
peers (see peers.py); the harness adds the torch.compile'd peers and times forward and forward+backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from ..nn.fcc import FCC
from ..ops.circular_conv import circular_conv
from ..ops.local_stats import local_mean_var, local_stat_transform
from . import peers
from .cases import Case, Workload  # Case and Workload are also used from here by the harness


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


def _local_stats_case(op: str, b: int, c: int, h: int, w: int, k: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, c, h, w, generator=g).to(device).requires_grad_()
        guide = (torch.randn(b, c, h, w, generator=g) * 2 + 1).to(device).requires_grad_()
        if op == "local_mean_var":
            # one output for the harness: mean + var (both gradients flow)
            return Case(
                inputs=[x],
                candidates={
                    "facekernels": lambda x: sum(local_mean_var(x, k)),
                    "avg_pool": lambda x: sum(peers.local_mean_var_avg_pool(x, k)),
                },
                peers=["avg_pool"],
                compile_peers=["avg_pool"],
                params=[x],
            )
        return Case(
            inputs=[x, guide],
            candidates={
                "facekernels": lambda x, g: local_stat_transform(x, g, k),
                "avg_pool": lambda x, g: peers.local_stat_transform_avg_pool(x, g, k),
                "integral": lambda x, g: peers.local_stat_transform_integral(x, g, k),
            },
            peers=["avg_pool", "integral"],
            compile_peers=["avg_pool"],
            params=[x, guide],
        )

    return build


def _local_stats(op: str, name: str, b: int, c: int, h: int, w: int, k: int) -> Workload:
    n = b * c * h * w
    inputs = 2 if op == "local_stat_transform" else 1
    return Workload(
        op=op,
        name=name,
        description=f"{op}: B={b}, C={c}, {h}x{w}, kernel {k}",
        # four running box sums (x, x^2, g, g^2: two adds each per direction) and the formula, per pixel;
        # local_mean_var has half the sums
        flops_forward=(36.0 if inputs == 2 else 14.0) * n,
        bytes_forward=4.0 * n * (inputs + (1 if inputs == 2 else 2)),
        # the statistics again, six coefficient box sums and the gradient formulas
        flops_backward=(110.0 if inputs == 2 else 40.0) * n,
        bytes_backward=4.0 * n * (2 * inputs + (1 if inputs == 2 else 2)),
        build=_local_stats_case(op, b, c, h, w, k),
    )


WORKLOADS: list[Workload] = [
    _circular_conv("fcc_branch_h", 32, 64, 16, 16, 16, 2, "one FCC branch along H: B=32, C=64, 16x16, L=16"),
    _circular_conv("fcc_branch_w", 32, 64, 16, 16, 16, 3, "one FCC branch along W: B=32, C=64, 16x16, L=16"),
    _fcc("fcc_block_train", 32, 64, 16, 32),
    _local_stats("local_stat_transform", "sfft_k7", 4, 128, 128, 128, 7),
    _local_stats("local_stat_transform", "sfft_k3", 4, 128, 128, 128, 3),
    _local_stats("local_stat_transform", "sfft_k15", 4, 128, 128, 128, 15),
    _local_stats("local_stat_transform", "sfft_64x256", 1, 64, 256, 256, 7),
    _local_stats("local_mean_var", "meanvar_k7", 4, 128, 128, 128, 7),
]

QUICK = {"fcc_branch_h", "fcc_branch_w", "fcc_block_train", "sfft_k7"}


def _register_family_workloads() -> None:
    # Families declared in their own modules (they import Case and Workload from here).
    from . import workloads_alignment_energy

    WORKLOADS.extend(workloads_alignment_energy.WORKLOADS)
    QUICK.update(workloads_alignment_energy.QUICK)
    from . import workloads_diff_attention

    WORKLOADS.extend(workloads_diff_attention.WORKLOADS)
    QUICK.update(workloads_diff_attention.QUICK)
    from . import workloads_edge_conv

    WORKLOADS.extend(workloads_edge_conv.WORKLOADS)
    QUICK.update(workloads_edge_conv.QUICK)
    from . import workloads_st_graph_conv

    WORKLOADS.extend(workloads_st_graph_conv.WORKLOADS)
    QUICK.update(workloads_st_graph_conv.QUICK)
    from . import workloads_diff_attention_modules

    WORKLOADS.extend(workloads_diff_attention_modules.WORKLOADS)
    QUICK.update(workloads_diff_attention_modules.QUICK)
    from . import workloads_f5c

    WORKLOADS.extend(workloads_f5c.WORKLOADS)
    QUICK.update(workloads_f5c.QUICK)
    from . import workloads_stgcn

    WORKLOADS.extend(workloads_stgcn.WORKLOADS)
    QUICK.update(workloads_stgcn.QUICK)


_register_family_workloads()


def select(ops: list[str] | None = None, quick: bool = False) -> list[Workload]:
    chosen = [w for w in WORKLOADS if not ops or w.op in ops or w.name in ops]
    if quick:
        chosen = [w for w in chosen if w.name in QUICK]
    return chosen
