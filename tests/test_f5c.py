"""facekernels.nn.CCC and facekernels.nn.F5C against MOL's released edge_feature module and its F5C
wiring (FCC, a cosine kNN graph of the positions, edge_feature, the sum), re-written here in plain
PyTorch from the published code's description: same parameter names and shapes, the per-channel and
per-neighbour loops of the release written out, float64."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_compiled_matches_eager
from facekernels.nn import CCC, F5C
from test_fcc import ReleasedFCC
from torch import nn


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """The released form runs thousands of tiny ops; on a busy machine each multi-threaded one waits on
    its thread barrier far longer than it computes. One thread keeps this file fast anywhere."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def released_neighbour_differences(x, k):
    """The released graph features: for x [B, C, N], the k positions of largest cosine similarity to
    each position (torch.topk of the normalised Gram matrix, the position itself among them), returned as
    neighbour minus centre, [B, C, N, k]."""
    unit = F.normalize(x, p=2, dim=1)
    idx = torch.matmul(unit.transpose(2, 1), unit).topk(k=k, dim=-1)[1]  # [B, N, k]
    by_position = x.transpose(2, 1)                                       # [B, N, C]
    batch = torch.arange(x.shape[0]).view(-1, 1, 1)
    neighbours = by_position[batch, idx]                                  # [B, N, k, C]
    return (neighbours - by_position.unsqueeze(2)).permute(0, 3, 1, 2)


def conv_over_positions(conv, v):
    """The released Conv1d(1, N, kernel_size=N) on a [B, 1, N] row, [B, N, 1]: with the kernel as long as
    the row it is one linear map of the positions (written so: torch's convolution of this shape is slow
    on CPU; test_conv_over_positions_is_the_conv checks the two agree)."""
    return F.linear(v.squeeze(1), conv.weight.squeeze(1), conv.bias).unsqueeze(-1)


class ReleasedEdgeFeature(nn.Module):
    """MOL's edge_feature: two Conv1d(1, N, kernel N) maps over the positions, applied channel by channel
    and neighbour by neighbour, the ReLU of their sum maxed over the neighbours."""

    def __init__(self, dim=256):
        super().__init__()
        self.conv1 = nn.Conv1d(in_channels=1, out_channels=dim, kernel_size=dim)
        self.conv2 = nn.Conv1d(in_channels=1, out_channels=dim, kernel_size=dim)

    def forward(self, centres, differences):
        # centres [B, C, N]; differences [B, C, N, k] (neighbour - centre)
        channels, k = differences.shape[1], differences.shape[3]
        rows = []
        for c in range(channels):
            centre = centres[:, c : c + 1, :]                            # [B, 1, N]
            per_neighbour = []
            for j in range(k):
                edge = differences[:, c : c + 1, :, j]                   # [B, 1, N]
                # [B, N, 1]
                response = conv_over_positions(self.conv1, centre) + conv_over_positions(self.conv2, edge - centre)
                per_neighbour.append(torch.relu(response))
            rows.append(torch.cat(per_neighbour, dim=-1).max(dim=-1)[0])  # [B, N]
        return torch.stack(rows, dim=1)                                   # [B, C, N]


def released_ccc(edge, x, k):
    """The released model's use of edge_feature on a [B, C, H, W] map."""
    b, c = x.shape[:2]
    flat = x.reshape(b, c, -1)
    return edge(flat, released_neighbour_differences(flat, k)).reshape(x.shape)


class ReleasedF5C(nn.Module):
    def __init__(self, dim, meta_kernel_size, positions, k):
        super().__init__()
        self.fcc = ReleasedFCC(dim, meta_kernel_size)
        self.ccc = ReleasedEdgeFeature(positions)
        self.k = k

    def forward(self, x):
        y = self.fcc(x)
        return y + released_ccc(self.ccc, y, self.k)


def _randomise(module):
    """Larger weights than the default init, so the ReLUs and maxes see a spread of values."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_()


def _ccc_pair(positions, k, dtype=torch.float64):
    released = ReleasedEdgeFeature(positions).to(dtype)
    _randomise(released)
    ours = CCC(positions, k).to(dtype)
    result = ours.load_state_dict(released.state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    return released, ours


def _assert_grads_match(released, ours, atol=1e-10, rtol=1e-10):
    ours_params = dict(ours.named_parameters())
    for name, p in released.named_parameters():
        if name.startswith("fcc.ffn."):
            assert p.grad is None
            continue
        torch.testing.assert_close(ours_params[name].grad, p.grad, atol=atol, rtol=rtol, msg=name)


def test_conv_over_positions_is_the_conv():
    conv = nn.Conv1d(1, 7, kernel_size=7).double()
    v = torch.randn(3, 1, 7, dtype=torch.float64)
    torch.testing.assert_close(conv_over_positions(conv, v), conv(v))


def test_state_dict_keys_match_released():
    assert {k: v.shape for k, v in CCC().state_dict().items()} == {
        k: v.shape for k, v in ReleasedEdgeFeature().state_dict().items()
    }
    released = ReleasedF5C(64, 32, 256, 4)
    ours = F5C()
    expected = {k: v.shape for k, v in released.state_dict().items() if not k.startswith("fcc.ffn.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected


@pytest.mark.parametrize(
    "b,c,h,w,k",
    [
        (3, 5, 4, 4, 4),    # small MOL-like
        (2, 3, 2, 5, 1),    # H != W; k = 1
        (2, 4, 3, 3, 9),    # k = N
        (1, 2, 1, 6, 2),    # one row, batch of one
        (2, 7, 16, 16, 4),  # MOL's positions
    ],
)
def test_ccc_matches_released(b, c, h, w, k):
    released, ours = _ccc_pair(h * w, k)
    x = torch.randn(b, c, h, w, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = released_ccc(released, xa, k), ours(xb)
    assert yb.shape == x.shape
    torch.testing.assert_close(yb, ya, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-10, rtol=1e-10)
    _assert_grads_match(released, ours)


def test_ccc_flat_input_and_strided():
    released, ours = _ccc_pair(12, 3)
    x = torch.randn(2, 12, 5, dtype=torch.float64).transpose(1, 2)  # [2, 5, 12], non-contiguous
    torch.testing.assert_close(ours(x), released(x, released_neighbour_differences(x, 3)))
    x4 = torch.randn(2, 4, 5, 3, dtype=torch.float64).permute(0, 2, 1, 3)  # [2, 5, 4, 3]
    torch.testing.assert_close(ours(x4), released_ccc(released, x4, 3))


def test_ccc_neighbourhood_includes_the_position_itself():
    """With k = 1 each position's only neighbour is itself (its cosine with itself is 1), so the edge
    term vanishes: out = ReLU((W1 - W2) x + b1 + b2)."""
    ours = CCC(9, 1).double()
    _randomise(ours)
    x = torch.randn(2, 6, 3, 3, dtype=torch.float64)
    n = 9
    w = ours.conv1.weight.view(n, n) - ours.conv2.weight.view(n, n)
    expected = torch.relu(F.linear(x.reshape(2, 6, n), w, ours.conv1.bias + ours.conv2.bias))
    torch.testing.assert_close(ours(x), expected.view_as(x))


def test_ccc_duplicate_positions():
    """Positions with identical channel vectors tie in the kNN; whichever of them is chosen, the output
    is the released one."""
    released, ours = _ccc_pair(8, 3)
    x = torch.randn(2, 4, 8, dtype=torch.float64)
    x[:, :, 5] = x[:, :, 1]
    x[:, :, 7] = x[:, :, 2]
    torch.testing.assert_close(ours(x), released(x, released_neighbour_differences(x, 3)))


def test_ccc_gradcheck():
    ours = CCC(6, 2).double()
    x = torch.randn(2, 3, 2, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (x,))


def test_ccc_empty_batch():
    ours = CCC(4, 2)
    x = torch.randn(0, 3, 2, 2, requires_grad=True)
    y = ours(x)
    assert y.shape == (0, 3, 2, 2)
    y.sum().backward()
    assert x.grad.shape == x.shape


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_ccc_non_finite_input_is_named(bad):
    """Issue 17: a NaN or inf in the input is named as such by the kNN graph (cosine_topk), not reported as
    an out-of-range neighbour index by edge_conv_max."""
    x = torch.randn(2, 3, 4, 4)
    x[1, 0, 2, 3] = bad
    with pytest.raises(RuntimeError, match=r"cosine_topk: x and y must be finite \(no NaN or inf\): x\[1, :, 11\] "
                                           r"has a finite cosine similarity to only 0 of the 16 columns of x"):
        CCC(16, 4)(x)


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("dim,kernel,s,k", [(4, 8, 4, 4), (3, 5, 3, 9), (2, 4, 1, 1)])
def test_f5c_matches_released(train, dim, kernel, s, k):
    released = ReleasedF5C(dim, kernel, s * s, k).double()
    _randomise(released.ccc)
    ours = F5C(dim, kernel, s * s, k).double()
    ours.load_state_dict(released.state_dict(), strict=True)
    if not train:
        warm = torch.randn(4, 2 * dim, s, s, dtype=torch.float64) * 2 + 1
        with torch.no_grad():
            for m in (released, ours):
                m.train()
                m(warm)
    released.train(train)
    ours.train(train)
    x = torch.randn(3, 2 * dim, s, s, dtype=torch.float64)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = released(xa), ours(xb)
    torch.testing.assert_close(yb, ya, atol=1e-10, rtol=1e-10)
    g = torch.randn_like(ya)
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-10, rtol=1e-10)
    _assert_grads_match(released, ours)
    for name, buf in released.named_buffers():
        if not name.startswith("fcc.ffn."):
            torch.testing.assert_close(dict(ours.named_buffers())[name], buf, msg=name)


def test_f5c_float32_paper_shape():
    """MOL's configuration: 128 channels at 16 x 16, k = 4, default initialisation, training mode."""
    torch.manual_seed(1)
    released = ReleasedF5C(64, 32, 256, 4)
    ours = F5C()
    ours.load_state_dict(released.state_dict(), strict=True)
    x = torch.randn(2, 128, 16, 16)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    ya, yb = released(xa), ours(xb)
    torch.testing.assert_close(yb, ya, atol=1e-4, rtol=1e-4)
    ya.sum().backward()
    yb.sum().backward()
    torch.testing.assert_close(xb.grad, xa.grad, atol=1e-3, rtol=1e-3)
    _assert_grads_match(released, ours, atol=1e-3, rtol=1e-3)


def test_load_released_model_entries():
    """The released model keeps FCC_1 and CCC_1 side by side; their entries, renamed fcc.* and ccc.*,
    load into F5C."""
    src = nn.Module()
    src.FCC_1 = ReleasedFCC(4, 8)
    src.CCC_1 = ReleasedEdgeFeature(16)
    renamed = {
        key.replace("FCC_1.", "fcc.").replace("CCC_1.", "ccc."): value for key, value in src.state_dict().items()
    }
    ours = F5C(4, 8, 16, 4)
    ours.load_state_dict(renamed, strict=True)
    torch.testing.assert_close(ours.ccc.conv2.bias, src.CCC_1.conv2.bias)
    torch.testing.assert_close(ours.fcc.meta_kernel_2_W, src.FCC_1.meta_kernel_2_W)


def test_compile_fullgraph():
    ccc = CCC(16, 4)
    assert_compiled_matches_eager(lambda x: ccc(x), [torch.randn(2, 3, 4, 4, requires_grad=True)])
    f5c = F5C(2, 4, 16, 3)
    assert_compiled_matches_eager(lambda x: f5c(x), [torch.randn(2, 4, 4, 4, requires_grad=True)])


def test_bad_inputs():
    ccc = CCC(16, 4)
    with pytest.raises(
        ValueError,
        match=r"CCC: x must be \[B, C, H, W\] with H\*W = positions = 16 \(or \[B, C, 16\]\), got \[2, 3, 4, 5\]",
    ):
        ccc(torch.randn(2, 3, 4, 5))
    with pytest.raises(ValueError, match=r"got \[2, 3, 2, 2, 4\]"):
        ccc(torch.randn(2, 3, 2, 2, 4))
    with pytest.raises(ValueError, match=r"got \[16\]"):
        ccc(torch.randn(16))
    with pytest.raises(ValueError, match=r"CCC: positions must be a positive int, got 0"):
        CCC(0)
    with pytest.raises(ValueError, match=r"CCC: k must be an int in \[1, positions = 4\], got 5"):
        CCC(4, 5)
    with pytest.raises(ValueError, match=r"CCC: k must be an int in \[1, positions = 4\], got 0"):
        CCC(4, 0)
    with pytest.raises(ValueError, match=r"CCC: x must be .* positions = 16 .*got \[2, 8, 5, 5\]"):
        F5C(4, 8, 16, 4)(torch.randn(2, 8, 5, 5))
    with pytest.raises(ValueError, match=r"FCC: x must be"):
        F5C(4, 8, 16, 4)(torch.randn(2, 6, 4, 4))
