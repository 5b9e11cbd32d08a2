"""alignment_energy on every device (tests/devices.py): both modes and metrics against one float64
brute-force reference (full C x C matrices), tile boundaries, k = 1 and k = C - 1, exact ties in knn (the
smaller index first), coincident points (D == 0 excluded), strided inputs, float32 accuracy at D = 512,
determinism, the SIMD levels, the torch.library contract, torch.compile, non-differentiability and every
bad input of issue 8. The CUDA-only tests (marked `cuda`, skipped without a GPU) follow the CPU ones:
CUDA's own tiles, streams, and the CUDA binding's refusals. Both devices compute in float32/float64 only,
so the family has its own (tighter) rows in tests/devices.py's tolerance table (family "alignment_energy")."""

import warnings

import facekernels
import pytest
import torch
from helpers import (
    assert_fake_refuses_like_native,
    assert_tracing_refuses_like_native,
    run_at_each_cpu_capability,
)
from devices import DEVICES, tolerance
from facekernels.ops.alignment_energy import alignment_energy

MODES = ["inverse_distance", "knn"]
METRICS = ["cosine", "euclidean"]


def unit_roundoff(dtype):
    return 2.0**-24 if dtype == torch.float32 else 2.0**-53


def pairwise(rows, f):
    """f over every pair of rows, [C, C]: computed on the distinct rows and gathered, so bitwise-identical
    rows get bitwise-identical values (BLAS does not promise that for equal rows at different positions,
    and the knn tie rule is about equal distances)."""
    distinct, inverse = torch.unique(rows, dim=0, return_inverse=True)
    return f(distinct)[inverse][:, inverse]


def reference(points, directions, mode="inverse_distance", k=10, metric="cosine", dtype=None):
    """float64 brute force from the definitions, with the documented snapping of coincident points:
    D <= (dim + 8) u (cosine) or d^2 <= (dim + 8) u (|p|^2 + |p'|^2) (euclidean) counts as D = 0, u the unit
    roundoff of `dtype` (the dtype the op ran in)."""
    dtype = dtype or points.dtype
    p, v = points.double(), directions.double()
    C, dim = p.shape
    tol = (dim + 8) * unit_roundoff(dtype)
    if metric == "cosine":
        D = pairwise(p / p.norm(dim=1, keepdim=True), lambda u: 1 - u @ u.T)
        D = torch.where(D <= tol, torch.zeros_like(D), D)
    else:
        def snapped_squared_distance(x):
            d2 = torch.cdist(x, x, compute_mode="donot_use_mm_for_euclid_dist") ** 2
            sq = (x * x).sum(1)
            return torch.where(d2 <= tol * (sq[:, None] + sq[None, :]), torch.zeros_like(d2), d2)

        D = pairwise(p, snapped_squared_distance).sqrt()
    unit_v = v / v.norm(dim=1, keepdim=True)
    V = 1 - unit_v @ unit_v.T
    off_diagonal = ~torch.eye(C, dtype=torch.bool)
    if mode == "inverse_distance":
        w = torch.where(off_diagonal & (D > 0), 1 / D, torch.zeros_like(D))
        E = (w * V).sum(1) / w.sum(1)
    else:
        # A stable sort keeps equal distances in index order: the smaller index first.
        D = torch.where(off_diagonal, D, torch.full_like(D, float("inf")))
        nearest = torch.sort(D, dim=1, stable=True).indices[:, :k]
        E = V.gather(1, nearest).mean(1)
    return E.mean(), E


def check(points, directions, mode="inverse_distance", k=10, metric="cosine", tol=None, device="cpu"):
    """The op on `device` against the reference (on the CPU inputs)."""
    points, directions = points.cpu(), directions.cpu()
    energy, per_point = alignment_energy(points.to(device), directions.to(device), mode, k, metric)
    assert energy.device.type == per_point.device.type == torch.device(device).type
    ref_energy, ref_per_point = reference(points, directions, mode, k, metric)
    dtype = points.dtype
    assert energy.dtype == per_point.dtype == dtype
    assert energy.shape == () and per_point.shape == (points.shape[0],)
    tol = tol or tolerance(device, dtype, "alignment_energy")
    torch.testing.assert_close(per_point.cpu().double(), ref_per_point, **tol)
    torch.testing.assert_close(energy.cpu().double(), ref_energy, **tol)
    return energy, per_point


# (C, D): the CPU tiles are R rows (C / 16 rounded down to a multiple of 64, within [64, 512]) by 2048
# (float32) or 1024 (float64) columns: 300 and 1500 cross row blocks, 2100 the column chunks of both
# dtypes. (Few dimensions with many points put near neighbours at tiny D, where float32 cannot resolve
# 1 / D: D = 12 keeps them apart.)
SHAPES = [(2, 5), (3, 1), (17, 33), (300, 19), (1500, 7), (2100, 12)]
# CUDA tiles are 2048 rows (2500 crosses a row block) by 8192 / 4096 columns (test_cuda_column_tiles).
CUDA_SHAPES = [(2, 5), (3, 1), (17, 33), (300, 19), (2500, 12)]
DEVICE_SHAPES = [
    pytest.param(device, shape, marks=marks, id=f"{device}-C{shape[0]}xD{shape[1]}")
    for device, shapes, marks in (("cpu", SHAPES, []), ("cuda", CUDA_SHAPES, [pytest.mark.cuda]))
    for shape in shapes
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("device,shape", DEVICE_SHAPES)
def test_matches_reference(device, shape, mode, metric, dtype):
    C, D = shape
    points = torch.randn(C, D, dtype=dtype)
    directions = torch.randn(C, D, dtype=dtype)
    check(points, directions, mode, min(10, C - 1), metric, device=device)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("C", [2, 17, 300])
def test_knn_k_extremes(C, metric):
    points = torch.randn(C, 9, dtype=torch.float64)
    directions = torch.randn(C, 9, dtype=torch.float64)
    for k in (1, C - 1):
        check(points, directions, "knn", k, metric)
    # k = C - 1 is the plain mean of V over every other point, whatever D.
    unit = directions / directions.norm(dim=1, keepdim=True)
    V = 1 - unit @ unit.T
    _, per_point = alignment_energy(points, directions, "knn", C - 1, metric)
    torch.testing.assert_close(per_point, V.sum(1) / (C - 1))


def quantised_points(C, metric, generator):
    """Points whose distances are computed exactly in float32: for cosine, rows of four +-1 entries in 7
    coordinates (norm 2, unit rows of +-0.5, dot products multiples of 1/4); for euclidean, coordinates in
    {-1, 0, 1}. Drawn from a small pool, so most points have exact duplicates and distances tie heavily."""
    dim = 7
    pool = torch.zeros(12, dim, dtype=torch.float64)
    for i in range(pool.shape[0]):
        if metric == "cosine":
            where = torch.randperm(dim, generator=generator)[:4]
            pool[i, where] = torch.randint(0, 2, (4,), generator=generator).double() * 2 - 1
        else:
            pool[i] = torch.randint(-1, 2, (dim,), generator=generator).double()
            pool[i, 0] = 1.0  # no zero row (harmless for euclidean, but keeps the pool distinct from 0)
    return pool[torch.randint(0, pool.shape[0], (C,), generator=generator)]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", METRICS)
def test_knn_ties_go_to_the_smaller_index(metric, dtype):
    g = torch.Generator().manual_seed(3)
    C = 700  # two row blocks
    points = quantised_points(C, metric, g).to(dtype)
    directions = torch.randn(C, 7, generator=g, dtype=torch.float64).to(dtype)
    # The test only means something if the k-th nearest distance is tied with a point left out.
    D = torch.cdist(points.double(), points.double())
    D.fill_diagonal_(float("inf"))
    sorted_d = D.sort(dim=1).values
    for k in (1, 5, 40, 333):
        assert (sorted_d[:, k - 1] == sorted_d[:, k]).float().mean() > 0.5
        check(points, directions, "knn", k, metric)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", METRICS)
def test_coincident_points_are_excluded(metric, dtype):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 16, generator=g, dtype=dtype)
    copies = [base, base[:10].clone(), base[5:15].clone()]
    if metric == "cosine":
        # The same directions: cosine distance 0. Scaled by a power of two, the unit rows are bitwise equal
        # too, so in knn these tie exactly with the originals (other scales tie only up to rounding).
        copies.append(4 * base[20:25])
    points = torch.cat(copies)
    points = points[torch.randperm(points.shape[0], generator=g)]
    directions = torch.randn(points.shape[0], 16, generator=g, dtype=dtype)
    _, per_point = check(points, directions, "inverse_distance", metric=metric)
    assert torch.isfinite(per_point).all()
    if metric == "cosine":  # any scale is coincident for inverse_distance (no tie rule involved)
        scaled = torch.cat([points, 3 * points[:7]])
        more = torch.randn(7, 16, generator=g, dtype=dtype)
        check(scaled, torch.cat([directions, more]), "inverse_distance", metric=metric)
    for k in (1, 3, 20):
        check(points, directions, "knn", k, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_all_points_coincide(metric):
    """Every other point coincides: E_c = 0 / 0 is NaN in inverse_distance; knn still has neighbours."""
    points = torch.randn(1, 6).repeat(4, 1)
    directions = torch.randn(4, 6)
    energy, per_point = alignment_energy(points, directions, metric=metric)
    assert torch.isnan(per_point).all() and torch.isnan(energy)
    check(points, directions, "knn", 2, metric)


@pytest.mark.parametrize("metric", METRICS)
def test_nan_is_not_hidden(metric):
    """A NaN row makes every inverse_distance E_c NaN (every point pairs with it), never a silently
    excluded pair; a NaN direction likewise."""
    points, directions = torch.randn(50, 6), torch.randn(50, 6)
    bad_points = points.clone()
    bad_points[3, 1] = float("nan")
    energy, per_point = alignment_energy(bad_points, directions, metric=metric)
    assert torch.isnan(per_point).all() and torch.isnan(energy)
    bad_directions = directions.clone()
    bad_directions[7, 0] = float("nan")
    energy, per_point = alignment_energy(points, bad_directions, metric=metric)
    assert torch.isnan(per_point).all() and torch.isnan(energy)
    # knn: a NaN distance is never among the nearest; a NaN direction poisons the points that pick it.
    _, per_point = alignment_energy(points, bad_directions, "knn", 49, metric)
    assert torch.isnan(per_point).all()


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("metric", METRICS)
def test_strided_inputs(mode, metric):
    g = torch.Generator().manual_seed(2)
    base_p = torch.randn(24, 300, generator=g)
    base_v = torch.randn(300, 48, generator=g)
    points = base_p.T[:, ::2]  # [300, 12], column-major and strided
    directions = base_v[:, 1::4]  # [300, 12], row-strided
    assert not points.is_contiguous() and not directions.is_contiguous()
    strided = alignment_energy(points, directions, mode, 7, metric)
    contiguous = alignment_energy(points.contiguous(), directions.contiguous(), mode, 7, metric)
    assert torch.equal(strided[0], contiguous[0]) and torch.equal(strided[1], contiguous[1])
    check(points, directions, mode, 7, metric)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("metric", METRICS)
def test_float32_accuracy_at_512_dims(mode, metric):
    """The issue's accuracy goal: float32 within 1e-5 relative of float64 brute force, at D = 512."""
    g = torch.Generator().manual_seed(4)
    points = torch.randn(3000, 512, generator=g)
    directions = torch.randn(3000, 512, generator=g)
    check(points, directions, mode, 10, metric, tol={"rtol": 1e-5, "atol": 0.0})


@pytest.mark.parametrize("mode", MODES)
def test_deterministic_and_thread_counts(mode):
    points = torch.randn(1200, 24)
    directions = torch.randn(1200, 24)
    first = alignment_energy(points, directions, mode)
    again = alignment_energy(points, directions, mode)
    assert torch.equal(first[1], again[1]) and torch.equal(first[0], again[0])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        single = alignment_energy(points, directions, mode)
    finally:
        torch.set_num_threads(threads)
    if mode == "knn":  # the heaps hold the same neighbours whatever the schedule
        assert torch.equal(single[1], first[1])
    else:
        torch.testing.assert_close(single[1], first[1], rtol=1e-6, atol=0)


def test_cpu_capabilities_agree(tmp_path):
    """The SIMD levels compiled in give the same result (run in subprocesses with the level lowered)."""
    script = (
        "import sys, torch, facekernels\n"
        "from facekernels.ops.alignment_energy import alignment_energy\n"
        "torch.manual_seed(0)\n"
        "p = torch.randn(700, 37); v = torch.randn(700, 37)\n"
        "outs = [alignment_energy(p, v, m, 6, d)[1] for m in ('inverse_distance', 'knn')"
        " for d in ('cosine', 'euclidean')]\n"
        "outs += [alignment_energy(p.double(), v.double(), 'knn', 6, 'euclidean')[1]]\n"
        "torch.save((facekernels.build_info()['cpu_kernels']['alignment_energy'], outs), sys.argv[1])\n"
    )
    results = run_at_each_cpu_capability(script, tmp_path)
    base = results["default"][1]
    for level, (used, outs) in results.items():
        for a, b in zip(outs, base):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6, msg=f"{level} ({used}) differs from default")


def test_build_info_lists_kernel():
    info = facekernels.build_info()
    assert info["cpu_kernels"]["alignment_energy"] == info["cpu_capability"]


def test_opcheck():
    op = torch.ops.facekernels.alignment_energy.default
    points = torch.randn(23, 6, requires_grad=True)
    directions = torch.randn(23, 6, requires_grad=True)
    torch.library.opcheck(op, (points, directions))
    torch.library.opcheck(op, (points, directions, 1, 4, 1))  # knn, euclidean (codes: MODES, METRICS)
    torch.library.opcheck(op, (points.detach().double(), directions.detach().double(), 0, 10, 1))


def test_not_differentiable():
    points = torch.randn(30, 5, requires_grad=True)
    directions = torch.randn(30, 5, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "autograd kernel was not registered" warning
        energy, per_point = alignment_energy(points, directions)
    assert not energy.requires_grad and not per_point.requires_grad
    with pytest.raises(RuntimeError, match="does not require grad"):
        energy.backward()


@pytest.mark.parametrize("mode", MODES)
def test_inference_mode(mode):
    """The worker threads' GEMMs write tile buffers: under inference_mode (a thread-local mode the workers
    do not share) that must still work."""
    points, directions = torch.randn(2500, 16), torch.randn(2500, 16)
    expected = alignment_energy(points, directions, mode)
    with torch.inference_mode():
        got = alignment_energy(points, directions, mode)
    assert torch.equal(got[1], expected[1]) and torch.equal(got[0], expected[0])


@pytest.mark.parametrize("device", DEVICES)
def test_torch_compile_fullgraph(device):
    def invariance(points, directions):
        energy, per_point = alignment_energy(points, directions)
        _, knn = alignment_energy(points, directions, mode="knn", k=5, metric="euclidean")
        return energy + (per_point - knn).abs().mean()

    compiled = torch.compile(invariance, fullgraph=True, dynamic=False)
    points, directions = torch.randn(200, 16, device=device), torch.randn(200, 16, device=device)
    torch.testing.assert_close(compiled(points, directions), invariance(points, directions))


def test_fake_tensor_shapes():
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        points = torch.empty(50, 8, dtype=torch.float64)
        energy, per_point = alignment_energy(points, torch.empty(50, 8, dtype=torch.float64))
    assert energy.shape == () and per_point.shape == (50,) and per_point.dtype == torch.float64


def _zero_row(t, row):
    t = t.clone()
    t[row] = 0
    return t


P, V = torch.randn(6, 4), torch.randn(6, 4)
BAD = [
    ("shape_mismatch", (P, V[:, :3]), r"directions must have the same shape as points \[6, 4\], got \[6, 3\]"),
    ("row_mismatch", (P, V[:5]), r"directions must have the same shape as points \[6, 4\], got \[5, 4\]"),
    ("points_1d", (P[0], V[0]), r"points must be a 2-D tensor \[C, D\], got a 1-D tensor of shape \[4\]"),
    ("directions_3d", (P, V[None]), r"directions must be a 2-D tensor \[C, D\], got a 3-D tensor"),
    ("one_curve", (P[:1], V[:1]), r"points must have at least 2 rows \(C >= 2 curves\), got C = 1"),
    ("no_curves", (P[:0], V[:0]), r"points must have at least 2 rows \(C >= 2 curves\), got C = 0"),
    ("k_zero", (P, V, "knn", 0), r"k must be in \[1, C - 1\] = \[1, 5\] for mode=\"knn\", got 0"),
    ("k_too_large", (P, V, "knn", 6), r"k must be in \[1, C - 1\] = \[1, 5\] for mode=\"knn\", got 6"),
    ("k_negative", (P, V, "knn", -3), r"k must be in \[1, C - 1\] = \[1, 5\] for mode=\"knn\", got -3"),
    ("mode", (P, V, "inverse"), r"mode must be \"inverse_distance\" or \"knn\", got \"inverse\""),
    ("metric", (P, V, "knn", 3, "l2"), r"metric must be \"cosine\" or \"euclidean\", got \"l2\""),
    ("zero_direction", (P, _zero_row(V, 4)),
     r"directions\[4\] must be a nonzero vector \(a curve's direction e\(x2\) - e\(x0\)\), got a zero vector"),
    ("zero_direction_knn", (P, _zero_row(V, 0), "knn", 2, "euclidean"), r"directions\[0\] must be a nonzero vector"),
    ("zero_point_cosine", (_zero_row(P, 2), V),
     r"points\[2\] must be a nonzero vector for metric=\"cosine\" \(its cosine distance is undefined\)"),
    ("half", (P.half(), V.half()), r"points must be float32 or float64, got float16"),
    ("int", (P.long(), V.long()), r"points must be float32 or float64, got int64"),
    ("dtype_mismatch", (P, V.double()), r"directions must have the same dtype as points \(float32\), got float64"),
]


@pytest.mark.parametrize("name,args,match", BAD, ids=[b[0] for b in BAD])
def test_bad_inputs_raise(name, args, match):
    with pytest.raises(RuntimeError, match=r"alignment_energy: " + match):
        alignment_energy(*args)


@pytest.mark.parametrize("mode,metric", [("knn", None), (None, "cosine"), (1.0, "cosine"), ("knn", 1)])
def test_mode_and_metric_must_be_names(mode, metric):
    with pytest.raises(TypeError, match=r"alignment_energy: (mode|metric) must be a str, one of "):
        alignment_energy(P, V, mode, 3, metric)


def test_raw_op_takes_codes():
    """The raw op takes the index of the name in MODES / METRICS (ints: a `str` argument leaked memory at the
    stable-ABI boundary, issue 17); codes out of range are refused by the op and its fake kernel alike."""
    from facekernels.ops.alignment_energy import METRICS, MODES

    op = torch.ops.facekernels.alignment_energy.default
    assert MODES == ("inverse_distance", "knn") and METRICS == ("cosine", "euclidean")
    for mode in MODES:
        for metric in METRICS:
            raw = op(P, V, MODES.index(mode), 3, METRICS.index(metric))
            torch.testing.assert_close(raw, alignment_energy(P, V, mode, 3, metric), rtol=0, atol=0)
    torch.testing.assert_close(op(P, V), alignment_energy(P, V), rtol=0, atol=0)  # defaults: inverse_distance, cosine
    for args, match in [((P, V, 2), r'mode must be 0 \("inverse_distance"\) or 1 \("knn"\), got 2'),
                        ((P, V, -1), r"mode must be 0 .*, got -1"),
                        ((P, V, 0, 3, 7), r'metric must be 0 \("cosine"\) or 1 \("euclidean"\), got 7')]:
        with pytest.raises(RuntimeError, match="alignment_energy: " + match):
            op(*args)
        assert_fake_refuses_like_native(op, *args)


# ---- the fake kernel refuses what the native op refuses, with the same exception and message, so that
# tracing, compiling and exporting fail where the eager call does (issue 17). Zero rows are values: only
# the native op sees them. ------------------------------------------------------------------------------

VALUE_CHECKS = {"zero_direction", "zero_direction_knn", "zero_point_cosine"}
SHAPE_BAD = [b for b in BAD if b[0] not in VALUE_CHECKS]


@pytest.mark.parametrize("name,args,match", SHAPE_BAD, ids=[b[0] for b in SHAPE_BAD])
def test_fake_kernel_refuses_bad_inputs(name, args, match):
    assert_fake_refuses_like_native(alignment_energy, *args)


@pytest.mark.parametrize("name", ["row_mismatch", "one_curve", "k_too_large", "dtype_mismatch"])
def test_compile_and_export_refuse_bad_inputs(name):
    args = next(b[1] for b in BAD if b[0] == name)
    assert_tracing_refuses_like_native(alignment_energy, *args)


def test_export_with_dynamic_rows():
    """The fake kernel's checks hold a dynamic C to what the op takes (C >= k + 1 for knn) without bounding it
    above: the 2^31-row limit is left to the native op, so an unbounded Dim exports."""

    class Energy(torch.nn.Module):
        def forward(self, points, directions):
            return alignment_energy(points, directions, "knn", 2)

    c = torch.export.Dim("C", min=3)
    args = (torch.randn(20, 8), torch.randn(20, 8))
    program = torch.export.export(Energy(), args, dynamic_shapes=({0: c}, {0: c}))
    other = (torch.randn(37, 8), torch.randn(37, 8))
    torch.testing.assert_close(program.module()(*other), alignment_energy(*other, "knn", 2))


def test_zero_point_is_fine_for_euclidean():
    points = _zero_row(torch.randn(20, 4, dtype=torch.float64), 3)
    check(points, torch.randn(20, 4, dtype=torch.float64), "inverse_distance", metric="euclidean")


def test_k_is_ignored_by_inverse_distance():
    points, directions = torch.randn(5, 3), torch.randn(5, 3)
    torch.testing.assert_close(alignment_energy(points, directions, k=100)[1], alignment_energy(points, directions)[1])


def test_bad_input_mixed_devices():
    with pytest.raises(RuntimeError, match=r"alignment_energy: directions must be on the same device as points"):
        alignment_energy(torch.randn(5, 3), torch.randn(5, 3, device="meta"))


# ---- CUDA only: the CUDA binding's own tiles, streams and refusals ----------------------------------------

DEVICE = "cuda"


@pytest.fixture
def full_precision_matmul():
    """The float32 accuracy claims hold for full float32 GEMMs (TF32 off, torch's default)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("mode", MODES)
def test_cuda_column_tiles_against_cpu(mode, metric):
    """C above the CUDA column tile (8192 in float32, 4096 in float64): compared with the CPU op."""
    points = torch.randn(9000, 6, dtype=torch.float64)
    directions = torch.randn(9000, 6, dtype=torch.float64)
    cpu = alignment_energy(points, directions, mode, 7, metric)
    gpu = alignment_energy(points.to(DEVICE), directions.to(DEVICE), mode, 7, metric)
    torch.testing.assert_close(gpu[1].cpu(), cpu[1], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(gpu[0].cpu(), cpu[0], rtol=1e-9, atol=1e-12)


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
@pytest.mark.parametrize("metric", METRICS)
def test_cuda_knn_k_extremes(metric):
    points = torch.randn(40, 9, dtype=torch.float64)
    directions = torch.randn(40, 9, dtype=torch.float64)
    for k in (1, 39):
        check(points, directions, "knn", k, metric, device=DEVICE)


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("metric", METRICS)
def test_cuda_knn_ties_go_to_the_smaller_index(metric, dtype):
    g = torch.Generator().manual_seed(3)
    C = 2300
    points = quantised_points(C, metric, g).to(dtype)
    directions = torch.randn(C, 7, generator=g, dtype=torch.float64).to(dtype)
    for k in (1, 5, 40, 333):
        check(points, directions, "knn", k, metric, device=DEVICE)


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
@pytest.mark.parametrize("metric", METRICS)
def test_cuda_coincident_points_are_excluded(metric):
    g = torch.Generator().manual_seed(1)
    base = torch.randn(40, 16, generator=g)
    copies = [base, base[:10].clone(), base[5:15].clone()]
    if metric == "cosine":
        copies.append(4 * base[20:25])
    points = torch.cat(copies)
    directions = torch.randn(points.shape[0], 16, generator=g)
    _, per_point = check(points, directions, "inverse_distance", metric=metric, device=DEVICE)
    assert torch.isfinite(per_point).all()
    for k in (1, 3, 20):
        check(points, directions, "knn", k, metric, device=DEVICE)
    same = torch.randn(1, 6).repeat(4, 1)
    energy, per_point = alignment_energy(same.to(DEVICE), torch.randn(4, 6, device=DEVICE), metric=metric)
    assert torch.isnan(per_point).all() and torch.isnan(energy)


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_strided_inputs(mode):
    base_p = torch.randn(24, 300, device=DEVICE)
    base_v = torch.randn(300, 48, device=DEVICE)
    points, directions = base_p.T[:, ::2], base_v[:, 1::4]
    strided = alignment_energy(points, directions, mode, 7)
    contiguous = alignment_energy(points.contiguous(), directions.contiguous(), mode, 7)
    assert torch.equal(strided[1], contiguous[1])
    check(points.cpu(), directions.cpu(), mode, 7, device=DEVICE)


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("metric", METRICS)
def test_cuda_float32_accuracy_at_512_dims(mode, metric):
    g = torch.Generator().manual_seed(4)
    points = torch.randn(3000, 512, generator=g)
    directions = torch.randn(3000, 512, generator=g)
    check(points, directions, mode, 10, metric, tol={"rtol": 1e-5, "atol": 0.0}, device=DEVICE)


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
@pytest.mark.parametrize("mode", MODES)
def test_cuda_deterministic_and_on_a_side_stream(mode):
    points = torch.randn(5000, 32, device=DEVICE)
    directions = torch.randn(5000, 32, device=DEVICE)
    first = alignment_energy(points, directions, mode)
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        again = alignment_energy(points, directions, mode)
    torch.cuda.current_stream().wait_stream(stream)
    assert torch.equal(first[1], again[1]) and torch.equal(first[0], again[0])


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
def test_cuda_inference_mode():
    points, directions = torch.randn(300, 16, device=DEVICE), torch.randn(300, 16, device=DEVICE)
    expected = alignment_energy(points, directions)
    with torch.inference_mode():
        got = alignment_energy(points, directions)
    assert torch.equal(got[1], expected[1])


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
def test_cuda_opcheck():
    op = torch.ops.facekernels.alignment_energy.default
    points = torch.randn(23, 6, device=DEVICE, requires_grad=True)
    directions = torch.randn(23, 6, device=DEVICE, requires_grad=True)
    torch.library.opcheck(op, (points, directions))
    torch.library.opcheck(op, (points, directions, 1, 4, 1))  # knn, euclidean


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
def test_cuda_not_differentiable():
    points = torch.randn(30, 5, device=DEVICE, requires_grad=True)
    energy, per_point = alignment_energy(points, torch.randn(30, 5, device=DEVICE))
    assert not energy.requires_grad and not per_point.requires_grad


@pytest.mark.cuda
@pytest.mark.usefixtures("full_precision_matmul")
def test_cuda_bad_inputs_raise():
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
