"""Benchmark workloads of diff_attention (issue 4) and its plain-PyTorch peer.

The peer is the Differential Transformer's flash recipe: two ``F.scaled_dot_product_attention`` calls (one
per map, each with the shared v) and a subtraction, ``sdpa(q1, k1, v) - lam * sdpa(q2, k2, v)``; memory
stays bounded (SDPA's CPU flash kernel), but the product with v and its backward run twice. facekernels
combines the two maps before one product with v and shares ``dO v^T`` in the backward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..ops.diff_attention import diff_attention
from .cases import Case, Workload


def diff_attention_sdpa(
    q1: Tensor, k1: Tensor, q2: Tensor, k2: Tensor, v: Tensor, lam: Tensor, causal: bool = False
) -> Tensor:
    """Differential attention as two SDPA calls: ``sdpa(q1, k1, v) - lam[..., None, None] * sdpa(q2, k2, v)``
    (lam ``[B, H]``)."""
    first = F.scaled_dot_product_attention(q1, k1, v, is_causal=causal)
    second = F.scaled_dot_product_attention(q2, k2, v, is_causal=causal)
    return first - lam[..., None, None] * second


def _case(b: int, h: int, t: int, s: int, d: int, dv: int, causal: bool) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        shapes = [(b, h, t, d), (b, h, s, d), (b, h, t, d), (b, h, s, d), (b, h, s, dv)]
        xs = [torch.randn(*shape, generator=g).to(device).requires_grad_() for shape in shapes]
        lam = (torch.rand(b, h, generator=g) * 0.5 + 0.2).to(device).requires_grad_()
        return Case(
            inputs=[*xs, lam],
            candidates={
                "facekernels": lambda q1, k1, q2, k2, v, lam: diff_attention(q1, k1, q2, k2, v, lam, causal=causal),
                "sdpa": lambda q1, k1, q2, k2, v, lam: diff_attention_sdpa(q1, k1, q2, k2, v, lam, causal),
            },
            params=[*xs, lam],
        )

    return build


def _workload(name: str, what: str, b: int, h: int, t: int, s: int, d: int, dv: int, causal: bool) -> Workload:
    # The minimal GEMM work (the softmax arithmetic aside): forward two score products and one product with
    # v; backward the two score products again, dO v^T once, dq and dk of both maps, dv once.
    pairs = b * h * t * s * (0.5 if causal else 1.0)
    inputs = b * h * (2 * t * d + 2 * s * d + s * dv)
    return Workload(
        op="diff_attention",
        name=name,
        description=f"{what}: B={b}, H={h}, T={t}, S={s}, D={d}, Dv={dv}{', causal' if causal else ''}, float32",
        flops_forward=2.0 * pairs * (2 * d + dv),
        bytes_forward=4.0 * (inputs + b * h * t * dv),
        flops_backward=2.0 * pairs * (6 * d + 2 * dv),
        bytes_backward=4.0 * (2 * inputs + 2 * b * h * t * dv),
        build=_case(b, h, t, s, d, dv, causal),
        peers=("sdpa",),
    )


WORKLOADS: list[Workload] = [
    # issue 4's goals: >= 1.3x the eager SDPA pair forward and forward+backward, ahead of the compiled one
    _workload("da_mmda_vitb16", "MMDA on ViT-B/16 (3 modalities x 197 tokens)", 4, 6, 591, 591, 64, 128, False),
    _workload("da_difftransformer_lm", "Diff Transformer LM layer", 1, 8, 2048, 2048, 64, 128, True),
]

QUICK = {"da_mmda_vitb16"}
