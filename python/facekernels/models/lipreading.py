"""A landmark-guided word-level lip reader: our reading of Yang et al., "Landmark Guided Visual Feature
Extractor for Visual Speech Recognition with Limited Resource" (arXiv 2508.07233; no code published).

Every choice the paper does not state is ours and listed in docs/landmarks.md ("LandmarkGuidedLipReader").
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .. import graphs
from ..nn.stgcn import STGCNBlock

__all__ = ["LIP_MIRRORS", "LandmarkGuidedLipReader", "mirror_adjacency", "motion_adjacency"]


def _mirror_of(landmarks: Sequence[int], pairs: Sequence[tuple[int, int]]) -> tuple[int, ...]:
    partner = {}
    for a, b in pairs:
        partner[a], partner[b] = b, a
    node = {landmark: v for v, landmark in enumerate(landmarks)}
    return tuple(node[partner[landmark]] for landmark in landmarks)


# Left-right mirror pairs of the mouth, in source landmark indices (a landmark on the face's midline is
# its own mirror). dlib: the corners 48/54 and 60/64, the midpoints 51, 57, 62, 66.
_DLIB_MOUTH_PAIRS = ((48, 54), (49, 53), (50, 52), (51, 51), (55, 59), (56, 58), (57, 57),
                     (60, 64), (61, 63), (62, 62), (65, 67), (66, 66))
# MediaPipe face mesh: the corners 61/291 (outer) and 78/308 (inner), the midpoints 0, 17, 13, 14.
_MEDIAPIPE_MOUTH_PAIRS = ((61, 291), (146, 375), (91, 321), (181, 405), (84, 314), (17, 17),
                          (185, 409), (40, 270), (39, 269), (37, 267), (0, 0),
                          (78, 308), (95, 324), (88, 318), (178, 402), (87, 317), (14, 14),
                          (191, 415), (80, 310), (81, 311), (82, 312), (13, 13))

# mirror[v]: the node mirroring node v, for the lip graphs of facekernels.graphs.
LIP_MIRRORS: dict[str, tuple[int, ...]] = {
    "lips20": _mirror_of(graphs.LIPS20.landmarks, _DLIB_MOUTH_PAIRS),
    "mediapipe_lips": _mirror_of(graphs.MEDIAPIPE_LIPS.landmarks, _MEDIAPIPE_MOUTH_PAIRS),
}


def mirror_adjacency(mirror: Sequence[int], dtype: torch.dtype = torch.float32) -> Tensor:
    """The symmetric left-right graph ``[V, V]``: every node and its mirror, normalised as the partitions
    (columns sum to 1): ``A[v, w] = 1/2`` for ``v in {w, mirror[w]}`` (1 on the midline, where
    ``mirror[w] = w``). ``mirror`` must be an involution of ``0 .. V-1``."""
    v = len(mirror)
    if sorted(mirror) != list(range(v)) or any(mirror[mirror[i]] != i for i in range(v)):
        raise ValueError(f"mirror_adjacency: mirror must be an involution of 0..{v - 1}, got {list(mirror)[:8]}")
    a = torch.eye(v, dtype=torch.float64)
    a[torch.as_tensor(mirror), torch.arange(v)] = 1
    return graphs.normalize_digraph(a).to(dtype)


def motion_adjacency(landmarks: Tensor, eps: float = 1e-6) -> Tensor:
    """The temporal-difference graph of each sample, ``[N, V, V]``, from landmarks ``[N, C, T, V]``.

    With ``d = x[:, :, 1:] - x[:, :, :-1]`` the frame-to-frame motion, ``m_v`` node v's motion
    trajectory (``C * (T-1)`` values) less the mean trajectory over the nodes (the motion they share: the
    head's), and ``s(v, w)`` the cosine of ``m_v`` and ``m_w``: ``A[v, w] = relu(s(v, w))``, 1 on the
    diagonal, columns normalised to sum to 1. A node aggregates the nodes that move with it. One frame, or
    no motion, gives the identity.
    """
    n, c, t, v = landmarks.shape
    if t < 2:
        return torch.eye(v, dtype=landmarks.dtype, device=landmarks.device).expand(n, v, v)
    motion = (landmarks[:, :, 1:] - landmarks[:, :, :-1]).permute(0, 3, 1, 2).reshape(n, v, c * (t - 1))
    motion = motion - motion.mean(1, keepdim=True)
    unit = motion / (motion.norm(dim=2, keepdim=True) + eps)
    similarity = (unit @ unit.transpose(1, 2)).clamp_min(0)
    eye = torch.eye(v, dtype=landmarks.dtype, device=landmarks.device)
    similarity = similarity * (1 - eye) + eye
    return similarity / similarity.sum(1, keepdim=True)


class _BasicBlock(nn.Module):
    """ResNet's basic block (two 3x3 convs with BN, identity or strided 1x1 shortcut)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut = (
            nn.Identity() if stride == 1 and in_channels == out_channels
            else nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels))
        )

    def forward(self, x: Tensor) -> Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


class _TemporalBlock(nn.Module):
    """A non-causal residual TCN block over ``[N, C, T]``: two dilated convolutions with BN and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, dilation: int, dropout: float) -> None:
        super().__init__()
        pad = dilation * (kernel_size - 1) // 2
        self.conv1 = nn.Conv1d(in_channels, out_channels, kernel_size, padding=pad, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm1d(out_channels)
        self.conv2 = nn.Conv1d(out_channels, out_channels, kernel_size, padding=pad, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm1d(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.shortcut = nn.Identity() if in_channels == out_channels else nn.Conv1d(in_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        y = self.dropout(F.relu(self.bn1(self.conv1(x))))
        y = self.dropout(self.bn2(self.conv2(y)))
        return F.relu(y + self.shortcut(x))


class LandmarkGuidedLipReader(nn.Module):
    r"""Word-level lip reading from mouth crops guided by lip landmarks.

    Inputs: mouth crops ``[B, 1, T, H, W]`` (grey, LRW's 88 x 88) and lip landmarks ``[B, C, T, V]``
    (``C = in_channels`` coordinates of the V nodes of ``graph``, in the graph's node order); output word
    logits ``[B, num_words]``::

        landmarks -> BatchNorm over (node, coordinate) -> multi-graph ST-GCN blocks, K = P + 2 graphs:
                     the P spatial partitions, the left-right mirror graph, the sample's motion graph
                     -> level features g_l = mean over nodes                         [B, F_l, T]
        crops     -> Conv3d 5x7x7 /(1,2,2) + BN + ReLU + MaxPool 1x3x3 /(1,2,2)    (the LRW front end)
                  -> ResNet-18 trunk per frame; after stage s_l: v = v * (1 + a_l) + b_l,
                     (a_l, b_l) = Linear_l(g_l) per frame and channel (zero-initialised)
                  -> mean over H, W                                                   [B, C_v, T]
        fused     = concat(visual, g_last) over channels                              [B, C_v + F_L, T]
        logits    = Linear(mean over T of TCN(fused))

    The graph convolutions are :class:`facekernels.nn.STGCNBlock` (so :func:`facekernels.ops.st_graph_conv`)
    with one per-sample ``[B, K, V, V]`` graph: the static slots are the block's learned-mask graph
    (``block.graph()``), the motion slot is :func:`motion_adjacency` times that slot's learned mask and
    additive graph.

    Args:
        num_words: classes of the word head (LRW: 500).
        graph: the lip graph, ``"lips20"`` (dlib), ``"mediapipe_lips"`` or a
            :class:`facekernels.graphs.LandmarkGraph`.
        in_channels: coordinates per landmark.
        mirror: ``mirror[v]`` the node mirroring v (default: :data:`LIP_MIRRORS` of the graph's name).
        frontend_channels: output channels of the 3D convolution.
        trunk_channels, trunk_blocks: channels and basic blocks of the four ResNet stages (ResNet-18:
            (64, 128, 256, 512), (2, 2, 2, 2)); stage 1 keeps the resolution, the others halve it.
        landmark_channels: output channels of each multi-graph block.
        fusion_stages: the trunk stage (1-4) each landmark level is fused after, one per block.
        tcn_channels: channels of each TCN block (dilations 1, 2, 4, ...).
        tcn_kernel_size: the TCN's temporal kernel (odd).
        strategy, max_hop: the spatial partitions (:func:`facekernels.graphs.adjacency`).
        dropout: dropout in the landmark blocks (but the first), the TCN and before the head.
    """

    def __init__(
        self,
        num_words: int = 500,
        graph: str | graphs.LandmarkGraph = "lips20",
        in_channels: int = 2,
        mirror: Sequence[int] | None = None,
        frontend_channels: int = 64,
        trunk_channels: Sequence[int] = (64, 128, 256, 512),
        trunk_blocks: Sequence[int] = (2, 2, 2, 2),
        landmark_channels: Sequence[int] = (64, 128, 256),
        fusion_stages: Sequence[int] = (2, 3, 4),
        tcn_channels: Sequence[int] = (512, 512, 512, 512),
        tcn_kernel_size: int = 3,
        strategy: str = "spatial",
        max_hop: int = 1,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        trunk_channels, trunk_blocks = tuple(trunk_channels), tuple(trunk_blocks)
        landmark_channels, fusion_stages = tuple(landmark_channels), tuple(fusion_stages)
        tcn_channels = tuple(tcn_channels)
        name = "LandmarkGuidedLipReader"
        if num_words < 1 or in_channels < 1 or frontend_channels < 1:
            raise ValueError(f"{name}: num_words, in_channels and frontend_channels must be >= 1, "
                             f"got {num_words}, {in_channels}, {frontend_channels}")
        if len(trunk_channels) != 4 or len(trunk_blocks) != 4 or min(trunk_blocks) < 1:
            raise ValueError(f"{name}: trunk_channels and trunk_blocks must have four entries (blocks >= 1), "
                             f"got {trunk_channels} and {trunk_blocks}")
        if not landmark_channels or len(fusion_stages) != len(landmark_channels):
            raise ValueError(f"{name}: fusion_stages must give one trunk stage per landmark block "
                             f"({len(landmark_channels)}), got {fusion_stages}")
        if any(s not in (1, 2, 3, 4) for s in fusion_stages) or list(fusion_stages) != sorted(fusion_stages):
            raise ValueError(f"{name}: fusion_stages must be non-decreasing stages in 1..4, got {fusion_stages}")
        if not tcn_channels or tcn_kernel_size < 1 or tcn_kernel_size % 2 == 0:
            raise ValueError(f"{name}: tcn_channels must be non-empty and tcn_kernel_size odd, "
                             f"got {tcn_channels} and {tcn_kernel_size}")
        self.graph_spec = g = graphs.get_graph(graph)
        if mirror is None:
            if g.name not in LIP_MIRRORS:
                raise ValueError(f"{name}: no known mirror for graph {g.name!r}; pass mirror=[...] "
                                 f"(known: {tuple(LIP_MIRRORS)})")
            mirror = LIP_MIRRORS[g.name]
        if len(mirror) != g.num_nodes:
            raise ValueError(f"{name}: mirror must have one entry per node ({g.num_nodes}), got {len(mirror)}")
        self.num_words = num_words
        self.in_channels = in_channels
        self.num_nodes = v = g.num_nodes

        # landmark stream: static graphs, then a placeholder (ones) for the motion graph's slot
        spatial = graphs.adjacency(g, strategy, max_hop)
        self.num_static = spatial.size(0) + 1
        template = torch.cat([spatial, mirror_adjacency(mirror)[None], torch.ones(1, v, v)])
        self.input_norm = nn.BatchNorm1d(in_channels * v)
        blocks, c_prev = [], in_channels
        for i, c in enumerate(landmark_channels):
            blocks.append(STGCNBlock(c_prev, c, template, residual=i > 0, dropout=dropout if i > 0 else 0.0))
            c_prev = c
        self.landmark_blocks = nn.ModuleList(blocks)

        # visual stream
        self.frontend = nn.Sequential(
            nn.Conv3d(1, frontend_channels, (5, 7, 7), (1, 2, 2), (2, 3, 3), bias=False),
            nn.BatchNorm3d(frontend_channels),
            nn.ReLU(inplace=True),
            nn.MaxPool3d((1, 3, 3), (1, 2, 2), (0, 1, 1)),
        )
        stages, c_prev = [], frontend_channels
        for i, (c, n_blocks) in enumerate(zip(trunk_channels, trunk_blocks)):
            stride = 1 if i == 0 else 2
            stage = [_BasicBlock(c_prev, c, stride)] + [_BasicBlock(c, c, 1) for _ in range(n_blocks - 1)]
            stages.append(nn.Sequential(*stage))
            c_prev = c
        self.trunk = nn.ModuleList(stages)
        self.fusion_stages = fusion_stages
        self.fusion = nn.ModuleList(
            nn.Linear(f, 2 * trunk_channels[s - 1]) for f, s in zip(landmark_channels, fusion_stages)
        )
        for layer in self.fusion:  # start as the plain visual front end
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

        # back end
        tcn, c_prev = [], trunk_channels[-1] + landmark_channels[-1]
        for i, c in enumerate(tcn_channels):
            tcn.append(_TemporalBlock(c_prev, c, tcn_kernel_size, 2 ** i, dropout))
            c_prev = c
        self.tcn = nn.Sequential(*tcn)
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(c_prev, num_words)

    @classmethod
    def small(
        cls, num_words: int = 10, graph: str | graphs.LandmarkGraph = "lips20", **kwargs
    ) -> LandmarkGuidedLipReader:
        """The tiny configuration of the tests and quick runs (64k parameters with lips20 and 10 words);
        keyword arguments override its settings."""
        config = {"frontend_channels": 8, "trunk_channels": (8, 16, 16, 32), "trunk_blocks": (1, 1, 1, 1),
                  "landmark_channels": (8, 16, 16), "fusion_stages": (2, 3, 4), "tcn_channels": (32, 32),
                  "dropout": 0.0}
        config.update(kwargs)
        return cls(num_words, graph, **config)

    def _check(self, mouth: Tensor, landmarks: Tensor) -> None:
        c, v = self.in_channels, self.num_nodes
        if mouth.dim() != 5 or mouth.size(1) != 1:
            raise ValueError(f"LandmarkGuidedLipReader: mouth must be [B, 1, T, H, W], got {list(mouth.shape)}")
        if landmarks.dim() != 4 or landmarks.size(1) != c or landmarks.size(3) != v:
            raise ValueError(f"LandmarkGuidedLipReader: landmarks must be [B, {c}, T, {v}] (graph "
                             f"{self.graph_spec.name!r}), got {list(landmarks.shape)}")
        if landmarks.size(0) != mouth.size(0) or landmarks.size(2) != mouth.size(2):
            raise ValueError(f"LandmarkGuidedLipReader: mouth {list(mouth.shape)} and landmarks "
                             f"{list(landmarks.shape)} must agree on B and T")

    def landmark_features(self, landmarks: Tensor) -> list[Tensor]:
        """The level features ``[B, F_l, T]`` of every multi-graph block, from landmarks ``[B, C, T, V]``."""
        n, c, t, v = landmarks.shape
        motion = motion_adjacency(landmarks)  # from the raw coordinates
        ones = motion.new_ones(n, self.num_static, v, v)
        modulation = torch.cat([ones, motion[:, None]], 1)  # [B, K, V, V]
        x = self.input_norm(landmarks.permute(0, 3, 1, 2).reshape(n, v * c, t))
        x = x.reshape(n, v, c, t).permute(0, 2, 3, 1)
        levels = []
        for block in self.landmark_blocks:
            x = block(x, graph=block.graph()[None] * modulation)
            levels.append(x.mean(3))
        return levels

    def forward(self, mouth: Tensor, landmarks: Tensor) -> Tensor:
        self._check(mouth, landmarks)
        b, _, t = mouth.shape[:3]
        levels = self.landmark_features(landmarks)
        y = self.frontend(mouth)                                   # [B, C, T, H', W']
        y = y.transpose(1, 2).flatten(0, 1)                        # [B*T, C, H', W']
        for stage_index, stage in enumerate(self.trunk, start=1):
            y = stage(y)
            for level, fusion, s in zip(levels, self.fusion, self.fusion_stages):
                if s == stage_index:
                    scale, shift = fusion(level.transpose(1, 2)).flatten(0, 1).chunk(2, dim=1)  # [B*T, C_s]
                    y = y * (1 + scale[:, :, None, None]) + shift[:, :, None, None]
        visual = y.mean((2, 3)).reshape(b, t, -1).transpose(1, 2)  # [B, C_v, T]
        fused = torch.cat([visual, levels[-1]], 1)
        return self.head(self.dropout(self.tcn(fused).mean(2)))

    def extra_repr(self) -> str:
        return (f"num_words={self.num_words}, graph={self.graph_spec.name!r}, in_channels={self.in_channels}, "
                f"K={self.num_static + 1}")
