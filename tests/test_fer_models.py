"""The TripSE FER models: facekernels.models.resnet18_tripse (torchvision's ResNet-18 names, TripSE after
each block's bn2) and convnext_tripse (timm's ConvNeXt; skipped without a working timm)."""

import pytest
import torch

from facekernels.models import convnext_tripse, resnet18_tripse
from facekernels.nn import TripSE


@pytest.mark.parametrize("in_chans, size", [(1, 48), (3, 64)])
def test_resnet18_tripse_shapes_and_training_step(in_chans, size):
    torch.manual_seed(0)
    model = resnet18_tripse(num_classes=7, in_chans=in_chans, variant=2)
    x = torch.randn(2, in_chans, size, size)
    logits = model(x)
    assert logits.shape == (2, 7)
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 6])).backward()
    assert all(p.grad is not None for p in model.parameters())
    assert sum(isinstance(m, TripSE) for m in model.modules()) == 8


def test_resnet18_tripse_names_follow_torchvision():
    names = set(resnet18_tripse(in_chans=3).state_dict())
    for key in ("conv1.weight", "bn1.running_mean", "layer1.0.conv1.weight", "layer2.0.downsample.0.weight",
                "layer4.1.bn2.weight", "fc.weight", "layer3.1.tripse.triplet.hw.conv.conv.weight",
                "layer1.0.tripse.se.fc1.weight"):
        assert key in names, key


@pytest.mark.parametrize("variant", [1, 4])
def test_resnet18_tripse_fused_equals_reference(variant):
    torch.manual_seed(0)
    fused = resnet18_tripse(variant=variant).double().eval()
    reference = resnet18_tripse(variant=variant, reference=True).double().eval()
    reference.load_state_dict(fused.state_dict(), strict=True)
    x = torch.randn(2, 1, 48, 48, dtype=torch.float64)
    torch.testing.assert_close(fused(x), reference(x), atol=1e-10, rtol=1e-8)


def test_convnext_tripse():
    try:
        import timm  # noqa: F401
    except Exception as e:  # noqa: BLE001 - a broken install (e.g. a torchvision built for another torch) too
        pytest.skip(f"timm unavailable: {e!r}")
    torch.manual_seed(0)
    model = convnext_tripse(num_classes=7, variant=1, model_name="convnext_atto")
    assert sum(isinstance(m, TripSE) for m in model.modules()) == sum(len(s.blocks) for s in model.stages)
    logits = model(torch.randn(2, 3, 64, 64))
    assert logits.shape == (2, 7)
    logits.sum().backward()
    reference = convnext_tripse(num_classes=7, variant=1, model_name="convnext_atto", reference=True)
    reference.load_state_dict(model.state_dict(), strict=True)
    model.eval()
    reference.eval()
    x = torch.randn(1, 3, 64, 64)
    torch.testing.assert_close(model(x), reference(x), atol=1e-4, rtol=1e-4)
