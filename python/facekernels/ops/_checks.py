"""The fake kernels' mirror of csrc/core/checks.h: argument checks that raise what the native checks raise.

Each family's ops module writes one ``_check_<op>`` per C++ check function (csrc/<family>/<family>.cpp),
in the same order and with the same messages, out of these pieces, and its fake kernels (forward and
backward) call it: a traced, compiled or exported call then fails where the eager one would, with the same
``RuntimeError`` ("<op>: <argument> <expected>, got <actual>"). Only what the shapes, dtypes, devices and
scalar arguments show can be checked here; checks of tensor values (an index out of range, a zero row) stay
with the native kernels.

Sizes may be symbolic (torch.compile with dynamic shapes, torch.export): a condition on sizes goes through
:func:`check`, i.e. ``torch._check``, which records it instead of failing to evaluate it, and compound
conditions are built with ``sym_and`` / ``sym_or`` (no ``bool()`` on a symbolic value).
"""

from __future__ import annotations

from typing import NoReturn

import torch
from torch import Tensor
from torch.fx.experimental.symbolic_shapes import sym_and, sym_or

__all__ = [
    "check",
    "check_dim",
    "check_floating_dtype",
    "check_index_limit",
    "check_same_device",
    "check_same_dtype",
    "dtype_name",
    "fail",
    "same_shape",
    "shape_string",
    "sym_and",
    "sym_or",
]


def _text(part: object) -> str:
    # C++ streams print a double like printf's %g (1, 0.001, 1e-05, inf, nan); ints and strings as Python
    # does.
    return format(part, "g") if isinstance(part, float) else str(part)


def _message(op: str, parts: tuple[object, ...]) -> str:
    return f"{op}: " + "".join(_text(p) for p in parts)


def fail(op: str, *parts: object) -> NoReturn:
    """Raise ``RuntimeError("<op>: " + parts joined)``, as checks.h's ``fail``."""
    raise RuntimeError(_message(op, parts))


def check(cond: bool | torch.SymBool, op: str, *parts: object) -> None:
    """checks.h's ``FK_CHECK``: raise the message of :func:`fail` unless ``cond``; a symbolic ``cond``
    (traced sizes) is asserted through ``torch._check``."""
    torch._check(cond, lambda: _message(op, parts))


def check_index_limit(size: int | torch.SymInt, limit: int, op: str, *parts: object) -> None:
    """A size bound of the kernels' index types (``size < limit``, e.g. 2^31): checked on a concrete size; a
    symbolic one is left to the native op, since asserting it would bound the dimension (torch.export would
    refuse a ``Dim`` without a max below the limit, which no real input reaches)."""
    if not isinstance(size, torch.SymInt) and not size < limit:
        fail(op, *parts)


def shape_string(t: Tensor | torch.Size | tuple) -> str:
    sizes = t.shape if isinstance(t, Tensor) else t
    return "[" + ", ".join(str(s) for s in sizes) + "]"


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def _device_string(t: Tensor) -> str:
    return str(t.device)


def check_dim(op: str, arg: str, t: Tensor, dim: int, layout: str) -> None:
    if t.dim() != dim:
        fail(op, arg, " must be a ", dim, "-D tensor ", layout, ", got a ", t.dim(), "-D tensor of shape ",
             shape_string(t))


def same_shape(a: Tensor, b: Tensor) -> bool | torch.SymBool:
    """Whether ``a`` and ``b`` (of one rank) have equal sizes, symbolically when they are."""
    return sym_and(*(x == y for x, y in zip(a.shape, b.shape, strict=True))) if a.dim() else True


def check_same_device(op: str, arg: str, t: Tensor, ref_arg: str, ref: Tensor) -> None:
    # Also what keeps a mix of real and meta tensors, which the dispatcher routes to the fake kernel, from
    # returning a meta result.
    if t.device != ref.device:
        fail(op, arg, " must be on the same device as ", ref_arg, " (", _device_string(ref), "), got ",
             _device_string(t))


def check_same_dtype(op: str, arg: str, t: Tensor, ref_arg: str, ref: Tensor) -> None:
    if t.dtype != ref.dtype:
        fail(op, arg, " must have the same dtype as ", ref_arg, " (", dtype_name(ref.dtype), "), got ",
             dtype_name(t.dtype))


_CPU_DTYPES = (torch.float32, torch.float64)
_CUDA_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def check_floating_dtype(op: str, arg: str, t: Tensor) -> None:
    """float32/float64 on CPU, float16/bfloat16/float32 on CUDA; on a device without kernels (meta: shape
    propagation only) whatever either backend computes in."""
    kind = t.device.type
    if kind == "cpu":
        if t.dtype not in _CPU_DTYPES:
            fail(op, arg, " must be float32 or float64 on CPU, got ", dtype_name(t.dtype))
    elif kind == "cuda":
        if t.dtype not in _CUDA_DTYPES:
            fail(op, arg, " must be float16, bfloat16 or float32 on CUDA, got ", dtype_name(t.dtype))
    elif t.dtype not in _CPU_DTYPES + _CUDA_DTYPES:
        fail(op, arg, " must be float16, bfloat16, float32 or float64 (the dtypes of the CPU and CUDA ",
             "kernels), got ", dtype_name(t.dtype))
