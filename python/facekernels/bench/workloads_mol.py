"""Benchmark workload of a whole MOL training step (forward, the three losses, backward) against the
released network as published: its loop over the 7 frame pairs (the stem twice on every interior frame,
FCC/CCC and FlowNet once per pair, outputs grown with torch.cat) and train.py's losses (the landmark loss
per sample and frame in a Python loop, the flow loss on the CPU).

The peer's blocks are the strongest plain-PyTorch forms of the released math, so that only the
structure differs: FCC as MOL writes it (conv2d over the concatenated input), CCC with the eager cosine
kNN and EdgeConv (vectorised; the released per-position loop is far slower still), and FlowNet's
correlation by the all-pairs bmm + gather (the strongest eager peer of workloads_correlation.py), in
place of the released CPU-copied spatial_correlation_sampler.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..models.mol import MOL, ConvStack, FlowNet, LDMPredictor, MER3dCNN, mol_loss
from .cases import Case, Workload
from .workloads_correlation import correlation_all_pairs
from .workloads_f5c import CCCEager
from .workloads_fcc import FCCConv2d


def correlate_all_pairs(a: Tensor, b: Tensor) -> Tensor:
    n, c, h, w = a.shape
    out = correlation_all_pairs(a, b, 21, 2).view(n, 441, h, w) / c
    return F.leaky_relu(out, 0.1)


class FlowNetEager(FlowNet):
    correlate = staticmethod(correlate_all_pairs)


class MOLReleased(nn.Module):
    """The released MOL.forward (loops and torch.cat over the pairs), on the eager blocks above. Same
    parameter names as facekernels.models.MOL, so one state_dict loads into both."""

    def __init__(self, num_classes: int = 5, neighbor_num: int = 4) -> None:
        super().__init__()
        self.neighbor_num = neighbor_num
        self.conv_stack = ConvStack()
        self.FCC_1 = FCCConv2d()
        self.FCC_2 = FCCConv2d()
        self.CCC_1 = CCCEager(256, neighbor_num)
        self.CCC_2 = CCCEager(256, neighbor_num)
        self.flownet = FlowNetEager()
        self.mer_3dcnn = MER3dCNN(num_classes)
        self.ldm_predictor = LDMPredictor()
        self.dropout = nn.Dropout()
        self.flatten = nn.Flatten()

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = x.permute(0, 1, 3, 4, 2)
        for index in range(x.shape[-1] - 1):
            f1o, f2o = x[..., index], x[..., index + 1]
            f1 = self.FCC_1(self.conv_stack(f1o))
            f2 = self.FCC_2(self.conv_stack(f2o))
            f1 = f1 + self.CCC_1(f1)
            f2 = f2 + self.CCC_2(f2)
            ldm = self.ldm_predictor(f2).unsqueeze(-1)
            flow = self.flownet(f1o, f2o, torch.cat((f1.contiguous(), f2.contiguous()), dim=1)).unsqueeze(-1)
            if index == 0:
                cross = torch.cat([f1.unsqueeze(-1), f2.unsqueeze(-1)], dim=-1)
                pred_ldm, pred_flow = ldm, flow
            else:
                cross = torch.cat([cross, f1.unsqueeze(-1)], dim=-1)
                cross = torch.cat([cross, f2.unsqueeze(-1)], dim=-1)
                pred_ldm = torch.cat([pred_ldm, ldm], dim=-1)
                pred_flow = torch.cat([pred_flow, flow], dim=-1)
        return self.mer_3dcnn(cross), pred_flow, pred_ldm


def _pupil_distance(land: Tensor) -> float:
    """utils/pupil_distance.py: the eye centres as means of points 36-41 and 42-47, as a Python float."""
    left = [sum(land[2 * k + a] for k in range(36, 42)) / 6.0 for a in (0, 1)]
    right = [sum(land[2 * k + a] for k in range(42, 48)) / 6.0 for a in (0, 1)]
    dx, dy = float(right[0] - left[0]), float(right[1] - left[1])
    return math.sqrt(dx * dx + dy * dy)


def released_mol_loss(pred_mer: Tensor, pred_flow: Tensor, pred_ldm: Tensor, label: Tensor, flow: Tensor,
                      ldm: Tensor, of_weight: float = 10.0, ldm_weight: float = 0.5, mer_weight: float = 1.0) -> Tensor:
    """train.py's loss, as written: the flow MSE on CPU copies, the landmark loss per frame and sample."""
    pairs = pred_flow.shape[-1]
    me_loss = F.nll_loss(F.log_softmax(pred_mer, dim=1), label)
    flow_loss = F.mse_loss(pred_flow.float().cpu(), flow.float().cpu()) / pairs
    ldm_loss = torch.zeros(1)
    l1 = nn.L1Loss(reduction="sum")
    for index in range(pairs):
        gt, pred = ldm[:, :, index + 1], pred_ldm[:, :, index]
        batch_loss = torch.zeros(1)
        for b in range(len(ldm)):
            batch_loss = batch_loss + l1(gt[b].cpu(), pred[b].cpu()) / _pupil_distance(gt[b])
        ldm_loss = ldm_loss + batch_loss
    ldm_loss = ldm_loss / (len(pred_ldm) * 68)
    return flow_loss * of_weight + ldm_loss * ldm_weight + me_loss.cpu() * mer_weight


def synthetic_batch(b: int, device: str = "cpu", seed: int = 0) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A clip batch shaped like the released dataset's: video [B, 1, 8, 128, 128], flows [B, 2, 128, 128, 7]
    (already permuted as train.py does), landmarks [B, 136, 8] around a face, labels [B] in 0..4."""
    g = torch.Generator().manual_seed(seed)
    video = torch.rand(b, 1, 8, 128, 128, generator=g)
    flows = torch.randn(b, 2, 128, 128, 7, generator=g)
    base = torch.rand(b, 68, 2, 1, generator=g) * 80 + 24
    landmarks = (base + torch.randn(b, 68, 2, 8, generator=g)).flatten(1, 2)
    label = torch.randint(0, 5, (b,), generator=g)
    return tuple(t.to(device) for t in (video, flows, landmarks, label))


def _case(b: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        torch.manual_seed(0)
        ours = MOL().to(device).train()
        peer = MOLReleased().to(device).train()
        peer.load_state_dict(ours.state_dict())
        video, flows, landmarks, label = synthetic_batch(b, device)

        def step_ours(v: Tensor) -> Tensor:
            return mol_loss(*ours(v), label, flows, landmarks).total

        def step_released(v: Tensor) -> Tensor:
            return released_mol_loss(*peer(v), label, flows, landmarks)

        return Case(inputs=[video], candidates={"facekernels": step_ours, "released": step_released},
                    params=[*ours.parameters(), *peer.parameters()])

    return build


# FLOPs of the released forward and backward per clip, counted by torch.utils.flop_counter.FlopCounterMode
# (convolutions and matmuls; FlowNet is nearly all of it). MOL's parameters: 44.1 M.
_FLOPS_FORWARD_PER_CLIP = 31.8e9
_FLOPS_BACKWARD_PER_CLIP = 64.7e9
_PARAMETERS = 44.1e6


def _clip_bytes(b: int) -> float:
    """Inputs, targets and outputs of b clips, float32."""
    return 4.0 * b * (8 * 128 * 128 + 2 * 2 * 128 * 128 * 7 + 136 * 8 + 136 * 7 + 5)


WORKLOADS: list[Workload] = [
    Workload(
        op="mol",
        name="mol_train_step",
        description="MOL training step (forward, the three losses, backward): B=8 clips of 8 frames, 128x128",
        flops_forward=8 * _FLOPS_FORWARD_PER_CLIP,
        bytes_forward=4.0 * _PARAMETERS + _clip_bytes(8),
        flops_backward=8 * _FLOPS_BACKWARD_PER_CLIP,
        bytes_backward=8.0 * _PARAMETERS + _clip_bytes(8),
        build=_case(8),
        peers=("released",),
        compile_peers=(),
        modes=("forward+backward",),
    ),
]
