"""facekernels: fused C++/CUDA kernels for face-analysis models, as drop-in torch ops.

Importing the package loads the native extension, which registers every ``torch.ops.facekernels`` op.
Every public op of :mod:`facekernels.ops` is also exported here (``facekernels.circular_conv``, ...).
"""

from __future__ import annotations

import torch  # noqa: F401  (torch's libraries must be loaded before the extension)

from . import _C, graphs, me, metrics, models, nn, ops
from .ops import *  # the ops' own __all__: a new op family adds nothing here

__version__: str = _C.build_info()["version"]


def build_info() -> dict:
    """How the native extension was built: version, torch target version, CUDA kernels and
    architectures, thread count, and the CPU SIMD level each kernel dispatches to."""
    return _C.build_info()


__all__ = ["__version__", "build_info", "graphs", "me", "metrics", "models", "nn", "ops"]
__all__ += ops.__all__
