"""Helpers shared by the op modules: autocast rules for ops whose kernels need one dtype throughout."""

from __future__ import annotations

import torch
from torch import Tensor

_LIB = torch.library.Library("facekernels", "FRAGMENT")


def _check_all_same(op: str, attribute: str, what: str, tensors: dict[str, Tensor | None]) -> None:
    """Raise unless the given tensors (None skipped) agree on ``attribute`` ("device" or "dtype")."""
    first_name, first = None, None
    for name, t in tensors.items():
        if t is None:
            continue
        if first is None:
            first_name, first = name, getattr(t, attribute)
        elif getattr(t, attribute) != first:
            raise RuntimeError(f"{op}: {name} must {what} {first_name} ({first}), got {getattr(t, attribute)}")


def check_same_device(op: str, **tensors: Tensor | None) -> None:
    """Raise if the given tensors are not all on one device. Fake kernels call it: the dispatcher would
    otherwise route a mix of real and meta tensors to the fake kernel and return a meta result."""
    _check_all_same(op, "device", "be on the same device as", tensors)


def check_same_dtype(op: str, **tensors: Tensor | None) -> None:
    """Raise if the given tensors do not all have one dtype: the fake kernels' mirror of the native
    checks, so that a traced or compiled call fails where the eager one would."""
    _check_all_same(op, "dtype", "have the dtype of", tensors)


def refuse_double_backward(backward_op: str, public_name: str) -> None:
    """Make differentiating ``backward_op`` (a backward kernel op) raise: without an autograd kernel torch
    would treat it as a constant and only warn, giving silently wrong second derivatives."""

    def backward(ctx, *grads):
        raise RuntimeError(
            f"{public_name}: double backward (differentiating its gradient, e.g. a gradient penalty through this "
            "op) is not implemented"
        )

    torch.library.register_autograd(
        f"facekernels::{backward_op}", backward, setup_context=lambda ctx, inputs, output: None
    )


def _cast(value: object, dtype: torch.dtype) -> object:
    if isinstance(value, torch.Tensor) and value.is_floating_point() and value.dtype != torch.float64:
        return value.to(dtype)
    return value


def register_autocast(op_name: str) -> None:
    """Under autocast, run ``facekernels::op_name`` in the autocast dtype on CUDA (float16 or bfloat16, as
    the user set it) and in float32 on CPU (the CPU kernels are float32/float64), casting every floating
    tensor argument alike so that mixed-precision callers never hit a dtype mismatch. float64 is left
    alone, as torch's own autocast does."""
    op = getattr(torch.ops.facekernels, op_name).default

    def make(device_type: str, key: str):
        keyset = torch._C.DispatchKeySet(getattr(torch._C.DispatchKey, key))

        def autocast_kernel(*args):
            dtype = torch.float32 if device_type == "cpu" else torch.get_autocast_dtype(device_type)
            with torch._C._ExcludeDispatchKeyGuard(keyset):
                return op(*(_cast(a, dtype) for a in args))

        return autocast_kernel

    _LIB.impl(op_name, make("cpu", "AutocastCPU"), "AutocastCPU")
    _LIB.impl(op_name, make("cuda", "AutocastCUDA"), "AutocastCUDA")
