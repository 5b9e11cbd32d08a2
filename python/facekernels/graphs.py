r"""Landmark graphs for spatio-temporal graph convolution: the dlib 68-point face and its 20-point lips.

A graph is an undirected edge list over V nodes (no self-loops) with a centre node. :func:`adjacency`
turns it into the ``[K, V, V]`` partition matrices an ST-GCN layer (:func:`facekernels.ops.st_graph_conv`,
:class:`facekernels.nn.STGCNBlock`) aggregates with, ``out[w] = sum_k sum_v A[k, v, w] f_k(x)[v]``: row v is
the neighbour a message comes from, column w the node it goes to (the root).

Partition strategies (ST-GCN, Yan et al. 2018, "Partition Strategies"), over the hops
``0, dilation, 2*dilation, ... <= max_hop``:

- ``uniform``: K = 1, every node within the hops in one matrix;
- ``distance``: one matrix per hop (hop 0 is the node itself);
- ``spatial``: hop 0 is the root itself; each further hop splits into the *centripetal* neighbours (closer
  to the centre node than the root) and the *centrifugal* ones (the rest: as far as or farther than the
  root). K = 1 + 2 * (number of hops > 0); with max_hop = 1: [root, centripetal, centrifugal].

Normalisation as ST-GCN's ``normalize_digraph``: with M the 0/1 matrix of node pairs within the hops
(self-loops included), ``M_norm = M D^-1``, D the diagonal of M's column sums, so every column sums to 1
(each node averages over its neighbourhood); each partition matrix keeps the entries of ``M_norm`` for
its pairs, and the K matrices sum to ``M_norm``.

One deliberate difference from yysijie/st-gcn's code: its spatial partition compares hop distances to
the centre that are truncated at ``max_hop`` (farther nodes all read as infinitely far and land in the
root group of every hop); here the distances to the centre are the true graph distances, as the paper
defines the groups. For ``spatial``, ST-GCN's code also stores the two groups of a hop in the other order
(centrifugal, then centripetal).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "FACE68",
    "GRAPHS",
    "LIPS20",
    "STRATEGIES",
    "LandmarkGraph",
    "adjacency",
    "edges",
    "get_graph",
    "hop_distance",
    "normalize_digraph",
]

STRATEGIES = ("uniform", "distance", "spatial")


@dataclass(frozen=True)
class LandmarkGraph:
    """An undirected landmark graph.

    Attributes:
        name: the graph's name (``"face68"``, ``"lips20"``).
        num_nodes: V.
        edges: undirected edges ``(i, j)`` with ``i < j``, no self-loops, no duplicates.
        center: the default centre node of the ``spatial`` partition.
        landmarks: the dlib 68-point index of each node.
    """

    name: str
    num_nodes: int
    edges: tuple[tuple[int, int], ...]
    center: int
    landmarks: tuple[int, ...]

    def __post_init__(self) -> None:
        v = self.num_nodes
        bad = [e for e in self.edges if len(e) != 2 or not (0 <= e[0] < v and 0 <= e[1] < v) or e[0] == e[1]]
        if v < 1 or bad:
            raise ValueError(
                f"LandmarkGraph: edges must join two different nodes in [0, {v}), got {bad[:3]}"
                if bad else f"LandmarkGraph: num_nodes must be >= 1, got {v}"
            )
        if not 0 <= self.center < v:
            raise ValueError(f"LandmarkGraph: center must be in [0, {v}), got {self.center}")


def _chain(first: int, last: int) -> list[tuple[int, int]]:
    return [(i, i + 1) for i in range(first, last)]


def _ring(first: int, last: int) -> list[tuple[int, int]]:
    return [*_chain(first, last), (first, last)]


# The dlib 68-point contours (0-based): jaw 0-16, right and left brows 17-21 and 22-26 (subject's right
# first), nose bridge 27-30 (30 is the nose tip), lower nose 31-35, eyes 36-41 and 42-47 (rings), outer
# lip 48-59 and inner lip 60-67 (rings; 48 and 54 are the mouth corners, 51 and 57 the outer midpoints,
# 62 and 66 the inner ones).
_FACE68_CONTOURS = [
    *_chain(0, 16),
    *_chain(17, 21),
    *_chain(22, 26),
    *_chain(27, 30),
    *_chain(31, 35),
    *_ring(36, 41),
    *_ring(42, 47),
    *_ring(48, 59),
    *_ring(60, 67),
]

# The links between contours that make one connected face; the lip links are the lips20 graph's too.
_LIP_LINKS = [
    (48, 60), (54, 64),  # mouth corners: outer to inner ring
    (51, 62), (57, 66),  # upper and lower midpoints: outer to inner ring
]
_FACE68_LINKS = [
    (0, 17), (16, 26),   # jaw ends to the outer brow ends
    (21, 27), (22, 27),  # inner brow ends to the top of the nose bridge
    (27, 39), (27, 42),  # inner eye corners to the top of the nose bridge
    (30, 33),            # nose tip to the middle of the lower nose
    (33, 51),            # lower nose to the upper lip
    (8, 57),             # chin to the lower lip
    *_LIP_LINKS,
]


def _normalise_edges(pairs: list[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    return tuple(sorted({(min(i, j), max(i, j)) for i, j in pairs}))


FACE68 = LandmarkGraph(
    name="face68",
    num_nodes=68,
    edges=_normalise_edges(_FACE68_CONTOURS + _FACE68_LINKS),
    center=30,  # the nose tip: rigid, central, and the hub between the eyes, brows and mouth
    landmarks=tuple(range(68)),
)

_LIP_LANDMARKS = tuple(range(48, 68))
_LIP_INDEX = {landmark: node for node, landmark in enumerate(_LIP_LANDMARKS)}

# The lips: dlib 48-59 (outer ring) are nodes 0-11 and 60-67 (inner ring) nodes 12-19; the edges are the
# face graph's among these landmarks (the two rings, the corner and midpoint links).
LIPS20 = LandmarkGraph(
    name="lips20",
    num_nodes=20,
    edges=_normalise_edges(
        [(_LIP_INDEX[i], _LIP_INDEX[j]) for i, j in FACE68.edges if i in _LIP_INDEX and j in _LIP_INDEX]
    ),
    # the outer upper-lip midpoint (dlib 51): the lip point that moves least in speech (the upper lip is
    # held by the nose; the lower lip follows the jaw), and symmetric between the corners
    center=_LIP_INDEX[51],
    landmarks=_LIP_LANDMARKS,
)

GRAPHS: dict[str, LandmarkGraph] = {g.name: g for g in (FACE68, LIPS20)}


def get_graph(graph: str | LandmarkGraph) -> LandmarkGraph:
    """The named graph (one of :data:`GRAPHS`), or ``graph`` itself when it is a :class:`LandmarkGraph`."""
    if isinstance(graph, LandmarkGraph):
        return graph
    if graph not in GRAPHS:
        raise ValueError(f"graphs: graph must be one of {tuple(GRAPHS)} or a LandmarkGraph, got {graph!r}")
    return GRAPHS[graph]


def edges(graph: str | LandmarkGraph) -> list[tuple[int, int]]:
    """The undirected edge list ``[(i, j), ...]`` (``i < j``, no self-loops) of ``graph``."""
    return list(get_graph(graph).edges)


def hop_distance(graph: str | LandmarkGraph, max_hop: int | None = None) -> Tensor:
    """Hop (shortest-path) distances ``[V, V]`` (float64) between the nodes of ``graph``, by breadth-first
    search; ``inf`` for pairs farther apart than ``max_hop`` (None: no limit) or not connected."""
    g = get_graph(graph)
    v = g.num_nodes
    neighbours: list[list[int]] = [[] for _ in range(v)]
    for i, j in g.edges:
        neighbours[i].append(j)
        neighbours[j].append(i)
    inf = float("inf")
    rows = []
    for source in range(v):
        row = [inf] * v
        row[source] = 0.0
        queue = deque([source])
        while queue:
            node = queue.popleft()
            if max_hop is not None and row[node] >= max_hop:
                continue
            for other in neighbours[node]:
                if row[other] == inf:
                    row[other] = row[node] + 1
                    queue.append(other)
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def normalize_digraph(a: Tensor) -> Tensor:
    """``a D^-1`` with D the diagonal of ``a``'s column sums (columns summing to 0 are left 0): every
    column with an entry sums to 1."""
    degree = a.sum(0)
    inverse = torch.where(degree > 0, 1.0 / torch.where(degree > 0, degree, 1.0), 0.0)
    return a * inverse


def adjacency(
    graph: str | LandmarkGraph = "face68",
    strategy: str = "spatial",
    max_hop: int = 1,
    dilation: int = 1,
    center: int | None = None,
    dtype: torch.dtype = torch.float32,
) -> Tensor:
    """The normalised partition matrices ``A`` of ``graph``, ``[K, V, V]``.

    ``A[k, v, w]`` weighs the message from node v to node w in partition k (see the module docstring for
    the strategies and the normalisation). K is 1 (``uniform``), the number of hops
    ``len(range(0, max_hop + 1, dilation))`` (``distance``), or 1 + 2 * (that number - 1) (``spatial``).

    Args:
        graph: ``"face68"``, ``"lips20"`` or a :class:`LandmarkGraph`.
        strategy: ``"uniform"``, ``"distance"`` or ``"spatial"``.
        max_hop: the farthest hop in a neighbourhood (>= 0).
        dilation: the spacing of the hops taken (>= 1): hops 0, dilation, 2*dilation, ... <= max_hop.
        center: the centre node of ``spatial`` (default: the graph's, the nose tip 30 for face68 and the
            outer upper-lip midpoint, node 3 = dlib 51, for lips20).
        dtype: the floating dtype of the result.
    """
    g = get_graph(graph)
    if strategy not in STRATEGIES:
        raise ValueError(f"graphs.adjacency: strategy must be one of {STRATEGIES}, got {strategy!r}")
    if max_hop < 0:
        raise ValueError(f"graphs.adjacency: max_hop must be >= 0, got {max_hop}")
    if dilation < 1:
        raise ValueError(f"graphs.adjacency: dilation must be >= 1, got {dilation}")
    center = g.center if center is None else center
    if not 0 <= center < g.num_nodes:
        raise ValueError(f"graphs.adjacency: center must be in [0, {g.num_nodes}), got {center}")
    hops = range(0, max_hop + 1, dilation)
    dist = hop_distance(g, max_hop)
    within = torch.zeros_like(dist)
    for hop in hops:
        within[dist == hop] = 1
    normalised = normalize_digraph(within)
    if strategy == "uniform":
        parts = [normalised]
    elif strategy == "distance":
        parts = [torch.where(dist == hop, normalised, 0.0) for hop in hops]
    else:
        to_center = hop_distance(g)[:, center]
        # [v, w]: the neighbour v against the root w
        closer = to_center[:, None] < to_center[None, :]
        parts = []
        for hop in hops:
            at_hop = dist == hop
            if hop == 0:
                parts.append(torch.where(at_hop, normalised, 0.0))
            else:
                parts.append(torch.where(at_hop & closer, normalised, 0.0))
                parts.append(torch.where(at_hop & ~closer, normalised, 0.0))
    return torch.stack(parts).to(dtype)
