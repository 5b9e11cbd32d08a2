"""facekernels.nn.STGCNBlock and facekernels.models.LandmarkSTGCN: the block against a plain-PyTorch
ST-GCN block (1x1 conv + einsum graph conv) given the same weights, the learned graph terms, the encoder's
layouts, strides, head and gradients, torch.compile, and bad inputs."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_compiled_matches_eager
from facekernels import graphs
from facekernels.models import LandmarkSTGCN
from facekernels.nn import STGCNBlock
from facekernels.ops import st_graph_conv
from torch import nn


class ReferenceSTGCNBlock(nn.Module):
    """ST-GCN's st_gcn block written plainly: ConvTemporalGraphical (1x1 conv to K*C_out, einsum over the
    nodes), BN, ReLU, 9x1 temporal conv, BN, dropout, residual, ReLU."""

    def __init__(self, c_in, c_out, a, stride=1, residual=True):
        super().__init__()
        self.register_buffer("a", a.clone())
        self.k = a.shape[0]
        self.conv = nn.Conv2d(c_in, self.k * c_out, 1)
        self.tcn = nn.Sequential(
            nn.BatchNorm2d(c_out), nn.ReLU(), nn.Conv2d(c_out, c_out, (9, 1), (stride, 1), (4, 0)),
            nn.BatchNorm2d(c_out),
        )
        if not residual:
            self.residual = lambda x: 0
        elif c_in == c_out and stride == 1:
            self.residual = lambda x: x
        else:
            self.residual = nn.Sequential(nn.Conv2d(c_in, c_out, 1, (stride, 1)), nn.BatchNorm2d(c_out))

    def forward(self, x):
        res = self.residual(x)
        y = self.conv(x)
        n, kc, t, v = y.shape
        y = torch.einsum("nkctv,kvw->nctw", y.view(n, self.k, kc // self.k, t, v), self.a)
        return F.relu(self.tcn(y) + res)


def _randomise(module):
    """Non-trivial batch-norm affine parameters and running statistics."""
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.BatchNorm2d | nn.BatchNorm1d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 1.5)


def _pair(c_in, c_out, stride, residual, a, adaptive=False):
    ours = STGCNBlock(c_in, c_out, a, stride=stride, residual=residual, adaptive=adaptive).double()
    _randomise(ours)
    ref = ReferenceSTGCNBlock(c_in, c_out, ours.adjacency, stride, residual).double()
    k = a.shape[0]
    with torch.no_grad():
        ref.conv.weight.copy_(ours.weight.reshape(k * c_out, c_in, 1, 1))
        ref.conv.bias.copy_(ours.bias.reshape(k * c_out))
        ref.tcn[0].load_state_dict(ours.bn_graph.state_dict())
        ref.tcn[2].load_state_dict(ours.temporal_conv.state_dict())
        ref.tcn[3].load_state_dict(ours.bn_temporal.state_dict())
        if isinstance(ref.residual, nn.Sequential):
            ref.residual.load_state_dict(ours.residual.state_dict())
    return ours, ref


BLOCKS = [  # c_in, c_out, stride, residual (conv, identity, strided conv, none), graph, partition
    (3, 8, 1, True, "lips20", "spatial"),
    (8, 8, 1, True, "face68", "uniform"),
    (6, 8, 2, True, "lips20", "distance"),
    (2, 5, 1, False, "face68", "spatial"),
    (4, 4, 3, True, "lips20", "uniform"),
    (5, 7, 2, False, "lips20", "spatial"),
]


@pytest.mark.parametrize("c_in, c_out, stride, residual, graph, strategy", BLOCKS)
@pytest.mark.parametrize("train", [True, False])
def test_block_matches_plain_stgcn(c_in, c_out, stride, residual, graph, strategy, train):
    a = graphs.adjacency(graph, strategy, max_hop=2 if strategy == "distance" else 1, dtype=torch.float64)
    ours, ref = _pair(c_in, c_out, stride, residual, a)
    ours.train(train)
    ref.train(train)
    x = torch.randn(3, c_in, 11, a.shape[1], dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    out, expected = ours(x), ref(x_ref)
    assert out.shape == (3, c_out, (11 - 1) // stride + 1, a.shape[1])
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    g = torch.randn_like(out)
    out.backward(g)
    expected.backward(g)
    k = a.shape[0]
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.weight.grad.reshape(k * c_out, c_in, 1, 1), ref.conv.weight.grad,
                               rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.bias.grad.reshape(-1), ref.conv.bias.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.temporal_conv.weight.grad, ref.tcn[2].weight.grad, rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.bn_graph.weight.grad, ref.tcn[0].weight.grad, rtol=1e-9, atol=1e-9)
    if isinstance(ref.residual, nn.Sequential):
        torch.testing.assert_close(ours.residual[0].weight.grad, ref.residual[0].weight.grad, rtol=1e-9, atol=1e-9)
    if train:  # the running statistics move alike
        torch.testing.assert_close(ours.bn_temporal.running_mean, ref.tcn[3].running_mean)
    # the graph's gradient reaches the edge-importance mask: d/dM (A * M) = A * d/dA'
    assert ours.edge_importance.grad is not None
    assert (ours.edge_importance.grad[ours.adjacency == 0] == 0).all()
    assert ours.edge_importance.grad.abs().sum() > 0


def test_block_float32_matches_plain_stgcn():
    a = graphs.adjacency("lips20")
    ours = STGCNBlock(4, 16, a, adaptive=False)
    ref = ReferenceSTGCNBlock(4, 16, a)
    with torch.no_grad():
        ref.conv.weight.copy_(ours.weight.reshape(48, 4, 1, 1))
        ref.conv.bias.copy_(ours.bias.reshape(48))
        ref.tcn[2].load_state_dict(ours.temporal_conv.state_dict())
        ref.residual.load_state_dict(ours.residual.state_dict())
    x = torch.randn(4, 4, 29, 20)
    torch.testing.assert_close(ours(x), ref(x), rtol=1e-4, atol=1e-4)


# ---- the mask (issue 21) ------------------------------------------------------------------------------


def _plain_masked_bn(y, valid, bn, train):
    """BN with statistics over the valid points, written with boolean indexing; zero at masked points."""
    out = torch.zeros_like(y)
    for c in range(y.shape[1]):
        values = y[:, c][valid]
        if train:
            mean, var = values.mean(), values.var(unbiased=False)
        else:
            mean, var = bn.running_mean[c], bn.running_var[c]
        out[:, c][valid] = (values - mean) / torch.sqrt(var + bn.eps) * bn.weight[c] + bn.bias[c]
    return out


def _plain_masked_block(ref, x, mask, stride, train):
    """ReferenceSTGCNBlock's weights run with the masked semantics written out: masked messages dropped,
    masked BNs, zeros at masked points."""
    m = mask[:, None].double()
    valid_out = mask[:, ::stride]
    x = x * m
    y = ref.conv(x) * m
    n, kc, t, v = y.shape
    y = torch.einsum("nkctv,kvw->nctw", y.view(n, ref.k, kc // ref.k, t, v), ref.a) * m
    y = torch.relu(_plain_masked_bn(y, mask, ref.tcn[0], train))
    y = _plain_masked_bn(ref.tcn[2](y), valid_out, ref.tcn[3], train)
    if isinstance(ref.residual, nn.Sequential):
        y = y + _plain_masked_bn(ref.residual[0](x), valid_out, ref.residual[1], train)
    else:
        y = y + ref.residual(x)
    return torch.relu(y)


@pytest.mark.parametrize("c_in, c_out, stride, residual, graph, strategy", BLOCKS[:4])
@pytest.mark.parametrize("train", [True, False])
def test_masked_block_matches_plain(c_in, c_out, stride, residual, graph, strategy, train):
    a = graphs.adjacency(graph, strategy, max_hop=2 if strategy == "distance" else 1, dtype=torch.float64)
    ours, ref = _pair(c_in, c_out, stride, residual, a)
    ours.train(train)
    x = torch.randn(3, c_in, 11, a.shape[1], dtype=torch.float64, requires_grad=True)
    mask = torch.rand(3, 11, a.shape[1]) > 0.3
    mask[1, 4:7] = False  # a gap of three frames
    out = ours(x, mask)
    x_ref = x.detach().clone().requires_grad_()
    expected = _plain_masked_block(ref, x_ref, mask, stride, train)
    torch.testing.assert_close(out, expected, rtol=1e-9, atol=1e-9)
    assert (out.abs().sum(1)[~ours.output_mask(mask)] == 0).all()
    g = torch.randn_like(out)
    out.backward(g)
    expected.backward(g)
    torch.testing.assert_close(x.grad, x_ref.grad, rtol=1e-9, atol=1e-9)
    assert (x.grad.abs().sum(1)[~mask] == 0).all()
    if train:  # the running statistics move with the valid points' statistics only
        y = ref.conv(x_ref.detach() * mask[:, None]) * mask[:, None]
        n, kc, t, v = y.shape
        y = torch.einsum("nkctv,kvw->nctw", y.view(n, ref.k, kc // ref.k, t, v), ref.a)
        valid = y.permute(1, 0, 2, 3)[:, mask]
        want = ref.tcn[0].running_mean * 0.9 + 0.1 * valid.mean(1)
        torch.testing.assert_close(ours.bn_graph.running_mean, want, rtol=1e-9, atol=1e-9)
        want_var = ref.tcn[0].running_var * 0.9 + 0.1 * valid.var(1, unbiased=True)
        torch.testing.assert_close(ours.bn_graph.running_var, want_var, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("train", [True, False])
def test_block_all_true_mask_equals_unmasked(train):
    a = graphs.adjacency("lips20", dtype=torch.float64)
    ours, _ = _pair(6, 8, 2, True, a)
    twin, _ = _pair(6, 8, 2, True, a)
    twin.load_state_dict(ours.state_dict())
    ours.train(train)
    twin.train(train)
    x = torch.randn(2, 6, 9, 20, dtype=torch.float64)
    torch.testing.assert_close(ours(x, torch.ones(2, 9, 20, dtype=torch.bool)), twin(x), rtol=1e-9, atol=1e-9)
    torch.testing.assert_close(ours.bn_graph.running_var, twin.bn_graph.running_var, rtol=1e-12, atol=1e-12)


def test_masked_block_ignores_masked_values_and_compiles():
    a = graphs.adjacency("lips20")
    block = STGCNBlock(3, 8, a)
    x = torch.randn(2, 3, 7, 20)
    mask = torch.rand(2, 7, 20) > 0.5
    out = block(x, mask)
    torch.testing.assert_close(block(torch.where(mask[:, None], x, 1e3), mask), out, rtol=1e-5, atol=1e-5)
    block.eval()
    assert_compiled_matches_eager(block, (x, mask))


def test_masked_block_bad_mask():
    block = STGCNBlock(3, 8, graphs.adjacency("lips20"))
    x = torch.randn(2, 3, 7, 20)
    with pytest.raises(ValueError, match=r"mask must be a bool \[N, T, V\] = \[2, 7, 20\] tensor"):
        block(x, torch.ones(2, 7, 20))
    with pytest.raises(ValueError, match=r"mask must be a bool \[N, T, V\]"):
        block(x, torch.ones(2, 20, 7, dtype=torch.bool))


def test_masked_batch_norm_with_ones_is_batch_norm():
    from facekernels.nn import masked_batch_norm

    bn, twin = nn.BatchNorm2d(4), nn.BatchNorm2d(4)
    x = torch.randn(3, 4, 5, 6) * 2 + 1
    torch.testing.assert_close(masked_batch_norm(x, torch.ones(3, 1, 5, 6), bn), twin(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(bn.running_var, twin.running_var)
    assert bn.num_batches_tracked == 1


def test_edge_importance_and_graph():
    a = graphs.adjacency("lips20", dtype=torch.float64)
    block = STGCNBlock(2, 4, a, adaptive=True).double()
    with torch.no_grad():
        block.edge_importance.uniform_(0.5, 2.0)
        block.adaptive_graph.normal_()
    torch.testing.assert_close(block.graph(), a * block.edge_importance + block.adaptive_graph)
    fixed = STGCNBlock(2, 4, a, adaptive=False)
    assert fixed.adaptive_graph is None
    torch.testing.assert_close(fixed.graph(), a.float())


def test_block_takes_a_replacement_graph():
    """forward(x, graph=...): the block's own graph gives the default result; a per-sample [N, K, V, V] graph
    with the same graph for every sample gives the same; a different graph changes the output."""
    torch.manual_seed(0)
    block = STGCNBlock(3, 5, graphs.adjacency("lips20"), temporal_kernel_size=3).eval()
    x = torch.randn(2, 3, 6, 20)
    own = block.graph()
    torch.testing.assert_close(block(x, graph=own), block(x))
    torch.testing.assert_close(block(x, graph=own[None].expand(2, -1, -1, -1)), block(x))
    per_sample = torch.stack([own, own.flip(-1)])
    out = block(x, graph=per_sample)
    mask = torch.ones(2, 6, 20, dtype=torch.bool)
    torch.testing.assert_close(block(x, mask, graph=per_sample), out)  # masked with every point valid
    torch.testing.assert_close(out[:1], block(x[:1]))
    assert not torch.allclose(out[1:], block(x[1:]))


def test_adaptive_starts_near_fixed_and_learns():
    a = graphs.adjacency("lips20", dtype=torch.float64)
    fixed, _ = _pair(4, 8, 1, True, a, adaptive=False)
    adaptive = STGCNBlock(4, 8, a, adaptive=True).double()
    state = {**fixed.state_dict(), "adaptive_graph": adaptive.adaptive_graph.detach()}
    adaptive.load_state_dict(state)
    assert adaptive.adaptive_graph.abs().max() <= 1e-5
    x = torch.randn(2, 4, 9, 20, dtype=torch.float64)
    out = adaptive(x)
    torch.testing.assert_close(out, fixed(x), rtol=1e-3, atol=1e-3)
    out.square().sum().backward()
    g = adaptive.adaptive_graph.grad
    assert g is not None and g.shape == a.shape
    # the learned graph gets gradients everywhere, off the skeleton too
    assert (g[a == 0] != 0).any() and g.abs().sum() > 0
    torch.testing.assert_close(adaptive.edge_importance.grad, g * a)


def test_block_buffers_and_parameters():
    a = graphs.adjacency("face68", "distance", max_hop=2)
    block = STGCNBlock(3, 6, a)
    assert block.num_partitions == 3 and block.num_nodes == 68
    assert "adjacency" in dict(block.named_buffers())
    assert "adjacency" not in dict(block.named_parameters())
    assert block.weight.shape == (3, 6, 3) and block.bias.shape == (3, 6)
    assert block.edge_importance.shape == (3, 68, 68) and bool((block.edge_importance == 1).all())
    bound = 1 / 3**0.5  # a 1x1 Conv2d's default initialisation
    assert block.weight.abs().max() <= bound and block.bias.abs().max() <= bound
    block = block.double()
    assert block.adjacency.dtype == torch.float64
    torch.testing.assert_close(block.adjacency, a.double())
    assert block(torch.randn(2, 3, 5, 68, dtype=torch.float64)).shape == (2, 6, 5, 68)


def test_block_small_shapes():
    a = graphs.adjacency("lips20", "uniform")
    block = STGCNBlock(1, 3, a, stride=2)
    assert block(torch.randn(2, 1, 1, 20)).shape == (2, 3, 1, 20)  # T = 1
    assert block(torch.randn(1, 1, 4, 20)).shape == (1, 3, 2, 20)  # N = 1
    block.eval()
    assert block(torch.randn(1, 1, 1, 20)).shape == (1, 3, 1, 20)


def test_block_dropout():
    a = graphs.adjacency("lips20")
    block = STGCNBlock(4, 4, a, dropout=0.5, residual=False).eval()
    x = torch.randn(2, 4, 6, 20)
    torch.testing.assert_close(block(x), block(x))
    block.train()
    assert block.dropout.p == 0.5


def test_block_compiled_matches_eager():
    a = graphs.adjacency("lips20")
    block = STGCNBlock(4, 8, a, stride=2)
    names = ["weight", "bias", "edge_importance", "adaptive_graph"]
    params = [getattr(block, n).detach().clone().requires_grad_() for n in names]
    x = torch.randn(2, 4, 7, 20, requires_grad=True)

    def fn(x, *p):
        return torch.func.functional_call(block, dict(zip(names, p)), (x,))

    assert_compiled_matches_eager(fn, [x, *params])


def test_block_bad_inputs():
    a = graphs.adjacency("lips20")
    block = STGCNBlock(2, 4, a)
    with pytest.raises(ValueError, match=r"x must be \[N, 2, T, 20\] \(\[N, in_channels, T, V\]\), got \[3, 2, 5, 68\]"):
        block(torch.randn(3, 2, 5, 68))
    with pytest.raises(ValueError, match=r"x must be \[N, 2, T, 20\].*got \[3, 3, 5, 20\]"):
        block(torch.randn(3, 3, 5, 20))
    with pytest.raises(ValueError, match=r"got \[2, 5, 20\]"):
        block(torch.randn(2, 5, 20))
    with pytest.raises(ValueError, match=r"adjacency must be \[K, V, V\] with K, V >= 1, got \[20, 20\]"):
        STGCNBlock(2, 4, a[0])
    with pytest.raises(ValueError, match=r"adjacency must be \[K, V, V\].*got \[3, 20, 19\]"):
        STGCNBlock(2, 4, a[:, :, :19])
    with pytest.raises(ValueError, match="adjacency must be floating point"):
        STGCNBlock(2, 4, torch.ones(1, 3, 3, dtype=torch.int64))
    with pytest.raises(ValueError, match="stride must be >= 1, got 0"):
        STGCNBlock(2, 4, a, stride=0)
    with pytest.raises(ValueError, match="in_channels and out_channels must be >= 1"):
        STGCNBlock(0, 4, a)
    with pytest.raises(ValueError, match="temporal_kernel_size must be odd"):
        STGCNBlock(2, 4, a, temporal_kernel_size=8)


# ---- LandmarkSTGCN -------------------------------------------------------------------------------------

SMALL = {"channels": (8, 8, 16), "strides": (1, 2, 1)}


def test_encoder_shapes_and_layouts():
    model = LandmarkSTGCN(2, "lips20", **SMALL).eval()
    x = torch.randn(3, 2, 29, 20)
    f = model(x)
    assert f.shape == (3, 16, 15) and model.num_features == 16
    torch.testing.assert_close(model(x.permute(0, 2, 3, 1)), f)  # [N, T, V, C]
    torch.testing.assert_close(model(x.permute(0, 2, 3, 1).contiguous()), f)
    explicit = LandmarkSTGCN(2, "lips20", **SMALL, layout="NTVC").eval()
    explicit.load_state_dict(model.state_dict())
    torch.testing.assert_close(explicit(x.permute(0, 2, 3, 1)), f)
    torch.testing.assert_close(model.features(x), f)


def test_encoder_defaults():
    model = LandmarkSTGCN()
    assert [b.out_channels for b in model.blocks] == [64, 64, 128, 128, 256]
    assert [b.stride for b in model.blocks] == [1] * 5
    assert model.blocks[0].residual is None and model.head is None
    assert model.blocks[0].num_partitions == 3 and model.num_nodes == 20
    f = model(torch.randn(2, 2, 5, 20))
    assert f.shape == (2, 256, 5)


@pytest.mark.parametrize("strides, t, t_out", [((1, 1, 1), 9, 9), ((2, 2, 1), 29, 8), ((1, 1, 3), 1, 1)])
def test_encoder_strides(strides, t, t_out):
    model = LandmarkSTGCN(3, "face68", channels=(4, 4, 8), strides=strides, strategy="distance", max_hop=2)
    assert model(torch.randn(2, 3, t, 68)).shape == (2, 8, t_out)


def test_encoder_head_and_gradients():
    model = LandmarkSTGCN(2, "lips20", **SMALL, num_classes=7, dropout=0.1)
    x = torch.randn(4, 29, 20, 2, requires_grad=True)
    logits = model(x)
    assert logits.shape == (4, 7)
    features = model.features(x)
    assert features.shape == (4, 16, 15)
    model.eval()
    torch.testing.assert_close(model(x), model.head(model.features(x).mean(2)))
    model.train()
    F.cross_entropy(model(x), torch.arange(4)).backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert model.blocks[0].dropout.p == 0 and model.blocks[1].dropout.p == 0.1


def test_encoder_input_norm_is_per_node_and_coordinate():
    model = LandmarkSTGCN(2, "lips20", channels=(4,)).eval()
    mean = torch.randn(40)
    with torch.no_grad():
        model.input_norm.running_mean.copy_(mean)
    seen = []
    model.blocks[0].register_forward_hook(lambda m, inp, out: seen.append(inp[0]))
    x = torch.randn(2, 2, 5, 20)
    model(x)
    # channel v * C + c normalises coordinate c of node v (ST-GCN's data_bn)
    expected = (x - mean.view(20, 2).T[None, :, None, :]) / (1 + 1e-5) ** 0.5
    torch.testing.assert_close(seen[0], expected)


def test_encoder_double_and_face():
    model = LandmarkSTGCN(2, "face68", channels=(4, 6), strategy="uniform", adaptive=False).double()
    x = torch.randn(2, 2, 6, 68, dtype=torch.float64)
    assert model(x).dtype == torch.float64
    assert model.blocks[1].adaptive_graph is None


def test_encoder_bad_inputs():
    model = LandmarkSTGCN(2, "lips20", **SMALL)
    with pytest.raises(ValueError, match=r"x must be \[N, 2, T, 20\] or \[N, T, 20, 2\] \(in_channels = 2, "
                                         r"V = 20 for graph 'lips20'\), got \[2, 2, 9, 68\]"):
        model(torch.randn(2, 2, 9, 68))
    with pytest.raises(ValueError, match=r"got \[2, 3, 9, 20\]"):
        model(torch.randn(2, 3, 9, 20))
    with pytest.raises(ValueError, match=r"got \[2, 9, 20, 3\]"):
        model(torch.randn(2, 9, 20, 3))
    with pytest.raises(ValueError, match=r"\(4-D\), got \[2, 9, 20\]"):
        model(torch.randn(2, 9, 20))
    nctv = LandmarkSTGCN(2, "lips20", **SMALL, layout="NCTV")
    with pytest.raises(ValueError, match=r"x must be \[N, 2, T, 20\] \(in_channels"):
        nctv(torch.randn(2, 9, 20, 2))
    ambiguous = LandmarkSTGCN(20, "lips20", channels=(4,))
    with pytest.raises(ValueError, match="fits both"):
        ambiguous(torch.randn(2, 20, 20, 20))
    ambiguous.layout = "NCTV"
    assert ambiguous(torch.randn(2, 20, 20, 20)).shape == (2, 4, 20)
    with pytest.raises(ValueError, match=r"strides must have one entry per block \(3\), got 2"):
        LandmarkSTGCN(channels=(4, 4, 4), strides=(1, 2))
    with pytest.raises(ValueError, match="layout must be one of"):
        LandmarkSTGCN(layout="NHWC")
    with pytest.raises(ValueError, match="graph must be one of"):
        LandmarkSTGCN(graph="hands21")
    with pytest.raises(ValueError, match="num_classes must be >= 1 or None, got 0"):
        LandmarkSTGCN(num_classes=0)
    with pytest.raises(ValueError, match="channels must name at least one block"):
        LandmarkSTGCN(channels=())


def test_benchmark_peer_is_the_same_model():
    from facekernels.bench.workloads_stgcn import landmark_stgcn_einsum

    assert STGCNBlock.graph_conv is st_graph_conv  # the modules run the op
    ours = LandmarkSTGCN(2, "lips20", **SMALL, num_classes=3).double()
    peer = landmark_stgcn_einsum(LandmarkSTGCN(2, "lips20", **SMALL, num_classes=3)).double()
    peer.load_state_dict(ours.state_dict())
    assert all(b.graph_conv is not st_graph_conv for b in peer.blocks)
    x = torch.randn(3, 2, 11, 20, dtype=torch.float64)
    torch.testing.assert_close(peer(x), ours(x), rtol=1e-10, atol=1e-10)


@pytest.fixture
def _no_tf32():
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.mark.cuda
def test_encoder_cuda_matches_cpu(_no_tf32):
    cpu = LandmarkSTGCN(2, "lips20", **SMALL, num_classes=5)
    gpu = LandmarkSTGCN(2, "lips20", **SMALL, num_classes=5).cuda()
    gpu.load_state_dict(cpu.state_dict())
    x = torch.randn(4, 2, 29, 20)
    x_gpu = x.cuda().requires_grad_()
    x.requires_grad_()
    out, out_gpu = cpu(x), gpu(x_gpu)
    torch.testing.assert_close(out_gpu.cpu(), out, rtol=1e-4, atol=1e-4)
    out.square().sum().backward()
    out_gpu.square().sum().backward()
    torch.testing.assert_close(x_gpu.grad.cpu(), x.grad, rtol=1e-3, atol=1e-4)
    for (name, p), p_gpu in zip(cpu.named_parameters(), gpu.parameters()):
        torch.testing.assert_close(p_gpu.grad.cpu(), p.grad, rtol=1e-3, atol=1e-4, msg=name)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        assert torch.isfinite(gpu.features(x_gpu.detach())).all()


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("affine", [True, False])
def test_masked_batch_norm_gradcheck(per_channel, affine):
    """The training-mode masked batch norm's closed-form backward against numerical gradients (x, weight,
    bias), with a channel that has no valid point when the mask is per channel."""
    from facekernels.nn import masked_batch_norm

    bn = nn.BatchNorm2d(3, affine=affine, track_running_stats=False).double()
    x = torch.randn(2, 3, 4, 5, dtype=torch.float64, requires_grad=True)
    mask = (torch.rand(2, 3 if per_channel else 1, 4, 5) > 0.3).double()
    if per_channel:
        mask[:, 2] = 0
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.uniform_(-0.5, 0.5)
    assert torch.autograd.gradcheck(lambda x_: masked_batch_norm(x_, mask, bn), [x])
    if affine:  # gradcheck perturbs bn.weight and bn.bias in place, which the module reads
        assert torch.autograd.gradcheck(lambda w, b: masked_batch_norm(x, mask, bn), [bn.weight, bn.bias])
    out = masked_batch_norm(x, mask, bn)
    assert (out[mask.expand_as(out) == 0] == 0).all()
