"""Benchmark workloads of the differential attention layers (issue 4): facekernels.nn.MultiheadDiffAttention
on the fused op against the same layer (same weights) whose differential attention is two
``F.scaled_dot_product_attention`` calls and a subtraction, the Diff Transformer's flash recipe. Both
run the same projections, RMSNorm and output projection, so the difference is the attention itself plus
what the layer's layout costs each (the fused op reads the strided head views in place).
"""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor

from ..nn.diff_attention import MultiheadDiffAttention
from .cases import Case, Workload, module_case


def diff_attention_two_sdpa(q1: Tensor, k1: Tensor, q2: Tensor, k2: Tensor, v: Tensor, lam: Tensor,
                            causal: bool = False) -> Tensor:
    """softmax(q1 k1^T s) v - lam * softmax(q2 k2^T s) v with two SDPA calls (lam 0-d, as the layers pass
    it)."""
    return (F.scaled_dot_product_attention(q1, k1, v, is_causal=causal)
            - lam * F.scaled_dot_product_attention(q2, k2, v, is_causal=causal))


class MultiheadDiffAttentionTwoSDPA(MultiheadDiffAttention):
    """The same layer with its differential attention as two SDPA calls."""

    attention = staticmethod(diff_attention_two_sdpa)


def _case(b: int, t: int, embed_dim: int, num_heads: int, depth: int, causal: bool) -> Callable[[str], Case]:
    return lambda device: module_case(
        device, lambda: MultiheadDiffAttention(embed_dim, depth, num_heads, causal=causal),
        lambda: MultiheadDiffAttentionTwoSDPA(embed_dim, depth, num_heads, causal=causal), "two_sdpa",
        lambda _: (b, t, embed_dim))


def _layer(name: str, b: int, t: int, embed_dim: int, num_heads: int, depth: int, causal: bool,
           what: str) -> Workload:
    d = embed_dim // num_heads // 2
    pairs = b * num_heads * t * t * (0.5 if causal else 1.0)  # query-key pairs computed (causal: ~half)
    projections = 4 * 2.0 * b * t * embed_dim * embed_dim
    weights = 4 * embed_dim * embed_dim
    return Workload(
        op="multihead_diff_attention",
        name=name,
        description=what,
        # two score products (width d) and one product of the combined map with v (width 2d)
        flops_forward=projections + 8.0 * pairs * d,
        bytes_forward=4.0 * (2 * b * t * embed_dim + weights),
        # projections: input and weight gradients; attention: scores recomputed, dO v^T, dv, dq/dk of both maps
        flops_backward=2 * projections + 20.0 * pairs * d,
        bytes_backward=4.0 * (3 * b * t * embed_dim + 2 * weights),
        build=_case(b, t, embed_dim, num_heads, depth, causal),
        peers=("two_sdpa",),
    )


WORKLOADS: list[Workload] = [
    _layer("diffattn_layer_mmda_vit", 4, 591, 768, 6, 0, False,
           "MultiheadDiffAttention, MMDA on ViT-B/16: B=4, 3x197 tokens, E=768, 6 head pairs, non-causal"),
    _layer("diffattn_layer_lm2048", 1, 2048, 1024, 8, 4, True,
           "MultiheadDiffAttention, Diff Transformer LM layer: B=1, T=2048, E=1024, 8 head pairs, causal"),
]

QUICK: set[str] = set()
