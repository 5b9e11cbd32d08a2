"""The engagement baseline of the OPEN dataset (older-adult engagement from facial, hand and body landmarks,
arXiv 2507.17959): per-part ST-GCN encoders on st_graph_conv, masked temporal pooling, optional tabular
features, a binary (or multi-class) head."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import Tensor, nn

from .. import graphs
from ..nn.stgcn import STGCNBlock, masked_batch_norm

__all__ = ["FACE_CONTOUR_NODES", "HOLISTIC_LAYOUT", "EngagementSTGCN", "PartEncoder"]

# MediaPipe Holistic's 543 landmarks as [first, end) node ranges.
HOLISTIC_LAYOUT: dict[str, tuple[int, int]] = {
    "face": (0, 468),
    "left_hand": (468, 489),
    "pose": (489, 522),
    "right_hand": (522, 543),
}
PARTS = ("face", "left_hand", "right_hand", "pose")
_PART_NODES = {"face": 468, "left_hand": 21, "right_hand": 21, "pose": 33}

# The face encoder's default nodes: the 128 landmarks of MediaPipe Face Mesh's contours (face oval 36,
# lips 40, eyes 2 x 16, eyebrows 2 x 10), in that order. The whole 468-point mesh would cost ~13x the
# graph aggregation (it grows with V^2) and ~3.7x everything else for little more than these contours
# carry about expression and gaze; the contours keep the outline, mouth, eyes and brows.
FACE_CONTOUR_NODES: tuple[int, ...] = (
    # face oval
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
    149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
    # lips: outer lower, outer upper, inner lower, inner upper
    61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 185, 40, 39, 37, 0, 267, 269, 270, 409,
    78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 191, 80, 81, 82, 13, 312, 311, 310, 415,
    # right eye, left eye
    33, 7, 163, 144, 145, 153, 154, 155, 133, 246, 161, 160, 159, 158, 157, 173,
    263, 249, 390, 373, 374, 380, 381, 382, 362, 466, 388, 387, 386, 385, 384, 398,
    # right eyebrow, left eyebrow
    46, 53, 52, 65, 55, 70, 63, 105, 66, 107, 276, 283, 282, 295, 285, 300, 293, 334, 296, 336,
)

GraphLike = str | graphs.LandmarkGraph | Tensor


class PartEncoder(nn.Module):
    r"""A masked ST-GCN encoder of one body part: ``x [N, C, T, V]``, ``mask [N, T, V]`` (bool) ->
    ``[N, F]``::

        x   -> masked BatchNorm over the V*C (node, coordinate) pairs (ST-GCN's data_bn, valid points only)
            -> STGCNBlock(C, channels[0], strides[0], residual=False)(x, mask)
            -> STGCNBlock(channels[i-1], channels[i], strides[i])(x, mask_i) ...      [N, F, T', V]
        out = mean of the blocks' output over the valid (t', v) of the last block's mask   [N, F]

    A sample whose part is missing in every frame gets zeros. Missing landmarks are never read (NaN is fine).
    """

    def __init__(self, in_channels: int, adjacency: Tensor, channels: Sequence[int], strides: Sequence[int],
                 adaptive: bool = True, dropout: float = 0.0, temporal_kernel_size: int = 9) -> None:
        super().__init__()
        v = adjacency.size(1)
        self.in_channels, self.num_nodes, self.num_features = in_channels, v, channels[-1]
        self.input_norm = nn.BatchNorm1d(in_channels * v)
        blocks, c_prev = [], in_channels
        for i, (c, s) in enumerate(zip(channels, strides)):
            blocks.append(STGCNBlock(c_prev, c, adjacency, stride=s, residual=i > 0, adaptive=adaptive,
                                     dropout=dropout if i > 0 else 0.0, temporal_kernel_size=temporal_kernel_size))
            c_prev = c
        self.blocks = nn.ModuleList(blocks)

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        n, c, t, v = x.shape
        x = torch.where(mask.unsqueeze(1), x, 0.0)  # a missing landmark may be NaN
        # one BN channel per (node, coordinate), node-major; the mask of node v covers its C channels
        flat = x.permute(0, 3, 1, 2).reshape(n, v * c, t)
        flat_mask = mask.transpose(1, 2).unsqueeze(2).expand(n, v, c, t).reshape(n, v * c, t).to(x.dtype)
        x = masked_batch_norm(flat, flat_mask, self.input_norm).reshape(n, v, c, t).permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x, mask)
            mask = block.output_mask(mask)
        m = mask.unsqueeze(1).to(x.dtype)
        return (x * m).sum((2, 3)) / m.sum((2, 3)).clamp_min(1.0)


class EngagementSTGCN(nn.Module):
    r"""Engagement from landmark streams: ST-GCN encoders per body part, fused with tabular features.

    Input: ``x [B, C, T, 543]`` in MediaPipe Holistic's layout (:data:`HOLISTIC_LAYOUT`: face 0-467,
    left hand 468-488, pose 489-521, right hand 522-542) with ``mask [B, T, 543]`` (bool, True = detected;
    None: all detected), or dicts of parts ``{"face": [B, C, T, 468], "left_hand": [B, C, T, 21],
    "right_hand": [B, C, T, 21], "pose": [B, C, T, 33]}`` with masks ``[B, T, V_part]`` under the same keys.
    Network::

        face  = PartEncoder(face graph)(x[face_nodes])                      [B, F]
        left  = PartEncoder(hand graph)(x[left hand]); right alike          [B, F] each (shared weights)
        pose  = PartEncoder(pose graph)(x[pose])                            [B, F]
        z     = [face, left, right, pose, valid fraction of each part (4), BN(tabular)]
        logits = Linear(ReLU(Linear(z)))                                    [B, num_classes]

    Every encoder runs the masked :class:`facekernels.nn.STGCNBlock` (missing landmarks send no message,
    masked batch norms), and its output is averaged over the valid (frame, node) points (masked temporal
    pooling); the valid fractions let the head tell a still hand from a hand out of view. ``num_classes=1``
    is one logit for binary engagement (``BCEWithLogitsLoss``).

    Graphs (each a :class:`facekernels.graphs.LandmarkGraph`, a graph name, or a ``[K, V, V]`` adjacency
    used as is), resolved when the model is built: ``face_graph`` over the ``face_nodes`` of the 468-point
    face mesh (default: :data:`FACE_CONTOUR_NODES`, with ``graphs.subgraph("mediapipe_face_mesh"`` graph,
    those nodes``)``; a graph given without ``face_nodes`` must have the 468 nodes), ``hand_graph`` (21
    nodes, default ``"mediapipe_hand"``), ``pose_graph`` (33 nodes, default ``"mediapipe_pose"``).

    Args:
        in_channels: coordinates per landmark (3: x, y, z).
        num_classes: logits of the head (1: binary).
        tabular_features: F of the per-window tabular features ``[B, F]`` (0: none).
        channels, strides: the blocks of every part encoder (F = channels[-1]). The default strides halve
            T twice, in the first two blocks: engagement changes over seconds, not frames.
        share_hands: one encoder for both hands (MediaPipe gives both the same topology and numbering;
            sharing halves the hand parameters and runs both hands as one batch of 2B).
        strategy: the partition of every graph (:func:`facekernels.graphs.adjacency`).
        adaptive, dropout, temporal_kernel_size: of every block.
        hidden: width of the head's hidden layer; head_dropout: dropout before its last layer.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 1,
        tabular_features: int = 0,
        *,
        face_graph: GraphLike | None = None,
        face_nodes: Sequence[int] | None = None,
        hand_graph: GraphLike | None = None,
        pose_graph: GraphLike | None = None,
        channels: Sequence[int] = (32, 64, 64),
        strides: Sequence[int] = (2, 2, 1),
        share_hands: bool = True,
        strategy: str = "spatial",
        adaptive: bool = True,
        dropout: float = 0.0,
        temporal_kernel_size: int = 9,
        hidden: int = 64,
        head_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        channels, strides = tuple(channels), tuple(strides)
        if in_channels < 1 or num_classes < 1 or tabular_features < 0:
            raise ValueError(f"EngagementSTGCN: in_channels and num_classes must be >= 1 and tabular_features >= 0, "
                             f"got {in_channels}, {num_classes}, {tabular_features}")
        if not channels or len(strides) != len(channels):
            raise ValueError(f"EngagementSTGCN: channels must name at least one block and strides one per block, "
                             f"got {channels} and {strides}")
        if face_nodes is None and face_graph is None:
            face_nodes = FACE_CONTOUR_NODES
        self.in_channels, self.num_classes, self.tabular_features = in_channels, num_classes, tabular_features
        face_a = self._face_adjacency(face_graph, face_nodes, strategy)
        if face_nodes is None:
            face_nodes = range(468)
        face_nodes = tuple(int(i) for i in face_nodes)
        if len(face_nodes) != face_a.size(1) or not all(0 <= i < 468 for i in face_nodes):
            raise ValueError(f"EngagementSTGCN: face_nodes must be {face_a.size(1)} indices (the face graph's V) "
                             f"into the 468-point face mesh, got {len(face_nodes)}")
        self.register_buffer("face_nodes", torch.tensor(face_nodes, dtype=torch.long), persistent=False)
        hand_a = _adjacency(hand_graph, "mediapipe_hand", strategy, 21, "hand_graph")
        pose_a = _adjacency(pose_graph, "mediapipe_pose", strategy, 33, "pose_graph")

        def encoder(a: Tensor) -> PartEncoder:
            return PartEncoder(in_channels, a, channels, strides, adaptive, dropout, temporal_kernel_size)

        self.face = encoder(face_a)
        # [both hands] when shared, else [left, right]
        self.hands = nn.ModuleList([encoder(hand_a)] if share_hands else [encoder(hand_a), encoder(hand_a)])
        self.share_hands = share_hands
        self.pose = encoder(pose_a)
        self.tabular_norm = nn.BatchNorm1d(tabular_features) if tabular_features else None
        self.num_features = 4 * channels[-1] + len(PARTS) + tabular_features
        self.head = nn.Sequential(nn.Linear(self.num_features, hidden), nn.ReLU(), nn.Dropout(head_dropout),
                                  nn.Linear(hidden, num_classes))

    @staticmethod
    def _face_adjacency(face_graph: GraphLike | None, face_nodes: Sequence[int] | None, strategy: str) -> Tensor:
        if face_graph is not None:
            return _adjacency(face_graph, None, strategy, len(face_nodes) if face_nodes is not None else 468,
                              "face_graph")
        subgraph = getattr(graphs, "subgraph", None)
        if subgraph is None:
            raise ValueError("EngagementSTGCN: the default face graph needs graphs.subgraph and the "
                             "'mediapipe_face_mesh' graph, which this facekernels lacks; pass face_graph")
        return graphs.adjacency(subgraph(_named_graph("mediapipe_face_mesh", "face_graph"), tuple(face_nodes)),
                                strategy)

    def _split(self, x: Tensor | Mapping[str, Tensor], mask: Tensor | Mapping[str, Tensor] | None
               ) -> tuple[dict[str, Tensor], dict[str, Tensor]]:
        c = self.in_channels
        if isinstance(x, Mapping):
            missing = [p for p in PARTS if p not in x]
            if missing:
                raise ValueError(f"EngagementSTGCN: x must hold the parts {PARTS}, missing {missing}")
            parts = dict(x)
            b, t = parts["face"].size(0), parts["face"].size(2)
            for p in PARTS:
                if parts[p].shape != (b, c, t, _PART_NODES[p]):
                    raise ValueError(f"EngagementSTGCN: x[{p!r}] must be [B, {c}, T, {_PART_NODES[p]}] = "
                                     f"[{b}, {c}, {t}, {_PART_NODES[p]}], got {list(parts[p].shape)}")
            if mask is None:
                masks = {p: torch.ones(b, t, _PART_NODES[p], dtype=torch.bool, device=parts[p].device) for p in PARTS}
            elif isinstance(mask, Mapping):
                masks = {p: mask[p] for p in PARTS}
            else:
                raise ValueError("EngagementSTGCN: with a dict of parts the mask must be a dict of parts or None")
        else:
            if x.dim() != 4 or x.size(1) != c or x.size(3) != 543:
                raise ValueError(f"EngagementSTGCN: x must be [B, {c}, T, 543] (MediaPipe Holistic) or a dict "
                                 f"of parts, got {list(x.shape)}")
            b, _, t, _ = x.shape
            if mask is None:
                mask = torch.ones(b, t, 543, dtype=torch.bool, device=x.device)
            if isinstance(mask, Mapping) or mask.shape != (b, t, 543):
                raise ValueError(f"EngagementSTGCN: mask must be [B, T, 543] = [{b}, {t}, 543] with x [B, C, T, 543]")
            parts = {p: x[..., lo:hi] for p, (lo, hi) in HOLISTIC_LAYOUT.items()}
            masks = {p: mask[..., lo:hi] for p, (lo, hi) in HOLISTIC_LAYOUT.items()}
        for p in PARTS:
            m = masks[p]
            if m.dtype != torch.bool or m.shape != (b, t, _PART_NODES[p]):
                raise ValueError(f"EngagementSTGCN: the mask of {p} must be bool [B, T, {_PART_NODES[p]}] = "
                                 f"[{b}, {t}, {_PART_NODES[p]}], got {m.dtype} {list(m.shape)}")
        parts["face"] = parts["face"].index_select(3, self.face_nodes)
        masks["face"] = masks["face"].index_select(2, self.face_nodes)
        return parts, masks

    def features(self, x: Tensor | Mapping[str, Tensor], mask: Tensor | Mapping[str, Tensor] | None = None,
                 tabular: Tensor | None = None) -> Tensor:
        """The fused vector the head reads, ``[B, num_features]``."""
        parts, masks = self._split(x, mask)
        b = parts["face"].size(0)
        if self.share_hands:
            hands = self.hands[0](torch.cat([parts["left_hand"], parts["right_hand"]]),
                                  torch.cat([masks["left_hand"], masks["right_hand"]]))
            left, right = hands[:b], hands[b:]
        else:
            left = self.hands[0](parts["left_hand"], masks["left_hand"])
            right = self.hands[1](parts["right_hand"], masks["right_hand"])
        face = self.face(parts["face"], masks["face"])
        pose = self.pose(parts["pose"], masks["pose"])
        valid = torch.stack([masks[p].flatten(1).to(face.dtype).mean(1) for p in PARTS], 1)
        z = [face, left, right, pose, valid]
        if self.tabular_norm is not None:
            if tabular is None or tabular.shape != (b, self.tabular_features):
                raise ValueError(f"EngagementSTGCN: tabular must be [B, {self.tabular_features}] = "
                                 f"[{b}, {self.tabular_features}], got "
                                 f"{None if tabular is None else list(tabular.shape)}")
            z.append(self.tabular_norm(tabular.to(face.dtype)))
        elif tabular is not None:
            raise ValueError("EngagementSTGCN: tabular features given to a model built with tabular_features=0")
        return torch.cat(z, 1)

    def forward(self, x: Tensor | Mapping[str, Tensor], mask: Tensor | Mapping[str, Tensor] | None = None,
                tabular: Tensor | None = None) -> Tensor:
        """The logits ``[B, num_classes]``."""
        return self.head(self.features(x, mask, tabular))


def _named_graph(name: str, what: str) -> graphs.LandmarkGraph:
    try:
        return graphs.get_graph(name)
    except ValueError as error:
        raise ValueError(f"EngagementSTGCN: the default {what} {name!r} is not in this facekernels.graphs; "
                         f"pass {what}") from error


def _adjacency(graph: GraphLike | None, default: str | None, strategy: str, nodes: int, what: str) -> Tensor:
    if isinstance(graph, Tensor):
        a = graph.detach()
    else:
        spec = _named_graph(default, what) if graph is None else graphs.get_graph(graph)
        a = graphs.adjacency(spec, strategy)
    if a.dim() != 3 or a.size(1) != nodes or a.size(2) != nodes or not a.is_floating_point():
        raise ValueError(f"EngagementSTGCN: {what} must give a floating [K, {nodes}, {nodes}] adjacency, "
                         f"got {a.dtype} {list(a.shape)}")
    return a
