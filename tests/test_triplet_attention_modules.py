"""facekernels.nn.TripletAttention against a plain re-implementation of the original block
(landskape-ai/triplet-attention, triplet_attention.py): state_dicts load strictly both ways, outputs,
input and parameter gradients and BatchNorm running statistics agree in train and eval mode, NCHW and
channels_last, with and without the spatial branch."""

import copy

import pytest
import torch
from torch import nn

from facekernels.nn import TripletAttention


# ---- the original block, re-implemented from its description (same module tree and parameter names) ----


class OriginalBasicConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 1, 7, stride=1, padding=3, bias=False)
        self.bn = nn.BatchNorm2d(1, eps=1e-5, momentum=0.01, affine=True)

    def forward(self, x):
        return self.bn(self.conv(x))


class OriginalGate(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = OriginalBasicConv()

    def forward(self, x):
        pooled = torch.cat((x.max(dim=1).values[:, None], x.mean(dim=1)[:, None]), dim=1)
        return x * self.conv(pooled).sigmoid()


class OriginalTripletAttention(nn.Module):
    def __init__(self, no_spatial=False):
        super().__init__()
        self.cw = OriginalGate()
        self.hc = OriginalGate()
        self.no_spatial = no_spatial
        if not no_spatial:
            self.hw = OriginalGate()

    def forward(self, x):
        a = self.cw(x.permute(0, 2, 1, 3).contiguous()).permute(0, 2, 1, 3).contiguous()
        b = self.hc(x.permute(0, 3, 2, 1).contiguous()).permute(0, 3, 2, 1).contiguous()
        if self.no_spatial:
            return 1 / 2 * (a + b)
        return 1 / 3 * (self.hw(x) + a + b)


def _randomise(module):
    """Non-trivial BatchNorm parameters and statistics, so that a swapped branch would show."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                t.copy_(torch.rand(t.shape, generator=g) + 0.5 if "var" in name else torch.randn(t.shape, generator=g))


def assert_same_in_train_and_eval(ours, peer, x0, modes):
    """Outputs, input and parameter gradients per mode, and the BatchNorm statistics at the end, agree."""
    grad = torch.randn(x0.shape, dtype=x0.dtype)
    for mode in modes:
        ours.train(mode == "train")
        peer.train(mode == "train")
        x1, x2 = x0.clone().requires_grad_(), x0.clone().requires_grad_()
        y1, y2 = ours(x1), peer(x2)
        torch.testing.assert_close(y1, y2, atol=1e-12, rtol=1e-10, msg=mode)
        y1.backward(grad)
        y2.backward(grad)
        torch.testing.assert_close(x1.grad, x2.grad, atol=1e-12, rtol=1e-10, msg=mode)
        for (name, p1), p2 in zip(ours.named_parameters(), peer.parameters()):
            torch.testing.assert_close(p1.grad, p2.grad, atol=1e-10, rtol=1e-10, msg=f"{mode} {name}")
            p1.grad = p2.grad = None
    for (name, b1), b2 in zip(ours.named_buffers(), peer.buffers()):
        torch.testing.assert_close(b1, b2, atol=1e-12, rtol=1e-10, msg=name)


def _pair(no_spatial, dtype=torch.float64, reference=False):
    torch.manual_seed(0)
    ours = TripletAttention(no_spatial=no_spatial, reference=reference).to(dtype)
    _randomise(ours)
    original = OriginalTripletAttention(no_spatial=no_spatial).to(dtype)
    original.load_state_dict(ours.state_dict(), strict=True)
    return ours, original


@pytest.mark.parametrize("no_spatial", [False, True])
def test_state_dict_names_are_the_originals(no_spatial):
    ours, original = _pair(no_spatial)
    assert list(ours.state_dict()) == list(original.state_dict())
    assert "cw.conv.conv.weight" in ours.state_dict() and "hc.conv.bn.running_var" in ours.state_dict()
    assert ("hw.conv.bn.num_batches_tracked" in ours.state_dict()) == (not no_spatial)
    ours.load_state_dict(original.state_dict(), strict=True)
    with pytest.raises(RuntimeError):
        TripletAttention(no_spatial=not no_spatial).load_state_dict(original.state_dict(), strict=True)


@pytest.mark.parametrize("reference", [False, True], ids=["fused", "reference"])
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("no_spatial", [False, True])
@pytest.mark.parametrize("shape", [(2, 8, 9, 7), (3, 5, 6, 6), (2, 3, 1, 5), (1, 16, 14, 14)])
def test_matches_original_train_and_eval(shape, no_spatial, layout, reference):
    ours, original = _pair(no_spatial, reference=reference)
    x0 = torch.randn(shape, dtype=torch.float64)
    if layout == "channels_last":
        x0 = x0.contiguous(memory_format=torch.channels_last)
    assert_same_in_train_and_eval(ours, original, x0, ("train", "eval", "train"))


def test_float32_matches_original():
    ours, original = _pair(False, dtype=torch.float32)
    x1 = torch.randn(4, 24, 28, 28, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = ours(x1), original(x2)
    torch.testing.assert_close(y1, y2, atol=1e-5, rtol=1e-5)
    y1.square().sum().backward()
    y2.square().sum().backward()
    torch.testing.assert_close(x1.grad, x2.grad, atol=1e-4, rtol=1e-4)


def test_channels_last_output_stays_channels_last():
    ours, _ = _pair(False, dtype=torch.float32)
    x = torch.randn(2, 8, 6, 5).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = ours(x)
    assert y.is_contiguous(memory_format=torch.channels_last)
    y.sum().backward()
    assert x.grad.is_contiguous(memory_format=torch.channels_last)


def test_torch_compile_fullgraph():
    ours, _ = _pair(False, dtype=torch.float32)
    compiled_module = copy.deepcopy(ours)
    torch._dynamo.reset()
    compiled = torch.compile(compiled_module, fullgraph=True)
    x1 = torch.randn(2, 8, 10, 9, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = ours(x1), compiled(x2)
    torch.testing.assert_close(y2, y1)
    y1.sum().backward()
    y2.sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad)


def test_gradcheck():
    ours, _ = _pair(False)
    ours.eval()
    x = torch.randn(2, 4, 5, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (x,))


# ---- TripSE ------------------------------------------------------------------------------------------------

from facekernels.nn import TripSE  # noqa: E402


def _tripse_pair(channels, variant, dtype=torch.float64):
    torch.manual_seed(0)
    fused = TripSE(channels, variant, reduction=4).to(dtype)
    _randomise(fused)
    reference = TripSE(channels, variant, reduction=4, reference=True).to(dtype)
    reference.load_state_dict(fused.state_dict(), strict=True)
    return fused, reference


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("variant", [1, 2, 3, 4])
@pytest.mark.parametrize("shape", [(2, 8, 9, 7), (3, 5, 6, 6), (2, 3, 1, 5), (1, 16, 14, 14)])
def test_tripse_matches_its_reference(shape, variant, layout):
    fused, reference = _tripse_pair(shape[1], variant)
    x0 = torch.randn(shape, dtype=torch.float64)
    if layout == "channels_last":
        x0 = x0.contiguous(memory_format=torch.channels_last)
    assert_same_in_train_and_eval(fused, reference, x0, ("train", "eval"))


def test_tripse_parameter_names_and_arguments():
    m = TripSE(32, variant=3)
    names = set(m.state_dict())
    assert {"triplet.cw.conv.conv.weight", "triplet.hw.conv.bn.running_mean", "se.fc1.weight", "se.fc2.bias"} <= names
    assert m.se.fc1.out_features == 2
    for bad in (0, 5):
        with pytest.raises(ValueError, match="TripSE: variant must be 1, 2, 3 or 4"):
            TripSE(8, variant=bad)
    with pytest.raises(ValueError, match=r"TripSE: x must be \[B, 8, H, W\], got \[2, 4, 5, 5\]"):
        TripSE(8)(torch.randn(2, 4, 5, 5))


@pytest.mark.parametrize("variant", [1, 4])
def test_tripse_compiles(variant):
    fused, _ = _tripse_pair(8, variant, torch.float32)
    torch._dynamo.reset()
    compiled = torch.compile(copy.deepcopy(fused), fullgraph=True)
    x1 = torch.randn(2, 8, 10, 9, requires_grad=True)
    x2 = x1.detach().clone().requires_grad_()
    y1, y2 = fused(x1), compiled(x2)
    torch.testing.assert_close(y2, y1)
    y1.sum().backward()
    y2.sum().backward()
    torch.testing.assert_close(x2.grad, x1.grad)
