"""The Differential Transformer's attention layer and MMDA's MD2A, on the diff_attention op."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.diff_attention import diff_attention

__all__ = ["MD2A", "MultiheadDiffAttention", "diff_lambda_init"]

# rotary(q, k) -> (q, k): q [B, T, 2*num_heads, head_dim], k [B, S, 2*num_heads, head_dim]
Rotary = Callable[[Tensor, Tensor], tuple[Tensor, Tensor]]


def diff_lambda_init(depth: int) -> float:
    """The Diff Transformer's depth schedule of lambda_init: ``0.8 - 0.6 * exp(-0.3 * depth)``."""
    return 0.8 - 0.6 * math.exp(-0.3 * depth)


class _DiffAttentionLayer(nn.Module):
    """Parameters and the shared tail of the two layers: lambda, the op, per-head RMSNorm times
    (1 - lambda_init), output projection."""

    # The differential attention these layers run; benchmark peers swap in plain-PyTorch versions.
    # Called as attention(q1, k1, q2, k2, v, lam, causal=...), lam 0-d.
    attention = staticmethod(diff_attention)

    def __init__(self, name: str, embed_dim: int, depth: int, num_heads: int, causal: bool) -> None:
        super().__init__()
        if num_heads < 1 or embed_dim < 1:
            raise ValueError(f"{name}: embed_dim and num_heads must be >= 1, got {embed_dim} and {num_heads}")
        if embed_dim % (2 * num_heads) != 0:
            raise ValueError(
                f"{name}: embed_dim must be divisible by 2 * num_heads = {2 * num_heads}, got {embed_dim}"
            )
        if depth < 0:
            raise ValueError(f"{name}: depth must be >= 0, got {depth}")
        self._name = name
        self.embed_dim = embed_dim
        self.num_heads = num_heads
        self.head_dim = embed_dim // num_heads // 2
        self.depth = depth
        self.causal = causal
        self.lambda_init = diff_lambda_init(depth)
        self.q_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.k_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.v_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.out_proj = nn.Linear(embed_dim, embed_dim, bias=False)
        self.lambda_q1 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_k1 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_q2 = nn.Parameter(torch.empty(self.head_dim))
        self.lambda_k2 = nn.Parameter(torch.empty(self.head_dim))
        self.subln = nn.RMSNorm(2 * self.head_dim, eps=1e-5, elementwise_affine=True)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The reference initialisation: nn.Linear's default for the projections, N(0, 0.1^2) for the
        lambda vectors, ones for the RMSNorm weight."""
        for proj in (self.q_proj, self.k_proj, self.v_proj, self.out_proj):
            proj.reset_parameters()
        with torch.no_grad():
            for p in (self.lambda_q1, self.lambda_k1, self.lambda_q2, self.lambda_k2):
                p.normal_(mean=0.0, std=0.1)
        self.subln.reset_parameters()

    def lambda_full(self) -> Tensor:
        """The 0-d lambda shared by all heads:
        ``exp(sum(lambda_q1 * lambda_k1)) - exp(sum(lambda_q2 * lambda_k2)) + lambda_init``
        (computed in at least float32)."""
        s1 = torch.sum(self.lambda_q1 * self.lambda_k1)
        s2 = torch.sum(self.lambda_q2 * self.lambda_k2)
        dtype = torch.promote_types(s1.dtype, torch.float32)
        return torch.exp(s1.to(dtype)) - torch.exp(s2.to(dtype)) + self.lambda_init

    def _check_x(self, x: Tensor, what: str) -> None:
        if x.dim() != 3 or x.size(-1) != self.embed_dim:
            raise ValueError(f"{self._name}: x must be [B, {what}, {self.embed_dim}], got {list(x.shape)}")

    def _heads(self, t: Tensor) -> Tensor:
        """[B, T, num_heads * head_dim] -> [B, num_heads, T, head_dim] (a view)."""
        return t.unflatten(-1, (self.num_heads, -1)).transpose(1, 2)

    def _attend(self, q1: Tensor, k1: Tensor, q2: Tensor, k2: Tensor, v: Tensor) -> Tensor:
        """q1, k1, q2, k2 [B, H, T, head_dim], v [B, H, T, 2*head_dim] -> [B, T, embed_dim]."""
        lam = self.lambda_full().to(q1.dtype)
        out = self.attention(q1, k1, q2, k2, v, lam, causal=self.causal)
        out = self.subln(out) * (1.0 - self.lambda_init)
        return self.out_proj(out.transpose(1, 2).flatten(2))

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs):
        # The reference's plain (non-flash) layer builds its RMSNorm without an affine weight; that is
        # the affine norm with weight ones, so such state_dicts load with subln.weight = 1.
        key = prefix + "subln.weight"
        if key not in state_dict:
            state_dict[key] = torch.ones_like(self.subln.weight)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, num_heads={self.num_heads}, head_dim={self.head_dim}, "
                f"depth={self.depth}, lambda_init={self.lambda_init:.4f}, causal={self.causal}")


class MultiheadDiffAttention(_DiffAttentionLayer):
    r"""The Differential Transformer's attention layer (Ye et al., 2024) on
    :func:`facekernels.ops.diff_attention`.

    Input ``x [B, T, embed_dim]``. With ``d = head_dim = embed_dim / num_heads / 2`` the bias-free
    projections give ``2 * num_heads`` query and key heads of width ``d``; heads ``2h`` and ``2h + 1``
    form pair ``h`` (interleaved, as the reference implementation views them), and ``v`` has
    ``num_heads`` heads of width ``2d``. Per pair ``h``::

        lam    = exp(sum(lambda_q1 * lambda_k1)) - exp(sum(lambda_q2 * lambda_k2)) + lambda_init
        A_h    = softmax(q_2h k_2h^T / sqrt(d) + M) v_h - lam * softmax(q_2h+1 k_2h+1^T / sqrt(d) + M) v_h
        O_h    = RMSNorm(A_h) * (1 - lambda_init)          (over 2d, eps 1e-5, affine weight subln.weight)
        out    = out_proj(concat_h O_h)

    with ``lambda_init = 0.8 - 0.6 exp(-0.3 depth)``, ``M`` the causal mask when ``causal`` (else 0),
    and ``lambda_*`` four vectors of length ``d`` drawn from N(0, 0.1^2). Parameter names are the
    reference's (``q_proj, k_proj, v_proj, out_proj, lambda_q1, lambda_k1, lambda_q2, lambda_k2,
    subln``), so its state_dicts load; one from its plain layer, whose RMSNorm has no weight, loads with
    ``subln.weight = 1``. Grouped key/value heads and model parallelism of the reference are not
    supported.

    Rotary embeddings: the reference applies them to q and k after the head view and before the
    attention. Pass ``rotary``, a callable ``(q, k) -> (q, k)`` with ``q [B, T, 2*num_heads, d]`` and
    ``k [B, T, 2*num_heads, d]`` in that same layout (so the reference's
    ``apply_rotary_emb(t, cos, sin, interleaved=True)`` can be used as is); it must return tensors of
    the shapes it got.

    Args:
        embed_dim: E, divisible by ``2 * num_heads``.
        depth: the layer's index (>= 0), which sets ``lambda_init``.
        num_heads: H, the number of differential heads (half of a Transformer's head count).
        causal: mask keys after the query (decoder layers); the reference layer always masks.
    """

    def __init__(self, embed_dim: int, depth: int, num_heads: int, causal: bool = False) -> None:
        super().__init__("MultiheadDiffAttention", embed_dim, depth, num_heads, causal)

    def forward(self, x: Tensor, rotary: Rotary | None = None) -> Tensor:
        """``x [B, T, embed_dim] -> [B, T, embed_dim]``; ``rotary`` as in the class docstring."""
        self._check_x(x, "T")
        b, t, _ = x.shape
        q = self.q_proj(x).view(b, t, 2 * self.num_heads, self.head_dim)
        k = self.k_proj(x).view(b, t, 2 * self.num_heads, self.head_dim)
        if rotary is not None:
            q_shape, k_shape = q.shape, k.shape
            q, k = rotary(q, k)
            if q.shape != q_shape or k.shape != k_shape:
                raise ValueError(
                    f"MultiheadDiffAttention: rotary must return q {list(q_shape)} and k {list(k_shape)}, "
                    f"got {list(q.shape)} and {list(k.shape)}"
                )
        # [B, T, 2H, d] -> [B, H, 2, T, d]: pair h holds heads 2h (index 0) and 2h + 1 (index 1)
        q = q.view(b, t, self.num_heads, 2, self.head_dim).permute(0, 2, 3, 1, 4)
        k = k.view(b, t, self.num_heads, 2, self.head_dim).permute(0, 2, 3, 1, 4)
        v = self._heads(self.v_proj(x))
        return self._attend(q[:, :, 0], k[:, :, 0], q[:, :, 1], k[:, :, 1], v)


class MD2A(_DiffAttentionLayer):
    r"""MMDA's modality-domain joint differential attention (Ma et al., "Denoising and Alignment:
    Rethinking Domain Generalization for Multimodal Face Anti-Spoofing", 2025), as we read the paper:
    no code is published, so the details below are our choices where the text leaves them open.

    Input ``x [B, N, embed_dim]`` holds ``M = num_modalities`` groups of ``n = N / M`` tokens (modality
    ``m`` is tokens ``m*n .. (m+1)*n - 1``, e.g. RGB, depth and IR ViT tokens concatenated), optional
    ``domain`` labels ``[B]``. The common-noise feature is::

        Xbar[b, m*n + j] = (1/M) sum_m' x[b, m'*n + j]          (token-wise mean across modalities,
                                                                  repeated over the M groups)
        Xn = (x[pi] + Xbar) / 2

    where ``pi[b]`` is another sample of the batch with ``domain[pi[b]] == domain[b]``, drawn uniformly
    (from ``generator`` when given, else torch's default generator), and ``b`` itself when it is alone
    in its domain. Without ``domain`` all samples form one domain. A fixed ``index`` replaces the draw
    (e.g. ``torch.arange(B)`` for a deterministic evaluation; by default evaluation draws as training
    does). Then, with the Diff Transformer's parameters and head pairing (see
    :class:`MultiheadDiffAttention`): ``q1, k1`` are the even heads of ``q_proj(x), k_proj(x)``,
    ``q2, k2`` the odd heads of ``q_proj(Xn), k_proj(Xn)`` (the paper's ``(Q, Q') = split(X W_q)`` with
    ``Xn`` in the second part), ``v = v_proj(x)``, and::

        out = out_proj(concat_h RMSNorm(softmax(q1 k1^T s) v - lam softmax(q2 k2^T s) v) * (1 - lambda_init))

    non-causal, ``s = head_dim^-1/2``, ``lam`` and ``lambda_init`` as in the Diff Transformer. The
    per-head RMSNorm and the ``(1 - lambda_init)`` factor are not described by the paper; we keep them
    because MD2A is presented as the Diff Transformer's attention with a noise branch, and with them
    MD2A on ``Xn = x`` is exactly :class:`MultiheadDiffAttention`. The state_dict is that layer's.

    Under ``torch.compile(fullgraph=True)`` a ``torch.Generator`` cannot be traced: draw the map outside
    with :meth:`partner_index` and pass it as ``index``, or let the default generator draw it.

    Args:
        embed_dim: E, divisible by ``2 * num_heads``.
        num_heads: H, the number of differential heads.
        num_modalities: M >= 1.
        depth: the layer's index (>= 0), which sets ``lambda_init``.
    """

    def __init__(self, embed_dim: int, num_heads: int, num_modalities: int = 3, depth: int = 0) -> None:
        super().__init__("MD2A", embed_dim, depth, num_heads, causal=False)
        if num_modalities < 1:
            raise ValueError(f"MD2A: num_modalities must be >= 1, got {num_modalities}")
        self.num_modalities = num_modalities

    def partner_index(self, batch: int, domain: Tensor | None = None,
                      generator: torch.Generator | None = None, device: torch.device | str | None = None
                      ) -> Tensor:
        """``pi [batch]`` (int64): for each sample, a uniformly drawn other sample of its domain, itself
        when it has none (all samples form one domain when ``domain`` is None). Drawn on the
        generator's device (the CPU without one) and returned on ``device``; empty for ``batch = 0``."""
        if domain is not None and (domain.shape != (batch,) or domain.is_floating_point()
                                   or domain.is_complex()):
            raise ValueError(
                f"MD2A: domain must be [B] = [{batch}] integer labels, "
                f"got {list(domain.shape)} {domain.dtype}"
            )
        draw_device = generator.device if generator is not None else torch.device("cpu")
        if batch == 0:  # an empty batch has an empty map (torch.multinomial refuses zero rows)
            return torch.empty(0, dtype=torch.int64, device=device if device is not None else draw_device)
        eye = torch.eye(batch, dtype=torch.bool, device=draw_device)
        if domain is None:
            same = torch.ones(batch, batch, dtype=torch.bool, device=draw_device)
        else:
            labels = domain.to(draw_device)
            same = labels[:, None] == labels[None, :]
        others = same & ~eye
        alone = ~others.any(dim=1, keepdim=True)
        weights = (others | (eye & alone)).to(torch.float32)
        pi = torch.multinomial(weights, 1, generator=generator).squeeze(1)
        return pi.to(device if device is not None else draw_device)

    def noise_feature(self, x: Tensor, index: Tensor) -> Tensor:
        """``Xn = (x[index] + Xbar) / 2``, ``Xbar`` the token-wise mean over the modality groups of ``x``
        repeated over the groups; ``x [B, N, E]``, ``index [B]`` -> ``[B, N, E]``."""
        b, n, e = x.shape
        groups = x.view(b, self.num_modalities, n // self.num_modalities, e)
        mean = groups.mean(dim=1, keepdim=True)
        partner = x.index_select(0, index).view_as(groups)
        return ((partner + mean) * 0.5).view(b, n, e)

    def forward(self, x: Tensor, domain: Tensor | None = None, *, generator: torch.Generator | None = None,
                index: Tensor | None = None) -> Tensor:
        """``x [B, N, embed_dim]``, ``domain [B]`` (optional) -> ``[B, N, embed_dim]``; ``generator``
        draws the partner map, ``index [B]`` (int64) fixes it instead (then ``domain`` is unused)."""
        self._check_x(x, "N")
        b, n, _ = x.shape
        if n % self.num_modalities != 0:
            raise ValueError(
                f"MD2A: the token count N must be divisible by num_modalities = {self.num_modalities}, "
                f"got {n}"
            )
        if index is None:
            index = self.partner_index(b, domain, generator, x.device)
        elif index.shape != (b,) or index.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"MD2A: index must be [B] = [{b}] int64, got {list(index.shape)} {index.dtype}")
        xn = self.noise_feature(x, index.to(x.device))
        h, d = self.num_heads, self.head_dim
        # The even-head rows of q_proj/k_proj act on x, the odd-head rows on Xn: only the halves used.
        wq = self.q_proj.weight.view(h, 2, d, self.embed_dim)
        wk = self.k_proj.weight.view(h, 2, d, self.embed_dim)
        q1 = self._heads(F.linear(x, wq[:, 0].reshape(h * d, self.embed_dim)))
        k1 = self._heads(F.linear(x, wk[:, 0].reshape(h * d, self.embed_dim)))
        q2 = self._heads(F.linear(xn, wq[:, 1].reshape(h * d, self.embed_dim)))
        k2 = self._heads(F.linear(xn, wk[:, 1].reshape(h * d, self.embed_dim)))
        v = self._heads(self.v_proj(x))
        return self._attend(q1, k1, q2, k2, v)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, num_modalities={self.num_modalities}"
