"""The FER models of TripSE (Alhazmi and Altahhan, 2025): ResNet-18 and ConvNeXt with a TripSE block in
every residual block, ``num_classes=7`` for FER2013's expressions, 48x48 grey or 224x224 RGB inputs.

Placement (our reading; the paper publishes no code): TripSE goes on each residual block's branch, just
before the residual addition, where SE-ResNet puts SE and where triplet attention's own ResNet models put
triplet attention: after ``bn2`` in a ResNet BasicBlock, and after the layer scale (before drop-path and the
shortcut) in a ConvNeXt block.
"""

from __future__ import annotations

from torch import Tensor, nn

from ..nn.triplet_attention import TripSE

__all__ = ["convnext_tripse", "resnet18_tripse"]


class BasicBlock(nn.Module):
    """torchvision's ResNet BasicBlock (same parameter names) with TripSE after ``bn2``."""

    def __init__(self, inplanes: int, planes: int, stride: int, variant: int, reduction: int, reference: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.tripse = TripSE(planes, variant, reduction, reference=reference)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x: Tensor) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.tripse(self.bn2(self.conv2(out)))
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(out + identity)


class ResNet18TripSE(nn.Module):
    """ResNet-18 with torchvision's module names (``conv1``, ``bn1``, ``layer1..4``, ``fc``; each block's TripSE
    under ``layerN.M.tripse``), so torchvision ResNet-18 weights load with ``strict=False`` (only the TripSE
    and, for other class counts or input channels, ``fc`` / ``conv1`` entries differ)."""

    def __init__(self, num_classes: int = 7, in_chans: int = 1, variant: int = 1, reduction: int = 16,
                 reference: bool = False) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_chans, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        widths, inplanes = (64, 128, 256, 512), 64
        for i, planes in enumerate(widths):
            stride = 1 if i == 0 else 2
            blocks = [BasicBlock(inplanes, planes, stride, variant, reduction, reference),
                      BasicBlock(planes, planes, 1, variant, reduction, reference)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            inplanes = planes
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(512, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.avgpool(x).flatten(1))


def resnet18_tripse(num_classes: int = 7, in_chans: int = 1, variant: int = 1, reduction: int = 16,
                    reference: bool = False) -> ResNet18TripSE:
    """ResNet-18 + TripSE for FER (``in_chans=1`` for FER2013's 48x48 grey faces, 3 for 224x224 RGB)."""
    return ResNet18TripSE(num_classes, in_chans, variant, reduction, reference)


class _BranchTripSE(nn.Module):
    """A ConvNeXt block's drop-path with TripSE in front of it: applied to the residual branch (NCHW, after
    the layer scale) just before the shortcut is added."""

    def __init__(self, tripse: TripSE, drop_path: nn.Module) -> None:
        super().__init__()
        self.tripse = tripse
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        return self.drop_path(self.tripse(x))


def convnext_tripse(num_classes: int = 7, in_chans: int = 3, variant: int = 1, reduction: int = 16,
                    model_name: str = "convnext_tiny", pretrained: bool = False, reference: bool = False,
                    **timm_kwargs) -> nn.Module:
    """timm's ConvNeXt (``model_name``, default ConvNeXt-T) with a TripSE block in every ConvNeXt block,
    on the residual branch before the shortcut is added (``stages.S.blocks.K.drop_path.tripse.*``).

    Needs timm (the ``[fer]`` extra): ``pip install facekernels[fer]``.
    """
    try:
        import timm
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("convnext_tripse needs timm: pip install 'facekernels[fer]'") from e
    model = timm.create_model(model_name, pretrained=pretrained, num_classes=num_classes, in_chans=in_chans,
                              **timm_kwargs)
    for stage in model.stages:
        for block in stage.blocks:
            channels = block.conv_dw.out_channels
            block.drop_path = _BranchTripSE(TripSE(channels, variant, reduction, reference=reference),
                                            block.drop_path)
    return model
