"""A landmark-sequence encoder: ST-GCN blocks over the lip or face graph (facekernels.nn.STGCNBlock)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from .. import graphs
from ..nn.stgcn import STGCNBlock

__all__ = ["LandmarkSTGCN"]

_LAYOUTS = ("auto", "NCTV", "NTVC")


class LandmarkSTGCN(nn.Module):
    r"""Spatio-temporal graph network over landmark sequences, for fusion with a visual frontend.

    Input: ``[N, in_channels, T, V]`` (``"NCTV"``, ST-GCN's layout) or ``[N, T, V, in_channels]``
    (``"NTVC"``, landmarks as a detector emits them per frame). With ``layout="auto"`` (the default) the
    layout is read from the shape: ``NCTV`` when ``x.shape[1] == in_channels`` and ``x.shape[3] == V``,
    ``NTVC`` when ``x.shape[2] == V`` and ``x.shape[3] == in_channels``; a shape that fits both (possible
    only when ``V == in_channels``) or neither raises, so set ``layout`` explicitly in that case.

    Network (ST-GCN's, without its person dimension)::

        x   -> BatchNorm1d over the V*in_channels (node, channel) pairs, statistics over N and T
            -> STGCNBlock(in_channels, channels[0], stride=strides[0], residual=False)
            -> STGCNBlock(channels[i-1], channels[i], stride=strides[i]) ...     [N, F, T', V]
        features = mean over V                                                   [N, F, T']
        logits   = Linear(mean over T'(features))                                [N, num_classes]

    ``forward`` returns the features when ``num_classes`` is None and the logits otherwise;
    :meth:`features` always returns the features. With the default strides (all 1) T' = T, one feature
    vector per video frame; ST-GCN's downsampling is ``strides=(1, 1, 2, 1, 2)`` for the default channels.

    Args:
        in_channels: coordinates per landmark (2: x, y; 3: with depth or confidence).
        graph: ``"lips20"``, ``"face68"`` or a :class:`facekernels.graphs.LandmarkGraph`.
        channels: output channels of each block (F = channels[-1]).
        strides: temporal stride of each block (default: all 1).
        num_classes: classes of the head (None: no head).
        strategy, max_hop, dilation, center: the partition (:func:`facekernels.graphs.adjacency`).
        adaptive: give every block a learnable additive graph.
        dropout: dropout of every block but the first (as ST-GCN).
        layout: ``"auto"``, ``"NCTV"`` or ``"NTVC"``.
    """

    def __init__(
        self,
        in_channels: int = 2,
        graph: str | graphs.LandmarkGraph = "lips20",
        channels: Sequence[int] = (64, 64, 128, 128, 256),
        strides: Sequence[int] | None = None,
        num_classes: int | None = None,
        strategy: str = "spatial",
        max_hop: int = 1,
        dilation: int = 1,
        center: int | None = None,
        adaptive: bool = True,
        dropout: float = 0.0,
        layout: str = "auto",
    ) -> None:
        super().__init__()
        channels = tuple(channels)
        strides = (1,) * len(channels) if strides is None else tuple(strides)
        if in_channels < 1:
            raise ValueError(f"LandmarkSTGCN: in_channels must be >= 1, got {in_channels}")
        if not channels:
            raise ValueError("LandmarkSTGCN: channels must name at least one block, got ()")
        if len(strides) != len(channels):
            raise ValueError(
                f"LandmarkSTGCN: strides must have one entry per block ({len(channels)}), got {len(strides)}"
            )
        if layout not in _LAYOUTS:
            raise ValueError(f"LandmarkSTGCN: layout must be one of {_LAYOUTS}, got {layout!r}")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"LandmarkSTGCN: num_classes must be >= 1 or None, got {num_classes}")
        self.graph_spec = graphs.get_graph(graph)
        a = graphs.adjacency(self.graph_spec, strategy, max_hop, dilation, center)
        self.in_channels = in_channels
        self.num_nodes = v = self.graph_spec.num_nodes
        self.layout = layout
        self.num_features = channels[-1]
        self.input_norm = nn.BatchNorm1d(in_channels * v)
        blocks = []
        c_prev = in_channels
        for i, (c, s) in enumerate(zip(channels, strides)):
            blocks.append(
                STGCNBlock(c_prev, c, a, stride=s, residual=i > 0, adaptive=adaptive, dropout=dropout if i > 0 else 0.0)
            )
            c_prev = c
        self.blocks = nn.ModuleList(blocks)
        self.head = nn.Linear(channels[-1], num_classes) if num_classes is not None else None

    def _to_nctv(self, x: Tensor) -> Tensor:
        c, v = self.in_channels, self.num_nodes
        if x.dim() != 4:
            raise ValueError(
                f"LandmarkSTGCN: x must be [N, {c}, T, {v}] or [N, T, {v}, {c}] (4-D), got {list(x.shape)}"
            )
        nctv = x.size(1) == c and x.size(3) == v
        ntvc = x.size(2) == v and x.size(3) == c
        layout = self.layout
        if layout == "auto":
            if nctv and ntvc:
                raise ValueError(
                    f"LandmarkSTGCN: x of shape {list(x.shape)} fits both [N, C, T, V] and [N, T, V, C] "
                    f"(C = {c}, V = {v}); set layout='NCTV' or 'NTVC'"
                )
            layout = "NCTV" if nctv else "NTVC" if ntvc else ""
        if layout == "NCTV" and nctv:
            return x
        if layout == "NTVC" and ntvc:
            return x.permute(0, 3, 1, 2)
        expected = {
            "NCTV": f"[N, {c}, T, {v}]",
            "NTVC": f"[N, T, {v}, {c}]",
            "": f"[N, {c}, T, {v}] or [N, T, {v}, {c}]",
        }[layout]
        raise ValueError(
            f"LandmarkSTGCN: x must be {expected} (in_channels = {c}, V = {v} for graph "
            f"{self.graph_spec.name!r}), got {list(x.shape)}"
        )

    def features(self, x: Tensor) -> Tensor:
        """The per-frame features ``[N, F, T']`` (blocks' output averaged over the nodes)."""
        x = self._to_nctv(x)
        n, c, t, v = x.shape
        # ST-GCN's data_bn: one channel per (node, coordinate), node-major
        x = self.input_norm(x.permute(0, 3, 1, 2).reshape(n, v * c, t))
        x = x.reshape(n, v, c, t).permute(0, 2, 3, 1)
        for block in self.blocks:
            x = block(x)
        return x.mean(3)

    def forward(self, x: Tensor) -> Tensor:
        f = self.features(x)
        if self.head is None:
            return f
        return self.head(f.mean(2))

    def extra_repr(self) -> str:
        return f"graph={self.graph_spec.name!r}, in_channels={self.in_channels}, layout={self.layout!r}"
