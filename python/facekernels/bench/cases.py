"""The two records every benchmark workload is made of: a Workload (what is timed, against which peers,
its flops and bytes) and the Case it builds on a device (inputs and candidate callables). Kept apart from
workloads.py so that the per-family workload modules, which workloads.py discovers, import them in any
order."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

import torch


class WorkloadUnavailable(RuntimeError):
    """Raised by a workload's ``build`` when an optional dependency it needs is missing (e.g. timm): the
    harness reports the workload as skipped and goes on."""


@dataclass
class Case:
    """Inputs and candidates of one workload on one device, ready to time."""

    inputs: list[torch.Tensor]
    candidates: dict[str, Callable[..., torch.Tensor]]  # name -> fn(*inputs): "facekernels" and the peers
    params: list[torch.Tensor] = field(default_factory=list)  # leaves whose grads the backward makes
    teardown: Callable[[], None] | None = None  # run after the workload's timings (restore a setting)


@dataclass
class Workload:
    """One benchmark: facekernels against ``peers`` (plain-PyTorch candidates its case builds under those
    names), ``compile_peers`` of them also timed torch.compile'd (None: all of them)."""

    op: str
    name: str
    description: str
    flops_forward: float
    bytes_forward: float
    flops_backward: float   # of the backward alone
    bytes_backward: float
    build: Callable[[str], Case]
    peers: tuple[str, ...]
    compile_peers: tuple[str, ...] | None = None
    modes: tuple[str, ...] = ("forward", "forward+backward")
    family: str = ""  # the op family, <family> of the workloads_<family>.py declaring it (set on discovery)
    cpu_only_peers: tuple[str, ...] = ()  # of ``peers``, those the case builds on CPU only (a CPU setting)

    @property
    def candidates(self) -> tuple[str, ...]:
        """The names the case's candidates carry on CPU, facekernels first (known without building it)."""
        return self.candidates_on("cpu")

    def peers_on(self, device: str) -> tuple[str, ...]:
        """The peers the case builds on ``device`` ("cpu", "cuda")."""
        return tuple(p for p in self.peers if device == "cpu" or p not in self.cpu_only_peers)

    def candidates_on(self, device: str) -> tuple[str, ...]:
        return ("facekernels", *self.peers_on(device))

    @property
    def compiled_peers(self) -> tuple[str, ...]:
        return self.peers if self.compile_peers is None else self.compile_peers


def module_case(device: str, ours: Callable[[], torch.nn.Module], peer: Callable[[], torch.nn.Module],
                peer_name: str, input_shape: Callable[[torch.nn.Module], Sequence[int]]) -> Case:
    """The case of a whole module against its peer module: both built after ``torch.manual_seed(0)``, in
    training mode, the peer loaded with ours' weights (so both compute the same function), and one input
    ``x`` of ``input_shape(ours)`` that needs its gradient; the backward makes every parameter's gradient."""
    torch.manual_seed(0)
    fk = ours().to(device).train()
    other = peer().to(device).train()
    other.load_state_dict(fk.state_dict())
    x = torch.randn(*input_shape(fk), device=device).requires_grad_()
    return Case(
        inputs=[x],
        candidates={"facekernels": fk, peer_name: other},
        params=[x, *fk.parameters(), *other.parameters()],
    )


M = TypeVar("M", bound=torch.nn.Module)


def with_swapped(model: M, module_type: type[torch.nn.Module], attribute: str, value: object) -> M:
    """``model`` with ``attribute`` set to ``value`` on every submodule of ``module_type``: how a peer
    model is made from ours by swapping one function (a kernel for its plain-PyTorch form)."""
    for module in model.modules():
        if isinstance(module, module_type):
            setattr(module, attribute, value)
    return model
