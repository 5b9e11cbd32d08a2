"""facekernels.nn.FCC against MOL's released FCC module, re-written here in plain PyTorch from its
published description (same parameter names, shapes and forward), in train and eval mode."""

import pytest
import torch
import torch.nn.functional as F
from facekernels.nn import FCC
from torch import nn


class ReleasedFCC(nn.Module):
    """MOL's FCC as released (crop mode): circular convolutions as depthwise conv2d over the input
    concatenated with its first S-1 rows/columns; an `ffn` that is registered but never called."""

    def __init__(self, dim=64, meta_kernel_size=32, ffn_dim=2):
        super().__init__()
        k = meta_kernel_size
        self.meta_kernel_1_H = nn.Parameter(torch.randn(dim, 1, k, 1) * 0.2)
        self.meta_kernel_1_W = nn.Parameter(torch.randn(dim, 1, 1, k) * 0.2)
        self.meta_kernel_2_H = nn.Parameter(torch.randn(dim, 1, k, 1) * 0.2)
        self.meta_kernel_2_W = nn.Parameter(torch.randn(dim, 1, 1, k) * 0.2)
        self.meta_1_H_bias = nn.Parameter(torch.randn(dim))
        self.meta_1_W_bias = nn.Parameter(torch.randn(dim))
        self.meta_2_H_bias = nn.Parameter(torch.randn(dim))
        self.meta_2_W_bias = nn.Parameter(torch.randn(dim))
        self.meta_pe_1_H = nn.Parameter(torch.randn(1, dim, k, 1))
        self.meta_pe_1_W = nn.Parameter(torch.randn(1, dim, 1, k))
        self.meta_pe_2_H = nn.Parameter(torch.randn(1, dim, k, 1))
        self.meta_pe_2_W = nn.Parameter(torch.randn(1, dim, 1, k))
        self.pre_Norm_1 = nn.BatchNorm2d(dim)
        self.pre_Norm_2 = nn.BatchNorm2d(dim)
        self.ffn = nn.Sequential(
            nn.BatchNorm2d(2 * dim), nn.Conv2d(2 * dim, ffn_dim, 1), nn.Hardswish(), nn.Dropout(0.0),
            nn.Conv2d(ffn_dim, 2 * dim, 1), nn.Dropout(0.1),
        )
        self.dim = dim

    def forward(self, x):
        x_1, x_2 = torch.chunk(x, 2, 1)
        x_1_res, x_2_res = x_1, x_2
        s = x.shape[2]
        k_1_h = self.meta_kernel_1_H[:, :, :s, :]
        k_1_w = self.meta_kernel_1_W[:, :, :, :s]
        k_2_h = self.meta_kernel_2_H[:, :, :s, :]
        k_2_w = self.meta_kernel_2_W[:, :, :, :s]
        pe_1_h = self.meta_pe_1_H[:, :, :s, :].expand(1, self.dim, s, s)
        pe_1_w = self.meta_pe_1_W[:, :, :, :s].expand(1, self.dim, s, s)
        pe_2_h = self.meta_pe_2_H[:, :, :s, :].expand(1, self.dim, s, s)
        pe_2_w = self.meta_pe_2_W[:, :, :, :s].expand(1, self.dim, s, s)
        x_1 = self.pre_Norm_1(x_1 + pe_1_h)
        x_2 = self.pre_Norm_2(x_2 + pe_1_w)
        x_1_1 = F.conv2d(torch.cat((x_1, x_1[:, :, :-1, :]), dim=2), k_1_h, self.meta_1_H_bias, groups=self.dim)
        x_2_1 = F.conv2d(torch.cat((x_2, x_2[:, :, :, :-1]), dim=3), k_1_w, self.meta_1_W_bias, groups=self.dim)
        x_1_1 = x_1_1 + pe_2_w
        x_2_1 = x_2_1 + pe_2_h
        x_1_2 = F.conv2d(torch.cat((x_1_1, x_1_1[:, :, :, :-1]), dim=3), k_2_w, self.meta_2_W_bias, groups=self.dim)
        x_2_2 = F.conv2d(torch.cat((x_2_1, x_2_1[:, :, :-1, :]), dim=2), k_2_h, self.meta_2_H_bias, groups=self.dim)
        return torch.cat((x_1_res + x_1_2, x_2_res + x_2_2), dim=1)


def _pair(dim, k, dtype=torch.float64):
    released = ReleasedFCC(dim, k).to(dtype)
    ours = FCC(dim, k).to(dtype)
    missing = ours.load_state_dict(released.state_dict(), strict=True)
    assert not missing.missing_keys and not missing.unexpected_keys
    return released, ours


def test_state_dict_keys_match_released():
    released, ours = ReleasedFCC(), FCC()
    released_keys = {k for k in released.state_dict() if not k.startswith("ffn.")}
    assert set(ours.state_dict()) == released_keys
    for k, v in ours.state_dict().items():
        assert v.shape == released.state_dict()[k].shape, k


@pytest.mark.parametrize("train", [True, False])
@pytest.mark.parametrize("dim,k,s", [(64, 32, 16), (4, 8, 8), (3, 5, 3), (2, 4, 1)])
def test_outputs_and_gradients_match_released(train, dim, k, s):
    released, ours = _pair(dim, k)
    if not train:
        # give the running statistics something to say first
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
    ours_params = dict(ours.named_parameters())
    for name, p in released.named_parameters():
        if name.startswith("ffn."):
            continue
        torch.testing.assert_close(ours_params[name].grad, p.grad, atol=1e-10, rtol=1e-10, msg=name)
    for name, buf in released.named_buffers():
        if not name.startswith("ffn."):
            torch.testing.assert_close(dict(ours.named_buffers())[name], buf, msg=name)


def test_float32_paper_shape():
    released, ours = _pair(64, 32, torch.float32)
    x = torch.randn(8, 128, 16, 16)
    torch.testing.assert_close(ours(x), released(x), atol=1e-4, rtol=1e-4)


def test_load_released_full_model_state_dict_prefix():
    """A state_dict of a network holding FCC_1 (the released model's name) loads into ours too."""
    src = nn.Module()
    src.FCC_1 = ReleasedFCC(4, 8)
    dst = nn.Module()
    dst.FCC_1 = FCC(4, 8)
    dst.load_state_dict(src.state_dict(), strict=True)
    torch.testing.assert_close(dst.FCC_1.meta_kernel_1_H, src.FCC_1.meta_kernel_1_H)


def test_compile_fullgraph_training_step():
    model = FCC(4, 8)
    x = torch.randn(2, 8, 8, 8)
    eager = model(x)
    compiled = torch.compile(model, fullgraph=True)
    torch.testing.assert_close(compiled(x), eager, atol=1e-5, rtol=1e-5)


def test_interpolation_and_options():
    model = FCC(4, 8, instance_kernel_method="interpolation_bilinear", use_pe=False, mid_mix=True, bias=False)
    x = torch.randn(2, 8, 12, 5, requires_grad=True)   # larger than K and not square: resampled kernels
    y = model(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert model.meta_kernel_1_H.grad is not None and model.meta_1_H_bias is None


def test_bad_inputs():
    model = FCC(4, 8)
    with pytest.raises(ValueError, match=r"FCC: x must be \[B, 8, H, W\] \(2\*dim channels\), got \[2, 6, 8, 8\]"):
        model(torch.randn(2, 6, 8, 8))
    with pytest.raises(ValueError, match=r"FCC: with crop, H and W must be <= meta_kernel_size = 8, got 9x9"):
        model(torch.randn(2, 8, 9, 9))
    with pytest.raises(ValueError, match="instance_kernel_method"):
        FCC(4, 8, instance_kernel_method="nearest")


@pytest.mark.parametrize("momentum,track", [(None, True), (0.3, False)])
def test_batch_norm_settings_follow_torch(momentum, track):
    """BatchNorm's settings (cumulative average, no running stats) behave as in the released block."""
    released, ours = _pair(3, 6)
    for m in (released, ours):
        for bn in (m.pre_Norm_1, m.pre_Norm_2):
            bn.momentum = momentum
            bn.track_running_stats = track
            if not track:
                bn.running_mean = bn.running_var = bn.num_batches_tracked = None
    for train in (True, True, False):
        released.train(train)
        ours.train(train)
        x = torch.randn(4, 6, 6, 6, dtype=torch.float64)
        torch.testing.assert_close(ours(x), released(x), atol=1e-10, rtol=1e-10)
    for (name, a), (_, b) in zip(released.named_buffers(), ours.named_buffers()):
        torch.testing.assert_close(b, a, msg=name)

