"""Benchmark workloads of alignment_energy (issue 8) and its plain-PyTorch peer.

The peer is what a careful PyTorch user writes for bounded memory: a chunk of rows at a time, the
normalised blocks multiplied against every point (two GEMMs per chunk, the full C x C of each), then the
weighted row sums (or a top-k and a gather for knn). facekernels computes each pair once (D and V are
symmetric), fuses everything after the GEMMs into one pass over cache-resident tiles, and reuses its tile
buffers. Candidates return ``per_point`` (the harness times one tensor); the op is not differentiable, so
only the forward is timed.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.alignment_energy import alignment_energy
from .cases import Case, Workload


def alignment_energy_chunked(
    points: Tensor,
    directions: Tensor,
    mode: str = "inverse_distance",
    k: int = 10,
    metric: str = "cosine",
    chunk: int = 1024,
) -> Tensor:
    """per_point of alignment_energy in plain PyTorch, ``chunk`` rows at a time (peak memory a few
    ``[chunk, C]`` temporaries). Coincident points are not snapped (random data has none)."""
    C = points.shape[0]
    unit_directions = F.normalize(directions, dim=1)
    if metric == "cosine":
        p = F.normalize(points, dim=1)
        sq = None
    else:
        p = points
        sq = (points * points).sum(1)
    out = []
    for r0 in range(0, C, chunk):
        r1 = min(C, r0 + chunk)
        s = p[r0:r1] @ p.T
        if sq is None:
            d = 1 - s
        else:
            d = (sq[r0:r1, None] + sq[None, :] - 2 * s).clamp_min(0).sqrt()
        rows = torch.arange(r1 - r0, device=points.device)
        if mode == "inverse_distance":
            d[rows, rows + r0] = 0  # the point itself: excluded with the other D == 0
            w = torch.where(d > 0, d.reciprocal(), 0.0)
            v = 1 - unit_directions[r0:r1] @ unit_directions.T
            out.append((w * v).sum(1) / w.sum(1))
        else:
            d[rows, rows + r0] = float("inf")
            nearest = d.topk(k, dim=1, largest=False).indices
            v = 1 - (unit_directions[r0:r1, None, :] * unit_directions[nearest]).sum(-1)
            out.append(v.mean(1))
    return torch.cat(out)


def _case(c: int, d: int, mode: str, k: int, metric: str) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        points = torch.randn(c, d, generator=g).to(device)
        directions = torch.randn(c, d, generator=g).to(device)
        return Case(
            inputs=[points, directions],
            candidates={
                "facekernels": lambda p, v: alignment_energy(p, v, mode, k, metric)[1],
                "chunked": lambda p, v: alignment_energy_chunked(p, v, mode, k, metric),
            },
        )

    return build


def _workload(
    name: str, c: int, d: int, mode: str = "inverse_distance", k: int = 10, metric: str = "cosine"
) -> Workload:
    # The minimal work: every unordered pair once, one D-dimensional dot product per matrix (two in
    # inverse_distance: D and V; one in knn, whose V is needed for only k neighbours).
    gemms = 2 if mode == "inverse_distance" else 1
    what = f"{mode}{f' k={k}' if mode == 'knn' else ''}, {metric}"
    return Workload(
        op="alignment_energy",
        name=name,
        description=f"alignment energy, C={c} curves of D={d}, float32, {what}",
        flops_forward=gemms * float(c) * c * d,
        bytes_forward=4.0 * (2 * c * d + c),
        flops_backward=0.0,
        bytes_backward=0.0,
        build=_case(c, d, mode, k, metric),
        peers=("chunked",),
        modes=("forward",),
    )


WORKLOADS: list[Workload] = [
    _workload("ae_c20000", 20000, 512),  # issue 8's goal: >= 3x the chunked peer on CPU
    _workload("ae_c4096", 4096, 512),
    _workload("ae_knn_c8192", 8192, 512, mode="knn", k=10),
]

QUICK = {"ae_c4096"}
