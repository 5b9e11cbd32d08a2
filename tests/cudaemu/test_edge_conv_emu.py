"""cuda/edge_conv's kernels (unmodified) run by the CPU emulator through the family's CUDA binding
(csrc/edge_conv/edge_conv_cuda.cpp, unmodified, compiled on the CPU torch: tools/cudaemu/binding/), so the
binding's launch sequences run too: cosine_topk (inverse norms, per row block: list reset, column tiles
offered by cosine_topk_tile, cosine_topk_finish), edge_conv_max (index check with its host
synchronisation, transpose_weights, duplicate_neighbours, build_weights per (batch chunk, neighbour chunk),
max_group) and its backward (bias_gradient, index check, route_gradient, build_weights, accumulate,
accumulate_weight_grads, convert, finish_weight_grads). Compared with torch.ops.facekernels' CPU ops in
float64 on the same (rounded) inputs, in float32, float16 and bfloat16 with the CUDA tests' tolerances
(tests/test_edge_conv.py: TOPK_ATOL, check_edge_cuda). The binding build defines FK_CUDA_EMULATION
(tools/cudaemu/binding/emu_binding.h), under which csrc/core/checks.h checks the CPU tensors as CUDA ones,
so the half paths are reached; their GEMMs run in torch's CPU mm in float16/bfloat16 (float32
accumulation, like cuBLAS's)."""

import pytest
import torch

import emu

ops = emu.binding("edge_conv")
F32 = torch.float32
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
# tests/test_edge_conv.py's TOPK_ATOL for cuda: values are float64 recomputations rounded to the dtype.
TOPK_ATOL = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}
# tests/test_edge_conv.py's check_edge_cuda: the forward's rtol = atol per dtype.
EDGE_TOL = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}


def randn(*shape, seed, dtype=F32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=torch.float64).to(dtype)


def check_topk(x, k, y=None):
    values, indices = ops.cosine_topk(x, k, y)
    ref_values, ref_indices = torch.ops.facekernels.cosine_topk(x.double(), k, None if y is None else y.double())
    assert values.dtype == x.dtype and indices.dtype == torch.int64 and values.shape == ref_values.shape
    torch.testing.assert_close(indices, ref_indices, rtol=0, atol=0)
    torch.testing.assert_close(values.double(), ref_values, rtol=0, atol=TOPK_ATOL[x.dtype])


TOPK = [(2, 16, 37, 50, 5), (1, 3, 1, 1, 1), (3, 8, 20, 20, 20), (2, 7, 9, 33, 1), (2, 5, 40, 3, 2),
        (1, 12, 70, 300, 7)]  # (B, C, N, M, k)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("shape", TOPK, ids=str)
def test_topk_matches_cpu_op(shape, dtype):
    b, c, n, m, k = shape
    x, y = randn(b, c, n, seed=n, dtype=dtype), randn(b, c, m, seed=m + 1, dtype=dtype)
    check_topk(x, k, y)
    check_topk(x, min(k, n))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_ties_zero_vectors_and_strides(dtype):
    """Small integers: exact in every dtype, so equal columns tie exactly and the smaller index must win;
    zero vectors (inverse norm clamped); a non-contiguous x goes through the binding's contiguous copy."""
    g = torch.Generator().manual_seed(4)
    base = torch.randint(-3, 4, (2, 16, 30), generator=g).to(dtype)
    y = base[:, :, torch.randint(0, 30, (400,), generator=g)]
    x = torch.randint(-3, 4, (2, 16, 25), generator=g).to(dtype)
    x[:, :, 3] = y[:, :, 17]
    x[:, :, 4] = 0
    y[:, :, 9] = 0
    check_topk(x, 12, y)
    check_topk(x.transpose(1, 2).contiguous().transpose(1, 2), 5)


@pytest.mark.skipif(emu.build_mode() != "plain", reason="one larger case, plain build only (time)")
def test_topk_many_rows():
    check_topk(randn(1, 4, 2100, seed=5), 3, randn(1, 4, 40, seed=6))


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_topk_refuses_rows_non_finite_input_leaves_unfilled(dtype):
    """Issue 17: as the CPU op, the binding refuses a row with fewer than k finite similarities (a NaN or inf
    in x or y), with the CPU op's message, and keeps skipping a NaN column of y when the others fill the rows."""
    x, y = randn(2, 6, 9, seed=3, dtype=dtype), randn(2, 6, 40, seed=4, dtype=dtype)
    y[:, 2, 7] = float("nan")
    check_topk(x, 5, y)
    for bad in (float("nan"), float("inf")):
        xb = x.clone()
        xb[1, 0, 4] = bad
        for args in ((xb, 5, y), (xb, 3, None)):
            with pytest.raises(RuntimeError) as cpu:
                torch.ops.facekernels.cosine_topk(*(a.double() if isinstance(a, torch.Tensor) else a for a in args))
            with pytest.raises(RuntimeError, match=r"cosine_topk: x and y must be finite \(no NaN or inf\)") as got:
                ops.cosine_topk(*args)
            assert str(got.value) == str(cpu.value)


def inputs(b, c, n, m, k, seed, dtype=F32):
    x = randn(b, c, n, seed=seed, dtype=dtype)
    idx = torch.randint(0, n, (b, n, k), generator=torch.Generator().manual_seed(seed + 1))
    w_self = (randn(m, n, seed=seed + 2, dtype=torch.float64) / n**0.5).to(dtype)
    w_edge = (randn(m, n, seed=seed + 3, dtype=torch.float64) / n**0.5).to(dtype)
    bias = (randn(m, seed=seed + 4, dtype=torch.float64) * 0.1 - 0.05).to(dtype)
    return x, idx, w_self, w_edge, bias


EDGE = [(2, 3, 5, 4, 2), (1, 1, 1, 1, 1), (3, 4, 6, 6, 6), (2, 5, 7, 3, 1), (2, 3, 9, 11, 4), (2, 8, 16, 16, 4),
        (1, 100, 8, 8, 2), (4, 16, 64, 64, 4), (3, 7, 13, 10, 9), (1, 3, 20, 3, 20)]  # (B, C, N, M, k)


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("shape", EDGE, ids=str)
def test_edge_conv_max_matches_cpu_op(shape, with_bias, dtype):
    x, idx, w_self, w_edge, bias = inputs(*shape, seed=sum(shape), dtype=dtype)
    bias = bias if with_bias else None
    out, winner = ops.edge_conv_max(x, idx, w_self, w_edge, bias)
    ref, ref_winner = torch.ops.facekernels.edge_conv_max(x.double(), idx, w_self.double(), w_edge.double(),
                                                          None if bias is None else bias.double())
    assert out.dtype == dtype and winner.dtype == torch.int32 and winner.shape == ref_winner.shape
    tol = EDGE_TOL[dtype]
    torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol)
    # Winners agree except on near-ties at the dtype's precision (pre-activations are stored in it; at
    # least 98% agree in bfloat16 on these inputs); the backward below is fed the emulated winner on both sides.
    assert (winner == ref_winner).double().mean() > 0.95

    g = randn(*out.shape, seed=7, dtype=dtype)
    for need_x, need_w in ((True, True), (True, False), (False, True)):
        got = ops._edge_conv_max_backward(g, x, idx, w_self, w_edge, winner, bias is not None, need_x, need_w)
        want = torch.ops.facekernels._edge_conv_max_backward(g.double(), x.double(), idx, w_self.double(),
                                                             w_edge.double(), winner, bias is not None, need_x,
                                                             need_w)
        for a, r in zip(got, want):
            if r.numel():
                assert a.dtype == dtype and not torch.isnan(a).any()
                if dtype == F32:
                    torch.testing.assert_close(a.double(), r, rtol=1e-3, atol=1e-3)
                else:  # check_edge_cuda's half-precision gradient bound (in norm)
                    assert (a.double() - r).norm() <= 0.1 * r.norm() + 1e-2


def test_index_out_of_range_is_refused():
    x, idx, w_self, w_edge, bias = inputs(2, 3, 5, 4, 2, seed=1)
    idx[1, 2, 1] = 5
    with pytest.raises(RuntimeError, match="idx"):
        ops.edge_conv_max(x, idx, w_self, w_edge, bias)


def test_float64_is_refused_as_on_cuda():
    """The binding build checks dtypes as the CUDA build does (FK_CUDA_EMULATION): float64 is refused."""
    x = randn(1, 3, 4, seed=2, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"cosine_topk: x must be float16, bfloat16 or float32 on CUDA, got float64"):
        ops.cosine_topk(x, 2)
