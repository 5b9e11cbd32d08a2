"""Helpers shared by the op modules: the refusal of double backward and the autocast rules (the fake kernels'
argument checks are in ops/_checks.py)."""

from __future__ import annotations

import functools

import torch

_LIB = torch.library.Library("facekernels", "FRAGMENT")


@functools.cache
def _schema_defaults(op_name: str) -> tuple:
    """The schema's arguments of ``facekernels::op_name`` as (name, has default, default) triples."""
    schema = getattr(torch.ops.facekernels, op_name).default._schema
    return tuple((a.name, a.has_default_value(), a.default_value) for a in schema.arguments)


def with_defaults(op_name: str, inputs: tuple) -> tuple:
    """``inputs`` of an autograd setup_context with the trailing arguments the dispatcher dropped (those
    equal to their schema defaults) filled back in from the op's schema, so every op reads its arguments
    one way, at their schema positions."""
    arguments = _schema_defaults(op_name)
    missing = arguments[len(inputs):]
    for name, has_default, _ in missing:
        if not has_default:
            raise RuntimeError(f"facekernels::{op_name}: autograd got no value for {name}, which has no default")
    return tuple(inputs) + tuple(default for _, _, default in missing)


def refuse_backward(op_name: str, message: str) -> None:
    """Make differentiating ``facekernels::op_name`` raise ``RuntimeError(message)``: without an autograd
    kernel torch would treat the op as a constant and only warn, giving silently wrong gradients."""

    def backward(ctx, *grads):
        raise RuntimeError(message)

    torch.library.register_autograd(
        f"facekernels::{op_name}", backward, setup_context=lambda ctx, inputs, output: None
    )


def refuse_double_backward(backward_op: str, public_name: str) -> None:
    """Make differentiating ``backward_op`` (a backward kernel op) raise."""
    refuse_backward(
        backward_op,
        f"{public_name}: double backward (differentiating its gradient, e.g. a gradient penalty through this "
        "op) is not implemented",
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
