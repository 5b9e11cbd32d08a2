"""facekernels.models.MOL against a float64 re-implementation of the released MOL.forward (its loop over
the frame pairs, FCC as released, CCC's get_graph_feature + edge_feature, FlowNet's forward with the
correlation computed from its definition), with one state_dict loaded into both: eval and train mode
(per-pair BatchNorm statistics, running statistics, gradients); the released parameter names; mol_loss
against train.py's loops."""

import pytest
import torch
import torch.nn.functional as F
from facekernels.models import MOL, mol_loss
from facekernels.models.mol import ConvStack, FlowNet, LDMPredictor, MER3dCNN
from test_fcc import ReleasedFCC
from test_mol_losses import released_landmark_loss
from torch import nn


def correlate_reference(a, b):
    """spatial_correlation_sample(kernel_size=1, patch_size=21, dilation_patch=2) by pad + unfold, / C,
    LeakyReLU(0.1), as the released correlate()."""
    n, c, h, w = a.shape
    patches = F.unfold(F.pad(b, (20, 20, 20, 20)), kernel_size=21, dilation=2).view(n, c, 441, h * w)
    out = (patches * a.reshape(n, c, 1, h * w)).sum(1).view(n, 441, h, w) / c
    return F.leaky_relu(out, 0.1)


class ReleasedEdgeFeature(nn.Module):
    """modules/CCC.py: get_graph_feature (cosine kNN, x_j - x_i) and edge_feature (conv1(f_i) +
    conv2(f_j - f_i) where its f_j is already x_j - x_i; ReLU; max over the k neighbours)."""

    def __init__(self, dim=256, k=4):
        super().__init__()
        self.conv1 = nn.Conv1d(1, dim, kernel_size=dim)
        self.conv2 = nn.Conv1d(1, dim, kernel_size=dim)
        self.k = k

    def forward(self, x):  # [B, C, N]
        xn = F.normalize(x, p=2, dim=1)
        idx = torch.matmul(xn.transpose(2, 1), xn).topk(k=self.k, dim=-1)[1]  # [B, N, k]
        xt = x.transpose(1, 2)  # [B, N, C]
        feature = torch.stack([xt[b][idx[b]] for b in range(x.shape[0])])  # [B, N, k, C]
        fj = (feature - xt.unsqueeze(2)).permute(0, 3, 1, 2)  # [B, C, N, k]
        n = x.shape[2]
        w1, w2 = self.conv1.weight.view(n, n), self.conv2.weight.view(n, n)
        vi = torch.einsum("mn,bcn->bcm", w1, x) + self.conv1.bias
        out = []
        for j in range(self.k):
            out.append(F.relu(vi + torch.einsum("mn,bcn->bcm", w2, fj[..., j] - x) + self.conv2.bias))
        return torch.stack(out, -1).max(-1)[0]


def released_flownet(f, x1, x2, feat):
    """modules/FlowNet.py FlowNet.forward, line by line, on the submodules of `f`."""
    c1a = f.conv1(x1); c2a = f.conv2(c1a); c3a = f.conv3(c2a)
    c1b = f.conv1(x2); c2b = f.conv2(c1b); c3b = f.conv3(c2b)
    redir = f.conv_redir(c3a)
    out_conv3 = f.conv3_1(torch.cat([redir, correlate_reference(c3a, c3b), feat], dim=1))
    out_conv4 = f.conv4_1(f.conv4(out_conv3))
    out_conv5 = f.conv5_1(f.conv5(out_conv4))
    out_conv6 = f.conv6_1(f.conv6(out_conv5))
    flow6 = f.predict_flow6(out_conv6)
    concat5 = torch.cat((out_conv5, f.deconv5(out_conv6), f.upsampled_flow6_to_5(flow6)), 1)
    flow5 = f.predict_flow5(concat5)
    concat4 = torch.cat((out_conv4, f.deconv4(concat5), f.upsampled_flow5_to_4(flow5)), 1)
    flow4 = f.predict_flow4(concat4)
    concat3 = torch.cat((out_conv3, f.deconv3(concat4), f.upsampled_flow4_to_3(flow4)), 1)
    flow3 = f.predict_flow3(concat3)
    concat2 = torch.cat((c2a, f.deconv2(concat3), f.upsampled_flow3_to_2(flow3)), 1)
    flow2 = f.predict_flow2(concat2)
    concat1 = torch.cat((c1a, f.deconv1(concat2), f.upsampled_flow2_to_1(flow2)), 1)
    flow1 = f.predict_flow1(concat1)
    concat0 = torch.cat((x1, f.deconv0(concat1), f.upsampled_flow1_to_0(flow1)), 1)
    return f.predict_flow0(concat0)


class ReleasedMOL(nn.Module):
    """MOL_model.py's MOL, its forward as released (modules with the released names and math)."""

    def __init__(self):
        super().__init__()
        self.conv_stack = ConvStack()
        self.FCC_1, self.FCC_2 = ReleasedFCC(), ReleasedFCC()
        self.CCC_1, self.CCC_2 = ReleasedEdgeFeature(), ReleasedEdgeFeature()
        self.flownet = FlowNet()
        self.mer_3dcnn = MER3dCNN(5)
        self.ldm_predictor = LDMPredictor()

    def forward(self, x):
        x = x.permute(0, 1, 3, 4, 2)
        for index in range(x.shape[-1] - 1):
            f1o, f2o = x[..., index], x[..., index + 1]
            frame_1, frame_2 = self.conv_stack(f1o), self.conv_stack(f2o)
            b, c, h, w = frame_1.shape
            f1, f2 = self.FCC_1(frame_1), self.FCC_2(frame_2)
            f1 = f1 + self.CCC_1(f1.reshape(b, c, h * w)).reshape(b, c, h, w)
            f2 = f2 + self.CCC_2(f2.reshape(b, c, h * w)).reshape(b, c, h, w)
            ldm = self.ldm_predictor(f2).unsqueeze(-1)
            flow = released_flownet(self.flownet, f1o, f2o, torch.cat((f1, f2), dim=1)).unsqueeze(-1)
            if index == 0:
                cross = torch.cat([f1.unsqueeze(-1), f2.unsqueeze(-1)], dim=-1)
                pred_ldm, pred_flow = ldm, flow
            else:
                cross = torch.cat([cross, f1.unsqueeze(-1), f2.unsqueeze(-1)], dim=-1)
                pred_ldm = torch.cat([pred_ldm, ldm], dim=-1)
                pred_flow = torch.cat([pred_flow, flow], dim=-1)
        return self.mer_3dcnn(cross), pred_flow, pred_ldm


@pytest.fixture(scope="module")
def pair():
    torch.manual_seed(0)
    released = ReleasedMOL().double()
    with torch.no_grad():  # non-trivial BatchNorm state, so eval mode tests the running statistics
        for m in released.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.1, 0.1)
    ours = MOL().double()
    result = ours.load_state_dict(released.state_dict(), strict=True)  # the FCCs' ffn.* are dropped
    assert not result.missing_keys and not result.unexpected_keys
    x = torch.rand(2, 1, 8, 128, 128, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    return released, ours, x


def test_parameter_names_and_shapes_are_the_released_ones():
    released, ours = ReleasedMOL(), MOL()
    expected = {k: v.shape for k, v in released.state_dict().items() if ".ffn." not in k}
    assert {k: v.shape for k, v in ours.state_dict().items()} == expected
    # a few names and shapes read off the released modules
    sd = ours.state_dict()
    assert sd["flownet.conv3_1.0.weight"].shape == (256, 729, 3, 3)
    assert sd["flownet.conv3_1.1.running_var"].shape == (256,)
    assert sd["flownet.predict_flow0.weight"].shape == (2, 35, 3, 3)
    assert sd["flownet.upsampled_flow1_to_0.weight"].shape == (2, 2, 4, 4)
    assert sd["conv_stack.conv_stack.2.weight"].shape == (64, 32, 2, 2)
    assert sd["CCC_1.conv1.weight"].shape == (256, 1, 256)
    assert sd["FCC_2.meta_pe_2_W"].shape == (1, 64, 1, 32)
    assert sd["mer_3dcnn.fc1.weight"].shape == (256, 2560)
    assert sd["ldm_predictor.fc1.weight"].shape == (512, 6272)


@pytest.mark.slow
def test_eval_matches_released(pair):
    released, ours, x = pair
    released.eval(); ours.eval()
    with torch.no_grad():
        expected = released(x)
        got = ours(x)
    for a, b, name in zip(got, expected, ("mer", "flows", "landmarks")):
        assert a.shape == b.shape, name
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9, msg=name)
    for shared in (True,):
        ours.shared_batchnorm = shared
        with torch.no_grad():
            for a, b in zip(ours(x), expected):
                torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-9)
        ours.shared_batchnorm = False


@pytest.mark.slow
def test_train_matches_released_with_per_pair_batchnorm(pair):
    released, ours, x = pair
    released = ReleasedMOL().double()
    released.load_state_dict(pair[0].state_dict())
    ours = MOL().double()
    ours.load_state_dict(pair[0].state_dict())
    released.train(); ours.train()
    torch.manual_seed(5)
    expected = released(x)
    torch.manual_seed(5)  # the same dropout masks
    got = ours(x)
    for a, b, name in zip(got, expected, ("mer", "flows", "landmarks")):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-8, msg=name)
    # running statistics updated once per pair (and per frame in FlowNet's encoder), in the released order
    ref = dict(released.named_buffers())
    for name, buf in ours.named_buffers():
        torch.testing.assert_close(buf, ref[name], rtol=1e-9, atol=1e-9, msg=name)
    weights = torch.randn(3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    sum(w * t.square().mean() for w, t in zip(weights, expected)).backward()
    sum(w * t.square().mean() for w, t in zip(weights, got)).backward()
    ref_params = dict(released.named_parameters())
    for name, p in ours.named_parameters():
        assert p.grad is not None, name
        torch.testing.assert_close(p.grad, ref_params[name].grad, rtol=1e-6, atol=1e-9, msg=name)


def test_shared_batchnorm_option_trains():
    torch.manual_seed(0)
    model = MOL(shared_batchnorm=True).train()
    x = torch.rand(2, 1, 8, 128, 128)
    mer, flows, landmarks = model(x)
    assert mer.shape == (2, 5) and flows.shape == (2, 2, 128, 128, 7) and landmarks.shape == (2, 136, 7)
    (mer.sum() + flows.mean() + landmarks.mean()).backward()
    assert model.flownet.conv1[1].num_batches_tracked.item() == 1  # one set of statistics for all frames


def test_mol_loss_matches_train_py():
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(3, 5, generator=g, dtype=torch.float64)
    flows, flow_t = (torch.randn(3, 2, 6, 5, 7, generator=g, dtype=torch.float64) for _ in range(2))
    base = torch.rand(3, 68, 2, 1, generator=g, dtype=torch.float64) * 80 + 24
    ldm_t = (base + torch.randn(3, 68, 2, 8, generator=g, dtype=torch.float64)).flatten(1, 2)
    ldm = ldm_t[:, :, 1:] + torch.randn(3, 136, 7, generator=g, dtype=torch.float64)
    label = torch.tensor([0, 4, 2])
    loss = mol_loss(logits, flows, ldm, label, flow_t, ldm_t)
    me = F.nll_loss(F.log_softmax(logits, dim=1), label)
    flow = ((flows - flow_t) ** 2).mean() / 7
    lm = released_landmark_loss(ldm, ldm_t[:, :, 1:])
    torch.testing.assert_close(loss.mer, me)
    torch.testing.assert_close(loss.flow, flow)
    torch.testing.assert_close(loss.landmark, lm)
    torch.testing.assert_close(loss.total, 10 * flow + 0.5 * lm + me)
    with pytest.raises(ValueError, match="mol_loss: landmark_target must hold pairs \\+ 1 = 8 frames"):
        mol_loss(logits, flows, ldm, label, flow_t, ldm_t[:, :, 1:])


def test_bad_input_shape():
    with pytest.raises(ValueError, match=r"MOL: x must be \[B, 1, T, H, W\]"):
        MOL()(torch.rand(2, 8, 128, 128))


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_pair_batchnorm_equals_one_call_per_group(channels_last, momentum):
    """PairBatchNorm2d with g groups: each group normalised by its own statistics, as g calls of a plain
    BatchNorm2d would; the running statistics updated once per group, in order; gradients the same; the
    input's memory format kept."""
    from facekernels.models.mol import PairBatchNorm2d

    torch.manual_seed(0)
    g, m, c = 3, 4, 5
    ours = PairBatchNorm2d(c, momentum=momentum)
    plain = torch.nn.BatchNorm2d(c, momentum=momentum)
    with torch.no_grad():
        for bn in (ours, plain):
            bn.weight.copy_(torch.linspace(0.5, 1.5, c))
            bn.bias.copy_(torch.linspace(-0.2, 0.2, c))
    ours.groups = g
    x = (torch.randn(g * m, c, 6, 7) * 3 + 1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x1, x2 = x.clone().requires_grad_(), x.clone().requires_grad_()
    y = ours(x1)
    expected = torch.cat([plain(x2[k * m:(k + 1) * m]) for k in range(g)])
    torch.testing.assert_close(y, expected)
    fmt = torch.channels_last if channels_last else torch.contiguous_format
    assert y.is_contiguous(memory_format=fmt)
    assert y._base is None  # a tensor of its own: an in-place op after it (MOL's LeakyReLU) copies nothing
    torch.testing.assert_close(ours.running_mean, plain.running_mean)
    torch.testing.assert_close(ours.running_var, plain.running_var)
    assert int(ours.num_batches_tracked) == int(plain.num_batches_tracked) == g
    grad = torch.randn_like(y)
    y.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(x1.grad, x2.grad)
    assert x1.grad.is_contiguous(memory_format=fmt)
    torch.testing.assert_close(ours.weight.grad, plain.weight.grad)
    torch.testing.assert_close(ours.bias.grad, plain.bias.grad)
    with pytest.raises(ValueError, match="not a multiple of groups"):
        ours(x[:-1])


def test_pair_batchnorm_update_order_repeats_groups():
    """update_order lists the groups whose statistics update the running ones, in order, a group possibly
    twice (MOL's encoder: an interior frame that the released code passes through it in two calls)."""
    from facekernels.models.mol import PairBatchNorm2d

    torch.manual_seed(1)
    g, m, c, order = 3, 4, 5, (0, 1, 1, 2)
    ours = PairBatchNorm2d(c)
    plain = torch.nn.BatchNorm2d(c)
    ours.groups, ours.update_order = g, order
    x = torch.randn(g * m, c, 3, 4) * 2 + 1
    y = ours(x)
    for k in order:
        expected = plain(x[k * m:(k + 1) * m])
        torch.testing.assert_close(y[k * m:(k + 1) * m], expected)
    torch.testing.assert_close(ours.running_mean, plain.running_mean)
    torch.testing.assert_close(ours.running_var, plain.running_var)
    assert int(ours.num_batches_tracked) == len(order)
