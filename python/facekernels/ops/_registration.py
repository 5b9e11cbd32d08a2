"""Helpers shared by the op modules: autocast rules for ops whose kernels need one dtype throughout."""

from __future__ import annotations

import torch
from torch import Tensor

_LIB = torch.library.Library("facekernels", "FRAGMENT")


def check_same_device(op: str, **tensors: Tensor | None) -> None:
    """Raise if the given tensors are not all on one device. Fake kernels call it: the dispatcher would
    otherwise route a mix of real and meta tensors to the fake kernel and return a meta result."""
    first_name, first = None, None
    for name, t in tensors.items():
        if t is None:
            continue
        if first is None:
            first_name, first = name, t
        elif t.device != first.device:
            raise RuntimeError(
                f"{op}: {name} must be on the same device as {first_name} ({first.device}), got {t.device}"
            )


def check_same_dtype(op: str, **tensors: Tensor | None) -> None:
    """Raise if the given tensors do not all have one dtype: the fake kernels' mirror of the native
    checks, so that a traced or compiled call fails where the eager one would."""
    first_name, first = None, None
    for name, t in tensors.items():
        if t is None:
            continue
        if first is None:
            first_name, first = name, t
        elif t.dtype != first.dtype:
            raise RuntimeError(f"{op}: {name} must have the dtype of {first_name} ({first.dtype}), got {t.dtype}")


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
