"""cuda/alignment_energy's kernels (unmodified) run by the CPU emulator through the family's CUDA binding
(csrc/alignment_energy/alignment_energy_cuda.cpp, unmodified, compiled on the CPU torch: tools/cudaemu/binding/),
so the binding's orchestration runs too: row preparation and the zero-row check (a host synchronisation),
the inverse_distance walk over the upper triangle in tiles, the knn row blocks x column tiles with per-row
heaps, margins, finish. Compared with torch.ops.facekernels.alignment_energy (the CPU op) in float64 on the
same inputs. alignment_energy takes float32 and float64 only (no half types on either device). The
binding's tiles are 2048 x 8192 (4096 in float64), knn 256+ rows x 2048 columns: the shapes below cross a
knn column tile (n > 2048) once; the tile loops' edges are otherwise reached with rows <= one tile."""

import pytest
import torch

import emu
from devices import tolerance  # alignment_energy's rows, as tests/test_alignment_energy.py uses
from facekernels.ops.alignment_energy import METRICS, MODES

ops = emu.binding("alignment_energy")
# (C, D). Not many points in few dimensions: 300 random points in 3-D have pairs at cosine distance ~5e-5,
# where 1 / D in float32 is off by 4e-4 relative on the CPU op itself (input conditioning, not the kernels).
SHAPES = [(2, 1), (3, 4), (37, 5), (130, 16), (300, 8)]
BIG = (2100, 4)  # several knn column tiles (kKnnTileCols = 2048)


def inputs(n, d, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype),
            torch.randn(n, d, generator=g, dtype=torch.float64).to(dtype))


def check(p, d, mode, k, metric):
    codes = MODES.index(mode), k, METRICS.index(metric)  # the raw ops take the names' codes
    e, per = ops.alignment_energy(p, d, *codes)
    re, rper = torch.ops.facekernels.alignment_energy(p.double(), d.double(), *codes)
    assert e.dtype == p.dtype and per.shape == (p.shape[0],)
    assert not torch.isnan(per).any()
    torch.testing.assert_close(per.double(), rper, **tolerance("cpu", p.dtype, "alignment_energy"))
    torch.testing.assert_close(e.double(), re, **tolerance("cpu", p.dtype, "alignment_energy"))


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
@pytest.mark.parametrize("mode", ["inverse_distance", "knn"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_matches_cpu_op(shape, dtype, mode, metric):
    n, dim = shape
    p, d = inputs(n, dim, dtype, n * 7 + dim)
    for k in sorted({1, min(5, n - 1), n - 1}) if mode == "knn" else [1]:
        check(p, d, mode, k, metric)


def test_strided_inputs_and_duplicate_points():
    """Transposed (column-major) inputs go through the preparation kernel's strides; repeated points make
    coincident pairs (distance 0 within the tolerance) and ties in the knn heaps."""
    p, d = inputs(60, 7, torch.float32, 3)
    p[10:20] = p[0]
    p = p.t().contiguous().t()
    d = d.t().contiguous().t()
    assert not p.is_contiguous()
    for mode in ("inverse_distance", "knn"):
        for metric in ("cosine", "euclidean"):
            check(p, d, mode, 12, metric)


@pytest.mark.skipif(emu.build_mode() != "plain", reason="one large case, plain build only (time)")
@pytest.mark.parametrize("mode", ["inverse_distance", "knn"])
def test_several_tiles(mode):
    p, d = inputs(*BIG, torch.float32, 11)
    check(p, d, mode, 3, "euclidean")


def test_zero_direction_is_refused():
    p, d = inputs(10, 3, torch.float32, 5)
    d[4] = 0
    with pytest.raises(RuntimeError, match=r"directions\[4\] must be a nonzero vector"):
        ops.alignment_energy(p, d, 0, 1, 0)  # inverse_distance, cosine
    emu.binding("alignment_energy")  # the refusal is an argument error, not an emulator report
