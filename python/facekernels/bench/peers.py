"""The plain-PyTorch peers each facekernels op is measured against (the strongest we know, written the
way the source papers' code or a careful PyTorch user would)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from ..nn.fcc import FCC


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


class FCCConv2d(FCC):
    """The same FCC block with its circular convolutions written as MOL writes them (conv2d over cat)."""

    circular = staticmethod(circular_conv_conv2d)
