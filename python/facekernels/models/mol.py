"""MOL (micro-expression recognition jointly trained with optical flow and facial landmarks), the whole
network on batched frame pairs, with the released parameter names; and its training loss."""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.init import constant_, kaiming_normal_

from ..nn.ccc import CCC
from ..nn.fcc import FCC
from ..nn.losses import landmark_nme_loss
from ..ops.correlation import correlation

__all__ = ["MOL", "MOLLoss", "mol_loss"]

CLIP_LENGTH = 8  # frames per clip: 7 pairs
PATCH_SIZE, DILATION = 21, 2  # FlowNet's correlation


def _memory_format(x: Tensor) -> torch.memory_format:
    last = x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    return torch.channels_last if last else torch.contiguous_format


def _move_groups(x: Tensor, g: int, into_channels: bool, memory_format: torch.memory_format) -> Tensor:
    """``[g m, c, H, W] -> [m, g c, H, W]`` (into_channels) or back, as a new tensor (not a view) in
    ``memory_format``: one copy between two 5-D views of the same [g, m, c, H, W] index space."""
    if into_channels:
        n, c, hh, ww = x.shape
        m = n // g
        out = torch.empty((m, g * c, hh, ww), dtype=x.dtype, device=x.device, memory_format=memory_format)
        src, dst = x.unflatten(0, (g, m)), out.unflatten(1, (g, c)).transpose(0, 1)
    else:
        m, gc, hh, ww = x.shape
        c = gc // g
        out = torch.empty((g * m, c, hh, ww), dtype=x.dtype, device=x.device, memory_format=memory_format)
        src, dst = x.unflatten(1, (g, c)).transpose(0, 1), out.unflatten(0, (g, m))
    dst.copy_(src)
    return out


class _MoveGroups(torch.autograd.Function):
    """_move_groups as one autograd node whose backward is the inverse move. Its output is a tensor of its
    own, not a view: the in-place LeakyReLU after MOL's BatchNorms then costs nothing in the backward,
    where on a view of the move's result autograd re-materialised the whole base (CopySlices)."""

    @staticmethod
    def forward(ctx, x: Tensor, g: int, into_channels: bool) -> Tensor:
        ctx.g, ctx.into_channels, ctx.memory_format = g, into_channels, _memory_format(x)
        return _move_groups(x, g, into_channels, ctx.memory_format)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:
        return _move_groups(grad, ctx.g, not ctx.into_channels, ctx.memory_format), None, None


class PairBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm2d whose batch may hold ``groups`` equal consecutive groups (the frame pairs, stacked
    pair-major) normalised with statistics of their own, as if each had gone through the layer in a call
    of its own; running statistics are updated once per group, in order, or with the groups listed in
    ``update_order`` (a group may be listed more than once: a frame that the released code passes through
    the layer twice, in two calls that see the same batch). ``groups == 1``, or eval mode, is plain
    BatchNorm2d. The parameters and buffers are BatchNorm2d's, so state_dicts load unchanged."""

    groups: int = 1
    update_order: tuple[int, ...] | None = None

    def forward(self, x: Tensor) -> Tensor:
        g = self.groups
        if g == 1 or not self.training:
            return super().forward(x)
        n, c = x.shape[:2]
        if n % g != 0:
            raise ValueError(f"PairBatchNorm2d: batch {n} is not a multiple of groups = {g}")
        # The groups moved from the batch into the channels ([n/g, g c, ...]: one copy each way, keeping
        # x's memory format), so that torch's fused batch norm computes every group's statistics, forward
        # and backward, in one call. Its running buffers are scratch with momentum 1: they come back holding
        # each group's batch mean and unbiased variance, which then update the layer's running statistics
        # group by group.
        xs = _MoveGroups.apply(x, g, True)
        weight = None if self.weight is None else self.weight.repeat(g)
        bias = None if self.bias is None else self.bias.repeat(g)
        stats = self.track_running_stats
        mean = x.new_zeros(g * c) if stats else None
        var = x.new_ones(g * c) if stats else None
        y = F.batch_norm(xs, mean, var, weight, bias, True, 1.0, self.eps)
        if stats:
            with torch.no_grad():
                for k in range(g) if self.update_order is None else self.update_order:
                    self.num_batches_tracked.add_(1)
                    mom = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                    self.running_mean.mul_(1 - mom).add_(mean[k * c:(k + 1) * c], alpha=mom)
                    self.running_var.mul_(1 - mom).add_(var[k * c:(k + 1) * c], alpha=mom)
        return _MoveGroups.apply(y, g, False)


def _set_groups(module: nn.Module, groups: int, update_order: tuple[int, ...] | None = None) -> None:
    for m in module.modules():
        if isinstance(m, PairBatchNorm2d):
            m.groups = groups
            m.update_order = update_order


def _pair_batchnorm(module: nn.Module) -> None:
    for m in module.modules():
        if type(m) is nn.BatchNorm2d:
            m.__class__ = PairBatchNorm2d


class ConvStack(nn.Module):
    """The released Conv_stack: four convolutions, [N, 1, 128, 128] -> [N, 128, 16, 16]."""

    def __init__(self) -> None:
        super().__init__()
        self.conv_stack = nn.Sequential(
            nn.Conv2d(1, 8, kernel_size=4, stride=2),
            nn.Conv2d(8, 32, kernel_size=3, stride=2),
            nn.Conv2d(32, 64, kernel_size=2, stride=2, padding=1),
            nn.Conv2d(64, 128, kernel_size=1, stride=1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.conv_stack(x)


def _conv(cin: int, cout: int, kernel_size: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel_size, stride, (kernel_size - 1) // 2, bias=False),
        nn.BatchNorm2d(cout),
        nn.LeakyReLU(0.1, inplace=True),
    )


def _deconv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=False), nn.LeakyReLU(0.1, inplace=True))


def _predict_flow(cin: int) -> nn.Conv2d:
    return nn.Conv2d(cin, 2, kernel_size=3, stride=1, padding=1, bias=False)


def correlate(a: Tensor, b: Tensor) -> Tensor:
    """FlowNet's correlation layer as MOL uses it: P = 21, d = 2, viewed as [N, 441, H, W], divided by C,
    LeakyReLU(0.1)."""
    n, c, h, w = a.shape
    out = correlation(a, b, PATCH_SIZE, DILATION).view(n, PATCH_SIZE * PATCH_SIZE, h, w) / c
    return F.leaky_relu(out, 0.1)


class FlowNet(nn.Module):
    """The released FlowNet (FlowNetC-style with batch norm, a MOL feature input at 1/8 scale): the
    encoder ``encode`` (conv1..conv3, shared by both frames) and ``decode`` (correlation, refinement,
    and the six upsampling stages to a full-resolution flow). Parameter names are the released ones."""

    correlate = staticmethod(correlate)

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = _conv(1, 64, kernel_size=6, stride=2)
        self.conv2 = _conv(64, 128, kernel_size=4, stride=2)
        self.conv3 = _conv(128, 256, kernel_size=2, stride=2)
        self.conv_redir = _conv(256, 32, kernel_size=1, stride=1)
        self.conv3_1 = _conv(473 + 128 * 2, 256)
        self.conv4 = _conv(256, 512, stride=2)
        self.conv4_1 = _conv(512, 512)
        self.conv5 = _conv(512, 512, stride=2)
        self.conv5_1 = _conv(512, 512)
        self.conv6 = _conv(512, 1024, stride=2)
        self.conv6_1 = _conv(1024, 1024)
        self.deconv5 = _deconv(1024, 512)
        self.deconv4 = _deconv(1026, 256)
        self.deconv3 = _deconv(770, 128)
        self.deconv2 = _deconv(386, 128)
        self.deconv1 = _deconv(258, 64)
        self.deconv0 = _deconv(130, 32)
        self.predict_flow6 = _predict_flow(1024)
        self.predict_flow5 = _predict_flow(1026)
        self.predict_flow4 = _predict_flow(770)
        self.predict_flow3 = _predict_flow(386)
        self.predict_flow2 = _predict_flow(258)
        self.predict_flow1 = _predict_flow(130)
        self.predict_flow0 = _predict_flow(35)
        for name in ("6_to_5", "5_to_4", "4_to_3", "3_to_2", "2_to_1", "1_to_0"):
            setattr(self, f"upsampled_flow{name}", nn.ConvTranspose2d(2, 2, 4, 2, 1, bias=False))
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                kaiming_normal_(m.weight, 0.1)
                if m.bias is not None:
                    constant_(m.bias, 0)
            elif isinstance(m, nn.BatchNorm2d):
                constant_(m.weight, 1)
                constant_(m.bias, 0)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        c1 = self.conv1(x)
        c2 = self.conv2(c1)
        return c1, c2, self.conv3(c2)

    def decode(self, x1: Tensor, conv1a: Tensor, conv2a: Tensor, conv3a: Tensor, conv3b: Tensor,
               feat: Tensor) -> Tensor:
        redir = self.conv_redir(conv3a)
        out_conv3 = self.conv3_1(torch.cat([redir, self.correlate(conv3a, conv3b), feat], dim=1))
        out_conv4 = self.conv4_1(self.conv4(out_conv3))
        out_conv5 = self.conv5_1(self.conv5(out_conv4))
        out_conv6 = self.conv6_1(self.conv6(out_conv5))
        flow6 = self.predict_flow6(out_conv6)
        concat5 = torch.cat((out_conv5, self.deconv5(out_conv6), self.upsampled_flow6_to_5(flow6)), 1)
        flow5 = self.predict_flow5(concat5)
        concat4 = torch.cat((out_conv4, self.deconv4(concat5), self.upsampled_flow5_to_4(flow5)), 1)
        flow4 = self.predict_flow4(concat4)
        concat3 = torch.cat((out_conv3, self.deconv3(concat4), self.upsampled_flow4_to_3(flow4)), 1)
        flow3 = self.predict_flow3(concat3)
        concat2 = torch.cat((conv2a, self.deconv2(concat3), self.upsampled_flow3_to_2(flow3)), 1)
        flow2 = self.predict_flow2(concat2)
        concat1 = torch.cat((conv1a, self.deconv1(concat2), self.upsampled_flow2_to_1(flow2)), 1)
        flow1 = self.predict_flow1(concat1)
        concat0 = torch.cat((x1, self.deconv0(concat1), self.upsampled_flow1_to_0(flow1)), 1)
        return self.predict_flow0(concat0)

    def forward(self, x1: Tensor, x2: Tensor, feat: Tensor) -> Tensor:
        """One batch of frame pairs, as the released forward: the encoder on x1, then on x2."""
        c1a, c2a, c3a = self.encode(x1)
        c3b = self.encode(x2)[2]
        return self.decode(x1, c1a, c2a, c3a, c3b, feat)


class MER3dCNN(nn.Module):
    """The released MER_3dCNN: [B, 128, 16, 16, 14] -> [B, classes]."""

    def __init__(self, cls_num: int = 5) -> None:
        super().__init__()
        self.cls = cls_num
        self.conv3d = nn.Conv3d(128, 32, kernel_size=(2, 2, 5), stride=(2, 2, 1))
        self.fc1 = nn.Linear(2560, 256)
        self.fc2 = nn.Linear(256, cls_num)
        self.maxpooling3d = nn.MaxPool3d(kernel_size=(2, 2, 2))
        self.dropout = nn.Dropout()
        self.flatten = nn.Flatten()

    def forward(self, x: Tensor) -> Tensor:
        x = self.flatten(self.dropout(self.maxpooling3d(self.conv3d(x))))
        return self.fc2(self.dropout(F.relu(self.fc1(x))))


class LDMPredictor(nn.Module):
    """The released LDM_predictor: [N, 128, 16, 16] -> [N, 136] (68 points, x and y interleaved)."""

    def __init__(self) -> None:
        super().__init__()
        self.convldm = nn.Conv2d(128, 32, kernel_size=3, stride=1)
        self.fc1 = nn.Linear(6272, 512)
        self.fc2 = nn.Linear(512, 136)
        self.flatten = nn.Flatten()

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(F.relu(self.fc1(self.flatten(F.relu(self.convldm(x))))))


class MOL(nn.Module):
    r"""MOL on clips ``[B, 1, 8, 128, 128]``: outputs ``(mer_logits [B, num_classes], flows [B, 2, 128,
    128, 7], landmarks [B, 136, 7])`` as the released ``MOL.forward`` returns them, for the 7 pairs of
    consecutive frames.

    Submodules and parameter names are the released ones (``conv_stack``, ``FCC_1``/``FCC_2``,
    ``CCC_1``/``CCC_2``, ``flownet``, ``mer_3dcnn``, ``ldm_predictor``), so ``load_state_dict(strict=True)``
    of a state_dict saved from the released model works. The computation is batched over the pairs: the
    stem runs once per frame, FCC/CCC once per side over all 7 positions, FlowNet's encoder once per
    frame, and the correlation (:func:`facekernels.ops.correlation`) and FlowNet's decoder
    once over all pairs.

    BatchNorm in training mode: the released model runs each pair through FCC and FlowNet in a call of
    its own, so each pair (and in FlowNet's encoder each frame of a pair) is normalised with its own batch
    statistics and the running statistics are updated once per pair. That is the default here too
    (``shared_batchnorm=False``: one batched call whose BatchNorms keep per-pair statistics, updated in
    the released order), and training-mode outputs equal the released ones. ``shared_batchnorm=True``
    normalises all pairs (and all frames in FlowNet's encoder) with one set of statistics: faster, and a
    different (also reasonable) training-mode function. Eval mode is identical either way.

    FlowNet's weights and activations are kept channels-last (``torch.channels_last``): oneDNN's CPU
    convolutions (and cuDNN's) are faster in that layout for most of its layers, the 2-channel flow
    predictions and the transposed convolutions most of all. Only memory layout changes; state_dicts load
    and save as usual.

    Args:
        num_classes: micro-expression classes (5, or 3 for SMIC).
        neighbor_num: k of the CCC blocks' cosine kNN graphs (4).
        shared_batchnorm: see above.
    """

    def __init__(self, num_classes: int = 5, neighbor_num: int = 4, shared_batchnorm: bool = False) -> None:
        super().__init__()
        self.cls_num = num_classes
        self.neighbor_num = neighbor_num
        self.shared_batchnorm = shared_batchnorm
        self.conv_stack = ConvStack()
        self.FCC_1 = FCC()
        self.FCC_2 = FCC()
        self.CCC_1 = CCC(256, neighbor_num)
        self.CCC_2 = CCC(256, neighbor_num)
        self.flownet = FlowNet().to(memory_format=torch.channels_last)
        self.mer_3dcnn = MER3dCNN(num_classes)
        self.ldm_predictor = LDMPredictor()
        self.dropout = nn.Dropout()
        self.flatten = nn.Flatten()
        _pair_batchnorm(self)

    def _block(self, fcc: FCC, ccc: CCC, x: Tensor) -> Tensor:
        y = fcc(x)
        return y + ccc(y)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if x.dim() != 5 or x.shape[1] != 1 or x.shape[2] < 2:
            raise ValueError(f"MOL: x must be [B, 1, T, H, W] with T >= 2 frames, got {list(x.shape)}")
        b, _, t, h, w = x.shape
        pairs = t - 1
        per_pair = self.training and not self.shared_batchnorm
        frames = x.transpose(0, 2).reshape(t * b, 1, h, w)  # frame-major: frame f's batch at [f B, (f + 1) B)
        stem = self.conv_stack(frames)
        first, second = stem[: pairs * b], stem[b:]
        _set_groups(self, pairs if per_pair else 1)
        feat1 = self._block(self.FCC_1, self.CCC_1, first)
        feat2 = self._block(self.FCC_2, self.CCC_2, second)
        landmarks = self.ldm_predictor(feat2).view(pairs, b, -1).permute(1, 2, 0)
        # FlowNet's encoder once per frame. With per-pair statistics this is still the released function:
        # the released code passes an interior frame through the encoder twice (as x2 of one pair and x1 of
        # the next), each time as a batch of its own, so both calls normalise it with the same statistics
        # and give the same outputs; only the running statistics see it twice, and they are updated in
        # the released order (frames 0, 1, 1, 2, 2, ..., pairs).
        if per_pair:
            _set_groups(self.flownet, t, tuple(p + s for p in range(pairs) for s in (0, 1)))
        c1, c2, c3 = self.flownet.encode(frames)
        c1a, c2a, c3a, c3b = c1[: pairs * b], c2[: pairs * b], c3[: pairs * b], c3[b:]
        if per_pair:
            _set_groups(self.flownet, pairs)
        feat = torch.cat((feat1, feat2), 1).contiguous(memory_format=torch.channels_last)
        # The first frames as a channels-last view (one channel: the same memory), so that FlowNet's last
        # concatenation with channels-last features stays channels-last.
        first_frames = frames[: pairs * b].view(pairs * b, h, w, 1).permute(0, 3, 1, 2)
        flow = self.flownet.decode(first_frames, c1a, c2a, c3a, c3b, feat)
        _set_groups(self, 1)
        flows = flow.view(pairs, b, 2, h, w).permute(1, 2, 3, 4, 0)
        # The released cross feature: frame 1 and frame 2 features of each pair, in pair order, on a last axis.
        cross = torch.stack((feat1, feat2), 0).view(2, pairs, b, *feat1.shape[1:])
        cross = cross.transpose(0, 1).reshape(2 * pairs, b, *feat1.shape[1:]).permute(1, 2, 3, 4, 0)
        return self.mer_3dcnn(cross), flows, landmarks


class MOLLoss(NamedTuple):
    total: Tensor
    mer: Tensor
    flow: Tensor
    landmark: Tensor


def mol_loss(mer_logits: Tensor, flows: Tensor, landmarks: Tensor, label: Tensor, flow_target: Tensor,
             landmark_target: Tensor, of_weight: float = 10.0, ldm_weight: float = 0.5,
             mer_weight: float = 1.0) -> MOLLoss:
    r"""MOL's training loss, as the released train.py computes it (defaults are its arguments')::

        mer      = nll_loss(log_softmax(mer_logits), label)
        flow     = mse(flows, flow_target) / pairs
        landmark = landmark_nme_loss(landmarks, landmark_target[:, :, 1:])   # frames 1..T-1
        total    = of_weight * flow + ldm_weight * landmark + mer_weight * mer

    with ``flows``/``flow_target`` ``[B, 2, H, W, pairs]`` (the dataset's ``[B, 2, pairs, H, W]``
    permuted as train.py does), ``landmarks`` ``[B, 136, pairs]`` and ``landmark_target`` ``[B, 136,
    pairs + 1]`` (every frame of the clip; frame f + 1 is pair f's target). Everything stays on the
    inputs' device; returns the total and its three parts.
    """
    pairs = flows.shape[-1]
    if landmark_target.shape[-1] != pairs + 1:
        raise ValueError(f"mol_loss: landmark_target must hold pairs + 1 = {pairs + 1} frames, got "
                         f"{list(landmark_target.shape)}")
    mer = F.nll_loss(F.log_softmax(mer_logits, dim=1), label)
    flow = F.mse_loss(flows, flow_target.to(flows.dtype)) / pairs
    landmark = landmark_nme_loss(landmarks, landmark_target[:, :, 1:].to(landmarks.dtype))
    total = flow * of_weight + landmark * ldm_weight + mer * mer_weight
    return MOLLoss(total, mer, flow, landmark)
