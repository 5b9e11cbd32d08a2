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


def _window_mean(t: Tensor, kernel_size: int) -> Tensor:
    """Mean over the clipped kernel_size window: avg_pool2d without counting the padding."""
    return F.avg_pool2d(t, kernel_size, 1, kernel_size // 2, count_include_pad=False)


def local_mean_var_avg_pool(x: Tensor, kernel_size: int = 7) -> tuple[Tensor, Tensor]:
    """The windowed statistics as a careful PyTorch user writes them: two avg_pool2d passes (x, x^2) and
    var = E[x^2] - E[x]^2, clamped at 0 (one-pass, so float32 loses accuracy on offset data)."""
    mean = _window_mean(x, kernel_size)
    return mean, (_window_mean(x * x, kernel_size) - mean * mean).clamp_min(0)


def local_stat_transform_avg_pool(x: Tensor, guide: Tensor, kernel_size: int = 7, eps: float = 1e-5) -> Tensor:
    """The local AdaIN with four avg_pool2d window means and the elementwise formula."""
    mu_x, var_x = local_mean_var_avg_pool(x, kernel_size)
    mu_g, var_g = local_mean_var_avg_pool(guide, kernel_size)
    return (x - mu_x) / torch.sqrt(var_x + eps) * torch.sqrt(var_g + eps) + mu_g


def _box_sum_integral(t: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """Window sums and counts over clipped windows from an integral image (cumsum over H and W): a cost
    independent of kernel_size, like facekernels' running sums."""
    r = kernel_size // 2
    h, w = t.shape[-2:]
    integral = F.pad(t.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    top = (torch.arange(h, device=t.device) - r).clamp(0, h)
    bottom = (torch.arange(h, device=t.device) + r + 1).clamp(0, h)
    left = (torch.arange(w, device=t.device) - r).clamp(0, w)
    right = (torch.arange(w, device=t.device) + r + 1).clamp(0, w)
    rows_b, rows_t = integral.index_select(-2, bottom), integral.index_select(-2, top)
    total = (rows_b.index_select(-1, right) - rows_b.index_select(-1, left)
             - rows_t.index_select(-1, right) + rows_t.index_select(-1, left))
    count = ((bottom - top).view(-1, 1) * (right - left).view(1, -1)).to(t.dtype)
    return total, count


def local_stat_transform_integral(x: Tensor, guide: Tensor, kernel_size: int = 7, eps: float = 1e-5) -> Tensor:
    """The local AdaIN from integral images of x, x^2, guide, guide^2 (one stacked cumsum pass), on data
    centred per plane first: float32 integral images of raw values lose too much to cancellation."""
    xc = x - x.mean((-2, -1), keepdim=True)
    gc = guide - guide.mean((-2, -1), keepdim=True)
    stacked = torch.stack((xc, xc * xc, gc, gc * gc))
    sums, count = _box_sum_integral(stacked, kernel_size)
    mu_x, sq_x, mu_g, sq_g = (sums / count).unbind(0)
    var_x = (sq_x - mu_x * mu_x).clamp_min(0)
    var_g = (sq_g - mu_g * mu_g).clamp_min(0)
    return (xc - mu_x) / torch.sqrt(var_x + eps) * torch.sqrt(var_g + eps) + mu_g + (guide - gc)
