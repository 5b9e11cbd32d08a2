"""The two records every benchmark workload is made of: a Workload (what is timed, its flops and bytes)
and the Case it builds on a device (inputs and candidates). Kept apart from workloads.py so that the
per-family workload modules, which workloads.py imports, can import them in any order."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch


@dataclass
class Case:
    """Inputs and candidates of one workload on one device, ready to time."""

    inputs: list[torch.Tensor]
    candidates: dict[str, Callable[..., torch.Tensor]]  # name -> fn(*inputs); "facekernels" first
    peers: list[str]                                    # which candidates are plain-PyTorch peers
    compile_peers: list[str]                            # peers also measured torch.compile'd
    params: list[torch.Tensor] = field(default_factory=list)  # leaves whose grads the backward makes


@dataclass
class Workload:
    op: str
    name: str
    description: str
    flops_forward: float
    bytes_forward: float
    flops_backward: float   # of the backward alone
    bytes_backward: float
    build: Callable[[str], Case]
    modes: tuple[str, ...] = ("forward", "forward+backward")
