"""cuda/st_graph_conv's launchers (unmodified kernels, float32 buffers as the binding passes them) run by the
CPU emulator against float64 references of their contracts (cuda/st_graph_conv/st_graph_conv.h, the
contracts of the CPU kernels the CPU op runs), CUDA float32 tolerance of tests/devices.py (atol scaled by
the terms summed)."""

import math

import pytest
import torch

import emu

sg = emu.family("st_graph_conv")
F32 = torch.float32
SHAPES = [(1, 1, 1, 1), (2, 3, 4, 5), (3, 16, 7, 25), (2, 64, 30, 18), (1, 5, 300, 3)]  # (K, C, T, V)
if sg.racecheck():
    SHAPES = SHAPES[:4]


def r(*shape):
    return torch.randn(shape, dtype=torch.float64).float()


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_launchers_match_their_contracts(shape):
    K, C, T, V = shape
    # accumulate, add_to_rows, add_over_time
    dst, src = r(C * T * V), r(C * T * V)
    d = sg.dev(dst)
    assert sg("emu_sgc_accumulate", d, sg.dev(src), C * T * V) == 0
    emu.check(d.host(), dst.double() + src.double(), F32)
    z, rv = r(C * T, V), r(C * T)
    d = sg.dev(z)
    assert sg("emu_sgc_add_to_rows", d, sg.dev(rv), C * T, V) == 0
    emu.check(d.host(), z.double() + rv.double()[:, None], F32)
    out, table = r(C, T, V), r(C, V)
    d = sg.dev(out)
    assert sg("emu_sgc_add_over_time", d, sg.dev(table), C, T, V) == 0
    emu.check(d.host(), out.double() + table.double()[:, None, :], F32)
    # column_sums, bias_table
    a, bias = r(K, V, V), r(K, C)
    colsum = sg.empty((K, V), F32)
    assert sg("emu_sgc_column_sums", sg.dev(a), K, V, colsum) == 0
    ref_colsum = a.double().sum(1)
    emu.check(colsum.host(), ref_colsum, F32, math.sqrt(V))
    tbl = sg.empty((C, V), F32)
    assert sg("emu_sgc_bias_table", sg.dev(bias), colsum, K, C, V, tbl) == 0
    emu.check(tbl.host(), torch.einsum("kc,kw->cw", bias.double(), colsum.host().double()), F32, math.sqrt(K * V))
    # sum_over_time, bias_gradient, adjacency_bias_gradient
    g = r(C, T, V)
    sums = sg.empty((C, V), F32)
    assert sg("emu_sgc_sum_over_time", sg.dev(g), C, T, V, sums) == 0
    emu.check(sums.host(), g.double().sum(1), F32, math.sqrt(T))
    s64, c64 = sums.host().double(), colsum.host().double()
    gb0, ga0 = r(K, C), r(K, V, V)
    gb, ga = sg.dev(gb0), sg.dev(ga0)
    assert sg("emu_sgc_bias_gradient", sums, colsum, K, C, V, gb) == 0
    emu.check(gb.host(), gb0.double() + torch.einsum("cw,kw->kc", s64, c64), F32, math.sqrt(V * T))
    assert sg("emu_sgc_adjacency_bias_gradient", sums, sg.dev(bias), K, C, V, ga) == 0
    ref = ga0.double() + torch.einsum("kc,cw->kw", bias.double(), s64)[:, None, :]
    emu.check(ga.host(), ref, F32, math.sqrt(C * T))


def test_empty_shapes_launch_nothing():
    assert sg("emu_sgc_accumulate", None, None, 0) == 0
    assert sg("emu_sgc_sum_over_time", None, 0, 5, 3, None) == 0


def test_grid_cap_reaches_the_grid_stride_loops():
    """In the grid-capped run, a launch wider than the cap must run capped (else that run proves nothing)."""
    before = sg.lib.cudaemu_capped_launches()
    n = 5000
    dst, src = r(n), r(n)
    d = sg.dev(dst)
    assert sg("emu_sgc_accumulate", d, sg.dev(src), n) == 0
    emu.check(d.host(), dst.double() + src.double(), F32)
    assert (sg.lib.cudaemu_capped_launches() > before) == emu.grid_capped()
