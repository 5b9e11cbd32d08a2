"""MOL's FCC block ("fully-connected convolution"), on the circular_conv op."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.circular_conv import circular_conv

__all__ = ["FCC"]

_METHODS = ("crop", "interpolation_bilinear")


class FCC(nn.Module):
    r"""MOL's FCC block: two global circular depthwise convolutions per half of the channels.

    Input ``[B, 2*dim, H, W]`` with ``H, W <= meta_kernel_size`` (MOL runs it square, 16x16, with the
    default kernel size 32). With ``x1, x2`` the channel halves and kernels/PEs cropped to their first
    H (W) taps::

        x1' = BN1(x1 + PE1_H)                 x2' = BN2(x2 + PE1_W)
        y1  = circ_H(x1', K1_H) + b1_H + PE2_W  y2  = circ_W(x2', K1_W) + b1_W + PE2_H
        z1  = circ_W(y1, K2_W) + b2_W          z2  = circ_H(y2, K2_H) + b2_H
        out = cat(x1 + z1, x2 + z2)

    where ``circ_H(x, K)[h] = sum_t K[t] x[(h + t) mod H]`` (:func:`facekernels.ops.circular_conv`).
    Parameter names and shapes are those of the released module, so its state_dicts load directly;
    the ``ffn.*`` entries it saves but never uses in forward are accepted and dropped.

    Args:
        dim: channels per half (the input has ``2 * dim``).
        meta_kernel_size: K, the stored kernel and positional-embedding length.
        instance_kernel_method: ``"crop"`` (first H/W taps, the released default) or
            ``"interpolation_bilinear"`` (resampled to H/W with align_corners=True).
        use_pe: add the positional embeddings.
        mid_mix: channel-shuffle (groups=2) the halves between the two convolutions.
        bias: learnable per-channel biases of the four convolutions.
    """

    # The circular convolution this block runs; benchmark peers swap in plain-PyTorch versions.
    circular = staticmethod(circular_conv)

    def __init__(
        self,
        dim: int = 64,
        meta_kernel_size: int = 32,
        instance_kernel_method: str = "crop",
        use_pe: bool = True,
        mid_mix: bool = False,
        bias: bool = True,
    ) -> None:
        super().__init__()
        if dim < 1 or meta_kernel_size < 1:
            raise ValueError(f"FCC: dim and meta_kernel_size must be >= 1, got {dim} and {meta_kernel_size}")
        if instance_kernel_method not in _METHODS:
            raise ValueError(f"FCC: instance_kernel_method must be one of {_METHODS}, got {instance_kernel_method!r}")
        self.dim = dim
        self.meta_kernel_size = k = meta_kernel_size
        self.instance_kernel_method = instance_kernel_method
        self.use_pe = use_pe
        self.mid_mix = mid_mix
        self.meta_kernel_1_H = nn.Parameter(torch.empty(dim, 1, k, 1))
        self.meta_kernel_1_W = nn.Parameter(torch.empty(dim, 1, 1, k))
        self.meta_kernel_2_H = nn.Parameter(torch.empty(dim, 1, k, 1))
        self.meta_kernel_2_W = nn.Parameter(torch.empty(dim, 1, 1, k))
        for name in ("meta_1_H_bias", "meta_1_W_bias", "meta_2_H_bias", "meta_2_W_bias"):
            self.register_parameter(name, nn.Parameter(torch.empty(dim)) if bias else None)
        for name, shape in (
            ("meta_pe_1_H", (1, dim, k, 1)),
            ("meta_pe_1_W", (1, dim, 1, k)),
            ("meta_pe_2_H", (1, dim, k, 1)),
            ("meta_pe_2_W", (1, dim, 1, k)),
        ):
            self.register_parameter(name, nn.Parameter(torch.empty(shape)) if use_pe else None)
        self.pre_Norm_1 = nn.BatchNorm2d(dim)
        self.pre_Norm_2 = nn.BatchNorm2d(dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The released initialisation: kernels as a depthwise Conv2d's default (uniform within
        1/sqrt(K)), biases and positional embeddings standard normal."""
        bound = 1.0 / math.sqrt(self.meta_kernel_size)
        with torch.no_grad():
            for kernel in (self.meta_kernel_1_H, self.meta_kernel_1_W, self.meta_kernel_2_H, self.meta_kernel_2_W):
                kernel.uniform_(-bound, bound)
            for p in (self.meta_1_H_bias, self.meta_1_W_bias, self.meta_2_H_bias, self.meta_2_W_bias,
                      self.meta_pe_1_H, self.meta_pe_1_W, self.meta_pe_2_H, self.meta_pe_2_W):
                if p is not None:
                    p.normal_()
        self.pre_Norm_1.reset_parameters()
        self.pre_Norm_2.reset_parameters()

    def _instance(self, meta: Tensor, size: int, axis: int) -> Tensor:
        """Crop or resample a stored kernel/PE (length K on `axis`) to `size`."""
        if self.instance_kernel_method == "crop":
            return meta.narrow(axis, 0, size)
        out_size = [1, 1]
        out_size[axis - 2] = size
        return F.interpolate(meta, out_size, mode="bilinear", align_corners=True)

    def _kernel(self, meta: Tensor, size: int, axis: int) -> Tensor:
        return self._instance(meta, size, axis).reshape(self.dim, size)

    def _pe(self, meta: Tensor | None, size: int, axis: int) -> Tensor | float:
        return 0.0 if meta is None else self._instance(meta, size, axis)

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 4 or x.size(1) != 2 * self.dim:
            raise ValueError(f"FCC: x must be [B, {2 * self.dim}, H, W] (2*dim channels), got {list(x.shape)}")
        h, w = x.shape[-2:]
        if self.instance_kernel_method == "crop" and (h > self.meta_kernel_size or w > self.meta_kernel_size):
            raise ValueError(
                f"FCC: with crop, H and W must be <= meta_kernel_size = {self.meta_kernel_size}, got {h}x{w}"
            )
        x1, x2 = torch.chunk(x, 2, dim=1)
        y1 = self.pre_Norm_1(x1 + self._pe(self.meta_pe_1_H, h, 2))
        y2 = self.pre_Norm_2(x2 + self._pe(self.meta_pe_1_W, w, 3))
        y1 = self.circular(y1, self._kernel(self.meta_kernel_1_H, h, 2), self.meta_1_H_bias, 2)
        y2 = self.circular(y2, self._kernel(self.meta_kernel_1_W, w, 3), self.meta_1_W_bias, 3)
        # The convolutions' outputs are fresh tensors their backward does not keep, so the additions
        # after them run in place (two 2*B*dim*H*W allocations fewer per branch and pass).
        if self.mid_mix:
            y1, y2 = torch.chunk(F.channel_shuffle(torch.cat((y1, y2), dim=1), 2), 2, dim=1)
            y1 = y1 + self._pe(self.meta_pe_2_W, w, 3)
            y2 = y2 + self._pe(self.meta_pe_2_H, h, 2)
        elif self.use_pe:
            y1 = y1.add_(self._pe(self.meta_pe_2_W, w, 3))
            y2 = y2.add_(self._pe(self.meta_pe_2_H, h, 2))
        z1 = self.circular(y1, self._kernel(self.meta_kernel_2_W, w, 3), self.meta_2_W_bias, 3)
        z2 = self.circular(y2, self._kernel(self.meta_kernel_2_H, h, 2), self.meta_2_H_bias, 2)
        return torch.cat((z1.add_(x1), z2.add_(x2)), dim=1)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The released module registers an `ffn` it never calls; its entries are dropped on load.
        for key in [k for k in state_dict if k.startswith(prefix + "ffn.")]:
            del state_dict[key]
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (f"dim={self.dim}, meta_kernel_size={self.meta_kernel_size}, "
                f"instance_kernel_method={self.instance_kernel_method!r}, use_pe={self.use_pe}, "
                f"mid_mix={self.mid_mix}")
