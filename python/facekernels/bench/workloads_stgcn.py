"""Benchmark workload of the LandmarkSTGCN encoder (issue 6) against the same model on ST-GCN's graph conv.

The peer is the identical network (same weights, same graph, training mode) whose blocks run the graph
convolution as ST-GCN writes it: a 1x1 conv to K*C_out channels, then ``einsum('nkctv,kvw->nctw')``
(:func:`st_gcn_conv_einsum`); everything else (batch norms, temporal convs, residuals) is shared code.
The harness also times the peer torch.compile'd.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ..models.landmark_stgcn import LandmarkSTGCN
from .cases import Case, Workload, module_case
from .workloads_st_graph_conv import st_gcn_conv_einsum


def landmark_stgcn_einsum(model: LandmarkSTGCN) -> LandmarkSTGCN:
    """``model`` with every block's graph convolution swapped for :func:`st_gcn_conv_einsum`."""
    for block in model.blocks:
        block.graph_conv = st_gcn_conv_einsum
    return model


def _case(n: int, c: int, t: int, graph: str, channels: Sequence[int], strides: Sequence[int]
          ) -> Callable[[str], Case]:
    return lambda device: module_case(
        device, lambda: LandmarkSTGCN(c, graph, channels, strides),
        lambda: landmark_stgcn_einsum(LandmarkSTGCN(c, graph, channels, strides)), "einsum",
        lambda ours: (n, c, t, ours.num_nodes))


def stgcn_encoder_cost(n: int, c: int, t: int, v: int, channels: Sequence[int], strides: Sequence[int],
                       k: int = 3) -> tuple[float, float]:
    """(FLOPs, minimal bytes) of a forward through ST-GCN blocks (the first without residual) on
    ``[n, c, t, v]``: the graph convs as ST-GCN writes them, the 9x1 temporal convs, the residual convs."""
    flops = 0.0
    nbytes = 4.0 * n * c * t * v
    c_prev, t_cur = c, t
    for i, (c_out, s) in enumerate(zip(channels, strides)):
        t_out = (t_cur - 1) // s + 1
        flops += 2.0 * n * t_cur * v * k * c_out * (c_prev + v)   # 1x1 conv to K*C_out, then the node sum
        flops += 2.0 * n * t_out * v * c_out * c_out * 9           # temporal conv
        if i > 0 and (c_prev != c_out or s != 1):
            flops += 2.0 * n * t_out * v * c_prev * c_out           # residual 1x1 conv
        nbytes += 4.0 * (k * c_out * (c_prev + 2 * v * v) + 9 * c_out * c_out)
        c_prev, t_cur = c_out, t_out
    nbytes += 4.0 * n * c_prev * t_cur
    return flops, nbytes


def _workload(name: str, n: int, c: int, t: int, graph: str, channels: Sequence[int], strides: Sequence[int],
              k: int = 3) -> Workload:
    v = 20 if graph == "lips20" else 68
    flops, nbytes = stgcn_encoder_cost(n, c, t, v, channels, strides, k)
    return model_workload("landmark_stgcn", name,
                          f"LandmarkSTGCN, training mode, N={n} {graph} sequences of T={t}, C={c}, "
                          f"channels {tuple(channels)}, strides {tuple(strides)}",
                          flops, nbytes, _case(n, c, t, graph, channels, strides))


def model_workload(op: str, name: str, description: str, flops: float, nbytes: float,
                   build: Callable[[str], Case], compile_peer: bool = True,
                   modes: tuple[str, ...] = ("forward", "forward+backward")) -> Workload:
    """A whole ST-GCN network against its ``einsum`` twin (by default forward and forward+backward), the
    backward declared as twice the forward; ``compile_peer=False`` leaves out the torch.compile'd twin."""
    return Workload(
        op=op,
        name=name,
        description=description,
        flops_forward=flops,
        bytes_forward=nbytes,
        flops_backward=2.0 * flops,
        bytes_backward=2.0 * nbytes,
        build=build,
        peers=("einsum",),
        compile_peers=None if compile_peer else (),
        modes=modes,
    )


WORKLOADS: list[Workload] = [
    # issue 6: LandmarkSTGCN forward+backward on N=32 lip sequences (LRW: 29 frames), the default network
    _workload("stgcn_lips_n32", 32, 2, 29, "lips20", (64, 64, 128, 128, 256), (1, 1, 1, 1, 1)),
]

QUICK: set[str] = set()  # seconds per call and a whole-network compile: full runs only
