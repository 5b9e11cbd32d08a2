"""facekernels.graphs: the face and lip edge lists, hop distances and ST-GCN partition matrices, against a
plainly written reference (matrix powers for the hops, per-entry loops for the partitions)."""

import itertools

import pytest
import torch
from facekernels import graphs

NAMES = ["face68", "lips20"]


def _dense(graph) -> torch.Tensor:
    g = graphs.get_graph(graph)
    a = torch.zeros(g.num_nodes, g.num_nodes, dtype=torch.float64)
    for i, j in g.edges:
        a[i, j] = a[j, i] = 1
    return a


def _hops_by_matrix_powers(graph, max_hop):
    """dist[i, j] = the least d <= max_hop with (I + A)^d [i, j] > 0, else inf."""
    a = _dense(graph)
    step = torch.eye(a.shape[0], dtype=torch.float64) + a
    dist = torch.full_like(a, float("inf"))
    reach = torch.eye(a.shape[0], dtype=torch.float64)
    for d in range(max_hop + 1):
        dist[(reach > 0) & torch.isinf(dist)] = d
        reach = (reach @ step).clamp_max(1)
    return dist


def _reference_partitions(graph, strategy, max_hop, dilation, center):
    """ST-GCN's partitions written entry by entry in float64 (true distances to the centre)."""
    g = graphs.get_graph(graph)
    v = g.num_nodes
    dist = _hops_by_matrix_powers(graph, max_hop).tolist()
    to_center = _hops_by_matrix_powers(graph, v)[:, center].tolist()
    hops = list(range(0, max_hop + 1, dilation))
    within = [[1.0 if dist[i][j] in hops else 0.0 for j in range(v)] for i in range(v)]
    column = [sum(within[i][j] for i in range(v)) for j in range(v)]
    norm = [[within[i][j] / column[j] if column[j] > 0 else 0.0 for j in range(v)] for i in range(v)]

    def part(keep):
        return [[norm[i][j] if keep(i, j) else 0.0 for j in range(v)] for i in range(v)]

    if strategy == "uniform":
        parts = [norm]
    elif strategy == "distance":
        parts = [part(lambda i, j, h=h: dist[i][j] == h) for h in hops]
    else:
        parts = []
        for h in hops:
            if h == 0:
                parts.append(part(lambda i, j: dist[i][j] == 0))
            else:
                # i is the neighbour, j the root
                parts.append(part(lambda i, j, h=h: dist[i][j] == h and to_center[i] < to_center[j]))
                parts.append(part(lambda i, j, h=h: dist[i][j] == h and to_center[i] >= to_center[j]))
    return torch.tensor(parts, dtype=torch.float64)


def _connected(graph) -> bool:
    g = graphs.get_graph(graph)
    seen, todo = {0}, [0]
    while todo:
        node = todo.pop()
        for i, j in g.edges:
            for a, b in ((i, j), (j, i)):
                if a == node and b not in seen:
                    seen.add(b)
                    todo.append(b)
    return len(seen) == g.num_nodes


# ---- edge lists ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name, v, n_edges, center", [("face68", 68, 76, 30), ("lips20", 20, 24, 3)])
def test_edge_lists(name, v, n_edges, center):
    g = graphs.get_graph(name)
    e = graphs.edges(name)
    assert g.num_nodes == v and g.center == center and len(g.landmarks) == v
    assert len(e) == n_edges == len(set(e))
    assert all(0 <= i < j < v for i, j in e)  # in range, ordered, no self-loops
    a = _dense(name)
    assert torch.equal(a, a.T)
    assert _connected(name)


def test_face68_contours():
    e = set(graphs.edges("face68"))
    chains = [(0, 16), (17, 21), (22, 26), (27, 30), (31, 35)]
    rings = [(36, 41), (42, 47), (48, 59), (60, 67)]
    for first, last in chains + rings:
        assert all((i, i + 1) in e for i in range(first, last))
    for first, last in rings:
        assert (first, last) in e
    # 63 contour edges and the 13 documented links
    assert len(e) == 16 + 4 + 4 + 3 + 4 + 6 + 6 + 12 + 8 + 13


def test_lips20_is_the_face_graph_on_the_lips():
    lips = graphs.LIPS20
    assert lips.landmarks == tuple(range(48, 68))
    expected = {(i - 48, j - 48) for i, j in graphs.edges("face68") if i >= 48 and j >= 48}
    assert set(graphs.edges("lips20")) == expected
    assert lips.landmarks[lips.center] == 51
    # the outer ring 0-11 and the inner ring 12-19
    e = set(graphs.edges("lips20"))
    assert all((i, i + 1) in e for i in range(11)) and (0, 11) in e
    assert all((i, i + 1) in e for i in range(12, 19)) and (12, 19) in e


# ---- hop distances -------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("max_hop", [0, 1, 2, 5])
def test_hop_distance_matches_matrix_powers(name, max_hop):
    d = graphs.hop_distance(name, max_hop)
    torch.testing.assert_close(d, _hops_by_matrix_powers(name, max_hop), rtol=0, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_hop_distance_unlimited(name):
    d = graphs.hop_distance(name)
    v = graphs.get_graph(name).num_nodes
    torch.testing.assert_close(d, _hops_by_matrix_powers(name, v), rtol=0, atol=0)
    assert torch.isfinite(d).all() and torch.equal(d, d.T)


# ---- partitions ----------------------------------------------------------------------------------------

CASES = [
    ("uniform", 1, 1), ("uniform", 2, 1), ("distance", 1, 1), ("distance", 3, 1), ("distance", 3, 2),
    ("spatial", 1, 1), ("spatial", 2, 1), ("spatial", 4, 2), ("spatial", 0, 1),
]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("strategy, max_hop, dilation", CASES)
def test_adjacency_matches_reference(name, strategy, max_hop, dilation):
    center = graphs.get_graph(name).center
    a = graphs.adjacency(name, strategy, max_hop, dilation, dtype=torch.float64)
    ref = _reference_partitions(name, strategy, max_hop, dilation, center)
    n_hops = len(range(0, max_hop + 1, dilation))
    assert a.shape[0] == {"uniform": 1, "distance": n_hops, "spatial": 2 * n_hops - 1}[strategy]
    torch.testing.assert_close(a, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, center", [("face68", 0), ("face68", 48), ("lips20", 0), ("lips20", 15)])
def test_adjacency_other_centre(name, center):
    a = graphs.adjacency(name, "spatial", 2, center=center, dtype=torch.float64)
    torch.testing.assert_close(a, _reference_partitions(name, "spatial", 2, 1, center), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("max_hop, dilation", [(1, 1), (2, 1), (3, 2)])
def test_normalisation_and_partition_sums(name, max_hop, dilation):
    uniform = graphs.adjacency(name, "uniform", max_hop, dilation, dtype=torch.float64)
    distance = graphs.adjacency(name, "distance", max_hop, dilation, dtype=torch.float64)
    spatial = graphs.adjacency(name, "spatial", max_hop, dilation, dtype=torch.float64)
    # every node has its self-loop, so every column has an entry and sums to 1
    torch.testing.assert_close(uniform[0].sum(0), torch.ones(uniform.shape[1], dtype=torch.float64))
    torch.testing.assert_close(distance.sum(0), uniform[0])
    torch.testing.assert_close(spatial.sum(0), uniform[0])
    # the spatial groups of a hop sum to that hop's distance partition
    torch.testing.assert_close(spatial[0], distance[0])
    for h in range(1, distance.shape[0]):
        torch.testing.assert_close(spatial[2 * h - 1] + spatial[2 * h], distance[h])
    # the partitions are disjoint
    assert ((spatial > 0).sum(0) <= 1).all() and ((distance > 0).sum(0) <= 1).all()


def test_spatial_groups_on_a_path():
    """Path 0 - 1 - 2, centre 0, max_hop 1, written out by hand (A[k, v, w]: v the neighbour, w the root)."""
    path = graphs.LandmarkGraph("path3", 3, ((0, 1), (1, 2)), 0, (0, 1, 2))
    a = graphs.adjacency(path, "spatial", 1, dtype=torch.float64)
    # column degrees (self-loops included): 2, 3, 2
    root = torch.diag(torch.tensor([1 / 2, 1 / 3, 1 / 2], dtype=torch.float64))
    centripetal = torch.zeros(3, 3, dtype=torch.float64)
    centripetal[0, 1], centripetal[1, 2] = 1 / 3, 1 / 2
    centrifugal = torch.zeros(3, 3, dtype=torch.float64)
    centrifugal[1, 0], centrifugal[2, 1] = 1 / 2, 1 / 3
    torch.testing.assert_close(a, torch.stack([root, centripetal, centrifugal]))


def test_spatial_groups_relative_to_centre():
    d = graphs.hop_distance("face68")
    r = d[:, 30]
    a = graphs.adjacency("face68", "spatial", 1, dtype=torch.float64)
    for v, w in itertools.product(range(68), repeat=2):
        if a[1, v, w] > 0:
            assert r[v] < r[w] and d[v, w] == 1
        if a[2, v, w] > 0:
            assert r[v] >= r[w] and d[v, w] == 1


def test_adjacency_dtype_and_default():
    a = graphs.adjacency()
    assert a.dtype == torch.float32 and a.shape == (3, 68, 68)
    assert graphs.adjacency("lips20", "uniform", dtype=torch.float64).dtype == torch.float64


# ---- bad inputs ----------------------------------------------------------------------------------------

def test_bad_inputs():
    with pytest.raises(ValueError, match="graph must be one of"):
        graphs.adjacency("hands21")
    with pytest.raises(ValueError, match="strategy must be one of"):
        graphs.adjacency("lips20", "random")
    with pytest.raises(ValueError, match="max_hop must be >= 0, got -1"):
        graphs.adjacency("lips20", max_hop=-1)
    with pytest.raises(ValueError, match="dilation must be >= 1, got 0"):
        graphs.adjacency("lips20", dilation=0)
    with pytest.raises(ValueError, match=r"center must be in \[0, 20\), got 20"):
        graphs.adjacency("lips20", center=20)
    with pytest.raises(ValueError, match="edges must join two different nodes"):
        graphs.LandmarkGraph("bad", 3, ((0, 3),), 0, (0, 1, 2))
    with pytest.raises(ValueError, match="edges must join two different nodes"):
        graphs.LandmarkGraph("bad", 3, ((1, 1),), 0, (0, 1, 2))
    with pytest.raises(ValueError, match="center must be in"):
        graphs.LandmarkGraph("bad", 3, ((0, 1),), 5, (0, 1, 2))
