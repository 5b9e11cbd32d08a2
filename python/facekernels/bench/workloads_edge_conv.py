"""Benchmark workloads of cosine_topk and edge_conv_max (issue 5) and their plain-PyTorch peers.

cosine_topk's peer is what a careful user writes for 1:N identification: normalise both sides, then a
chunk of 1024 probes at a time, one GEMM against the whole gallery and a topk (memory grows with the
chunk times the gallery). edge_conv_max's peer is the vectorised eager form of MOL's channel
correspondence convolution: gather the neighbours, one batched linear for the self term and one for the
edge term over all k neighbours, amax over j, ReLU. FLOPs are the issue's nominal work: for
edge_conv_max the k + 1 GEMM-sized products of the peer (facekernels folds the gather into the weights
and needs k of them).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.edge_conv import cosine_topk, edge_conv_max
from .cases import Case, Workload


def cosine_topk_chunked(x: Tensor, k: int, y: Tensor | None = None, chunk: int = 1024) -> tuple[Tensor, Tensor]:
    """cosine_topk in plain PyTorch: normalised copies, then ``chunk`` rows of x at a time against all of y."""
    xh = F.normalize(x, dim=1)
    yh = xh if y is None else F.normalize(y, dim=1)
    values, indices = [], []
    for n0 in range(0, x.shape[2], chunk):
        sim = xh[:, :, n0:n0 + chunk].transpose(1, 2) @ yh
        v, i = sim.topk(k, dim=-1)
        values.append(v)
        indices.append(i)
    return torch.cat(values, 1), torch.cat(indices, 1)


def edge_conv_max_eager(x: Tensor, idx: Tensor, w_self: Tensor, w_edge: Tensor, bias: Tensor | None = None) -> Tensor:
    """edge_conv_max in plain PyTorch, the way a careful user writes it: gather the neighbours into
    [B, C, N, k], subtract the centres, one batched linear over N for all neighbours ([B, C, k, M]) and one
    for the centre term, then the max over the neighbours before adding the centre term (max and ReLU
    commute with it: one [B, C, M] addition instead of k)."""
    b, c, n = x.shape
    k = idx.shape[-1]
    neighbours = x.gather(2, idx.reshape(b, 1, n * k).expand(b, c, n * k)).view(b, c, n, k)
    edges = F.linear((neighbours - x.unsqueeze(-1)).transpose(2, 3), w_edge)  # [B, C, k, M]
    centre = F.linear(x, w_self, bias)                                         # [B, C, M]
    return (edges.amax(dim=2) + centre).relu()


def _topk_case(b: int, c: int, n: int, m: int | None, k: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, c, n, generator=g).to(device)
        y = None if m is None else torch.randn(b, c, m, generator=g).to(device)
        inputs = [x] if y is None else [x, y]
        return Case(
            inputs=inputs,
            candidates={
                "facekernels": lambda *a: cosine_topk(a[0], k, a[1] if len(a) > 1 else None)[0],
                "chunked": lambda *a: cosine_topk_chunked(a[0], k, a[1] if len(a) > 1 else None)[0],
            },
        )

    return build


def _topk_workload(name: str, b: int, c: int, n: int, m: int | None, k: int, what: str,
                   compile_peer: bool = True) -> Workload:
    cols = n if m is None else m
    return Workload(
        op="cosine_topk",
        name=name,
        description=f"cosine top-{k}, {what}: B={b}, C={c}, N={n}, M={cols}, float32",
        flops_forward=2.0 * b * c * n * cols,
        bytes_forward=4.0 * b * c * (n + (0 if m is None else m)) + 12.0 * b * n * k,
        flops_backward=0.0,
        bytes_backward=0.0,
        build=_topk_case(b, c, n, m, k),
        peers=("chunked",),
        compile_peers=None if compile_peer else (),
        modes=("forward",),
    )


def _edge_case(b: int, c: int, n: int, m: int, k: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        torch.manual_seed(0)
        x = torch.randn(b, c, n, device=device).requires_grad_()
        idx = cosine_topk(x.detach(), k)[1]
        w_self = (torch.randn(m, n, device=device) / n**0.5).requires_grad_()
        w_edge = (torch.randn(m, n, device=device) / n**0.5).requires_grad_()
        bias = torch.zeros(m, device=device).requires_grad_()
        return Case(
            inputs=[x, w_self, w_edge, bias],
            candidates={
                "facekernels": lambda x, ws, we, bi: edge_conv_max(x, idx, ws, we, bi),
                "eager": lambda x, ws, we, bi: edge_conv_max_eager(x, idx, ws, we, bi),
            },
            params=[x, w_self, w_edge, bias],
        )

    return build


def _edge_workload(name: str, b: int, c: int, n: int, m: int, k: int) -> Workload:
    products = 2.0 * b * c * n * m * (k + 1)
    return Workload(
        op="edge_conv_max",
        name=name,
        description=f"EdgeConv-max (MOL's CCC), B={b}, C={c}, N={n}, M={m}, k={k}, float32",
        flops_forward=products,
        bytes_forward=4.0 * (b * c * (n + m) + 2 * m * n) + 8.0 * b * n * k,
        flops_backward=2 * products,
        bytes_backward=4.0 * (b * c * (2 * n + m) + 4 * m * n),
        build=_edge_case(b, c, n, m, k),
        peers=("eager",),
    )


WORKLOADS: list[Workload] = [
    _edge_workload("ecm_mol", 32, 128, 256, 256, 4),  # issue 5: >= 1.8x eager fwd, >= 2x fwd+bwd
    _topk_workload("ctk_mol", 32, 128, 256, None, 4, "MOL's position graph"),
    # 1:N identification (issue 5: at least parity with the chunked peer, extra memory < 64 MB); the
    # compiled peer is left out (minutes of compilation for one GEMM and a topk).
    _topk_workload("ctk_ident", 1, 512, 4096, 65536, 10, "identification, 4096 probes x 65536 gallery",
                   compile_peer=False),
]

QUICK = {"ecm_mol", "ctk_mol"}
