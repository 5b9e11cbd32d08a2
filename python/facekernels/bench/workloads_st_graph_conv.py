"""Benchmark workloads of st_graph_conv (issue 6) and its plain-PyTorch peer.

The peer is ST-GCN's ConvTemporalGraphical as written in the reference implementation: a 1x1 Conv2d to
K * Cout channels (materialising [N, K, Cout, T, V]), then einsum('nkctv,kvw->nctw') (or with a
per-sample adjacency 'nkctv,nkvw->nctw'). Both take the same tensors: weight [K, Cout, Cin] is the conv
weight viewed as [K * Cout, Cin, 1, 1] and bias [K, Cout] the conv bias viewed as [K * Cout].

FLOPs: the forward declares the cheaper contraction order (what facekernels runs): 2 (K Cin Cout T V +
K min(Cin, Cout) T V^2) per sample; the issue's "aggregating first needs about 9.5 GFLOP" at the LRW
shape. The backward declares the minimal work with all four gradients: grad_x and grad_adjacency (one
channel product, two aggregations) and grad_weight (one channel product against the forward's
aggregated input), 2 (2 K Cin Cout T V + 2 K min(Cin, Cout) T V^2) per sample; facekernels recomputes
the aggregated input rather than keep [N, K, Cin, T, V] alive between forward and backward, so it does a
little more than it declares.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.st_graph_conv import st_graph_conv
from .cases import Case, Workload


def st_gcn_conv_einsum(x: Tensor, weight: Tensor, adjacency: Tensor, bias: Tensor | None = None,
                       mask: Tensor | None = None) -> Tensor:
    """ST-GCN's ConvTemporalGraphical: a 1x1 convolution to K * Cout channels, then the einsum over the
    graph (shared [K, V, V] or per-sample [N, K, V, V] adjacency). With a mask [N, T, V] (bool), the
    eager form of st_graph_conv's masked semantics: the conv's messages (bias included) of masked points
    are zeroed before the einsum and the output at masked points after it."""
    k, cout, cin = weight.shape
    n, _, t, v = x.shape
    m = None if mask is None else mask.unsqueeze(1).to(x.dtype)
    if m is not None:
        x = torch.where(mask.unsqueeze(1), x, 0.0)
    y = F.conv2d(x, weight.reshape(k * cout, cin, 1, 1), None if bias is None else bias.reshape(k * cout))
    if m is not None:
        y = y * m
    y = y.view(n, k, cout, t, v)
    if adjacency.dim() == 3:
        out = torch.einsum("nkctv,kvw->nctw", y, adjacency)
    else:
        out = torch.einsum("nkctv,nkvw->nctw", y, adjacency)
    return out if m is None else out * m


def _case(n: int, cin: int, cout: int, t: int, v: int, k: int, per_sample: bool) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(n, cin, t, v, generator=g).to(device).requires_grad_()
        weight = (torch.randn(k, cout, cin, generator=g) / cin**0.5).to(device).requires_grad_()
        adjacency = (torch.rand(*((n,) if per_sample else ()), k, v, v, generator=g) / v).to(device)
        adjacency.requires_grad_()
        bias = (torch.randn(k, cout, generator=g) * 0.1).to(device).requires_grad_()
        return Case(
            inputs=[x, weight, adjacency, bias],
            candidates={"facekernels": st_graph_conv, "conv_einsum": st_gcn_conv_einsum},
            params=[x, weight, adjacency, bias],
        )

    return build


def _workload(name: str, n: int, cin: int, cout: int, t: int, v: int, k: int, per_sample: bool, what: str) -> Workload:
    channel = float(k) * cin * cout * t * v * n
    aggregate = float(k) * min(cin, cout) * t * v * v * n
    adjacency = (n if per_sample else 1) * k * v * v
    x_size, out_size = n * cin * t * v, n * cout * t * v
    return Workload(
        op="st_graph_conv",
        name=name,
        description=f"st_graph_conv ({what}): N={n}, Cin={cin}, Cout={cout}, T={t}, V={v}, K={k}, "
        f"{'per-sample' if per_sample else 'shared'} adjacency, float32",
        flops_forward=2.0 * (channel + aggregate),
        bytes_forward=4.0 * (x_size + out_size + k * cout * cin + adjacency + k * cout),
        flops_backward=2.0 * (2 * channel + 2 * aggregate),
        bytes_backward=4.0 * (2 * x_size + out_size + 2 * (k * cout * cin + adjacency + k * cout)),
        build=_case(n, cin, cout, t, v, k, per_sample),
        peers=("conv_einsum",),
    )


WORKLOADS: list[Workload] = [
    # issue 6's goal: >= 3x the eager peer forward and forward+backward, ahead of the compiled peer
    _workload("stgcn_lrw_face68", 64, 64, 128, 29, 68, 3, False, "LRW word clips, 68-point face graph"),
    _workload("stgcn_lrw_face68_adaptive", 64, 64, 128, 29, 68, 3, True, "LRW, per-sample adaptive graphs"),
    _workload("stgcn_lrw_lips20", 64, 64, 128, 29, 20, 3, False, "LRW, 20-point lip graph"),
]

QUICK = {"stgcn_lrw_face68"}
