"""Benchmark workload of EngagementSTGCN (issue 21): the training step (forward+backward) of the OPEN
engagement baseline on B = 32 ten-second windows at 15 fps (T = 150), face + hands + pose, with missing
landmarks masked, against the same model whose blocks run ST-GCN's graph conv (1x1 conv + einsum, with the
same mask semantics: :func:`st_gcn_conv_einsum`); everything else (masked batch norms, temporal convs,
pooling, head) is shared code.

Only forward+backward is timed (the training step is the goal; one row keeps the chart within its size
limit). The compiled peer is left out: compiling the whole four-encoder model takes minutes on the 2-core machine
and the issue's goal is against the eager peer.
The model's default graphs: the 128-node Face Mesh contours, the 21-node hand, the 33-node pose.
"""

from __future__ import annotations

import torch

from ..models.engagement import FACE_CONTOUR_NODES, EngagementSTGCN
from ..nn.stgcn import STGCNBlock
from .cases import Case, Workload, with_swapped
from .workloads_st_graph_conv import st_gcn_conv_einsum
from .workloads_stgcn import model_workload, stgcn_encoder_cost


def engagement_stgcn_einsum(model: EngagementSTGCN) -> EngagementSTGCN:
    """``model`` with every block's graph convolution swapped for :func:`st_gcn_conv_einsum`."""
    return with_swapped(model, STGCNBlock, "graph_conv", st_gcn_conv_einsum)


def synthetic_mask(b: int, t: int, generator: torch.Generator) -> torch.Tensor:
    """[B, T, 543] detections as MediaPipe misses them: a hand out of view for a stretch of frames, the
    face lost in a few frames, pose always found."""
    mask = torch.ones(b, t, 543, dtype=torch.bool)
    for lo, hi in ((468, 489), (522, 543)):  # hands
        start = torch.randint(0, t, (b,), generator=generator)
        length = torch.randint(0, t // 2 + 1, (b,), generator=generator)
        frames = torch.arange(t)
        gone = (frames >= start[:, None]) & (frames < (start + length)[:, None])
        mask[:, :, lo:hi] &= ~gone[:, :, None]
    lost = torch.rand(b, t, generator=generator) < 0.05  # face
    mask[:, :, :468] &= ~lost[:, :, None]
    return mask


def _build(b: int, t: int):
    def build(device: str) -> Case:
        torch.manual_seed(0)
        ours = EngagementSTGCN().to(device).train()
        peer = engagement_stgcn_einsum(EngagementSTGCN()).to(device).train()
        peer.load_state_dict(ours.state_dict())
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, 3, t, 543, generator=g).to(device).requires_grad_()
        mask = synthetic_mask(b, t, g).to(device)
        return Case(inputs=[x, mask], candidates={"facekernels": ours, "einsum": peer},
                    params=[x, *ours.parameters(), *peer.parameters()])

    return build


def _workload(name: str, b: int, t: int) -> Workload:
    channels, strides = (32, 64, 64), (2, 2, 1)
    flops, nbytes = 0.0, 0.0
    for v, n in ((len(FACE_CONTOUR_NODES), b), (21, 2 * b), (33, b)):
        f, nb = stgcn_encoder_cost(n, 3, t, v, channels, strides)
        flops, nbytes = flops + f, nbytes + nb
    return model_workload(
        "engagement_stgcn", name,
        f"EngagementSTGCN training step, B={b} windows of T={t} (10 s at 15 fps), face contours (128) + 2 hands "
        f"(21, shared) + pose (33), masked, channels {channels}, strides {strides}",
        flops, nbytes, _build(b, t), compile_peer=False, modes=("forward+backward",))


WORKLOADS: list[Workload] = [
    # issue 21's goal: the training step >= 1.5x the same model on the eager graph conv
    _workload("engagement_b32_t150", 32, 150),
]

QUICK: set[str] = set()  # seconds per step: full runs only
