"""The Mamba block (Gu and Dao, 2023) with mamba-ssm's parameters, on the selective_scan op."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.selective_scan import selective_scan

__all__ = ["Mamba"]


class Mamba(nn.Module):
    r"""The Mamba block of mamba-ssm's ``mamba_ssm.modules.mamba_simple.Mamba``, same parameters, same
    initialisation, same forward (its non-fused path), with the scan on :func:`facekernels.ops.selective_scan`.

    Input and output ``[B, L, d_model]``; ``d_inner = expand * d_model``, ``dt_rank = ceil(d_model / 16)``
    by default::

        x, z   = split(in_proj(h))                         each [B, d_inner, L]
        x      = silu(causal depthwise conv1d(x))          kernel d_conv, through torch
        dt, B, C = split(x_proj(x))                        [dt_rank], [d_state], [d_state] per step
        y      = selective_scan(x, dt_proj.weight @ dt, A = -exp(A_log), B, C, D, z,
                                delta_bias = dt_proj.bias, delta_softplus = True)
        out    = out_proj(y)

    Parameters (mamba-ssm's names, so its state_dicts load strictly): ``in_proj`` (d_model -> 2 d_inner),
    ``conv1d`` (depthwise, padding d_conv - 1), ``x_proj`` (d_inner -> dt_rank + 2 d_state, no bias),
    ``dt_proj`` (dt_rank -> d_inner), ``A_log`` [d_inner, d_state], ``D`` [d_inner], ``out_proj``
    (d_inner -> d_model). Initialisation as mamba-ssm: dt_proj.weight uniform (``dt_init="random"``) or
    constant ``dt_rank^-0.5 * dt_scale``; dt_proj.bias the softplus inverse of dt log-uniform in
    [dt_min, dt_max] (floored at dt_init_floor); ``A_log = log(1..d_state)`` per channel; ``D = 1``; the
    markers ``_no_reinit`` (dt_proj.bias) and ``_no_weight_decay`` (A_log, D) that mamba-ssm's training
    code reads. A_log and D are created in float32 whatever ``dtype`` is, as in mamba-ssm.

    The op takes all its tensors in one dtype, so A, D and the dt bias are cast to the activations' dtype
    (mamba-ssm's CUDA kernel keeps them in float32 under half activations).
    """

    # The scan this block runs; benchmark peers swap in plain-PyTorch versions.
    scan = staticmethod(selective_scan)

    def __init__(
        self,
        d_model: int,
        d_state: int = 16,
        d_conv: int = 4,
        expand: int = 2,
        dt_rank: int | str = "auto",
        dt_min: float = 0.001,
        dt_max: float = 0.1,
        dt_init: str = "random",
        dt_scale: float = 1.0,
        dt_init_floor: float = 1e-4,
        conv_bias: bool = True,
        bias: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if dt_init not in ("random", "constant"):
            raise ValueError(f"Mamba: dt_init must be 'random' or 'constant', got {dt_init!r}")
        factory = {"device": device, "dtype": dtype}
        self.d_model, self.d_state, self.d_conv, self.expand = d_model, d_state, d_conv, expand
        self.d_inner = int(expand * d_model)
        self.dt_rank = math.ceil(d_model / 16) if dt_rank == "auto" else int(dt_rank)
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias, **factory)
        self.conv1d = nn.Conv1d(self.d_inner, self.d_inner, d_conv, groups=self.d_inner, padding=d_conv - 1,
                                bias=conv_bias, **factory)
        self.x_proj = nn.Linear(self.d_inner, self.dt_rank + 2 * d_state, bias=False, **factory)
        self.dt_proj = nn.Linear(self.dt_rank, self.d_inner, bias=True, **factory)

        std = self.dt_rank**-0.5 * dt_scale
        with torch.no_grad():
            if dt_init == "constant":
                self.dt_proj.weight.fill_(std)
            else:
                self.dt_proj.weight.uniform_(-std, std)
            # dt log-uniform in [dt_min, dt_max]; the bias is softplus^-1(dt) = dt + log(1 - exp(-dt))
            log_dt = torch.rand(self.d_inner, device=device) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)
            dt = torch.exp(log_dt).clamp(min=dt_init_floor)
            self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))
        self.dt_proj.bias._no_reinit = True

        # S4D-real initialisation; A_log and D in float32 whatever the factory dtype, as mamba-ssm keeps them
        A = torch.arange(1, d_state + 1, dtype=torch.float32, device=device).repeat(self.d_inner, 1)
        self.A_log = nn.Parameter(torch.log(A))
        self.A_log._no_weight_decay = True
        self.D = nn.Parameter(torch.ones(self.d_inner, dtype=torch.float32, device=device))
        self.D._no_weight_decay = True
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias, **factory)

    def forward(self, hidden_states: Tensor) -> Tensor:
        """``[B, L, d_model]`` -> ``[B, L, d_model]``."""
        length = hidden_states.shape[1]
        x, z = self.in_proj(hidden_states).transpose(1, 2).chunk(2, dim=1)
        x = F.silu(self.conv1d(x)[..., :length])
        dt, B, C = self.x_proj(x.transpose(1, 2)).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        delta = F.linear(dt, self.dt_proj.weight).transpose(1, 2)
        A = -torch.exp(self.A_log)
        dtype = x.dtype
        y = self.scan(x, delta, A.to(dtype), B.transpose(1, 2), C.transpose(1, 2), self.D.to(dtype), z,
                      self.dt_proj.bias.to(dtype), True)
        return self.out_proj(y.transpose(1, 2))
