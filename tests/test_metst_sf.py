"""facekernels.models.METST_SF (BoostingVRME's spotting-and-recognition network): the released parameter
names and shapes, strict loading of DataParallel-prefixed state_dicts, the forward against a float64
re-implementation written here from the released network's description (its Mamba blocks by a sequential
scan), the loss, bad inputs, and a few training steps."""

import math

import pytest
import torch
import torch.nn.functional as F

from facekernels.models import METST_SF, metst_sf_loss


def small(**kwargs):
    return METST_SF(out_channels=kwargs.pop("out_channels", 3), dim=kwargs.pop("dim", 16), d_state=kwargs.pop("d_state", 8),
                    **kwargs)


def test_released_names_and_shapes():
    sd = METST_SF(out_channels=5).state_dict()
    dim, inner, rank = 256, 512, 16  # slow path: d_model 256, d_inner 512, dt_rank ceil(256 / 16)
    expected = {
        "Stem.0.weight": (128, 36, 3), "Stem.1.running_var": (128,), "Stem.3.weight": (128, 128, 3),
        "Stem_slow.0.weight": (256, 128, 3), "fuse_1.conv.0.weight": (256, 128, 3), "fuse_2.conv.1.weight": (256,),
        "fc_spot.0.weight": (1, 384), "fc_recog.0.weight": (5, 384), "fc_recog.0.bias": (5,),
        "block1.0.norm1.weight": (dim,), "block1.0.norm2.bias": (dim,), "block3.3.attn.norm.weight": (dim,),
        "block1.0.attn.mamba.in_proj.weight": (2 * inner, dim), "block1.0.attn.mamba.conv1d.weight": (inner, 1, 4),
        "block1.0.attn.mamba.conv1d.bias": (inner,), "block1.0.attn.mamba.x_proj.weight": (rank + 128, inner),
        "block1.0.attn.mamba.dt_proj.weight": (inner, rank), "block1.0.attn.mamba.dt_proj.bias": (inner,),
        "block1.0.attn.mamba.A_log": (inner, 64), "block1.0.attn.mamba.D": (inner,),
        "block1.0.attn.mamba.out_proj.weight": (dim, inner),
        "block2_fast.1.attn.mamba.in_proj.weight": (512, 128), "block3_fast.3.attn.mamba.A_log": (256, 64),
    }
    for key, shape in expected.items():
        assert tuple(sd[key].shape) == shape, key
    # 6 stages x 4 blocks x (norm1, norm2, attn.norm: 6 tensors; Mamba: 9)
    assert sum(".attn.mamba." in k for k in sd) == 6 * 4 * 9
    assert sum(k.startswith(("block", )) for k in sd) == 6 * 4 * 15
    assert not any("upsample" in k for k in sd)


def test_released_initialisation():
    torch.manual_seed(0)
    net = METST_SF()
    mamba = net.block1[0].attn.mamba
    assert mamba.in_proj.bias is None and mamba.out_proj.bias is None
    assert torch.equal(mamba.A_log, torch.log(torch.arange(1, 65.0)).repeat(512, 1))
    assert torch.equal(mamba.D, torch.ones(512))
    with torch.no_grad():
        assert float(net.fc_spot[0].bias.abs().max()) == 0
        # every Linear truncated-normal with std 0.02 (timm's bounds, +-2, cut nothing at this std)
        assert float(mamba.in_proj.weight.std()) == pytest.approx(0.02, rel=0.02)
        # dt_proj too: weight and bias re-initialised like every Linear's (the _no_reinit marker spares the
        # bias only from the second pass, after the first has zeroed it), as in the released network
        assert float(mamba.dt_proj.weight.std()) == pytest.approx(0.02, rel=0.1)
        assert float(mamba.dt_proj.bias.abs().max()) == 0
        # out_proj: Kaiming-uniform (bound 1 / sqrt(fan_in)) divided by 2
        bound = 1 / math.sqrt(512) / 2
        assert bound >= float(mamba.out_proj.weight.abs().max()) > 0.9 * bound


def test_load_released_strips_the_data_parallel_prefix():
    net = small(out_channels=5)
    released = {"module." + k: v.clone() + 1 for k, v in net.state_dict().items()}
    other = small(out_channels=5)
    other.load_released(released)
    assert torch.equal(other.fc_recog[0].bias, net.fc_recog[0].bias + 1)
    del released["module.block2.1.norm2.weight"]
    with pytest.raises(RuntimeError, match="norm2.weight"):
        other.load_released(released)


# ---- the float64 re-implementation ------------------------------------------------------------------------


def ref_bn(x, bn):
    return (x - bn.running_mean.double()[:, None]) / torch.sqrt(bn.running_var.double()[:, None] + bn.eps) \
        * bn.weight.double()[:, None] + bn.bias.double()[:, None]


def ref_conv(x, conv):  # [B, C, T], plain loops over the taps
    w, b = conv.weight.double(), conv.bias.double()
    stride, pad, k = conv.stride[0], conv.padding[0], w.shape[2]
    xp = F.pad(x, (pad, pad))
    t_out = (x.shape[2] + 2 * pad - k) // stride + 1
    out = torch.zeros(x.shape[0], w.shape[0], t_out, dtype=torch.float64)
    for t in range(t_out):
        out[:, :, t] = torch.einsum("bck,ock->bo", xp[:, :, t * stride:t * stride + k], w) + b
    return out


def ref_ln(x, ln):
    mean = x.mean(-1, keepdim=True)
    var = ((x - mean) ** 2).mean(-1, keepdim=True)
    return (x - mean) / torch.sqrt(var + ln.eps) * ln.weight.double() + ln.bias.double()


def ref_mamba(h, m):
    """mamba-ssm's Mamba forward from its definition, float64, the scan one step at a time."""
    b, length, _ = h.shape
    xz = h @ m.in_proj.weight.double().T
    x, z = xz[..., :m.d_inner], xz[..., m.d_inner:]
    # causal depthwise conv: out[t] = sum_k w[k] x[t - (K - 1) + k] + bias
    w, K = m.conv1d.weight.double()[:, 0, :], m.conv1d.weight.shape[2]
    xpad = torch.cat([torch.zeros(b, K - 1, m.d_inner, dtype=torch.float64), x], 1)
    x = sum(w[:, k] * xpad[:, k:k + length] for k in range(K)) + m.conv1d.bias.double()
    x = x * torch.sigmoid(x)
    proj = x @ m.x_proj.weight.double().T
    dt, B, C = proj[..., :m.dt_rank], proj[..., m.dt_rank:m.dt_rank + m.d_state], proj[..., m.dt_rank + m.d_state:]
    delta = F.softplus(dt @ m.dt_proj.weight.double().T + m.dt_proj.bias.double())
    A = -torch.exp(m.A_log.double())
    state = torch.zeros(b, m.d_inner, m.d_state, dtype=torch.float64)
    ys = []
    for t in range(length):
        state = torch.exp(delta[:, t, :, None] * A) * state + delta[:, t, :, None] * B[:, t, None, :] * x[:, t, :, None]
        ys.append((state * C[:, t, None, :]).sum(-1) + m.D.double() * x[:, t])
    y = torch.stack(ys, 1) * (z * torch.sigmoid(z))
    return y @ m.out_proj.weight.double().T


def ref_forward(net, x):
    x = x.double().squeeze(1)
    s = net.Stem
    x = torch.relu(ref_bn(ref_conv(x, s[0]), s[1]))
    x = torch.relu(ref_bn(ref_conv(x, s[3]), s[4]))
    fast = x.transpose(1, 2)
    slow = torch.relu(ref_bn(ref_conv(x, net.Stem_slow[0]), net.Stem_slow[1])).transpose(1, 2)

    def block(v, blk):
        return v + ref_ln(ref_mamba(ref_ln(v, blk.attn.norm), blk.attn.mamba), blk.norm1)

    def lateral(slow, fast, lat):
        return slow + torch.relu(ref_bn(ref_conv(fast.transpose(1, 2), lat.conv[0]), lat.conv[1])).transpose(1, 2)

    for stage in range(3):
        for blk in getattr(net, f"block{stage + 1}"):
            slow = block(slow, blk)
        for blk in getattr(net, f"block{stage + 1}_fast"):
            fast = block(fast, blk)
        if stage < 2:
            slow = lateral(slow, fast, getattr(net, f"fuse_{stage + 1}"))
    slow = slow.repeat_interleave(2, dim=1)  # nearest upsampling by 2
    fused = torch.cat([slow, fast], 2)
    spot = torch.sigmoid(fused @ net.fc_spot[0].weight.double().T + net.fc_spot[0].bias.double()).squeeze(-1)
    return spot, fused @ net.fc_recog[0].weight.double().T + net.fc_recog[0].bias.double()


@pytest.mark.parametrize("frames", [2, 12])
def test_forward_matches_the_float64_reimplementation(frames):
    torch.manual_seed(1)
    net = small(out_channels=4).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics and biases
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm1d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
            if isinstance(module, torch.nn.LayerNorm):
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    x = torch.randn(3, 1, 36, frames)
    spot, logits = net(x)
    ref_spot, ref_logits = ref_forward(net, x)
    assert spot.shape == (3, frames) and logits.shape == (3, frames, 4)
    torch.testing.assert_close(spot.double(), ref_spot, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(logits.double(), ref_logits, atol=2e-5, rtol=1e-4)
    # the released input form [B, 1, 36, T] and the squeezed one agree
    torch.testing.assert_close(net(x[:, 0])[1], logits)


def test_drop_path_only_in_training():
    net = small()
    x = torch.randn(8, 36, 6)
    net.eval()
    assert torch.equal(net(x)[0], net(x)[0])
    net.train()
    torch.manual_seed(0)
    a = net(x)[1]
    torch.manual_seed(1)
    assert not torch.equal(a, net(x)[1])  # different blocks dropped (and batch statistics are the same)


@pytest.mark.parametrize("shape,match", [
    ((2, 1, 36, 7), r"METST_SF: the number of frames T must be even .* got T = 7"),
    ((2, 1, 35, 8), r"METST_SF: x must be \[B, 1, 36, T\] or \[B, 36, T\], got \[2, 1, 35, 8\]"),
    ((2, 36), r"METST_SF: x must be"),
])
def test_bad_inputs(shape, match):
    with pytest.raises(ValueError, match=match):
        small()(torch.randn(shape))


def test_loss_and_a_few_training_steps():
    torch.manual_seed(0)
    net = small(out_channels=3)
    x = torch.randn(16, 1, 36, 8)
    # a learnable signal: the spot target follows feature 0, the class the sign of feature 1
    spot_target = torch.sigmoid(3 * x[:, 0, 0])
    classes = (x[:, 0, 1] > 0).long() + (x[:, 0, 1] > 1).long()
    one_hot = F.one_hot(classes, 3).float()
    weights = torch.tensor([1.0, 1.0, 2.0])
    spot, logits = net(x)
    loss = metst_sf_loss(spot, logits, spot_target, one_hot, weights)
    # the weighted cross entropy of one-hot targets: -mean over frames of w_y log softmax_y
    log_p = torch.log_softmax(logits.reshape(-1, 3), -1).gather(1, classes.reshape(-1, 1))[:, 0]
    expected = 0.9 * ((spot - spot_target) ** 2).mean() + 0.1 * -(weights[classes.reshape(-1)] * log_p).mean()
    torch.testing.assert_close(loss, expected)
    torch.testing.assert_close(metst_sf_loss(spot, logits, spot_target, classes, weights), expected)
    loss.backward()
    unused = {n for n, _ in net.named_parameters() if n.endswith(("norm2.weight", "norm2.bias"))}
    assert all((p.grad is None) == (n in unused) for n, p in net.named_parameters())  # norm2: unused, as released
    optimizer = torch.optim.Adam(net.parameters(), lr=3e-3)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        spot, logits = net(x)
        step = metst_sf_loss(spot, logits, spot_target, one_hot, weights)
        step.backward()
        optimizer.step()
        losses.append(step.item())
    assert losses[-1] < 0.6 * losses[0]


def test_training_step_gradients_match_the_reference_scan():
    """The benchmark's peer (the same network with the scan as selective_scan_ref computes it) gives the same
    loss and parameter gradients in training mode (batch statistics), so the timed step is the same math."""
    import copy

    from facekernels.bench.workloads_selective_scan import metst_sf_on_reference_scan

    torch.manual_seed(0)
    net = small(out_channels=3, drop_path=0.0).train()
    peer = metst_sf_on_reference_scan(copy.deepcopy(net))
    x = torch.randn(4, 1, 36, 10)
    spot_target, classes = torch.rand(4, 10), torch.randint(0, 3, (4, 10))
    losses = []
    for model in (net, peer):
        loss = metst_sf_loss(*model(x), spot_target, classes, torch.tensor([1.0, 2.0, 6.0]))
        loss.backward()
        losses.append(loss)
    torch.testing.assert_close(losses[0], losses[1])
    for (name, p), q in zip(net.named_parameters(), peer.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            torch.testing.assert_close(p.grad, q.grad, atol=1e-5, rtol=1e-4, msg=name)
