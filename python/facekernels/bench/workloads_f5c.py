"""Benchmark workload of the F5C module (issue 5) and its plain-PyTorch peer.

The peer is the same block written with the eager forms a careful PyTorch user writes, no Python loop:
the FCC's circular convolutions as MOL writes them (conv2d over the input concatenated with its first
rows, workloads_fcc.FCCConv2d); the kNN as normalise, one bmm of the Gram matrix and topk; the EdgeConv as a
gather of the neighbours, two batched linears over the positions (the centre term once, the edge term
per neighbour) and an amax over the neighbours. It materialises the [B, C, N, k] differences and the
[B, C, k, M] responses that facekernels' edge_conv_max keeps within a tile. Parameters load from ours, so
both compute the same function; the timed step is training-mode forward+backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.ccc import CCC, F5C
from .cases import Case, Workload, module_case
from .workloads_edge_conv import edge_conv_max_eager
from .workloads_fcc import FCCConv2d


def cosine_topk_eager(x: Tensor, k: int, y: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """cosine_topk in plain PyTorch: F.normalize over the channels, the [B, N, M] similarities by bmm,
    topk over M. Not differentiable (computed without autograd)."""
    with torch.no_grad():
        xh = F.normalize(x, dim=1)
        yh = xh if y is None else F.normalize(y, dim=1)
        values, indices = torch.bmm(xh.transpose(1, 2), yh).topk(k, dim=-1)
    return values, indices


def _cosine_neighbours_eager(x: Tensor, k: int) -> Tensor:
    return cosine_topk_eager(x, k)[1]


class CCCEager(CCC):
    """CCC on the eager kNN and EdgeConv."""

    knn = staticmethod(_cosine_neighbours_eager)
    edge_conv = staticmethod(edge_conv_max_eager)


class F5CEager(F5C):
    """F5C with the eager FCC (conv2d over cat) and the eager CCC."""

    def __init__(self, dim: int = 64, meta_kernel_size: int = 32, positions: int = 256, k: int = 4) -> None:
        super().__init__(dim, meta_kernel_size, positions, k)
        self.fcc = FCCConv2d(dim, meta_kernel_size)
        self.ccc = CCCEager(positions, k)


def _f5c_case(b: int, dim: int, s: int, kernel: int, k: int) -> Callable[[str], Case]:
    return lambda device: module_case(device, lambda: F5C(dim, kernel, s * s, k),
                                      lambda: F5CEager(dim, kernel, s * s, k), "eager", lambda _: (b, 2 * dim, s, s))


def _f5c(name: str, b: int, dim: int, s: int, kernel: int, k: int) -> Workload:
    c, n = 2 * dim, s * s
    fcc = b * dim * s * s
    # FCC: four circular convolutions of S taps over half the channels each (as workloads_fcc counts);
    # CCC: the Gram matrix of the kNN (2 B N^2 C), the centre and the k edge products (2 B C N^2 each);
    # backward: the FCC's twice its forward, the edge conv's gradients for x and for both weights.
    edge = 2.0 * b * c * n * n * (k + 1)
    return Workload(
        op="f5c",
        name=name,
        description=f"F5C block (MOL: FCC + CCC), training mode, B={b}, {c} channels, {s}x{s}, k={k}",
        flops_forward=4 * 2.0 * fcc * s + 2.0 * b * n * n * c + edge,
        bytes_forward=4.0 * (2 * b * c * n + 2 * b * c * n + 4 * n * n),
        flops_backward=4 * 4.0 * fcc * s + 2 * edge,
        bytes_backward=4.0 * (6 * b * c * n + 8 * n * n),
        build=_f5c_case(b, dim, s, kernel, k),
        peers=("eager",),
        modes=("forward+backward",),
    )


WORKLOADS: list[Workload] = [
    _f5c("f5c_block_train", 32, 64, 16, 32, 4),  # issue 5's goal: >= 2x the eager peer
]

QUICK = {"f5c_block_train"}
