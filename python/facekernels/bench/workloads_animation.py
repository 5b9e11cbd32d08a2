"""Benchmark workloads of facekernels.animation: the vertex loss through the rig's Gram matrix against
building both meshes, and the One Euro filter's CPU kernel against a plain-PyTorch loop over time.

vertex_mse (issue 22's goal shape: K = 52 shapes, V = 20000 vertices, B*T = 4096 frames, float32):
- "facekernels": ``rig.vertex_mse`` with the Gram matrix cached (built once per rig, as in training);
- "facekernels+gram_build": the same with the cache cleared before every call, so the [K, 3V] x [3V, K]
  Gram product (float64) is inside the timed region;
- "einsum": ``neutral + einsum(w, deltas)`` for both weight sets ([N, V, 3] each, SMPL-X / FLAME ``lbs.py``
  style) and ``F.mse_loss``, eager and torch.compile'd.

one_euro_filter (forward only; not differentiable): against "torch_loop", the published recurrence
vectorised over the channels and looped over time in Python (about 10 tensor ops per frame), at 4096 frames
x 52 channels and at 16 sequences x 1024 frames x 52: both times grow linearly with T, so the ratio holds
for longer sequences, where the loop's million Python steps would take tens of seconds per call. The
issue's 10^6 x 52 goal is timed by tools/animation_goals.py.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

from ..animation.rig import Rig
from ..ops.temporal_filter import one_euro_filter
from .cases import Case, Workload

ONE_EURO = {"min_cutoff": 1.0, "beta": 0.3, "d_cutoff": 1.0, "rate": 60.0}


def vertex_mse_einsum(rig: Rig, w_pred: Tensor, w_target: Tensor) -> Tensor:
    """Both meshes built (``neutral + einsum(weights, deltas)``) and their mean squared difference."""
    pred = rig.neutral + torch.einsum("nk,kvc->nvc", w_pred, rig.deltas)
    target = rig.neutral + torch.einsum("nk,kvc->nvc", w_target, rig.deltas)
    return F.mse_loss(pred, target)


def one_euro_torch_loop(x: Tensor, min_cutoff: float, beta: float, d_cutoff: float, rate: float) -> Tensor:
    """The One Euro filter of ``x`` ``[B, T, C]`` at a fixed rate, vectorised over B and C, a Python loop
    over T (the reference implementation's derivative: from the previous filtered value)."""
    te = 1.0 / rate
    rd = 2 * math.pi * d_cutoff * te
    alpha_d = rd / (1 + rd)
    x_hat = x[:, 0]
    dx_hat = torch.zeros_like(x_hat)
    out = [x_hat]
    for t in range(1, x.shape[1]):
        value = x[:, t]
        dx_hat = alpha_d * (value - x_hat) * rate + (1 - alpha_d) * dx_hat
        r = (2 * math.pi * te) * (min_cutoff + beta * dx_hat.abs())
        a = r / (r + 1)
        x_hat = a * value + (1 - a) * x_hat
        out.append(x_hat)
    return torch.stack(out, dim=1)


def _vertex_mse_case(k: int, v: int, n: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        rig = Rig(torch.randn(v, 3, generator=g), 0.02 * torch.randn(k, v, 3, generator=g)).to(device)
        w_pred = torch.rand(n, k, generator=g).to(device).requires_grad_()
        w_target = torch.rand(n, k, generator=g).to(device)
        rig.gram(dtype=torch.float32)  # the cache "facekernels" uses, built before timing

        def with_gram_build(a: Tensor, b: Tensor) -> Tensor:
            rig._grams.clear()
            return rig.vertex_mse(a, b)

        return Case(
            inputs=[w_pred, w_target],
            candidates={
                "facekernels": rig.vertex_mse,
                "facekernels+gram_build": with_gram_build,
                "einsum": lambda a, b: vertex_mse_einsum(rig, a, b),
            },
            params=[w_pred],
        )

    return build


def _one_euro_case(b: int, t: int, c: int) -> Callable[[str], Case]:
    def build(device: str) -> Case:
        g = torch.Generator().manual_seed(0)
        steps = torch.linspace(0, t / ONE_EURO["rate"], t)[None, :, None]
        x = (torch.sin(steps * torch.rand(b, 1, c, generator=g) * 6) + 0.05 * torch.randn(b, t, c, generator=g))
        return Case(inputs=[x.to(device)], candidates={
            "facekernels": lambda x: one_euro_filter(x, **ONE_EURO)[0],
            "torch_loop": lambda x: one_euro_torch_loop(x, **ONE_EURO),
        })

    return build


def _vertex_mse_workload(name: str, k: int, v: int, n: int) -> Workload:
    return Workload(
        op="vertex_mse",
        name=name,
        description=f"rig vertex MSE, K={k} shapes, V={v} vertices, {n} frames (float32)",
        # d = w_pred - w_target, d @ G, the row dot products
        flops_forward=2.0 * n * k * k + 3.0 * n * k,
        bytes_forward=4.0 * (2 * n * k + k * k),
        flops_backward=2.0 * n * k * k + 2.0 * n * k,  # grad = 2 d G / (3V N)
        bytes_backward=4.0 * (2 * n * k + k * k),
        build=_vertex_mse_case(k, v, n),
        peers=("facekernels+gram_build", "einsum"),
        compile_peers=("einsum",),
    )


def _one_euro_workload(name: str, b: int, t: int, c: int) -> Workload:
    elements = b * t * c
    return Workload(
        op="one_euro_filter",
        name=name,
        description=f"One Euro filter, {t} frames x {c} channels (B={b}), float32",
        flops_forward=14.0 * elements,  # per sample: derivative, two EMAs, cutoff, alpha (one division)
        bytes_forward=4.0 * 2 * elements,
        flops_backward=0.0,
        bytes_backward=0.0,
        build=_one_euro_case(b, t, c),
        peers=("torch_loop",),
        compile_peers=(),  # compiling a loop of thousands of steps unrolls it
        modes=("forward",),
    )


WORKLOADS: list[Workload] = [
    _vertex_mse_workload("vertex_mse_k52_v20000", 52, 20000, 4096),
    _one_euro_workload("one_euro_4k_x52", 1, 4096, 52),
    _one_euro_workload("one_euro_16x1k_x52", 16, 1024, 52),
]

QUICK = {"one_euro_4k_x52"}
