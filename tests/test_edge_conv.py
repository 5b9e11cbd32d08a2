"""cosine_topk and edge_conv_max (issue 5) against float64 references written here, on every device
(tests/devices.py: CPU float32/float64; CUDA float32/float16/bfloat16, marked `cuda` and skipped without
a GPU). Tests that exercise one backend's own paths (the CPU SIMD levels, kernel blocking and thread
counts; CUDA's messages, autocast and agreement with the CPU result) stay per device.

cosine_topk: values and indices against a stable descending sort of the float64 similarity matrix
(k = 1, k = M, M != N, y None, tiles crossing the 2048-column boundary, many rows), exact ties between
duplicate columns (smaller index first), a gallery of identical vectors, zero vectors, strided inputs,
empty batches, non-differentiability, the torch.library contract, torch.compile and every bad input.

edge_conv_max: values and gradients (x, w_self, w_edge, bias) against a per-neighbour float64 loop with
gathers, for random idx, a cosine kNN graph, k = 1, k = N, M != N, duplicate neighbours and ties in the
max (the first maximal j gets the gradient), bias None, neighbour groups and channel blocks (large N M,
one batch element), strided inputs, empty inputs, gradcheck, opcheck on both ops, torch.compile
(fullgraph), the SIMD levels, double backward and every bad input.

The fake (meta) kernels refuse what the native kernels refuse (test_*_fake_checks).
"""

import pytest
import torch
from helpers import (
    arguments,
    assert_compiled_matches_eager,
    assert_fake_refuses_like_native,
    assert_tracing_refuses_like_native,
    run_at_each_cpu_capability,
)
from devices import DEVICE_DTYPES, DEVICES, tolerance
from facekernels.ops.edge_conv import cosine_topk, edge_conv_max

CUDA = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture(autouse=True)
def _full_precision_matmul():
    """CUDA float32 GEMMs without TF32 (the tolerances below are float32's)."""
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before

# ---- cosine_topk ----------------------------------------------------------------------------------


def reference_topk(x, k, y=None):
    """Stable descending sort of the float64 cosine similarities: equal values keep index order."""
    x = x.double()
    y = x if y is None else y.double()
    inv_x = 1 / x.norm(dim=1).clamp_min(1e-12)
    inv_y = 1 / y.norm(dim=1).clamp_min(1e-12)
    sim = torch.einsum("bcn,bcm->bnm", x, y) * inv_x[:, :, None] * inv_y[:, None, :]
    order = torch.sort(-sim, dim=-1, stable=True).indices[..., :k]
    return sim.gather(-1, order), order


def check_topk(x, k, y=None, atol=None, device="cpu"):
    """Indices exactly those of the float64 reference on the same (rounded) inputs; values to the dtype
    (atol only: tests/devices.py's "cosine_topk" rows, tighter than the defaults).
    x and y are CPU tensors, moved to `device` for the op."""
    values, indices = cosine_topk(x.to(device), k, None if y is None else y.to(device))
    ref_values, ref_indices = reference_topk(x, k, y)
    assert values.device.type == torch.device(device).type
    assert values.dtype == x.dtype and indices.dtype == torch.int64
    assert values.shape == ref_values.shape
    torch.testing.assert_close(indices.cpu(), ref_indices, rtol=0, atol=0)
    tol = atol if atol is not None else tolerance(device, x.dtype, "cosine_topk")["atol"]
    torch.testing.assert_close(values.cpu().double(), ref_values, rtol=0, atol=tol)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize(
    "b,c,n,m,k",
    [(2, 16, 37, 50, 5), (1, 3, 1, 1, 1), (3, 8, 20, 20, 20), (2, 7, 9, 33, 1), (1, 12, 300, 2100, 7), (2, 5, 40, 3, 2),
     (1, 24, 2100, 9000, 7)],
)
def test_topk_matches_reference(b, c, n, m, k, device, dtype):
    # (1, 24, 2100, 9000, 7): several row blocks and column tiles on either device.
    x = torch.randn(b, c, n).to(dtype)
    y = torch.randn(b, c, m).to(dtype)
    check_topk(x, k, y, device=device)
    check_topk(x, min(k, n), device=device)


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
def test_topk_ties_and_zero_vectors(device, dtype):
    # Small integers: exact in every dtype, so equal columns tie exactly and the smaller index wins.
    base = torch.randint(-3, 4, (2, 16, 30)).to(dtype)
    y = base[:, :, torch.randint(0, 30, (400,))]
    x = torch.randint(-3, 4, (2, 16, 25)).to(dtype)
    x[:, :, 3] = y[:, :, 17]
    x[:, :, 4] = 0
    y[:, :, 9] = 0
    check_topk(x, 12, y, device=device)
    gallery = torch.randn(1, 32, 1).expand(1, 32, 3000).contiguous().to(dtype)
    _, indices = cosine_topk(torch.randn(1, 32, 5).to(dtype).to(device), 4, gallery.to(device))
    assert (indices.cpu() == torch.arange(4)).all()


@pytest.mark.parametrize("device", DEVICES)
def test_topk_strided_and_empty(device):
    x = torch.randn(2, 30, 9).transpose(1, 2)
    y = torch.randn(2, 9, 80)[:, :, ::2]
    check_topk(x, 5, y, device=device)
    values, _ = cosine_topk(torch.randn(0, 4, 6, device=device), 3)
    assert values.shape == (0, 6, 3)


@pytest.mark.parametrize("k", [1, 6, 64])
def test_topk_self(k):
    x = torch.randn(2, 10, 64)
    check_topk(x, k)
    _, indices = cosine_topk(x, 1)
    assert (indices[..., 0] == torch.arange(64)).all()  # each column is its own nearest


@pytest.mark.parametrize("c,n,k", [(5, 1, 1), (3, 7, 7), (64, 37, 4), (128, 256, 4), (17, 100, 9)])
def test_topk_self_symmetric_gram(c, n, k):
    # float32 x against itself with a task per batch element (B >= 2 x threads): the symmetric Gram
    # kernel, tiles of 6 x 16 positions with partial ones at the edges; also duplicated columns (ties).
    b = max(8, 2 * torch.get_num_threads())  # at least two batch elements per thread: one task each
    x = torch.randn(b, c, n)
    check_topk(x, k)
    base = torch.randint(-3, 4, (b, c, max(1, n // 3))).float()
    check_topk(base[:, :, torch.randint(0, base.shape[2], (n,))].contiguous(), k)


@pytest.mark.parametrize("m", [40, 3000])
def test_topk_nan_similarities_never_selected(m):
    # A NaN column of y has NaN similarity with every x: never selected while the other columns fill the
    # rows. M = 40 takes the whole-row selection, 3000 the streaming one (several column tiles).
    b = max(4, 2 * torch.get_num_threads())
    x = torch.randn(b, 6, 9)
    y = torch.randn(b, 6, m)
    y[:, 2, 7] = float("nan")
    values, indices = cosine_topk(x, 5, y)
    ref_values, ref_indices = reference_topk(x, 5, torch.cat((y[:, :, :7], y[:, :, 8:]), 2))  # y without column 7
    ref_indices = ref_indices + (ref_indices >= 7).long()
    assert not (indices == 7).any()
    torch.testing.assert_close(indices, ref_indices, rtol=0, atol=0)
    torch.testing.assert_close(values.double(), ref_values, rtol=0, atol=1e-6)


@pytest.mark.parametrize("m", [40, 3000])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_topk_refuses_rows_non_finite_input_leaves_unfilled(m, bad):
    # Issue 17: a row with fewer than k finite similarities (a NaN or inf in its column of x, or in all but
    # a few columns of y) is refused, naming the non-finite input, instead of being padded with index -1
    # (which nn.CCC handed to edge_conv_max as an out-of-range index).
    b = max(4, 2 * torch.get_num_threads())
    x, y = torch.randn(b, 6, 9), torch.randn(b, 6, m)
    x[1:, 0, 4] = bad
    with pytest.raises(RuntimeError, match=rf"cosine_topk: x and y must be finite \(no NaN or inf\): x\[1, :, 4\] has "
                                           rf"a finite cosine similarity to only 0 of the {m} columns of y, fewer than "
                                           rf"k = 5$"):
        cosine_topk(x, 5, y)
    x = torch.randn(b, 6, 9)
    y[:, 1, 3:] = bad  # three finite columns left for every row
    cosine_topk(x, 3, y)
    with pytest.raises(RuntimeError, match=rf"x\[0, :, 0\] has a finite cosine similarity to only 3 of the {m} "
                                           rf"columns of y, fewer than k = 4"):
        cosine_topk(x, 4, y)
    # Against itself (the Gram and whole-row paths): the row of the NaN column cannot be filled.
    x[2, 3, 5] = bad
    with pytest.raises(RuntimeError, match=r"x\[2, :, 5\] has a finite cosine similarity to only 0 of the 9 columns "
                                           r"of x \(y = x\), fewer than k = 3"):
        cosine_topk(x, 3)
    with pytest.raises(RuntimeError, match=r"x and y must be finite"):
        cosine_topk(x.double(), 1)


def test_topk_many_rows_and_columns():
    # Several row blocks per batch element and several column tiles (with a partial last one).
    x = torch.randn(1, 24, 700)
    y = torch.randn(1, 24, 4500)
    check_topk(x, 10, y)


def test_topk_large_gallery():
    # C * M above 2^20: the gallery is read in place and each row block's candidates gathered at the end;
    # duplicates in it (exact ties) and a run of identical columns (the exact-pruning path, read in place).
    y = torch.randint(-2, 3, (1, 260, 4100)).float()
    y[:, :, 3000:3400] = y[:, :, 7:8]
    y[:, :, 100] = y[:, :, 4000]
    x = torch.randint(-2, 3, (1, 260, 40)).float()
    x[:, :, 5] = y[:, :, 7]
    x[:, :, 6] = y[:, :, 100]
    check_topk(x, 6, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_topk_ties_between_duplicate_columns(dtype):
    # Small integers: every float64 similarity of the reference is exact, so duplicates tie exactly.
    base = torch.randint(-3, 4, (2, 16, 30)).to(dtype)
    y = base[:, :, torch.randint(0, 30, (400,))]  # many duplicate columns at scattered positions
    x = torch.randint(-3, 4, (2, 16, 25)).to(dtype)
    x[:, :, 3] = y[:, :, 17]
    check_topk(x, 12, y)
    check_topk(y, 9)


@pytest.mark.parametrize("m", [1000, 3000])
def test_topk_identical_gallery(m):
    # Every column equal: all M candidates stay within the margin (the exact-pruning path). M = 1000 fits
    # one tile, where the whole-row selection finds more candidates than a row's buffer holds and falls
    # back to the streaming one.
    y = torch.randn(1, 32, 1).expand(1, 32, m).contiguous()
    x = torch.randn(1, 32, 5)
    _, indices = cosine_topk(x, 4, y)
    assert (indices == torch.arange(4)).all()
    check_topk(x, 4, y)


def test_topk_zero_vectors():
    x = torch.randn(2, 6, 11)
    y = torch.randn(2, 6, 13)
    x[:, :, 2] = 0
    y[:, :, 5] = 0
    y[:, :, 9] = 0
    check_topk(x, 13, y)
    values, indices = cosine_topk(x, 3, y)
    assert (values[:, 2] == 0).all() and (indices[:, 2] == torch.arange(3)).all()


def test_topk_strided():
    x = torch.randn(2, 30, 9).transpose(1, 2)  # [2, 9, 30] with stride 1 along the batch... channels
    y = torch.randn(2, 9, 80)[:, :, ::2]
    assert not x.is_contiguous() and not y.is_contiguous()
    check_topk(x, 5, y)
    check_topk(x, 4)


def test_topk_empty():
    values, indices = cosine_topk(torch.randn(0, 4, 6), 3, torch.randn(0, 4, 8))
    assert values.shape == (0, 6, 3) and indices.shape == (0, 6, 3)
    values, indices = cosine_topk(torch.randn(2, 4, 0), 3, torch.randn(2, 4, 8))
    assert values.shape == (2, 0, 3)


def test_topk_zero_channels():
    # Every vector is zero, so every similarity is 0 (F.normalize of a zero vector): ties, smaller m first.
    for y in (None, torch.randn(2, 0, 5)):
        values, indices = cosine_topk(torch.randn(2, 0, 3), 2, y)
        assert values.shape == (2, 3, 2) and (values == 0).all()
        assert (indices == torch.tensor([0, 1])).all()


def test_topk_not_differentiable():
    x = torch.randn(1, 5, 7, requires_grad=True)
    values, indices = cosine_topk(x, 2)
    assert not values.requires_grad and not indices.requires_grad


def test_topk_opcheck():
    op = torch.ops.facekernels.cosine_topk.default
    torch.library.opcheck(op, (torch.randn(2, 5, 9), 3))
    torch.library.opcheck(op, (torch.randn(2, 5, 9, dtype=torch.float64), 4, torch.randn(2, 5, 12, dtype=torch.float64)))


def test_topk_compile():
    torch._dynamo.reset()

    def f(x, y):
        values, indices = cosine_topk(x, 3, y)
        return values * 2, indices

    x, y = torch.randn(2, 6, 10), torch.randn(2, 6, 14)
    compiled = torch.compile(f, fullgraph=True, dynamic=False)
    for a, b in zip(compiled(x, y), f(x, y)):
        torch.testing.assert_close(a, b)


def test_topk_autocast():
    x, y = torch.randn(1, 8, 10, dtype=torch.bfloat16), torch.randn(1, 8, 12)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        values, _ = cosine_topk(x, 2, y)
    assert values.dtype == torch.float32
    check_topk(x.float(), 2, y)


def test_topk_bad_inputs():
    x = torch.randn(2, 4, 6)
    with pytest.raises(RuntimeError, match=r"cosine_topk: x must be a 3-D tensor \[B, C, N\], got a 2-D tensor"):
        cosine_topk(torch.randn(4, 6), 2)
    with pytest.raises(RuntimeError, match=r"cosine_topk: x must be float32 or float64 on CPU, got int64"):
        cosine_topk(torch.ones(2, 4, 6, dtype=torch.int64), 2)
    with pytest.raises(RuntimeError, match=r"cosine_topk: k must be in \[1, M\] = \[1, 6\], got 0"):
        cosine_topk(x, 0)
    with pytest.raises(RuntimeError, match=r"cosine_topk: k must be in \[1, M\] = \[1, 8\], got 9"):
        cosine_topk(x, 9, torch.randn(2, 4, 8))
    with pytest.raises(RuntimeError, match=r"cosine_topk: y must be \[B, C, M\] with B = 2 and C = 4 as x"):
        cosine_topk(x, 2, torch.randn(3, 4, 8))
    with pytest.raises(RuntimeError, match=r"cosine_topk: y must be \[B, C, M\] with B = 2 and C = 4 as x"):
        cosine_topk(x, 2, torch.randn(2, 5, 8))
    with pytest.raises(RuntimeError, match=r"cosine_topk: y must be a 3-D tensor \[B, C, M\]"):
        cosine_topk(x, 2, torch.randn(4, 8))
    with pytest.raises(RuntimeError, match=r"cosine_topk: y must have the same dtype as x \(float32\), got float64"):
        cosine_topk(x, 2, torch.randn(2, 4, 8, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=r"cosine_topk: y must be on the same device as x \(cpu\), got meta"):
        cosine_topk(x, 2, torch.randn(2, 4, 8, device="meta"))


# ---- edge_conv_max --------------------------------------------------------------------------------


def reference_zs(x, idx, w_self, w_edge, bias):
    """float64 pre-activations [B, C, M, k], one neighbour at a time (a gather along the positions), so
    equal neighbour lists give bitwise-equal pre-activations."""
    x, w_self, w_edge = x.double(), w_self.double(), w_edge.double()
    B, C, N = x.shape
    zs = []
    for j in range(idx.shape[2]):
        xj = torch.gather(x, 2, idx[:, :, j].unsqueeze(1).expand(B, C, N))
        z = x @ w_self.T + (xj - x) @ w_edge.T
        if bias is not None:
            z = z + bias.double()
        zs.append(z)
    return torch.stack(zs, -1)


def reference(x, idx, w_self, w_edge, bias=None):
    """max_j ReLU(z_j), the gradient routed to the first maximal j (gather at that j), 0 where max <= 0."""
    z = reference_zs(x, idx, w_self, w_edge, bias)
    first = (z == z.amax(-1, keepdim=True)).to(torch.int8).argmax(-1, keepdim=True)
    return z.gather(-1, first).squeeze(-1).relu()


def make_inputs(b, c, n, m, k, dtype=torch.float64, bias=True, idx=None):
    x = torch.randn(b, c, n, dtype=dtype, requires_grad=True)
    if idx is None:
        idx = torch.randint(0, n, (b, n, k))
    w_self = (torch.randn(m, n, dtype=dtype) / n**0.5).requires_grad_()
    w_edge = (torch.randn(m, n, dtype=dtype) / n**0.5).requires_grad_()
    bias_t = (torch.randn(m, dtype=dtype) * 0.1).requires_grad_() if bias else None
    return x, idx, w_self, w_edge, bias_t


def check_edge(x, idx, w_self, w_edge, bias):
    """The op on x's device and dtype against the float64 reference: tests/devices.py's "edge_conv" rows,
    gradients 10x."""
    tol = tolerance(x.device, x.dtype, "edge_conv")
    leaves = [t for t in (x, w_self, w_edge, bias) if t is not None and t.requires_grad]
    out = edge_conv_max(x, idx, w_self, w_edge, bias)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    mapping = dict(zip([id(t) for t in leaves], ref_leaves))
    args = [mapping.get(id(t), t) if t is not None else None for t in (x, w_self, w_edge, bias)]
    ref = reference(args[0], idx, args[1], args[2], args[3])
    assert out.dtype == x.dtype and out.shape == ref.shape and out.is_contiguous()
    torch.testing.assert_close(out.double(), ref, **tol)
    g = torch.randn_like(ref)
    grads = torch.autograd.grad(out, leaves, g.to(out.dtype))
    ref_grads = torch.autograd.grad(ref, ref_leaves, g)
    for a, r in zip(grads, ref_grads):
        assert a.dtype == x.dtype
        torch.testing.assert_close(a.double(), r, **tolerance(x.device, x.dtype, "edge_conv", 10))


def check_edge_cuda(x, idx, w_self, w_edge, bias, dtype):
    """The op on CUDA in `dtype` (float32 accumulation) against the float64 reference on the same rounded
    inputs; in half precision near-ties in the max may pick another neighbour, so gradients compare in
    norm there (tolerances: tests/devices.py's "edge_conv" rows, float32 gradients 10x)."""
    dev = [t.detach().to("cuda", dtype).requires_grad_() if t is not None else None for t in (x, w_self, w_edge, bias)]
    out = edge_conv_max(dev[0], idx.to("cuda"), dev[1], dev[2], dev[3])
    assert out.dtype == dtype and out.device.type == "cuda"
    ref_in = [t.detach().to(dtype).double().requires_grad_() if t is not None else None for t in (x, w_self, w_edge, bias)]
    ref = reference(ref_in[0], idx, ref_in[1], ref_in[2], ref_in[3])
    torch.testing.assert_close(out.cpu().double(), ref, **tolerance("cuda", dtype, "edge_conv"))
    g = torch.randn_like(ref)
    leaves = [t for t in dev if t is not None]
    ref_leaves = [t for t in ref_in if t is not None]
    grads = torch.autograd.grad(out, leaves, g.to("cuda", dtype))
    ref_grads = torch.autograd.grad(ref, ref_leaves, g)
    for a, r in zip(grads, ref_grads):
        if dtype == torch.float32:
            torch.testing.assert_close(a.cpu().double(), r, **tolerance("cuda", dtype, "edge_conv", 10))
        else:
            assert (a.cpu().double() - r).norm() <= 0.1 * r.norm() + 1e-2


def check_edge_on(device, dtype, x, idx, w_self, w_edge, bias):
    """Inputs made by make_inputs (float64, CPU), run in `dtype` on `device`."""
    if torch.device(device).type == "cuda":
        check_edge_cuda(x, idx, w_self, w_edge, bias, dtype)
        return
    leaves = [t.detach().to(dtype).requires_grad_() if t is not None else None for t in (x, w_self, w_edge, bias)]
    check_edge(leaves[0], idx, leaves[1], leaves[2], leaves[3])


@pytest.mark.parametrize("device,dtype", DEVICE_DTYPES)
@pytest.mark.parametrize(
    "b,c,n,m,k",
    [(2, 3, 5, 4, 2), (1, 1, 1, 1, 1), (3, 4, 6, 6, 6), (2, 5, 7, 3, 1), (2, 3, 9, 11, 4), (2, 8, 16, 16, 4),
     (1, 100, 8, 8, 2), (4, 16, 64, 64, 4)],
)
def test_edge_matches_reference(b, c, n, m, k, device, dtype):
    check_edge_on(device, dtype, *make_inputs(b, c, n, m, k))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [1, 2, 3, 4, 5, 9])
def test_edge_backward_by_gemms_and_routed(k, dtype):
    # k = 1 runs the backward as GEMMs, k > 1 as routed products against each output's winner's panel
    # (CPU); both against the reference, with random neighbours (repeats included), odd sizes, a negative
    # bias so that some outputs are inactive.
    b, c, n, m = 3, 7, 13, 10
    idx = torch.randint(0, n, (b, n, k))
    x, _, w_self, w_edge, bias = make_inputs(b, c, n, m, k, dtype, idx=idx)
    with torch.no_grad():
        bias.sub_(0.5)
    check_edge(x, idx, w_self, w_edge, bias)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("b,c,n,m,k", [(1, 37, 150, 70, 2), (3, 19, 97, 130, 5), (2, 9, 70, 5, 16), (1, 3, 20, 3, 20)])
@pytest.mark.parametrize("threads", [1, 3])
def test_edge_routed_backward_blocks_and_chunks(b, c, n, m, k, dtype, threads):
    # The routed backward over several column blocks (the last partial), several chunks of steps (the
    # last partial; k = 16 and k = N make the chunks short), channels not a multiple of 8, M below 8, and
    # one batch element split over threads; random neighbours with a hub (one position everyone's
    # neighbour j = 0) and a negative bias (inactive outputs).
    idx = torch.randint(0, n, (b, n, k))
    idx[:, :, 0] = 1
    x, _, w_self, w_edge, bias = make_inputs(b, c, n, m, k, dtype, idx=idx)
    with torch.no_grad():
        bias.sub_(0.3)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        check_edge(x, idx, w_self, w_edge, bias)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("k", [4096, 4097])
def test_edge_many_more_neighbours_than_positions(k):
    # k > N is allowed (repeats); the routed backward serves k <= 4096, the GEMMs beyond.
    b, c, n, m = 2, 3, 5, 4
    idx = torch.randint(0, n, (b, n, k))
    check_edge(*make_inputs(b, c, n, m, k, torch.float64, idx=idx))


def test_edge_without_bias():
    check_edge(*make_inputs(2, 6, 10, 7, 3, bias=False))


def test_edge_knn_graph():
    x, _, w_self, w_edge, bias = make_inputs(2, 12, 16, 16, 4, torch.float32)
    _, idx = cosine_topk(x.detach(), 4)
    check_edge(x, idx, w_self, w_edge, bias)


def test_edge_neighbour_groups_and_channel_blocks():
    # N M above 2^22 / k: one neighbour per group (several GEMMs per task), and one batch element with
    # enough channels to be split into blocks.
    check_edge(*make_inputs(1, 70, 1500, 1500, 3, torch.float64, bias=True))


def test_edge_duplicate_neighbours_and_ties():
    b, c, n, m, k = 2, 5, 9, 6, 5
    idx = torch.randint(0, n, (b, n, k))
    idx[:, :, 3] = idx[:, :, 1]  # j = 3 repeats j = 1: the max ties, the gradient goes to j = 1
    idx[:, :, 4] = idx[:, :, 0]
    idx[1, 2, :] = 4  # one position with the same neighbour five times
    x, _, w_self, w_edge, bias = make_inputs(b, c, n, m, k, idx=idx)
    check_edge(x, idx, w_self, w_edge, bias)
    # Every neighbour list equal: all k pre-activations tie; j = 0 wins everywhere.
    idx_all = idx[:, :, :1].expand(b, n, k).contiguous()
    check_edge(x, idx_all, w_self, w_edge, bias)
    check_edge(x, idx_all[:, :, :1], w_self, w_edge, bias)


def test_edge_relu_inactive_gets_no_gradient():
    x, idx, w_self, w_edge, _ = make_inputs(2, 3, 5, 4, 2)
    bias = torch.full((4,), -100.0, dtype=torch.float64, requires_grad=True)
    out = edge_conv_max(x, idx, w_self, w_edge, bias)
    assert (out == 0).all()
    out.sum().backward()
    assert (x.grad == 0).all() and (bias.grad == 0).all() and (w_self.grad == 0).all()


def test_edge_gradcheck():
    x, idx, w_self, w_edge, bias = make_inputs(2, 3, 6, 5, 3)
    assert torch.autograd.gradcheck(lambda *a: edge_conv_max(a[0], idx, *a[1:]), (x, w_self, w_edge, bias))
    assert torch.autograd.gradcheck(lambda *a: edge_conv_max(a[0], idx, *a[1:]), (x, w_self, w_edge))


@pytest.mark.parametrize("k", [3, 6])
def test_edge_partial_gradients(k):
    x, idx, w_self, w_edge, bias = make_inputs(2, 4, 6, 5, k)
    full = torch.autograd.grad(edge_conv_max(x, idx, w_self, w_edge, bias).sum(), (x, w_self, w_edge, bias))
    only_x = torch.autograd.grad(edge_conv_max(x, idx, w_self.detach(), w_edge.detach()).sum(), (x,))
    only_w = torch.autograd.grad(edge_conv_max(x.detach(), idx, w_self, w_edge, bias).sum(), (w_edge, bias))
    torch.testing.assert_close(only_w[0], full[2])
    torch.testing.assert_close(only_w[1], full[3])
    ref_x = torch.autograd.grad(edge_conv_max(x, idx, w_self.detach(), w_edge.detach(), bias.detach()).sum(), (x,))
    torch.testing.assert_close(ref_x[0], full[0])
    assert only_x[0].shape == x.shape


def test_edge_strided():
    b, c, n, m, k = 2, 4, 7, 5, 3
    x = torch.randn(b, n, c, dtype=torch.float64).transpose(1, 2).requires_grad_()
    idx = torch.randint(0, n, (b, k, n)).transpose(1, 2)
    w_self = torch.randn(n, m, dtype=torch.float64).T.requires_grad_()
    w_edge = torch.randn(m, 2 * n, dtype=torch.float64)[:, ::2].requires_grad_()
    bias = torch.randn(2 * m, dtype=torch.float64)[::2].requires_grad_()
    assert not (x.is_contiguous() or idx.is_contiguous() or w_self.is_contiguous() or w_edge.is_contiguous())
    check_edge(x, idx, w_self, w_edge, bias)
    # A non-contiguous upstream gradient.
    out = edge_conv_max(x, idx, w_self, w_edge, bias)
    g = torch.randn(b, m, c, dtype=torch.float64).transpose(1, 2)
    (gx,) = torch.autograd.grad(out, (x,), g, retain_graph=True)
    (gx_ref,) = torch.autograd.grad(out, (x,), g.contiguous())
    torch.testing.assert_close(gx, gx_ref)


def test_edge_empty():
    x, _, w_self, w_edge, bias = make_inputs(0, 3, 5, 4, 2)
    idx = torch.zeros(0, 5, 2, dtype=torch.int64)
    out = edge_conv_max(x, idx, w_self, w_edge, bias)
    assert out.shape == (0, 3, 4)
    out.sum().backward()
    assert x.grad.shape == x.shape and (w_self.grad == 0).all() and (bias.grad == 0).all()
    x, idx, w_self, w_edge, bias = make_inputs(2, 0, 5, 4, 2)
    assert edge_conv_max(x, idx, w_self, w_edge, bias).shape == (2, 0, 4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("k", [2, 6])
def test_edge_no_positions_bias_gradient(k, dtype):
    # N = 0: no edge terms, the output is ReLU(bias) everywhere, and the bias still gets its gradient.
    x = torch.randn(2, 3, 0, dtype=dtype, requires_grad=True)
    idx = torch.zeros(2, 0, k, dtype=torch.int64)
    w = torch.randn(4, 0, dtype=dtype, requires_grad=True)
    bias = torch.tensor([1.0, -1.0, 2.0, 3.0], dtype=dtype, requires_grad=True)
    out = edge_conv_max(x, idx, w, w, bias)
    torch.testing.assert_close(out, bias.relu().expand(2, 3, 4))
    out.sum().backward()
    torch.testing.assert_close(bias.grad, torch.tensor([6.0, 0.0, 6.0, 6.0], dtype=dtype))
    assert x.grad.shape == x.shape and w.grad.shape == w.shape


def test_edge_opcheck():
    x, idx, w_self, w_edge, bias = make_inputs(2, 3, 6, 5, 3, torch.float32)
    torch.library.opcheck(torch.ops.facekernels.edge_conv_max.default, (x, idx, w_self, w_edge, bias))
    torch.library.opcheck(torch.ops.facekernels.edge_conv_max.default, (x, idx, w_self, w_edge))
    out, winner = torch.ops.facekernels.edge_conv_max.default(x, idx, w_self, w_edge, bias)
    assert winner.dtype == torch.int32 and not winner.requires_grad
    g = torch.randn_like(out)
    backward = torch.ops.facekernels._edge_conv_max_backward.default
    args = (g, x.detach(), idx, w_self.detach(), w_edge.detach(), winner)
    torch.library.opcheck(backward, (*args, True, True, True))
    torch.library.opcheck(backward, (*args, False, True, False))


def test_edge_compile():
    x, idx, w_self, w_edge, bias = make_inputs(2, 4, 8, 6, 3, torch.float32)
    assert_compiled_matches_eager(lambda *a: edge_conv_max(a[0], idx, *a[1:]) * 2, (x, w_self, w_edge, bias))


def test_edge_autocast():
    x, idx, w_self, w_edge, bias = make_inputs(2, 4, 8, 6, 3, torch.float32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = edge_conv_max(x.bfloat16(), idx, w_self, w_edge, bias)
    assert out.dtype == torch.float32


def test_edge_double_backward_raises():
    x, idx, w_self, w_edge, bias = make_inputs(1, 2, 4, 3, 2)
    (gx,) = torch.autograd.grad(edge_conv_max(x, idx, w_self, w_edge, bias).sum(), (x,), create_graph=True)
    with pytest.raises(RuntimeError, match="double backward"):
        gx.sum().backward()


def test_simd_levels_agree(tmp_path):
    script = (
        "import sys, torch, facekernels\n"
        "from facekernels.ops.edge_conv import cosine_topk, edge_conv_max\n"
        "torch.manual_seed(0)\n"
        "x = torch.randn(2, 16, 40, requires_grad=True); idx = torch.randint(0, 40, (2, 40, 4))\n"
        "ws = torch.randn(24, 40, requires_grad=True); we = torch.randn(24, 40, requires_grad=True)\n"
        "out = edge_conv_max(x, idx, ws, we); out.sum().backward()\n"
        "v, i = cosine_topk(x.detach(), 5, torch.randn(2, 16, 3000))\n"
        "x8 = torch.randn(2, 16, 40, requires_grad=True); idx8 = torch.randint(0, 40, (2, 40, 8))\n"
        "out8 = edge_conv_max(x8, idx8, ws, we); g = torch.autograd.grad(out8.sum(), (x8, ws, we))\n"
        "vs, is_ = cosine_topk(torch.randn(2 * torch.get_num_threads() + 2, 16, 50), 4)\n"
        "x3 = torch.randn(3, 21, 150, requires_grad=True); idx3 = torch.randint(0, 150, (3, 150, 3))\n"
        "ws3 = torch.randn(70, 150, requires_grad=True); we3 = torch.randn(70, 150, requires_grad=True)\n"
        "g3 = torch.autograd.grad(edge_conv_max(x3, idx3, ws3, we3).sum(), (x3, ws3, we3))\n"
        "outs = [out.detach(), x.grad, ws.grad, we.grad, v, i, out8.detach(), *g, vs, is_, *g3]\n"
        "torch.save((facekernels.build_info()['cpu_kernels']['edge_conv'], outs), sys.argv[1])\n"
    )
    results = run_at_each_cpu_capability(script, tmp_path)
    base = results["default"][1]
    for level, (used, outs) in results.items():
        for a, b in zip(outs, base):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5, msg=f"{level} ({used}) differs from default")


def test_edge_bad_inputs():
    x, idx, w_self, w_edge, bias = (t.detach() if t.dtype.is_floating_point else t for t in make_inputs(2, 3, 5, 4, 2))
    op = "edge_conv_max"
    bad_idx = idx.clone()
    bad_idx[1, 3, 1] = 5
    with pytest.raises(RuntimeError, match=rf"{op}: idx must hold positions in \[0, N\) = \[0, 5\), got 5 at idx\[1, 3, 1\]"):
        edge_conv_max(x, bad_idx, w_self, w_edge, bias)
    bad_idx[1, 3, 1] = -1
    with pytest.raises(RuntimeError, match=rf"{op}: idx must hold positions in \[0, N\) = \[0, 5\), got -1"):
        edge_conv_max(x, bad_idx, w_self, w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: idx must be int64, got int32"):
        edge_conv_max(x, idx.int(), w_self, w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: idx must be \[B, N, k\] with B = 2 and N = 5 as x, got \[3, 5, 2\]"):
        edge_conv_max(x, torch.zeros(3, 5, 2, dtype=torch.int64), w_self, w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: idx must be \[B, N, k\] with B = 2 and N = 5 as x, got \[2, 4, 2\]"):
        edge_conv_max(x, torch.zeros(2, 4, 2, dtype=torch.int64), w_self, w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: idx must be a 3-D tensor"):
        edge_conv_max(x, torch.zeros(2, 5, dtype=torch.int64), w_self, w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: idx must have at least one neighbour"):
        edge_conv_max(x, torch.zeros(2, 5, 0, dtype=torch.int64), w_self, w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: w_self must be \[M, N\] with N = 5 as x, got \[4, 6\]"):
        edge_conv_max(x, idx, torch.randn(4, 6, dtype=torch.float64), w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: w_self must be a 2-D tensor"):
        edge_conv_max(x, idx, torch.randn(4, 5, 1, dtype=torch.float64), w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: w_edge must have the same shape as w_self \[4, 5\], got \[3, 5\]"):
        edge_conv_max(x, idx, w_self, torch.randn(3, 5, dtype=torch.float64), bias)
    with pytest.raises(RuntimeError, match=rf"{op}: bias must be \[M\] = \[4\], got \[5\]"):
        edge_conv_max(x, idx, w_self, w_edge, torch.randn(5, dtype=torch.float64))
    with pytest.raises(RuntimeError, match=rf"{op}: x must be a 3-D tensor \[B, C, N\], got a 2-D tensor"):
        edge_conv_max(x[0], idx, w_self, w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: x must be float32 or float64 on CPU, got int64"):
        edge_conv_max(torch.ones(2, 3, 5, dtype=torch.int64), idx, w_self, w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: w_edge must have the same dtype as x \(float64\), got float32"):
        edge_conv_max(x, idx, w_self, w_edge.float(), bias)
    with pytest.raises(RuntimeError, match=rf"{op}: bias must have the same dtype as x \(float64\), got float32"):
        edge_conv_max(x, idx, w_self, w_edge, bias.float())
    with pytest.raises(RuntimeError, match=rf"{op}: w_self must be on the same device as x \(cpu\), got meta"):
        edge_conv_max(x, idx, w_self.to("meta"), w_edge, bias)
    with pytest.raises(RuntimeError, match=rf"{op}: idx must be on the same device as x \(cpu\), got meta"):
        edge_conv_max(x, idx.to("meta"), w_self, w_edge, bias)


@pytest.mark.parametrize("k", [1, 2, 6])
def test_edge_backward_op_checks_idx_and_winner(k):
    # The backward op is callable directly: out-of-range idx or winner must raise, not index memory, in
    # both backwards (GEMMs for k = 1, routed above).
    x, idx, w_self, w_edge, bias = (t.detach() if t.dtype.is_floating_point else t for t in make_inputs(2, 3, 5, 4, k))
    out, winner = torch.ops.facekernels.edge_conv_max(x, idx, w_self, w_edge, bias)
    grad = torch.randn_like(out)
    backward = torch.ops.facekernels._edge_conv_max_backward.default
    op = "_edge_conv_max_backward"
    bad_idx = idx.clone()
    bad_idx[1, 2, 0] = 5
    with pytest.raises(RuntimeError, match=rf"{op}: idx must hold positions in \[0, N\) = \[0, 5\), got 5 at idx\[1, 2, 0\]"):
        backward(grad, x, bad_idx, w_self, w_edge, winner, True, True, True)
    for value in (k, -2, 10**9):
        bad_winner = winner.clone()
        bad_winner[0, 1, 3] = value
        with pytest.raises(RuntimeError, match=rf"{op}: winner must hold neighbour indices in \[-1, k\) = \[-1, {k}\), "
                                               rf"got {value} at winner\[0, 1, 3\]"):
            backward(grad, x, idx, w_self, w_edge, bad_winner, True, True, True)
    backward(grad, x, idx, w_self, w_edge, winner, True, True, True)  # the forward's own winner passes


# ---- the fake kernels refuse what the native ops refuse, with the same exception and message, so that
# tracing, compiling and exporting fail where the eager call does (issue 17). The ranges of idx and winner
# are values: only the native ops see them. ---------------------------------------------------------------

_TX = torch.randn(2, 4, 6)
TOPK_BAD = {
    "x 2-D": (torch.randn(4, 6), 2, None),
    "integer x": (torch.ones(2, 4, 6, dtype=torch.int64), 2, None),
    "half on CPU": (_TX.half(), 2, None),
    "k = 0": (_TX, 0, None),
    "k > M": (_TX, 9, torch.randn(2, 4, 8)),
    "y batch": (_TX, 2, torch.randn(3, 4, 8)),
    "y channels": (_TX, 2, torch.randn(2, 5, 8)),
    "y 2-D": (_TX, 2, torch.randn(4, 8)),
    "y dtype": (_TX, 2, torch.randn(2, 4, 8, dtype=torch.float64)),
}


@pytest.mark.parametrize("args", TOPK_BAD.values(), ids=TOPK_BAD.keys())
def test_topk_fake_kernel_refuses_bad_inputs(args):
    assert_fake_refuses_like_native(cosine_topk, *args)


EDGE_GOOD = dict(zip(("x", "idx", "w_self", "w_edge", "bias"),
                     (t.detach() for t in make_inputs(2, 3, 5, 4, 2))))


EDGE_BAD = {
    "idx int32": arguments(EDGE_GOOD, idx=torch.zeros(2, 5, 2, dtype=torch.int32)),
    "idx batch": arguments(EDGE_GOOD, idx=torch.zeros(3, 5, 2, dtype=torch.int64)),
    "idx N": arguments(EDGE_GOOD, idx=torch.zeros(2, 4, 2, dtype=torch.int64)),
    "idx 2-D": arguments(EDGE_GOOD, idx=torch.zeros(2, 5, dtype=torch.int64)),
    "idx k = 0": arguments(EDGE_GOOD, idx=torch.zeros(2, 5, 0, dtype=torch.int64)),
    "w_self N": arguments(EDGE_GOOD, w_self=torch.randn(4, 6, dtype=torch.float64)),
    "w_self 3-D": arguments(EDGE_GOOD, w_self=torch.randn(4, 5, 1, dtype=torch.float64)),
    "w_edge shape": arguments(EDGE_GOOD, w_edge=torch.randn(3, 5, dtype=torch.float64)),
    "bias M": arguments(EDGE_GOOD, bias=torch.randn(5, dtype=torch.float64)),
    "x 2-D": arguments(EDGE_GOOD, x=torch.randn(3, 5, dtype=torch.float64)),
    "integer x": arguments(EDGE_GOOD, x=torch.ones(2, 3, 5, dtype=torch.int64)),
    "w_edge dtype": arguments(EDGE_GOOD, w_edge=torch.randn(4, 5)),
    "bias dtype": arguments(EDGE_GOOD, bias=torch.randn(4)),
}


@pytest.mark.parametrize("args", EDGE_BAD.values(), ids=EDGE_BAD.keys())
def test_edge_fake_kernel_refuses_bad_inputs(args):
    assert_fake_refuses_like_native(edge_conv_max, *args)


_OUT, _WINNER = torch.ops.facekernels.edge_conv_max(*EDGE_GOOD.values())
EDGE_BACKWARD_GOOD = {"grad_out": torch.randn_like(_OUT), **{k: v for k, v in EDGE_GOOD.items() if k != "bias"},
                      "winner": _WINNER, "has_bias": True, "need_x": True, "need_weights": True}


EDGE_BACKWARD_BAD = {
    "grad_out shape": arguments(EDGE_BACKWARD_GOOD, grad_out=torch.randn(2, 3, 3, dtype=torch.float64)),
    "grad_out dtype": arguments(EDGE_BACKWARD_GOOD, grad_out=torch.randn(2, 3, 4)),
    "winner int64": arguments(EDGE_BACKWARD_GOOD, winner=torch.zeros(2, 3, 4, dtype=torch.int64)),
    "winner shape": arguments(EDGE_BACKWARD_GOOD, winner=torch.zeros(2, 3, 3, dtype=torch.int32)),
    "idx int32": arguments(EDGE_BACKWARD_GOOD, idx=torch.zeros(2, 5, 2, dtype=torch.int32)),
    "w_edge shape": arguments(EDGE_BACKWARD_GOOD, w_edge=torch.randn(3, 5, dtype=torch.float64)),
}


@pytest.mark.parametrize("args", EDGE_BACKWARD_BAD.values(), ids=EDGE_BACKWARD_BAD.keys())
def test_edge_backward_fake_kernel_refuses_bad_inputs(args):
    assert_fake_refuses_like_native(torch.ops.facekernels._edge_conv_max_backward.default, *args)


@pytest.mark.parametrize("topk,edge", [("k > M", "idx N"), ("y channels", "w_edge shape"), ("y dtype", "bias dtype")])
def test_compile_and_export_refuse_bad_inputs(topk, edge):
    for fn, args in ((cosine_topk, TOPK_BAD[topk]), (edge_conv_max, EDGE_BAD[edge])):
        assert_tracing_refuses_like_native(fn, *args)


def test_export_with_dynamic_sizes():
    """The fake kernels' checks leave the 2^31 size limits to the native ops: unbounded Dims export."""

    class Graph(torch.nn.Module):
        def forward(self, x, w_self, w_edge):
            return edge_conv_max(x, cosine_topk(x, 3)[1], w_self, w_edge)

    b, n = torch.export.Dim("B"), torch.export.Dim("N", min=3)
    args = (torch.randn(2, 5, 12), torch.randn(7, 12), torch.randn(7, 12))
    program = torch.export.export(Graph(), args, dynamic_shapes=({0: b, 2: n}, {1: n}, {1: n}))
    other = (torch.randn(4, 5, 20), torch.randn(7, 20), torch.randn(7, 20))
    torch.testing.assert_close(program.module()(*other), Graph()(*other))


# ---- CUDA only: the CUDA binding's own paths -------------------------------------------------------


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA, id="cuda")])
def test_edge_ties_no_bias_strided_cuda(device):
    b, c, n, m, k = 2, 5, 9, 6, 5
    idx = torch.randint(0, n, (b, n, k))
    idx[:, :, 3] = idx[:, :, 1]
    x, _, w_self, w_edge, _ = make_inputs(b, c, n, m, k, idx=idx)
    check_edge_cuda(x, idx, w_self, w_edge, None, torch.float32)
    xs = torch.randn(b, n, c, device=device).transpose(1, 2).requires_grad_()
    ws = torch.randn(n, m, device=device).T.requires_grad_()
    out = edge_conv_max(xs, idx.to(device), ws, w_edge.detach().float().to(device))
    ref = edge_conv_max(xs.detach().cpu(), idx, ws.detach().cpu(), w_edge.detach().float())
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA, id="cuda")])
def test_edge_matches_cpu_at_mol_shape_cuda(device):
    x, idx, w_self, w_edge, bias = make_inputs(8, 128, 256, 256, 4, torch.float32)
    args = [t.detach() for t in (x, w_self, w_edge, bias)]
    cpu = edge_conv_max(args[0], idx, *args[1:])
    gpu = edge_conv_max(args[0].to(device), idx.to(device), *[a.to(device) for a in args[1:]])
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA, id="cuda")])
def test_edge_empty_opcheck_compile_cuda(device):
    x, idx, w_self, w_edge, bias = (
        t.to(device) if t is not None else None for t in make_inputs(0, 3, 5, 4, 2, torch.float32)
    )
    empty_idx = torch.zeros(0, 5, 2, dtype=torch.int64, device=device)
    assert edge_conv_max(x, empty_idx, w_self, w_edge, bias).shape == (0, 3, 4)
    x, idx, w_self, w_edge, bias = (t.detach().to(device) for t in make_inputs(2, 3, 6, 5, 3, torch.float32))
    for t in (x, w_self, w_edge, bias):
        t.requires_grad_()
    torch.library.opcheck(torch.ops.facekernels.edge_conv_max.default, (x, idx, w_self, w_edge, bias))
    torch.library.opcheck(torch.ops.facekernels.cosine_topk.default, (x.detach(), 2))
    out, winner = torch.ops.facekernels.edge_conv_max.default(x, idx, w_self, w_edge, bias)
    torch.library.opcheck(torch.ops.facekernels._edge_conv_max_backward.default,
                          (torch.randn_like(out), x.detach(), idx, w_self.detach(), w_edge.detach(), winner,
                           True, True, True))
    torch._dynamo.reset()
    f = torch.compile(lambda x, ws, we, bi: edge_conv_max(x, idx, ws, we, bi) * 2, fullgraph=True)
    torch.testing.assert_close(f(x, w_self, w_edge, bias), edge_conv_max(x, idx, w_self, w_edge, bias) * 2)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA, id="cuda")])
def test_edge_autocast_cuda(device):
    x, idx, w_self, w_edge, bias = (t.detach().to(device) for t in make_inputs(2, 3, 6, 5, 3, torch.float32))
    with torch.autocast("cuda", dtype=torch.float16):
        out = edge_conv_max(x, idx, w_self, w_edge, bias)
        values, _ = cosine_topk(x, 2)
    assert out.dtype == torch.float16 and values.dtype == torch.float16


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA, id="cuda")])
def test_cosine_topk_cuda_graph_capture(device):
    """cosine_topk's check for unfilled rows synchronises the stream, which a capture forbids: it is skipped
    while capturing, so the op still captures into a CUDA graph and replays to the eager result."""
    x = torch.randn(2, 6, 40, device=device)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        expected = cosine_topk(x, 5)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        captured = cosine_topk(x, 5)
    graph.replay()
    torch.cuda.synchronize()
    for g, e in zip(captured, expected):
        torch.testing.assert_close(g, e, atol=0, rtol=0)


@pytest.mark.parametrize("device", [pytest.param("cuda", marks=CUDA, id="cuda")])
def test_bad_inputs_cuda(device):
    x, idx, w_self, w_edge, bias = (t.detach().to(device) for t in make_inputs(2, 3, 5, 4, 2, torch.float32))
    bad = idx.clone()
    bad[1, 3, 1] = -2
    with pytest.raises(RuntimeError, match=r"edge_conv_max: idx must hold positions in \[0, N\) = \[0, 5\), got -2 at idx\[1, 3, 1\]"):
        edge_conv_max(x, bad, w_self, w_edge, bias)
    bad[1, 3, 1] = 7
    with pytest.raises(RuntimeError, match=r"got 7 at idx\[1, 3, 1\]"):
        edge_conv_max(x, bad, w_self, w_edge, bias)
    with pytest.raises(RuntimeError, match=r"edge_conv_max: x must be float16, bfloat16 or float32 on CUDA, got float64"):
        edge_conv_max(x.double(), idx, w_self.double(), w_edge.double(), bias.double())
    with pytest.raises(RuntimeError, match=r"edge_conv_max: w_self must be on the same device as x"):
        edge_conv_max(x, idx, w_self.cpu(), w_edge, bias)
    with pytest.raises(RuntimeError, match=r"cosine_topk: y must be on the same device as x"):
        cosine_topk(x, 2, x.cpu())


# ---- fake (meta) kernels: they refuse what the native kernels refuse, so traced and compiled calls
# fail like eager ones instead of returning a plausible shape ---------------------------------------


def meta(*shape, dtype=torch.float32):
    return torch.empty(*shape, device="meta", dtype=dtype)


def test_cosine_topk_fake_checks():
    ops = torch.ops.facekernels
    with pytest.raises(RuntimeError, match="k must be in"):
        ops.cosine_topk(meta(2, 4, 50), 99)
    with pytest.raises(RuntimeError, match="y must be"):
        ops.cosine_topk(meta(2, 4, 5), 2, meta(2, 3, 5))
    with pytest.raises(RuntimeError, match="dtype"):
        ops.cosine_topk(meta(2, 4, 5), 2, meta(2, 4, 5, dtype=torch.float64))
    values, indices = ops.cosine_topk(meta(2, 4, 5), 3, meta(2, 4, 7))
    assert values.shape == (2, 5, 3) and indices.dtype == torch.int64


def test_edge_conv_max_fake_checks():
    ops = torch.ops.facekernels
    x, idx, w = meta(2, 3, 6), meta(2, 6, 2, dtype=torch.int64), meta(5, 6)
    with pytest.raises(RuntimeError, match="idx must be int64"):
        ops.edge_conv_max(x, meta(2, 6, 2), w, w)
    with pytest.raises(RuntimeError, match=r"w_edge must have the same shape as w_self \[5, 6\], got \[4, 6\]"):
        ops.edge_conv_max(x, idx, w, meta(4, 6))
    with pytest.raises(RuntimeError, match="bias must be"):
        ops.edge_conv_max(x, idx, w, w, meta(4))
    out, winner = ops.edge_conv_max(x, idx, w, w, meta(5))
    assert out.shape == (2, 3, 5) and winner.dtype == torch.int32
