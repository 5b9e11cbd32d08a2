"""Benchmark workloads of circular_conv (one branch of MOL's FCC) and its plain-PyTorch peers.

The peers: MOL's formulation, a depthwise conv2d over the input concatenated with its first L-1 rows
(columns); and the FFT, circular cross-correlation as ``irfft(rfft(x) * conj(rfft(w)))`` along the
convolved axis.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.circular_conv import circular_conv
from .cases import Case, Workload


def circular_conv_conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, dim: int = 2) -> Tensor:
    """MOL's formulation: a depthwise conv2d over the input concatenated with its first L-1 rows
    (columns)."""
    c, taps = weight.shape
    axis = dim % 4
    extended = torch.cat((x, x.narrow(axis, 0, taps - 1)), dim=axis)
    kernel = weight.view(c, 1, taps, 1) if axis == 2 else weight.view(c, 1, 1, taps)
    return F.conv2d(extended, kernel, bias, groups=c)


def circular_conv_fft(x: Tensor, weight: Tensor, bias: Tensor | None = None, dim: int = 2) -> Tensor:
    """Circular cross-correlation by the FFT along the convolved axis: y = irfft(rfft(x) * conj(rfft(w)))."""
    c = weight.shape[0]
    axis = dim % 4
    n = x.shape[axis]
    spectrum = torch.fft.rfft(weight, n=n, dim=1).conj()
    shape = [1, c, 1, 1]
    shape[axis] = spectrum.shape[1]
    y = torch.fft.irfft(torch.fft.rfft(x, dim=axis) * spectrum.view(shape), n=n, dim=axis)
    if bias is not None:
        y = y + bias.view(1, c, 1, 1)
    return y


def _case(b: int, c: int, h: int, w: int, taps: int, dim: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, c, h, w, generator=g).to(device).requires_grad_()
        weight = (torch.randn(c, taps, generator=g) / taps**0.5).to(device).requires_grad_()
        bias = torch.randn(c, generator=g).to(device).requires_grad_()
        return Case(
            inputs=[x, weight, bias],
            candidates={
                "facekernels": lambda x, w, bias: circular_conv(x, w, bias, dim),
                "conv2d": lambda x, w, bias: circular_conv_conv2d(x, w, bias, dim),
                "fft": lambda x, w, bias: circular_conv_fft(x, w, bias, dim),
            },
            params=[x, weight, bias],
        )

    return build


def _workload(name: str, b: int, c: int, h: int, w: int, taps: int, dim: int, what: str) -> Workload:
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
        build=_case(b, c, h, w, taps, dim),
        peers=("conv2d", "fft"),
    )


WORKLOADS: list[Workload] = [
    _workload("fcc_branch_h", 32, 64, 16, 16, 16, 2, "one FCC branch along H: B=32, C=64, 16x16, L=16"),
    _workload("fcc_branch_w", 32, 64, 16, 16, 16, 3, "one FCC branch along W: B=32, C=64, 16x16, L=16"),
]

QUICK = {"fcc_branch_h", "fcc_branch_w"}
