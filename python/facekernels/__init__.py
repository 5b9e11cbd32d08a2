"""facekernels: fused C++/CUDA kernels for face-analysis models, as drop-in torch ops.

Importing the package loads the native extension, which registers every ``torch.ops.facekernels`` op.
"""

from __future__ import annotations

import torch  # noqa: F401  (torch's libraries must be loaded before the extension)

from . import _C, graphs, me, metrics, models, nn, ops
from .ops import (
    alignment_energy,
    circular_conv,
    cosine_topk,
    diff_attention,
    edge_conv_max,
    local_mean_var,
    local_stat_transform,
    st_graph_conv,
)

__version__: str = _C.build_info()["version"]


def build_info() -> dict:
    """How the native extension was built: version, torch target version, CUDA kernels and
    architectures, thread count, and the CPU SIMD level each kernel dispatches to."""
    return _C.build_info()


__all__ = [
    "__version__", "alignment_energy", "build_info", "circular_conv", "cosine_topk", "diff_attention",
    "edge_conv_max", "graphs", "local_mean_var", "local_stat_transform", "me", "metrics", "models", "nn", "ops",
    "st_graph_conv",
]
