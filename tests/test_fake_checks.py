"""The fake (meta) kernels refuse what the native kernels refuse, so traced and compiled calls fail like
eager ones instead of returning a plausible shape."""

import facekernels  # noqa: F401  (registers the ops)
import pytest
import torch

ops = torch.ops.facekernels


def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)



