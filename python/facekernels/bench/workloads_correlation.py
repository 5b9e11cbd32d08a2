"""Benchmark workloads of correlation (MOL's FlowNet cost volume) and its plain-PyTorch peers.

The peers, each returning ``[B, P, P, H, W]`` as the op does:

- ``unfold``: x2 zero-padded by R d, every patch unfolded (``F.unfold`` with ``dilation=d``) and
  multiplied with x1, summed over C: the textbook form, C P^2 H W memory for the unfolded patches.
- ``shifts``: one multiply-sum over C per displacement of the padded x2 (P^2 small kernels).
- ``all_pairs``: one batched matmul of every x1 position with every x2 position (``[B, HW, C] @
  [B, C, HW]``), then one gather of the P^2 displacements each position keeps (an index into the
  flattened products with a slot of zero for displacements past the border, built once per shape).
  It computes HW / P'^2 times the products kept (4x at MOL's shape) but runs them on the BLAS.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.correlation import correlation
from .cases import Case, Workload


def correlation_unfold(x1: Tensor, x2: Tensor, patch_size: int = 21, dilation_patch: int = 2) -> Tensor:
    """Pad x2, unfold every patch, multiply with x1 and sum over the channels."""
    b, c, h, w = x1.shape
    pad = (patch_size // 2) * dilation_patch
    patches = F.unfold(F.pad(x2, (pad, pad, pad, pad)), kernel_size=patch_size, dilation=dilation_patch)
    patches = patches.view(b, c, patch_size * patch_size, h * w)
    return (patches * x1.reshape(b, c, 1, h * w)).sum(1).view(b, patch_size, patch_size, h, w)


def correlation_shifts(x1: Tensor, x2: Tensor, patch_size: int = 21, dilation_patch: int = 2) -> Tensor:
    """One multiply-sum over C per displacement of the zero-padded x2."""
    _, _, h, w = x1.shape
    d, r = dilation_patch, patch_size // 2
    padded = F.pad(x2, (r * d, r * d, r * d, r * d))
    planes = [(x1 * padded[:, :, i * d:i * d + h, j * d:j * d + w]).sum(1)
              for i in range(patch_size) for j in range(patch_size)]
    return torch.stack(planes, 1).unflatten(1, (patch_size, patch_size))


@functools.lru_cache(maxsize=16)
def _all_pairs_index(h: int, w: int, patch_size: int, dilation_patch: int, device: str) -> Tensor:
    """For output (i, j, y, x): the flat index of S[(y, x), (y + di, x + dj)] in the [HW * HW] product
    matrix, or HW * HW (a zero appended to it) where the displaced position is outside."""
    r, d = patch_size // 2, dilation_patch
    disp = (torch.arange(patch_size) - r) * d
    y = torch.arange(h).view(1, 1, h, 1)
    x = torch.arange(w).view(1, 1, 1, w)
    y2 = y + disp.view(-1, 1, 1, 1)
    x2 = x + disp.view(1, -1, 1, 1)
    inside = (y2 >= 0) & (y2 < h) & (x2 >= 0) & (x2 < w)
    flat = (y * w + x) * (h * w) + y2.clamp(0, h - 1) * w + x2.clamp(0, w - 1)
    return torch.where(inside, flat, h * w * h * w).flatten().to(device)


def correlation_all_pairs(x1: Tensor, x2: Tensor, patch_size: int = 21, dilation_patch: int = 2) -> Tensor:
    """Every position against every position in one batched matmul, then a gather of the displacements."""
    b, c, h, w = x1.shape
    products = torch.bmm(x1.reshape(b, c, h * w).transpose(1, 2).contiguous(), x2.reshape(b, c, h * w))
    products = F.pad(products.view(b, h * w * h * w), (0, 1))  # the zero slot
    index = _all_pairs_index(h, w, patch_size, dilation_patch, str(x1.device))
    return products.index_select(1, index).view(b, patch_size, patch_size, h, w)


PEERS: dict[str, Callable[..., Tensor]] = {
    "unfold": correlation_unfold,
    "shifts": correlation_shifts,
    "all_pairs": correlation_all_pairs,
}


def _case(b: int, c: int, h: int, w: int, patch: int, dilation: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        x1 = torch.randn(b, c, h, w, generator=g).to(device).requires_grad_()
        x2 = torch.randn(b, c, h, w, generator=g).to(device).requires_grad_()
        candidates = {"facekernels": lambda a, b_: correlation(a, b_, patch, dilation)}
        for name, fn in PEERS.items():
            candidates[name] = functools.partial(fn, patch_size=patch, dilation_patch=dilation)
        return Case(inputs=[x1, x2], candidates=candidates, params=[x1, x2])

    return build


def _kept_products(h: int, w: int, patch: int, dilation: int) -> int:
    """The (x1 position, x2 position) pairs inside the image, the products the op must compute."""
    r = patch // 2

    def along(n: int) -> int:
        return sum(max(0, n - abs(k * dilation)) for k in range(-r, r + 1))

    return along(h) * along(w)


def _workload(name: str, b: int, c: int, h: int, w: int, patch: int, dilation: int, what: str) -> Workload:
    pairs = b * _kept_products(h, w, patch, dilation)
    n = b * c * h * w
    out = b * patch * patch * h * w
    return Workload(
        op="correlation",
        name=name,
        description=what,
        flops_forward=2.0 * pairs * c,
        bytes_forward=4.0 * (2 * n + out),
        flops_backward=4.0 * pairs * c,  # grad_x1 and grad_x2, one product each per kept pair and channel
        bytes_backward=4.0 * (4 * n + out),
        build=_case(b, c, h, w, patch, dilation),
        peers=tuple(PEERS),
        # shifts compiles P^2 = 441 reductions into one graph: minutes of compile on 2 cores; unfold and
        # all_pairs are compiled.
        compile_peers=("unfold", "all_pairs"),
    )


WORKLOADS: list[Workload] = [
    _workload("mol_flownet", 8, 256, 16, 16, 21, 2,
              "MOL's FlowNet correlation: 8 pairs, C=256, 16x16, P=21, d=2"),
    _workload("flownetc_32x48", 2, 256, 32, 48, 21, 2,
              "FlowNetC's correlation on a 32x48 map (band narrower than the rows): B=2, C=256, P=21, d=2"),
]

QUICK = {"mol_flownet"}
