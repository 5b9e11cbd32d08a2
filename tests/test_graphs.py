"""facekernels.graphs: the edge lists (dlib, MediaPipe, OpenPose), hop distances and ST-GCN partition
matrices, against a plainly written reference (matrix powers for the hops, per-entry loops for the
partitions) on the small graphs and vectorised invariants on the large ones; sub-graphs, pictures, and
the MediaPipe connection sets against the installed mediapipe package (skipped without it)."""

import itertools
import random

import pytest
import torch
from facekernels import graphs

# the graphs small enough for the entry-by-entry reference
NAMES = ["face68", "lips20", "mediapipe_lips", "mediapipe_pose", "mediapipe_hand", "openpose_body25",
         "openpose_coco18"]
LARGE = ["mediapipe_face_mesh", "mediapipe_face_mesh_iris", "mediapipe_holistic"]


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


# ---- MediaPipe and OpenPose graphs ---------------------------------------------------------------------

def _components(num_nodes, pairs) -> int:
    parent = list(range(num_nodes))

    def root(x):
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    for i, j in pairs:
        parent[root(i)] = root(j)
    return len({root(x) for x in range(num_nodes)})


def _undirected(pairs) -> set:
    return {(min(i, j), max(i, j)) for i, j in pairs}


GRAPH_COUNTS = [
    # name, V, undirected edges, centre
    ("mediapipe_face_mesh", 468, 1322, 1),
    ("mediapipe_face_mesh_iris", 478, 1322 + 8 + 12, 1),
    ("mediapipe_lips", 40, 40 + 4, 15),
    ("mediapipe_pose", 33, 35 + 4, 0),
    ("mediapipe_hand", 21, 21, 0),
    ("mediapipe_holistic", 543, 1322 + 21 + 39 + 21 + 3, 489),
    ("openpose_body25", 25, 24, 1),
    ("openpose_coco18", 18, 17, 1),
]


@pytest.mark.parametrize("name, v, n_edges, center", GRAPH_COUNTS)
def test_landmark_graph_counts(name, v, n_edges, center):
    g = graphs.get_graph(name)
    assert g.name == name and g.num_nodes == v and g.center == center
    assert len(g.edges) == n_edges == len(set(g.edges))
    assert all(0 <= i < j < v for i, j in g.edges)  # in range, ordered, no self-loops
    assert len(g.landmarks) == v and (name == "mediapipe_lips" or g.landmarks == tuple(range(v)))
    assert _components(v, g.edges) == 1
    a = _dense(name)
    assert torch.equal(a, a.T) and a.diagonal().sum() == 0


def test_face_mesh_tesselation():
    triangles = graphs.MEDIAPIPE_FACE_MESH_TRIANGLES
    # MediaPipe lists 2556 connections, three per triangle; 1322 distinct undirected edges
    assert len(triangles) == 852 and 3 * len(triangles) == 2556
    assert all(len(set(t)) == 3 and all(0 <= n < 468 for n in t) for t in triangles)
    assert len(set(map(frozenset, triangles))) == 852
    sides = [frozenset(p) for a, b, c in triangles for p in ((a, b), (b, c), (c, a))]
    counts = {}
    for side in sides:
        counts[side] = counts.get(side, 0) + 1
    assert len(counts) == 1322 and set(counts.values()) == {1, 2}  # a surface: an edge borders one or two faces
    assert {tuple(sorted(s)) for s in counts} == set(graphs.edges("mediapipe_face_mesh"))
    # Euler characteristic V - E + F = -2: a disc with three holes (the mouth and the two eyes)
    assert 468 - 1322 + 852 == -2
    # the boundary edges (one face) form the outer rim and the three holes' rims
    boundary = [tuple(s) for s, n in counts.items() if n == 1]
    assert _components(468, boundary) - (468 - len({x for e in boundary for x in e})) == 4


def test_face_mesh_regions():
    mesh = graphs.MEDIAPIPE_FACE_MESH
    sizes = {"lips": 40, "left_eye": 16, "right_eye": 16, "left_eyebrow": 10, "right_eyebrow": 10,
             "face_oval": 36, "nose": 24}
    assert {k: len(v) for k, v in graphs.MEDIAPIPE_FACE_REGIONS.items()} == sizes
    for name, nodes in graphs.MEDIAPIPE_FACE_REGIONS.items():
        assert len(set(nodes)) == len(nodes) and mesh.region(name) == nodes
    # left and right: mirror sets of the same size, disjoint; the lips' four midpoints and corners
    assert not set(mesh.region("left_eye")) & set(mesh.region("right_eye"))
    assert {0, 13, 14, 17, 61, 291, 78, 308} <= set(mesh.region("lips"))
    assert 1 in mesh.region("nose")


def test_iris_pose_holistic_links():
    mesh, iris = graphs.MEDIAPIPE_FACE_MESH, graphs.MEDIAPIPE_FACE_MESH_IRIS
    assert set(iris.edges) - set(mesh.edges) == _undirected(graphs.MEDIAPIPE_IRIS_CONNECTIONS) | _undirected(
        graphs.IRIS_LINKS)
    assert iris.region("right_iris") == (468, 469, 470, 471, 472) and iris.region("left_iris")[0] == 473
    pose = graphs.MEDIAPIPE_POSE
    published = _undirected(graphs.MEDIAPIPE_POSE_CONNECTIONS)
    assert len(published) == 35 and _components(33, published) == 3  # head, mouth, body
    assert set(pose.edges) == published | _undirected(graphs.POSE_LINKS)
    assert len(_undirected(graphs.MEDIAPIPE_HAND_CONNECTIONS)) == 21

    holistic = graphs.MEDIAPIPE_HOLISTIC
    parts = graphs.HOLISTIC_PARTS
    assert parts == {"face": range(468), "left_hand": range(468, 489), "pose": range(489, 522),
                     "right_hand": range(522, 543)}
    part_graphs = {"face": mesh, "left_hand": graphs.MEDIAPIPE_HAND, "pose": pose,
                   "right_hand": graphs.MEDIAPIPE_HAND}
    part_of = {n: key for key, r in parts.items() for n in r}
    cross = set()
    for i, j in holistic.edges:
        if part_of[i] != part_of[j]:
            cross.add((i, j))
    assert cross == {(1, 489), (468, 504), (505, 522)} == _undirected(graphs.HOLISTIC_LINKS)
    for key, r in parts.items():
        inside = {(i - r.start, j - r.start) for i, j in holistic.edges if i in r and j in r}
        assert inside == set(part_graphs[key].edges), key
        assert holistic.region(key) == tuple(r)
    assert holistic.center == 489 and holistic.region("lips") == mesh.region("lips")
    assert holistic.region("upper_body") == tuple(range(489, 489 + 25))


def test_openpose_skeletons():
    body25, coco18 = graphs.get_graph("openpose_body25"), graphs.get_graph("openpose_coco18")
    # both are trees hanging from the neck (1)
    for g in (body25, coco18):
        assert len(g.edges) == g.num_nodes - 1 and _components(g.num_nodes, g.edges) == 1
        assert {(0, 1), (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7)} <= set(g.edges)
    # BODY_25: the mid hip (8) below the neck, the feet (19-24) on the ankles (11 right, 14 left)
    assert {(1, 8), (8, 9), (8, 12), (14, 19), (14, 21), (11, 22), (11, 24), (19, 20), (22, 23)} <= set(body25.edges)
    # COCO-18: the hips (8 right, 11 left) on the neck, eyes 14/15 and ears 16/17 on the nose
    assert {(1, 8), (1, 11), (0, 14), (0, 15), (14, 16), (15, 17)} <= set(coco18.edges)


# ---- partitions on the large graphs --------------------------------------------------------------------

@pytest.mark.parametrize("name", LARGE)
def test_large_graph_partitions(name):
    g = graphs.get_graph(name)
    uniform = graphs.adjacency(name, "uniform", dtype=torch.float64)[0]
    distance = graphs.adjacency(name, "distance", dtype=torch.float64)
    spatial = graphs.adjacency(name, "spatial", dtype=torch.float64)
    a = _dense(name)
    eye = torch.eye(g.num_nodes, dtype=torch.float64)
    # uniform = (A + I) D^-1, every column sums to 1
    expected = (a + eye) / (a + eye).sum(0)
    torch.testing.assert_close(uniform, expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(distance[0], eye * expected, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(distance.sum(0), uniform)
    assert spatial.shape == (3, g.num_nodes, g.num_nodes)
    torch.testing.assert_close(spatial.sum(0), uniform)
    torch.testing.assert_close(spatial[0], distance[0])
    # centripetal: the neighbour is closer to the centre than the root; centrifugal: not closer
    r = graphs.hop_distance(name)[:, g.center]
    closer = r[:, None] < r[None, :]
    assert torch.equal(spatial[1] > 0, (a > 0) & closer)
    assert torch.equal(spatial[2] > 0, (a > 0) & ~closer)


# ---- regions and sub-graphs ----------------------------------------------------------------------------

def test_subgraph_renumbers_in_the_given_order():
    rng = random.Random(0)
    for name in ("mediapipe_face_mesh", "mediapipe_pose", "face68"):
        g = graphs.get_graph(name)
        nodes = rng.sample(range(g.num_nodes), min(g.num_nodes, 30))
        sub = graphs.subgraph(g, nodes)
        index = {n: k for k, n in enumerate(nodes)}
        expected = {tuple(sorted((index[i], index[j]))) for i, j in g.edges if i in index and j in index}
        assert sub.num_nodes == len(nodes) and set(sub.edges) == expected
        assert sub.landmarks == tuple(nodes) and sub.name == f"{name}_sub{len(nodes)}"


def test_subgraph_centre():
    # kept when chosen
    pose_upper = graphs.subgraph("mediapipe_pose", "upper_body")
    assert pose_upper.num_nodes == 25 and pose_upper.center == 0 and _components(25, pose_upper.edges) == 1
    # else the chosen node nearest the centre, the most central of those: the lips' upper-lip points are
    # five hops from the nose tip
    lips = graphs.subgraph("mediapipe_face_mesh", "lips")
    d = graphs.hop_distance("mediapipe_face_mesh")
    chosen = list(lips.landmarks)
    nearest = min(d[1, n] for n in chosen)
    assert d[1, lips.landmarks[lips.center]] == nearest == 5
    # explicit
    assert graphs.subgraph("mediapipe_face_mesh", "lips", center=0).landmarks[0] == 61
    assert graphs.subgraph("mediapipe_face_mesh", "lips", center=0).center == chosen.index(0)
    # a hand taken from the holistic graph: centred on its wrist
    left = graphs.subgraph("mediapipe_holistic", "left_hand")
    assert left.landmarks == tuple(range(468, 489)) and left.center == 0
    assert set(left.edges) == set(graphs.MEDIAPIPE_HAND.edges)


def test_subgraph_landmarks_compose_and_regions_follow():
    holistic = graphs.MEDIAPIPE_HOLISTIC
    nodes = graphs.region(holistic, "lips") + graphs.region(holistic, "left_hand")
    sub = graphs.subgraph(holistic, nodes, "lips_and_left_hand")
    assert sub.name == "lips_and_left_hand" and sub.num_nodes == 61
    assert sub.region_names == ("left_hand", "lips")
    assert sub.region("lips") == tuple(range(40)) and sub.region("left_hand") == tuple(range(40, 61))
    # a sub-graph of a sub-graph points into the 543-row array
    hand = graphs.subgraph(sub, "left_hand")
    assert hand.landmarks == tuple(range(468, 489))
    # lips20 is face68's lips region
    lips20 = graphs.subgraph("face68", "lips", "lips20", center=51)
    assert lips20 == graphs.LIPS20


def test_mediapipe_lips_graph():
    lips = graphs.MEDIAPIPE_LIPS
    assert lips.landmarks == graphs.MEDIAPIPE_FACE_REGIONS["lips"] and lips.landmarks[lips.center] == 0
    induced = graphs.subgraph("mediapipe_face_mesh", "lips")
    assert _components(40, induced.edges) == 2  # the outer and inner rings
    index = {n: k for k, n in enumerate(lips.landmarks)}
    links = _undirected((index[i], index[j]) for i, j in graphs.MEDIAPIPE_LIP_LINKS)
    assert set(lips.edges) == set(induced.edges) | links
    # every node on a ring: degree 2, and 3 at the four linked points on each ring
    degree = _dense(lips).sum(0)
    assert sorted(degree.tolist()) == [2.0] * 32 + [3.0] * 8


def test_subgraph_bad_inputs():
    with pytest.raises(ValueError, match="has no region 'mouth'"):
        graphs.subgraph("mediapipe_face_mesh", "mouth")
    with pytest.raises(ValueError, match="nodes must be distinct"):
        graphs.subgraph("face68", [1, 2, 1])
    with pytest.raises(ValueError, match=r"nodes in \[0, 68\)"):
        graphs.subgraph("face68", [1, 68])
    with pytest.raises(ValueError, match="non-empty"):
        graphs.subgraph("face68", [])
    with pytest.raises(ValueError, match="links must join chosen nodes"):
        graphs.subgraph("face68", [1, 2], links=[(1, 3)])
    with pytest.raises(ValueError, match="center must be one of the chosen nodes"):
        graphs.subgraph("face68", [1, 2], center=3)
    with pytest.raises(ValueError, match="landmarks must give one index per node"):
        graphs.LandmarkGraph("bad", 3, ((0, 1),), 0, (0, 1))


# ---- plot ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["lips20", "mediapipe_hand", "mediapipe_face_mesh"])
def test_plot_writes_a_png(tmp_path, name):
    pytest.importorskip("matplotlib")
    g = graphs.get_graph(name)
    points = torch.rand(g.num_nodes, 3) * 100
    out = graphs.plot(name, points, tmp_path / f"{name}.png", labels=name == "lips20")
    assert out == tmp_path / f"{name}.png"
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 1000


def test_plot_bad_points(tmp_path):
    pytest.importorskip("matplotlib")
    with pytest.raises(ValueError, match=r"points must be \[20, 2\] for graph 'lips20', got \[19, 2\]"):
        graphs.plot("lips20", torch.zeros(19, 2), tmp_path / "x.png")


# ---- against the mediapipe package ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def vision():
    module = pytest.importorskip("mediapipe.tasks.python.vision")
    if not hasattr(module, "FaceLandmarksConnections"):
        pytest.skip("this mediapipe has no FaceLandmarksConnections (the tasks API's connection sets)")
    return module


def _pairs(connections) -> list:
    return [(c.start, c.end) for c in connections]


def test_tesselation_matches_mediapipe(vision):
    listed = _pairs(vision.FaceLandmarksConnections.FACE_LANDMARKS_TESSELATION)
    assert len(listed) == 2556
    assert _undirected(listed) == set(graphs.edges("mediapipe_face_mesh"))
    # the recorded triangles are MediaPipe's connections three at a time
    recorded = [p for a, b, c in graphs.MEDIAPIPE_FACE_MESH_TRIANGLES for p in ((a, b), (b, c), (c, a))]
    assert recorded == listed


@pytest.mark.parametrize("region, attribute", [
    ("lips", "FACE_LANDMARKS_LIPS"), ("left_eye", "FACE_LANDMARKS_LEFT_EYE"),
    ("right_eye", "FACE_LANDMARKS_RIGHT_EYE"), ("left_eyebrow", "FACE_LANDMARKS_LEFT_EYEBROW"),
    ("right_eyebrow", "FACE_LANDMARKS_RIGHT_EYEBROW"), ("face_oval", "FACE_LANDMARKS_FACE_OVAL"),
    ("nose", "FACE_LANDMARKS_NOSE"),
])
def test_face_regions_match_mediapipe(vision, region, attribute):
    listed = _pairs(getattr(vision.FaceLandmarksConnections, attribute))
    nodes = graphs.MEDIAPIPE_FACE_REGIONS[region]
    assert nodes == tuple(dict.fromkeys(n for pair in listed for n in pair))
    sub = graphs.subgraph("mediapipe_face_mesh", region)
    index = {n: k for k, n in enumerate(nodes)}
    published = _undirected((index[i], index[j]) for i, j in listed)
    assert published <= set(sub.edges)
    if region not in ("left_eyebrow", "right_eyebrow"):
        assert published == set(sub.edges)


def test_iris_pose_hand_match_mediapipe(vision):
    face = vision.FaceLandmarksConnections
    iris = _pairs(face.FACE_LANDMARKS_LEFT_IRIS) + _pairs(face.FACE_LANDMARKS_RIGHT_IRIS)
    assert _undirected(iris) == _undirected(graphs.MEDIAPIPE_IRIS_CONNECTIONS)
    pose = _pairs(vision.PoseLandmarksConnections.POSE_LANDMARKS)
    assert len(pose) == 35 and _undirected(pose) == _undirected(graphs.MEDIAPIPE_POSE_CONNECTIONS)
    hand = _pairs(vision.HandLandmarksConnections.HAND_CONNECTIONS)
    assert len(hand) == 21 and _undirected(hand) == _undirected(graphs.MEDIAPIPE_HAND_CONNECTIONS)
