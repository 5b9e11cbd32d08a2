"""diff_attention: the differential attention of the Differential Transformer (and MMDA's MD2A) as one fused
op, forward and backward, that never holds a T x S attention map."""

from __future__ import annotations

import math

import torch
from torch import Tensor

from ._checks import check, check_dim, check_floating_dtype, check_same_device, check_same_dtype, dtype_name
from ._checks import shape_string, sym_and, sym_or
from ._registration import refuse_double_backward, register_autocast, with_defaults

__all__ = ["diff_attention"]


_LAYOUTS = {"BHTD": "[B, H, T, D]", "BTHD": "[B, T, H, D]"}


def _broadcast_lam(lam: Tensor | float, q1: Tensor, layout: str) -> Tensor:
    """lam expanded to [B, H] of q1 (read as [B, H, T, D])."""
    if not isinstance(lam, torch.Tensor):
        lam = torch.tensor(float(lam), dtype=q1.dtype, device=q1.device)
    if q1.dim() != 4:
        return lam  # the op reports q1's rank
    bh = (q1.shape[0], q1.shape[1])
    ok = lam.dim() <= 2
    if ok:
        try:
            ok = tuple(torch.broadcast_shapes(tuple(lam.shape), bh)) == bh
        except RuntimeError:
            ok = False
    if not ok:
        hint = ""
        if lam.dim() >= 1 and lam.shape[-1] == q1.shape[2] != q1.shape[1]:
            # lam's heads match what the other layout calls H: the tensors' layout is likely not the one
            # stated.
            other = "BTHD" if layout == "BHTD" else "BHTD"
            hint = (f"; q1 was read as {_LAYOUTS[layout]} (layout=\"{layout}\"), giving H = {bh[1]}: for "
                    f"{_LAYOUTS[other]} tensors pass layout=\"{other}\"")
        raise RuntimeError(
            f"diff_attention: lam must be broadcastable to [B, H] = [{bh[0]}, {bh[1]}] (0-d, [H], [1, H], [B, 1] "
            f"or [B, H]), got {list(lam.shape)}{hint}"
        )
    return lam.expand(bh)


def diff_attention(
    q1: Tensor,
    k1: Tensor,
    q2: Tensor,
    k2: Tensor,
    v: Tensor,
    lam: Tensor | float,
    causal: bool = False,
    scale: float | None = None,
    *,
    layout: str = "BHTD",
) -> Tensor:
    r"""Differential attention: the difference of two softmax attention maps applied to one value tensor.

    For every batch ``b`` and head ``h``::

        P_i = softmax(q_i k_i^T * scale + M)     (over the S keys; i = 1, 2)
        out = P_1 v - lam[b, h] * P_2 v  =  (P_1 - lam[b, h] P_2) v

    with ``scale = D ** -0.5`` by default, and ``M = -inf`` where key index > query index when ``causal``
    (else 0). The op never holds a ``T x S`` map: it works on tiles of query rows and computes each row's
    exact softmax of both maps in cache, combines them into ``P_1 - lam P_2`` before the single product
    with ``v``, and keeps only the rows' log-sum-exp of both maps (``[B, H, T]`` each) for the backward.
    The backward recomputes the maps from them and shares ``dO v^T`` between the two maps:
    ``dPV = dO v^T``, ``dS_1 = P_1 (dPV - rowsum(P_1 dPV))``, ``dS_2 = -lam P_2 (dPV - rowsum(P_2 dPV))``,
    ``dv = (P_1 - lam P_2)^T dO``, ``dlam = -sum(P_2 dPV)``, ``dq_i = scale dS_i k_i``,
    ``dk_i = scale dS_i^T q_i``. Extra memory in both directions: O(B H T) plus per-thread tiles.

    Args:
        q1, q2: ``[B, H, T, D]`` queries of the two maps.
        k1, k2: ``[B, H, S, D]`` keys of the two maps.
        v: ``[B, H, S, Dv]``, shared by both maps (``Dv`` may differ from ``D``; the Differential
            Transformer uses ``Dv = 2 D``). ``1 <= D, Dv <= 256``.
        lam: broadcastable to ``[B, H]``: a 0-d tensor (or a number), ``[H]``, ``[1, H]``, ``[B, 1]`` or
            ``[B, H]``; differentiable.
        causal: mask keys after each query (needs ``T == S``).
        scale: the logit scale, default ``D ** -0.5``.
        layout: how ``q1, k1, q2, k2, v`` and the result are laid out: ``"BHTD"`` (the default; heads before
            positions, as ``F.scaled_dot_product_attention``) or ``"BTHD"`` (positions before heads, as a
            projection's output viewed as ``[B, T, H, D]`` and as FlashAttention takes it):
            ``q [B, T, H, D]``, ``k [B, S, H, D]``, ``v [B, S, H, Dv]``, result ``[B, T, H, Dv]``. ``lam``
            is per head in both.

    Layout. Shapes alone cannot tell ``[B, T, H, D]`` from ``[B, H, T, D]``: ``[B, T, H, D]`` tensors passed
    with the default layout are read as ``T`` heads of ``H`` positions, a different attention, and when
    ``T == S`` (self-attention) nothing is inconsistent. State the layout of your tensors. What is provably
    inconsistent is refused: keys or values whose dimension 1 differs from the queries' (``T != S`` read
    as heads), ``lam`` whose ``H`` entries do not match dimension 1 (the message then names the layout that
    would fit).

    All tensors share one dtype and device: float32/float64 on CPU, float16/bfloat16/float32 on CUDA
    (float32 accumulation); any strides (``layout="BTHD"`` costs no copy on CPU: the transposed views are
    read in place).

    Returns:
        ``[B, H, T, Dv]``, contiguous (``layout="BHTD"``), or ``[B, T, H, Dv]``, a transposed view of that
        (``layout="BTHD"``; ``.flatten(2)`` gives ``[B, T, H * Dv]``); differentiable in
        ``q1, k1, q2, k2, v, lam`` (once).
    """
    if layout not in _LAYOUTS:
        raise ValueError(f'diff_attention: layout must be "BHTD" or "BTHD", got {layout!r}')
    if layout == "BTHD":  # a 4-D tensor as [B, H, T, D]; another rank is left to the op's message
        q1, k1, q2, k2, v = (t.transpose(1, 2) if t.dim() == 4 else t for t in (q1, k1, q2, k2, v))
    lam = _broadcast_lam(lam, q1, layout)
    out, _, _ = torch.ops.facekernels._diff_attention_forward.default(q1, k1, q2, k2, v, lam, causal, scale)
    return out.transpose(1, 2) if layout == "BTHD" else out


def _stats_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


# The fake kernels' checks: csrc/diff_attention/diff_attention.cpp's, in its order and words (ops/_checks.py).
_MAX_HEAD_DIM = 256


def _check_shape(op: str, arg: str, t: Tensor, expected: tuple, layout: str) -> None:
    """``t``'s sizes equal ``expected`` where it is not None (a free size, printed ``*``)."""
    want = ", ".join("*" if e is None else str(e) for e in expected)
    same = sym_and(*(size == e for size, e in zip(t.shape, expected) if e is not None))
    check(same, op, arg, " must have shape ", layout, " = [", want, "], got ", shape_string(t))


def _check_diff_attention(
    op: str, q1: Tensor, k1: Tensor, q2: Tensor, k2: Tensor, v: Tensor, lam: Tensor, causal: bool,
    scale: float | None,
) -> None:
    check_dim(op, "q1", q1, 4, "[B, H, T, D]")
    check_dim(op, "k1", k1, 4, "[B, H, S, D]")
    check_dim(op, "q2", q2, 4, "[B, H, T, D]")
    check_dim(op, "k2", k2, 4, "[B, H, S, D]")
    check_dim(op, "v", v, 4, "[B, H, S, Dv]")
    check_floating_dtype(op, "q1", q1)
    for name, t in (("k1", k1), ("q2", q2), ("k2", k2), ("v", v), ("lam", lam)):
        check_same_dtype(op, name, t, "q1", q1)
    for name, t in (("k1", k1), ("q2", q2), ("k2", k2), ("v", v), ("lam", lam)):
        check_same_device(op, name, t, "q1", q1)
    b, h, t, d = q1.shape
    s, dv = k1.shape[2], v.shape[3]
    _check_shape(op, "k1", k1, (b, h, None, d), "[B, H, S, D]")
    _check_shape(op, "q2", q2, (b, h, t, d), "[B, H, T, D]")
    _check_shape(op, "k2", k2, (b, h, s, d), "[B, H, S, D]")
    _check_shape(op, "v", v, (b, h, s, None), "[B, H, S, Dv]")
    check(lam.dim() == 2 and sym_and(lam.shape[0] == b, lam.shape[1] == h), op,
          "lam must have shape [B, H] = [", b, ", ", h, "] (facekernels.ops.diff_attention broadcasts it), ",
          "got ", shape_string(lam))
    check(sym_and(d >= 1, d <= _MAX_HEAD_DIM), op, "q1 must have a head dimension D in [1, ", _MAX_HEAD_DIM,
          "], got D = ", d)
    check(sym_and(dv >= 1, dv <= _MAX_HEAD_DIM), op, "v must have a head dimension Dv in [1, ", _MAX_HEAD_DIM,
          "], got Dv = ", dv)
    check(sym_or(s >= 1, b * h * t == 0), op, "k1 must have at least one key (S >= 1), got S = 0")
    check(not causal or t == s, op,
          "q1 must have as many queries as k1 has keys for causal=True (T == S), got T = ", t, " and S = ", s)
    if scale is not None:
        check(math.isfinite(scale), op, "scale must be a finite number, got ", float(scale))


def _check_diff_attention_backward(
    op: str, q1: Tensor, v: Tensor, grad_out: Tensor, lse1: Tensor, lse2: Tensor
) -> None:
    """After :func:`_check_diff_attention`: grad_out, lse1 and lse2."""
    b, h, t, _ = q1.shape
    dv = v.shape[3]
    check_dim(op, "grad_out", grad_out, 4, "[B, H, T, Dv]")
    _check_shape(op, "grad_out", grad_out, (b, h, t, dv), "[B, H, T, Dv]")
    check_same_dtype(op, "grad_out", grad_out, "q1", q1)
    check_same_device(op, "grad_out", grad_out, "q1", q1)
    stats = _stats_dtype(q1.dtype)
    for name, lse in (("lse1", lse1), ("lse2", lse2)):
        check_dim(op, name, lse, 3, "[B, H, T]")
        _check_shape(op, name, lse, (b, h, t), "[B, H, T]")
        check(lse.dtype == stats, op, name, " must be ", dtype_name(stats),
              " (the forward's row statistics), got ", dtype_name(lse.dtype))
        check_same_device(op, name, lse, "q1", q1)


@torch.library.register_fake("facekernels::_diff_attention_forward")
def _diff_attention_forward_fake(
    q1: Tensor, k1: Tensor, q2: Tensor, k2: Tensor, v: Tensor, lam: Tensor, causal: bool = False,
    scale: float | None = None,
) -> tuple[Tensor, Tensor, Tensor]:
    _check_diff_attention("diff_attention", q1, k1, q2, k2, v, lam, causal, scale)
    b, h, t, _ = q1.shape
    stats = _stats_dtype(q1.dtype)
    return (
        q1.new_empty((b, h, t, v.shape[3])),
        q1.new_empty((b, h, t), dtype=stats),
        q1.new_empty((b, h, t), dtype=stats),
    )


@torch.library.register_fake("facekernels::_diff_attention_backward")
def _diff_attention_backward_fake(
    grad_out: Tensor, q1: Tensor, k1: Tensor, q2: Tensor, k2: Tensor, v: Tensor, lam: Tensor, lse1: Tensor,
    lse2: Tensor, causal: bool, scale: float | None,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    op = "_diff_attention_backward"
    _check_diff_attention(op, q1, k1, q2, k2, v, lam, causal, scale)
    _check_diff_attention_backward(op, q1, v, grad_out, lse1, lse2)
    return (
        q1.new_empty(q1.shape),
        q1.new_empty(k1.shape),
        q1.new_empty(q1.shape),
        q1.new_empty(k1.shape),
        q1.new_empty(v.shape),
        q1.new_empty(lam.shape),
    )


def _setup_context(ctx, inputs, output) -> None:
    q1, k1, q2, k2, v, lam, causal, scale = with_defaults("_diff_attention_forward", inputs)
    _, lse1, lse2 = output
    ctx.mark_non_differentiable(lse1, lse2)
    ctx.save_for_backward(q1, k1, q2, k2, v, lam, lse1, lse2)
    ctx.causal, ctx.scale = causal, scale


def _backward(ctx, grad_out: Tensor, grad_lse1: Tensor | None, grad_lse2: Tensor | None):
    q1, k1, q2, k2, v, lam, lse1, lse2 = ctx.saved_tensors
    grads = [None] * len(ctx.needs_input_grad)
    if any(ctx.needs_input_grad[:6]):
        computed = torch.ops.facekernels._diff_attention_backward.default(
            grad_out, q1, k1, q2, k2, v, lam, lse1, lse2, ctx.causal, ctx.scale
        )
        for i in range(6):
            if ctx.needs_input_grad[i]:
                grads[i] = computed[i]
    return tuple(grads)


torch.library.register_autograd("facekernels::_diff_attention_forward", _backward, setup_context=_setup_context)


refuse_double_backward("_diff_attention_backward", "diff_attention")
register_autocast("_diff_attention_forward")
