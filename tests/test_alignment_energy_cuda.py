"""alignment_energy on CUDA: both modes and metrics in float32/float64 against the float64 brute-force
reference of test_alignment_energy.py, tiles crossed (against the CPU op in float64), exact knn ties,
coincident points, strided inputs, float32 accuracy at D = 512, determinism, streams, the torch.library
contract, torch.compile and the bad inputs the CUDA binding must refuse."""

import pytest
import torch
from facekernels.ops.alignment_energy import alignment_energy
from test_alignment_energy import quantised_points, reference

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEVICE = "cuda"
MODES = ["inverse_distance", "knn"]
METRICS = ["cosine", "euclidean"]
TOL = {torch.float32: {"rtol": 1e-5, "atol": 1e-6}, torch.float64: {"rtol": 1e-10, "atol": 1e-12}}


@pytest.fixture(autouse=True)
def _full_precision_matmul():
    """The float32 accuracy claims hold for full float32 GEMMs (TF32 off, torch's default)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def check(points, directions, mode="inverse_distance", k=10, metric="cosine", tol=None):
    energy, per_point = alignment_energy(points.to(DEVICE), directions.to(DEVICE), mode, k, metric)
    assert energy.device.type == per_point.device.type == "cuda"
    assert energy.dtype == per_point.dtype == points.dtype
    assert energy.shape == () and per_point.shape == (points.shape[0],)
    ref_energy, ref_per_point = reference(points, directions, mode, k, metric)
    tol = tol or TOL[points.dtype]
    torch.testing.assert_close(per_point.cpu().double(), ref_per_point, **tol)
    torch.testing.assert_close(energy.cpu().double(), ref_energy, **tol)
    return energy, per_point


SHAPES = [(2, 5), (3, 1), (17, 33), (300, 19), (2500, 12)]  # 2500 crosses the 2048-row blocks


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"C{c}xD{d}" for c, d in SHAPES])
def test_matches_reference(shape, mode, metric, dtype):
    C, D = shape
    points = torch.randn(C, D, dtype=dtype)
    directions = torch.randn(C, D, dtype=dtype)
    check(points, directions, mode, min(10, C - 1), metric)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("mode", MODES)
def test_column_tiles_against_cpu(mode, metric):
    """C above the CUDA column tile (8192 in float32, 4096 in float64): compared with the CPU op."""
    points = torch.randn(9000, 6, dtype=torch.float64)
    directions = torch.randn(9000, 6, dtype=torch.float64)
    cpu = alignment_energy(points, directions, mode, 7, metric)
    gpu = alignment_energy(points.to(DEVICE), directions.to(DEVICE), mode, 7, metric)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("metric", METRICS)
def test_knn_k_extremes(metric):
    points = torch.randn(40, 9, dtype=torch.float64)
    directions = torch.randn(40, 9, dtype=torch.float64)
    for k in (1, 39):
        check(points, directions, "knn", k, metric)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", METRICS)
def test_knn_ties_go_to_the_smaller_index(metric, dtype):
    g = torch.Generator().manual_seed(3)
    C = 2300
    points = quantised_points(C, metric, g).to(dtype)
    directions = torch.randn(C, 7, generator=g, dtype=torch.float64).to(dtype)
    for k in (1, 5, 40, 333):
        check(points, directions, "knn", k, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_coincident_points_are_excluded(metric):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 16, generator=g)
    copies = [base, base[:10].clone(), base[5:15].clone()]
    if metric == "cosine":
        copies.append(4 * base[20:25])
    points = torch.cat(copies)
    directions = torch.randn(points.shape[0], 16, generator=g)
    _, per_point = check(points, directions, "inverse_distance", metric=metric)
    assert torch.isfinite(per_point).all()
    for k in (1, 3, 20):
        check(points, directions, "knn", k, metric)
    same = torch.randn(1, 6).repeat(4, 1)
    energy, per_point = alignment_energy(same.to(DEVICE), torch.randn(4, 6, device=DEVICE), metric=metric)
    assert torch.isnan(per_point).all() and torch.isnan(energy)


@pytest.mark.parametrize("mode", MODES)
def test_strided_inputs(mode):
    base_p = torch.randn(24, 300, device=DEVICE)
    base_v = torch.randn(300, 48, device=DEVICE)
    points, directions = base_p.T[:, ::2], base_v[:, 1::4]
    strided = alignment_energy(points, directions, mode, 7)
    contiguous = alignment_energy(points.contiguous(), directions.contiguous(), mode, 7)
    assert torch.equal(strided[1], contiguous[1])
    check(points.cpu(), directions.cpu(), mode, 7)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("metric", METRICS)
def test_float32_accuracy_at_512_dims(mode, metric):
    g = torch.Generator().manual_seed(4)
    points = torch.randn(3000, 512, generator=g)
    directions = torch.randn(3000, 512, generator=g)
    check(points, directions, mode, 10, metric, tol={"rtol": 1e-5, "atol": 0.0})


@pytest.mark.parametrize("mode", MODES)
def test_deterministic_and_on_a_side_stream(mode):
    points = torch.randn(5000, 32, device=DEVICE)
    directions = torch.randn(5000, 32, device=DEVICE)
    first = alignment_energy(points, directions, mode)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        again = alignment_energy(points, directions, mode)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(first[1], again[1]) and torch.equal(first[0], again[0])


def test_inference_mode():
    points, directions = torch.randn(300, 16, device=DEVICE), torch.randn(300, 16, device=DEVICE)
    expected = alignment_energy(points, directions)
    with torch.inference_mode():
        got = alignment_energy(points, directions)
    assert torch.equal(got[1], expected[1])


def test_opcheck():
    op = torch.ops.facekernels.alignment_energy.default
    points = torch.randn(23, 6, device=DEVICE, requires_grad=True)
    directions = torch.randn(23, 6, device=DEVICE, requires_grad=True)
    torch.library.opcheck(op, (points, directions))
    torch.library.opcheck(op, (points, directions, "knn", 4, "euclidean"))


def test_torch_compile_fullgraph():
    def invariance(points, directions):
        energy, per_point = alignment_energy(points, directions)
        _, knn = alignment_energy(points, directions, mode="knn", k=5, metric="euclidean")
        return energy + (per_point - knn).abs().mean()

    compiled = torch.compile(invariance, fullgraph=True, dynamic=False)
    points, directions = torch.randn(200, 16, device=DEVICE), torch.randn(200, 16, device=DEVICE)
    torch.testing.assert_close(compiled(points, directions), invariance(points, directions))


def test_not_differentiable():
    points = torch.randn(30, 5, device=DEVICE, requires_grad=True)
    energy, per_point = alignment_energy(points, torch.randn(30, 5, device=DEVICE))
    assert not energy.requires_grad and not per_point.requires_grad


def _zero_row(t, row):
    t = t.clone()
    t[row] = 0
    return t


def test_bad_inputs_raise():
    P, V = torch.randn(6, 4, device=DEVICE), torch.randn(6, 4, device=DEVICE)
    cases = [
        ((P, _zero_row(V, 4)), r"directions\[4\] must be a nonzero vector"),
        ((_zero_row(P, 2), V), r"points\[2\] must be a nonzero vector for metric=\"cosine\""),
        ((P, V[:, :3]), r"directions must have the same shape as points \[6, 4\], got \[6, 3\]"),
        ((P, V, "knn", 6), r"k must be in \[1, C - 1\] = \[1, 5\] for mode=\"knn\", got 6"),
        ((P[:1], V[:1]), r"points must have at least 2 rows"),
        ((P.half(), V.half()), r"points must be float32 or float64, got float16"),
        ((P, V, "inverse"), r"mode must be \"inverse_distance\" or \"knn\""),
        ((P, V, "knn", 3, "l2"), r"metric must be \"cosine\" or \"euclidean\""),
        ((P, V.cpu()), r"directions must be on the same device as points"),
    ]
    for args, match in cases:
        with pytest.raises(RuntimeError, match=r"alignment_energy: " + match):
            alignment_energy(*args)
    # A zero point is fine for euclidean.
    alignment_energy(_zero_row(P, 2), V, metric="euclidean")
