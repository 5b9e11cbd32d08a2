"""facekernels: fused C++/CUDA kernels for face-analysis models, as drop-in torch ops.

Importing the package loads the native extension, which registers every ``torch.ops.facekernels`` op.
Every public op of :mod:`facekernels.ops` is also exported here (``facekernels.circular_conv``, ...).
"""

from __future__ import annotations

import torch  # noqa: F401  (torch's libraries must be loaded before the extension)

from . import _C, animation, graphs, me, metrics, models, nn, ops
from .ops import *  # the ops' own __all__: a new op family adds nothing here

__version__: str = _C.build_info()["version"]


def build_info() -> dict:
    """How the native extension was built: version, torch target version, CUDA kernels and
    architectures, thread count, the CPU SIMD level each kernel dispatches to, and the smallest CPU output
    given the huge-page hint (``huge_page_min_bytes``, 0 when off)."""
    return _C.build_info()


def set_huge_page_threshold(min_bytes: int) -> int:
    """Give fresh CPU outputs of at least ``min_bytes`` the transparent-huge-page hint (MADV_HUGEPAGE);
    0 turns the hint off. Returns the previous threshold. Process-wide; the start value comes from the
    environment variable ``FACEKERNELS_HUGE_PAGES`` (MiB), else 0: off by default.

    The hint saves page faults on large blocks torch maps fresh for every call, but where other work
    churns through memory between the calls (a training step's other layers, autograd buffers) a hinted
    fault can stall on synchronous compaction: in the interleaved benchmarks no size gained
    (docs/design.md, "The huge-page hint"). Turn it on where measurement shows a gain."""
    if isinstance(min_bytes, bool) or not isinstance(min_bytes, int):
        raise TypeError(f"set_huge_page_threshold: min_bytes must be an int, got {type(min_bytes).__name__}")
    if min_bytes < 0:
        raise ValueError(f"set_huge_page_threshold: min_bytes must be >= 0, got {min_bytes}")
    return _C._set_huge_page_min_bytes(min_bytes)


__all__ = ["__version__", "build_info", "set_huge_page_threshold", "animation", "graphs", "me", "metrics", "models",
           "nn", "ops"]
__all__ += ops.__all__
