"""cosine_topk and edge_conv_max on CUDA against the float64 references of test_edge_conv.py: float32,
float16 and bfloat16 (float32 accumulation), several row blocks and column tiles, exact ties between
duplicate columns, an identical gallery, zero vectors, ties in the max, gradients, strided and empty
inputs, the torch.library contract, torch.compile and the bad inputs the CUDA binding must refuse."""

import pytest
import torch
from facekernels.ops.edge_conv import cosine_topk, edge_conv_max
from test_edge_conv import make_inputs, reference, reference_topk

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

DEVICE = "cuda"
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


@pytest.fixture(autouse=True)
def _full_precision_matmul():
    before = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32 = before


def check_topk(x, k, y=None):
    """Indices exactly those of the float64 reference on the same (rounded) inputs; values to the dtype."""
    values, indices = cosine_topk(x.to(DEVICE), k, None if y is None else y.to(DEVICE))
    assert values.device.type == "cuda" and values.dtype == x.dtype and indices.dtype == torch.int64
    ref_values, ref_indices = reference_topk(x, k, y)
    torch.testing.assert_close(indices.cpu(), ref_indices, rtol=0, atol=0)
    tol = {torch.float32: 1e-6, torch.float16: 1e-3, torch.bfloat16: 8e-3}[x.dtype]
    torch.testing.assert_close(values.cpu().double(), ref_values, rtol=0, atol=tol)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,c,n,m,k", [(2, 16, 37, 50, 5), (1, 3, 1, 1, 1), (3, 8, 20, 20, 20), (1, 24, 2100, 9000, 7)])
def test_topk(b, c, n, m, k, dtype):
    x = torch.randn(b, c, n).to(dtype)
    y = torch.randn(b, c, m).to(dtype)
    check_topk(x, k, y)
    check_topk(x, min(k, n))


@pytest.mark.parametrize("dtype", DTYPES)
def test_topk_ties_and_zero_vectors(dtype):
    base = torch.randint(-3, 4, (2, 16, 30)).to(dtype)
    y = base[:, :, torch.randint(0, 30, (400,))]
    x = torch.randint(-3, 4, (2, 16, 25)).to(dtype)
    x[:, :, 3] = y[:, :, 17]
    x[:, :, 4] = 0
    y[:, :, 9] = 0
    check_topk(x, 12, y)
    gallery = torch.randn(1, 32, 1).expand(1, 32, 3000).contiguous().to(dtype)
    _, indices = cosine_topk(torch.randn(1, 32, 5).to(dtype).to(DEVICE), 4, gallery.to(DEVICE))
    assert (indices.cpu() == torch.arange(4)).all()


def test_topk_strided_and_empty():
    x = torch.randn(2, 30, 9).transpose(1, 2)
    y = torch.randn(2, 9, 80)[:, :, ::2]
    check_topk(x, 5, y)
    values, _ = cosine_topk(torch.randn(0, 4, 6, device=DEVICE), 3)
    assert values.shape == (0, 6, 3)


def check_edge_cuda(x, idx, w_self, w_edge, bias, dtype):
    dev = [t.detach().to(DEVICE, dtype).requires_grad_() if t is not None else None for t in (x, w_self, w_edge, bias)]
    out = edge_conv_max(dev[0], idx.to(DEVICE), dev[1], dev[2], dev[3])
    assert out.dtype == dtype and out.device.type == "cuda"
    ref_in = [t.detach().to(dtype).double().requires_grad_() if t is not None else None for t in (x, w_self, w_edge, bias)]
    ref = reference(ref_in[0], idx, ref_in[1], ref_in[2], ref_in[3])
    tol = {torch.float32: 1e-4, torch.float16: 2e-2, torch.bfloat16: 1e-1}[dtype]
    torch.testing.assert_close(out.cpu().double(), ref, rtol=tol, atol=tol)
    g = torch.randn_like(ref)
    leaves = [t for t in dev if t is not None]
    ref_leaves = [t for t in ref_in if t is not None]
    grads = torch.autograd.grad(out, leaves, g.to(DEVICE, dtype))
    ref_grads = torch.autograd.grad(ref, ref_leaves, g)
    for a, r in zip(grads, ref_grads):
        if dtype == torch.float32:
            torch.testing.assert_close(a.cpu().double(), r, rtol=1e-3, atol=1e-3)
        else:  # near-ties in the max may pick another neighbour in half precision: compare in norm
            assert (a.cpu().double() - r).norm() <= 0.1 * r.norm() + 1e-2


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("b,c,n,m,k", [(2, 3, 5, 4, 2), (1, 1, 1, 1, 1), (3, 4, 6, 6, 6), (2, 3, 9, 11, 4), (4, 16, 64, 64, 4)])
def test_edge(b, c, n, m, k, dtype):
    check_edge_cuda(*make_inputs(b, c, n, m, k), dtype)


def test_edge_ties_no_bias_strided():
    b, c, n, m, k = 2, 5, 9, 6, 5
    idx = torch.randint(0, n, (b, n, k))
    idx[:, :, 3] = idx[:, :, 1]
    x, _, w_self, w_edge, _ = make_inputs(b, c, n, m, k, idx=idx)
    check_edge_cuda(x, idx, w_self, w_edge, None, torch.float32)
    xs = torch.randn(b, n, c, device=DEVICE).transpose(1, 2).requires_grad_()
    ws = torch.randn(n, m, device=DEVICE).T.requires_grad_()
    out = edge_conv_max(xs, idx.to(DEVICE), ws, w_edge.detach().float().to(DEVICE))
    ref = edge_conv_max(xs.detach().cpu(), idx, ws.detach().cpu(), w_edge.detach().float())
    torch.testing.assert_close(out.cpu(), ref, rtol=1e-4, atol=1e-4)


def test_edge_matches_cpu_at_mol_shape():
    x, idx, w_self, w_edge, bias = make_inputs(8, 128, 256, 256, 4, torch.float32)
    args = [t.detach() for t in (x, w_self, w_edge, bias)]
    cpu = edge_conv_max(args[0], idx, *args[1:])
    gpu = edge_conv_max(args[0].to(DEVICE), idx.to(DEVICE), *[a.to(DEVICE) for a in args[1:]])
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-4, atol=1e-4)


def test_edge_empty_opcheck_compile():
    x, idx, w_self, w_edge, bias = (t.to(DEVICE) if t is not None else None for t in make_inputs(0, 3, 5, 4, 2, torch.float32))
    assert edge_conv_max(x, torch.zeros(0, 5, 2, dtype=torch.int64, device=DEVICE), w_self, w_edge, bias).shape == (0, 3, 4)
    x, idx, w_self, w_edge, bias = (t.detach().to(DEVICE) for t in make_inputs(2, 3, 6, 5, 3, torch.float32))
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


def test_edge_autocast():
    x, idx, w_self, w_edge, bias = (t.detach().to(DEVICE) for t in make_inputs(2, 3, 6, 5, 3, torch.float32))
    with torch.autocast("cuda", dtype=torch.float16):
        out = edge_conv_max(x, idx, w_self, w_edge, bias)
        values, _ = cosine_topk(x, 2)
    assert out.dtype == torch.float16 and values.dtype == torch.float16


def test_bad_inputs():
    x, idx, w_self, w_edge, bias = (t.detach().to(DEVICE) for t in make_inputs(2, 3, 5, 4, 2, torch.float32))
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
