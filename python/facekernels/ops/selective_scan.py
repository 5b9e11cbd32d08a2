"""selective_scan: Mamba's selective state-space scan (mamba-ssm's ``selective_scan_fn``)."""

from __future__ import annotations

import torch
from torch import Tensor

from ._checks import (
    check,
    check_dim,
    check_floating_dtype,
    check_same_device,
    check_same_dtype,
    dtype_name,
    fail,
    same_shape,
    shape_string,
    sym_and,
)
from ._registration import refuse_double_backward, register_autocast, with_defaults

__all__ = ["selective_scan"]

# csrc/selective_scan/selective_scan.h's kSelectiveScanMaxState
MAX_STATE = 256


def selective_scan(
    u: Tensor,
    delta: Tensor,
    A: Tensor,
    B: Tensor,
    C: Tensor,
    D: Tensor | None = None,
    z: Tensor | None = None,
    delta_bias: Tensor | None = None,
    delta_softplus: bool = False,
    return_last_state: bool = False,
) -> Tensor | tuple[Tensor, Tensor]:
    r"""The selective scan of Mamba, with the signature and semantics of mamba-ssm's ``selective_scan_fn``.

    With ``dt = delta + delta_bias`` (then ``softplus(dt)`` when ``delta_softplus``), per batch b, channel d
    and state n, from ``h[-1] = 0``::

        h[l, n] = exp(dt[l] * A[d, n]) * h[l-1, n] + dt[l] * B[b, g(d), n, l] * u[l]
        y[l]    = sum_n C[b, g(d), n, l] * h[l, n]
        out[l]  = (y[l] + D[d] * u[l]) * silu(z[l])          (the D term and the gate only when given)

    where ``g(d) = d // (D / G)`` is d's group (G = 1 for the 3-D form of B and C). The state is kept in
    float32 (float64 for float64 inputs) and the sequence is processed in chunks of 32 steps: the forward
    needs O(B D N) beyond its outputs; the backward recomputes each chunk from the state at its start,
    keeping those chunk-start states (CPU: O(threads N L / 32); CUDA: a float32 workspace of 32 per-slot
    partial B/C gradients and the checkpoints, O(32 B G N L)), never O(B D N L) for D > 32.

    Args:
        u: ``[B, D, L]``, float32/float64 on CPU, float16/bfloat16/float32 on CUDA.
        delta: ``[B, D, L]``, the step sizes (before ``delta_bias`` and softplus).
        A: ``[D, N]``, real, ``1 <= N <= 256`` (Mamba uses ``-exp(A_log)``).
        B: ``[B, N, L]`` or grouped ``[B, G, N, L]`` with G dividing D.
        C: ``[B, N, L]`` or grouped ``[B, G, N, L]``.
        D: ``[D]`` or ``None``, the skip connection.
        z: ``[B, D, L]`` or ``None``, the gate.
        delta_bias: ``[D]`` or ``None``, added to ``delta`` before the softplus.
        delta_softplus: apply softplus (threshold 20, as ``F.softplus``) to ``delta + delta_bias``.
        return_last_state: also return ``h[L-1]``.

    All tensors have u's dtype and device.

    Returns:
        ``out`` ``[B, D, L]`` in u's dtype, and with ``return_last_state`` the tuple ``(out, last_state)``
        with ``last_state`` ``[B, D, N]`` in float32 (float64 for float64 inputs). Differentiable in every
        tensor argument, ``last_state`` included.
    """
    out, last_state = torch.ops.facekernels.selective_scan.default(
        u, delta, A, B, C, D, z, delta_bias, delta_softplus
    )
    return (out, last_state) if return_last_state else out


def _state_dtype(u: Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


# The fake kernels' checks: csrc/selective_scan/selective_scan.cpp's, in its order and words.
def _check_input_matrix(op: str, arg: str, m: Tensor, u: Tensor, state) -> None:
    if m.dim() not in (3, 4):
        fail(op, arg, " must be a 3-D tensor [B, N, L] or a 4-D tensor [B, G, N, L], got a ", m.dim(),
             "-D tensor of shape ", shape_string(m))
    check_same_dtype(op, arg, m, "u", u)
    check_same_device(op, arg, m, "u", u)
    batch, channels, length = u.shape
    off = m.dim() - 3
    ok = sym_and(m.shape[0] == batch, m.shape[off + 1] == state, m.shape[off + 2] == length)
    if m.dim() == 3:
        check(ok, op, arg, " must have shape [B, N, L] = [", batch, ", ", state, ", ", length, "], got ",
              shape_string(m))
    else:
        groups = m.shape[1]
        check(sym_and(ok, groups >= 1, channels % groups == 0), op, arg, " must have shape [B, G, N, L] = [",
              batch, ", G, ", state, ", ", length, "] with G dividing D = ", channels, ", got ", shape_string(m))


def _check_channel_vector(op: str, arg: str, v: Tensor | None, u: Tensor) -> None:
    if v is None:
        return
    check(v.dim() == 1 and v.shape[0] == u.shape[1], op, arg, " must have shape [", u.shape[1],
          "] (D of u), got ", shape_string(v))
    check_same_dtype(op, arg, v, "u", u)
    check_same_device(op, arg, v, "u", u)


def _check_like_u(op: str, arg: str, t: Tensor, u: Tensor) -> None:
    check_dim(op, arg, t, 3, "[B, D, L]")
    check(same_shape(t, u), op, arg, " must have the shape of u ", shape_string(u), ", got ", shape_string(t))
    check_same_dtype(op, arg, t, "u", u)
    check_same_device(op, arg, t, "u", u)


def _check_selective_scan(op: str, u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None,
                          z: Tensor | None, delta_bias: Tensor | None) -> None:
    check_dim(op, "u", u, 3, "[B, D, L]")
    check_floating_dtype(op, "u", u)
    _check_like_u(op, "delta", delta, u)
    check_dim(op, "A", A, 2, "[D, N]")
    state = A.shape[1]
    check(sym_and(A.shape[0] == u.shape[1], state >= 1, state <= MAX_STATE), op,
          "A must have shape [D, N] with D = u.size(1) = ", u.shape[1], " and 1 <= N <= ", MAX_STATE, ", got ",
          shape_string(A))
    check_same_dtype(op, "A", A, "u", u)
    check_same_device(op, "A", A, "u", u)
    _check_input_matrix(op, "B", B, u, state)
    _check_input_matrix(op, "C", C, u, state)
    _check_channel_vector(op, "D", D, u)
    if z is not None:
        _check_like_u(op, "z", z, u)
    _check_channel_vector(op, "delta_bias", delta_bias, u)


def _check_selective_scan_backward(grad_out: Tensor, grad_last_state: Tensor | None, u: Tensor, delta: Tensor,
                                   A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                                   delta_bias: Tensor | None) -> None:
    op = "_selective_scan_backward"
    _check_selective_scan(op, u, delta, A, B, C, D, z, delta_bias)
    _check_like_u(op, "grad_out", grad_out, u)
    if grad_last_state is not None:
        g = grad_last_state
        batch, channels, state = u.shape[0], u.shape[1], A.shape[1]
        check(g.dim() == 3 and sym_and(g.shape[0] == batch, g.shape[1] == channels, g.shape[2] == state), op,
              "grad_last_state must have shape [B, D, N] = [", batch, ", ", channels, ", ", state, "], got ",
              shape_string(g))
        check_same_device(op, "grad_last_state", g, "u", u)
        expected = _state_dtype(u)
        if g.dtype != expected:
            fail(op, "grad_last_state must be ", dtype_name(expected), " (the state's dtype), got ",
                 dtype_name(g.dtype))


@torch.library.register_fake("facekernels::selective_scan")
def _selective_scan_fake(u: Tensor, delta: Tensor, A: Tensor, B: Tensor, C: Tensor, D: Tensor | None = None,
                         z: Tensor | None = None, delta_bias: Tensor | None = None,
                         delta_softplus: bool = False) -> tuple[Tensor, Tensor]:
    _check_selective_scan("selective_scan", u, delta, A, B, C, D, z, delta_bias)
    return u.new_empty(u.shape), u.new_empty((u.shape[0], u.shape[1], A.shape[1]), dtype=_state_dtype(u))


@torch.library.register_fake("facekernels::_selective_scan_backward")
def _selective_scan_backward_fake(grad_out: Tensor, grad_last_state: Tensor | None, u: Tensor, delta: Tensor,
                                  A: Tensor, B: Tensor, C: Tensor, D: Tensor | None, z: Tensor | None,
                                  delta_bias: Tensor | None, delta_softplus: bool) -> tuple[Tensor, ...]:
    _check_selective_scan_backward(grad_out, grad_last_state, u, delta, A, B, C, D, z, delta_bias)

    def like(t: Tensor | None) -> Tensor:
        return t.new_empty(t.shape) if t is not None else u.new_empty((0,))

    return (like(u), like(u), like(A), like(B), like(C), like(D), like(z), like(delta_bias))


def _setup_context(ctx, inputs, output) -> None:
    u, delta, A, B, C, D, z, delta_bias, delta_softplus = with_defaults("selective_scan", inputs)
    ctx.save_for_backward(u, delta, A, B, C, D, z, delta_bias)
    ctx.delta_softplus = delta_softplus


def _backward(ctx, grad_out: Tensor | None, grad_last_state: Tensor | None):
    u, delta, A, B, C, D, z, delta_bias = ctx.saved_tensors
    if grad_out is None:
        grad_out = torch.zeros_like(u)
    grads = torch.ops.facekernels._selective_scan_backward.default(
        grad_out, grad_last_state, u, delta, A, B, C, D, z, delta_bias, ctx.delta_softplus
    )
    # The dispatcher drops trailing arguments equal to their defaults, so needs_input_grad may be shorter
    # than the schema; answer exactly as many as were passed.
    passed = len(ctx.needs_input_grad)
    present = (u, delta, A, B, C, D, z, delta_bias)
    result = [g if i < 8 and present[i] is not None and ctx.needs_input_grad[i] else None
              for i, g in enumerate(grads)]
    return tuple((result + [None])[:passed])  # the last: delta_softplus


torch.library.register_autograd("facekernels::selective_scan", _backward, setup_context=_setup_context)
refuse_double_backward("_selective_scan_backward", "selective_scan")
register_autocast("selective_scan")
