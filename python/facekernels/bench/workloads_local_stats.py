"""Benchmark workloads of local_stat_transform (LocalSFFT's local AdaIN) and local_mean_var, and their
plain-PyTorch peers: avg_pool2d window means (what a careful PyTorch user writes: one-pass variances), and
for the transform integral images, whose cost is independent of the kernel size like facekernels' running
sums.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from .. import build_info, set_huge_page_threshold
from ..ops.local_stats import local_mean_var, local_stat_transform
from .cases import Case, Workload


def _window_mean(t: Tensor, kernel_size: int) -> Tensor:
    """Mean over the clipped kernel_size window: avg_pool2d without counting the padding."""
    return F.avg_pool2d(t, kernel_size, 1, kernel_size // 2, count_include_pad=False)


def local_mean_var_avg_pool(x: Tensor, kernel_size: int = 7) -> tuple[Tensor, Tensor]:
    """The windowed statistics as a careful PyTorch user writes them: two avg_pool2d passes (x, x^2) and
    var = E[x^2] - E[x]^2, clamped at 0 (one-pass, so float32 loses accuracy on offset data)."""
    mean = _window_mean(x, kernel_size)
    return mean, (_window_mean(x * x, kernel_size) - mean * mean).clamp_min(0)


def local_stat_transform_avg_pool(x: Tensor, guide: Tensor, kernel_size: int = 7, eps: float = 1e-5) -> Tensor:
    """The local AdaIN with four avg_pool2d window means and the elementwise formula."""
    mu_x, var_x = local_mean_var_avg_pool(x, kernel_size)
    mu_g, var_g = local_mean_var_avg_pool(guide, kernel_size)
    return (x - mu_x) / torch.sqrt(var_x + eps) * torch.sqrt(var_g + eps) + mu_g


def _box_sum_integral(t: Tensor, kernel_size: int) -> tuple[Tensor, Tensor]:
    """Window sums and counts over clipped windows from an integral image (cumsum over H and W): a cost
    independent of kernel_size, like facekernels' running sums."""
    r = kernel_size // 2
    h, w = t.shape[-2:]
    integral = F.pad(t.cumsum(-2).cumsum(-1), (1, 0, 1, 0))
    top = (torch.arange(h, device=t.device) - r).clamp(0, h)
    bottom = (torch.arange(h, device=t.device) + r + 1).clamp(0, h)
    left = (torch.arange(w, device=t.device) - r).clamp(0, w)
    right = (torch.arange(w, device=t.device) + r + 1).clamp(0, w)
    rows_b, rows_t = integral.index_select(-2, bottom), integral.index_select(-2, top)
    total = (rows_b.index_select(-1, right) - rows_b.index_select(-1, left)
             - rows_t.index_select(-1, right) + rows_t.index_select(-1, left))
    count = ((bottom - top).view(-1, 1) * (right - left).view(1, -1)).to(t.dtype)
    return total, count


def local_stat_transform_integral(x: Tensor, guide: Tensor, kernel_size: int = 7, eps: float = 1e-5) -> Tensor:
    """The local AdaIN from integral images of x, x^2, guide, guide^2 (one stacked cumsum pass), on data
    centred per plane first: float32 integral images of raw values lose too much to cancellation."""
    xc = x - x.mean((-2, -1), keepdim=True)
    gc = guide - guide.mean((-2, -1), keepdim=True)
    stacked = torch.stack((xc, xc * xc, gc, gc * gc))
    sums, count = _box_sum_integral(stacked, kernel_size)
    mu_x, sq_x, mu_g, sq_g = (sums / count).unbind(0)
    var_x = (sq_x - mu_x * mu_x).clamp_min(0)
    var_g = (sq_g - mu_g * mu_g).clamp_min(0)
    return (xc - mu_x) / torch.sqrt(var_x + eps) * torch.sqrt(var_g + eps) + mu_g + (guide - gc)


# The huge-page hint on our fresh CPU outputs (csrc/core/memory.h): "facekernels" runs at the build's
# threshold, "facekernels+hint" hints every output of 8 MiB or more (the rule before issue 17), in the same
# interleaved run, so the table shows what the hint costs or saves. Both set the threshold they run at (the
# peers never call our ops, and stay unwrapped for torch.compile), and the case's teardown restores it.
HINT_ALL_MIB = 8


def _with_threshold(fn: Callable, min_bytes: int) -> Callable:
    def run(*args):
        set_huge_page_threshold(min_bytes)
        return fn(*args)

    return run


def _hint_candidates(candidates: dict[str, Callable], device: str) -> tuple[dict[str, Callable], Callable | None]:
    if device != "cpu":
        return candidates, None
    default = build_info()["huge_page_min_bytes"]
    out = dict(candidates, facekernels=_with_threshold(candidates["facekernels"], default))
    out["facekernels+hint"] = _with_threshold(candidates["facekernels"], HINT_ALL_MIB << 20)
    return out, lambda: set_huge_page_threshold(default)


def _case(op: str, b: int, c: int, h: int, w: int, k: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, c, h, w, generator=g).to(device).requires_grad_()
        guide = (torch.randn(b, c, h, w, generator=g) * 2 + 1).to(device).requires_grad_()
        if op == "local_mean_var":
            # one output for the harness: mean + var (both gradients flow)
            return Case(
                inputs=[x],
                candidates={
                    "facekernels": lambda x: sum(local_mean_var(x, k)),
                    "avg_pool": lambda x: sum(local_mean_var_avg_pool(x, k)),
                },
                params=[x],
            )
        candidates, teardown = _hint_candidates({
            "facekernels": lambda x, g: local_stat_transform(x, g, k),
            "avg_pool": lambda x, g: local_stat_transform_avg_pool(x, g, k),
            "integral": lambda x, g: local_stat_transform_integral(x, g, k),
        }, device)
        return Case(inputs=[x, guide], candidates=candidates, params=[x, guide], teardown=teardown)

    return build


def _train_step_case(b: int, c: int, h: int, w: int, k: int) -> Callable[[str], Case]:
    """A LocalSFFT-style block inside a training step: 1x1 convolutions project the degraded features and
    the guide, the local AdaIN re-normalises one by the other, a GELU and a 1x1 convolution follow; the
    backward makes every weight's gradient. The convolutions, activations and autograd buffers churn
    through memory between the op's calls, as a real step does."""

    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(b, c, h, w, generator=g).to(device).requires_grad_()
        guide = (torch.randn(b, c, h, w, generator=g) * 2 + 1).to(device)
        w_in, w_guide, w_out = ((torch.randn(c, c, 1, 1, generator=g) / c**0.5).to(device).requires_grad_()
                                for _ in range(3))

        def block(transform: Callable) -> Callable:
            def step(x, guide):
                y = transform(F.conv2d(x, w_in), F.conv2d(guide, w_guide), k)
                return F.conv2d(F.gelu(y), w_out)

            return step

        candidates, teardown = _hint_candidates({
            "facekernels": block(local_stat_transform),
            "avg_pool": block(local_stat_transform_avg_pool),
        }, device)
        return Case(inputs=[x, guide], candidates=candidates, params=[x, w_in, w_guide, w_out], teardown=teardown)

    return build


def _workload(op: str, name: str, b: int, c: int, h: int, w: int, k: int) -> Workload:
    n = b * c * h * w
    inputs = 2 if op == "local_stat_transform" else 1
    return Workload(
        op=op,
        name=name,
        description=f"{op}: B={b}, C={c}, {h}x{w}, kernel {k}",
        # four running box sums (x, x^2, g, g^2: two adds each per direction) and the formula, per pixel;
        # local_mean_var has half the sums
        flops_forward=(36.0 if inputs == 2 else 14.0) * n,
        bytes_forward=4.0 * n * (inputs + (1 if inputs == 2 else 2)),
        # the statistics again, six coefficient box sums and the gradient formulas
        flops_backward=(110.0 if inputs == 2 else 40.0) * n,
        bytes_backward=4.0 * n * (2 * inputs + (1 if inputs == 2 else 2)),
        build=_case(op, b, c, h, w, k),
        peers=("facekernels+hint", "avg_pool", "integral") if inputs == 2 else ("avg_pool",),
        compile_peers=("avg_pool",),
        cpu_only_peers=("facekernels+hint",) if inputs == 2 else (),
    )


def _train_step_workload(name: str, b: int, c: int, h: int, w: int, k: int) -> Workload:
    n = b * c * h * w
    conv = 2.0 * n * c  # one 1x1 convolution, C -> C
    return Workload(
        op="local_stat_transform",
        name=name,
        description=f"training step: 1x1 convs, local_stat_transform, GELU, 1x1 conv; B={b}, C={c}, {h}x{w}, "
                    f"kernel {k}",
        flops_forward=3 * conv + 36.0 * n,
        bytes_forward=4.0 * n * 8,
        # each convolution's input and weight gradients (the guide's input gradient is not needed)
        flops_backward=5 * conv + 110.0 * n,
        bytes_backward=4.0 * n * 14,
        build=_train_step_case(b, c, h, w, k),
        peers=("facekernels+hint", "avg_pool"),
        compile_peers=("avg_pool",),
        cpu_only_peers=("facekernels+hint",),
        modes=("forward+backward",),
    )


WORKLOADS: list[Workload] = [
    _workload("local_stat_transform", "sfft_k7", 4, 128, 128, 128, 7),
    _workload("local_stat_transform", "sfft_k3", 4, 128, 128, 128, 3),
    _workload("local_stat_transform", "sfft_k15", 4, 128, 128, 128, 15),
    _workload("local_stat_transform", "sfft_64x256", 1, 64, 256, 256, 7),
    _workload("local_mean_var", "meanvar_k7", 4, 128, 128, 128, 7),
    _train_step_workload("sfft_train_step", 4, 128, 128, 128, 7),
]

QUICK = {"sfft_k7"}
