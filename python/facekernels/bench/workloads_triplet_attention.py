"""Benchmark workloads of the triplet_attention family: axis_pool and triplet_gate against plain-PyTorch
writings of the same math, and the TripletAttention block against the original's eager computation
(``TripletAttention(reference=True)``: permuted copies, separate max/mean pools, three products) with the
same weights, at ConvNeXt-T's stage 1 (B=32, C=96, 56x56) and stage 3 (B=32, C=384, 14x14), float32.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from ..models.fer import convnext_tripse, resnet18_tripse
from ..nn.triplet_attention import TripletAttention, TripSE
from ..ops.triplet_attention import axis_pool, triplet_gate
from .cases import Case, Workload, WorkloadUnavailable, module_case

STAGES = {"stage1": (32, 96, 56, 56), "stage3": (32, 384, 14, 14)}


def axis_pool_eager(x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """The three Z-pools as plain PyTorch writes them: max (with indices, as torch.max routes its
    gradient) and mean over each axis, the W pool transposed to [B, 2, H, C]."""
    def zpool(dim: int) -> Tensor:
        return torch.stack((torch.max(x, dim).values, torch.mean(x, dim)), 1)

    return zpool(1), zpool(2), zpool(3).transpose(2, 3)


def triplet_gate_eager(x: Tensor, gate_c: Tensor, gate_h: Tensor, gate_w: Tensor) -> Tensor:
    return x * (gate_c[:, None] + gate_h[:, :, None] + gate_w.transpose(1, 2)[:, :, :, None])


def _sum3(f: Callable[[Tensor], tuple[Tensor, Tensor, Tensor]]) -> Callable[[Tensor], Tensor]:
    # One output to time and differentiate: the three maps flattened into one vector (no reduction that
    # would let a compiler skip the work).
    return lambda x: torch.cat([t.reshape(-1) for t in f(x)])


def _pool_case(b: int, c: int, h: int, w: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, c, h, w, generator=g).to(device).requires_grad_()
        return Case(inputs=[x], candidates={"facekernels": _sum3(axis_pool), "eager": _sum3(axis_pool_eager)},
                    params=[x])

    return build


def _gate_case(b: int, c: int, h: int, w: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, c, h, w, generator=g).to(device).requires_grad_()
        maps = [torch.rand(s, generator=g).to(device).requires_grad_() for s in ((b, h, w), (b, c, w), (b, h, c))]
        return Case(inputs=[x, *maps], candidates={"facekernels": triplet_gate, "eager": triplet_gate_eager},
                    params=[x, *maps])

    return build


def _workloads(stage: str) -> list[Workload]:
    b, c, h, w = STAGES[stage]
    n = b * c * h * w
    maps = b * (h * w + c * w + h * c)
    shape = f"B={b}, C={c}, {h}x{w}"
    return [
        Workload(
            op="axis_pool",
            name=f"axis_pool_{stage}",
            description=f"max and mean over C, H and W (triplet attention's Z-pools), {shape}",
            flops_forward=6.0 * n,
            bytes_forward=4.0 * (n + 2 * maps),
            flops_backward=6.0 * n,
            bytes_backward=4.0 * (n + 2 * maps),
            build=_pool_case(b, c, h, w),
            peers=("eager",),
        ),
        Workload(
            op="triplet_gate",
            name=f"triplet_gate_{stage}",
            description=f"x times the sum of three broadcast gates, {shape}",
            flops_forward=3.0 * n,
            bytes_forward=4.0 * (2 * n + maps),
            flops_backward=8.0 * n,
            bytes_backward=4.0 * (3 * n + 2 * maps),
            build=_gate_case(b, c, h, w),
            peers=("eager",),
        ),
        Workload(
            op="triplet_attention",
            name=f"triplet_attention_{stage}",
            description=f"TripletAttention block (training mode) vs the original's eager module, {shape}",
            flops_forward=12.0 * n,
            bytes_forward=4.0 * 3 * n,
            flops_backward=16.0 * n,
            bytes_backward=4.0 * 4 * n,
            build=lambda device, s=(b, c, h, w): module_case(
                device, TripletAttention, lambda: TripletAttention(reference=True), "original", lambda _: s
            ),
            peers=("original",),
        ),
    ]


def _tripse_workloads(stage: str) -> list[Workload]:
    b, c, h, w = STAGES[stage]
    n = b * c * h * w
    return [
        Workload(
            op="tripse",
            name=f"tripse{variant}_{stage}",
            description=f"TripSE variant {variant} (training mode) vs its eager reference path, B={b}, C={c}, {h}x{w}",
            flops_forward=12.0 * n,
            bytes_forward=4.0 * (3 if variant < 4 else 4) * n,
            flops_backward=16.0 * n,
            bytes_backward=4.0 * 4 * n,
            build=lambda device, s=(b, c, h, w), v=variant: module_case(
                device, lambda: TripSE(s[1], v), lambda: TripSE(s[1], v, reference=True), "reference", lambda _: s
            ),
            peers=("reference",),
            compile_peers=(),
            modes=("forward+backward",),
        )
        for variant in (1, 2, 3, 4)
    ]


def _model_workload(b: int) -> Workload:
    """A training step's forward+backward of resnet18_tripse on FER2013-sized input (48x48 grey), fused
    TripSE blocks against the same model with the eager blocks (convnext_tripse's needs timm)."""
    return Workload(
        op="tripse",
        name="resnet18_tripse_train",
        description=f"resnet18_tripse (variant 1) training forward+backward vs eager TripSE blocks, B={b}, 1x48x48",
        flops_forward=b * 3.64e9 * (48 * 48) / (224 * 224),  # ResNet-18: 1.82 GMAC at 224x224
        # weights (11.7 M) read once, ~110 k activations per image written and read
        bytes_forward=4.0 * (11.7e6 + b * 2 * 110e3),
        flops_backward=2 * b * 3.64e9 * (48 * 48) / (224 * 224),
        bytes_backward=4.0 * (2 * 11.7e6 + b * 4 * 110e3),
        build=lambda device: module_case(device, lambda: resnet18_tripse(), lambda: resnet18_tripse(reference=True),
                                         "eager_blocks", lambda _: (b, 1, 48, 48)),
        peers=("eager_blocks",),
        compile_peers=(),
        modes=("forward+backward",),
    )


def _convnext_case(b: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        try:
            import timm  # noqa: F401
        except Exception as e:  # noqa: BLE001 - also a torchvision built for another torch
            raise WorkloadUnavailable(f"convnext_tripse needs timm (pip install 'facekernels[fer]'): {e!r}") from e
        return module_case(device, lambda: convnext_tripse(num_classes=7),
                           lambda: convnext_tripse(num_classes=7, reference=True), "eager_blocks",
                           lambda _: (b, 3, 224, 224))

    return build


def _convnext_workload(b: int) -> Workload:
    """The issue's model goal: a convnext_tripse (ConvNeXt-T, variant 1) training step's forward+backward
    on 224x224 RGB, fused TripSE blocks against the same model with the eager blocks (needs timm)."""
    return Workload(
        op="tripse",
        name="convnext_tripse_train",
        description=f"convnext_tripse (ConvNeXt-T, variant 1) training forward+backward vs eager TripSE blocks, "
                    f"B={b}, 3x224x224",
        flops_forward=b * 2 * 4.47e9,  # ConvNeXt-T: 4.47 GMAC at 224x224 (the TripSE blocks add ~1%)
        # weights (28.6 M) read once; roughly 25 M activations per image written and read again
        bytes_forward=4.0 * (28.6e6 + b * 2 * 25e6),
        flops_backward=2 * b * 2 * 4.47e9,
        bytes_backward=4.0 * (2 * 28.6e6 + b * 4 * 25e6),
        build=_convnext_case(b),
        peers=("eager_blocks",),
        compile_peers=(),
        modes=("forward+backward",),
    )


WORKLOADS: list[Workload] = [*_workloads("stage1"), *_workloads("stage3"), *_tripse_workloads("stage1"),
                             *_tripse_workloads("stage3"), _model_workload(32), _convnext_workload(16)]

QUICK = {"triplet_attention_stage1", "triplet_attention_stage3"}
