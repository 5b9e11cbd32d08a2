"""Benchmark workload of the FCC block (MOL's frequency-domain circular convolution, four circular_conv
branches) against the same block whose circular convolutions are written as MOL writes them (conv2d over
the input concatenated with its first rows). Same weights; the timed step is training-mode
forward+backward.
"""

from __future__ import annotations

from ..nn.fcc import FCC
from .cases import Workload, module_case
from .workloads_circular_conv import circular_conv_conv2d


class FCCConv2d(FCC):
    """The same FCC block with its circular convolutions written as MOL writes them (conv2d over cat)."""

    circular = staticmethod(circular_conv_conv2d)


def _workload(name: str, b: int, dim: int, s: int, k: int) -> Workload:
    n = b * dim * s * s
    return Workload(
        op="fcc",
        name=name,
        description=f"FCC block (MOL), training mode, B={b}, 2x{dim} channels, {s}x{s}",
        flops_forward=4 * 2.0 * n * s,
        bytes_forward=4.0 * (2 * 2 * n),
        flops_backward=4 * 4.0 * n * s,
        bytes_backward=4.0 * (3 * 2 * n),
        build=lambda device: module_case(device, lambda: FCC(dim, k), lambda: FCCConv2d(dim, k), "conv2d",
                                         lambda _: (b, 2 * dim, s, s)),
        peers=("conv2d",),
        modes=("forward+backward",),
    )


WORKLOADS: list[Workload] = [
    _workload("fcc_block_train", 32, 64, 16, 32),
]

QUICK = {"fcc_block_train"}
