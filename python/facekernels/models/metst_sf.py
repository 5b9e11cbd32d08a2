"""METST_SF: BoostingVRME's micro-expression spotting-and-recognition network (zizheng-guo/BoostingVRME,
``network.py``), with the released parameter names, on our Mamba block (``facekernels.nn.Mamba``, whose scan
is ``facekernels.ops.selective_scan``) instead of mamba-ssm's CUDA-only one."""

from __future__ import annotations

import math
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.mamba import Mamba

__all__ = ["METST_SF", "metst_sf_loss"]


class _LateralConnection(nn.Module):
    """Fast path into the slow one: a stride-2 convolution of the fast features added to the slow ones."""

    def __init__(self, fast_channels: int, slow_channels: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(nn.Conv1d(fast_channels, slow_channels, 3, 2, 1), nn.BatchNorm1d(slow_channels),
                                  nn.ReLU())

    def forward(self, slow: Tensor, fast: Tensor) -> Tensor:  # [B, T/2, Cs], [B, T, Cf]
        return slow + self.conv(fast.transpose(1, 2)).transpose(1, 2)


class _MambaLayer(nn.Module):
    def __init__(self, dim: int, d_state: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim)
        self.mamba = Mamba(d_model=dim, d_state=d_state, d_conv=4, expand=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.mamba(self.norm(x))


def _drop_path(x: Tensor, rate: float, training: bool) -> Tensor:
    """Stochastic depth: in training, each sample's residual branch is dropped with probability ``rate`` and
    the kept ones scaled by 1 / (1 - rate) (timm's DropPath)."""
    if rate == 0.0 or not training:
        return x
    keep = 1.0 - rate
    return x * x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep).div_(keep)


class _Block(nn.Module):
    """``x + drop_path(norm1(mamba_layer(x)))``. ``norm2`` is unused by the released forward; it is kept so
    that the released state_dicts load strictly."""

    def __init__(self, dim: int, d_state: int, drop_path: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.norm2 = nn.LayerNorm(dim)
        self.attn = _MambaLayer(dim, d_state)
        self.drop_path = drop_path

    def forward(self, x: Tensor) -> Tensor:
        return x + _drop_path(self.norm1(self.attn(x)), self.drop_path, self.training)


class METST_SF(nn.Module):  # noqa: N801 (the released name)
    r"""The released METST_SF: per-frame spotting scores and per-frame class logits from region features.

    Input ``[B, 1, C_in, T]`` (or ``[B, C_in, T]``): ``C_in = 36`` region-motion features per frame of a
    window of T frames (T even: the slow path halves it). Outputs ``(spot [B, T], logits [B, T, classes])``:
    ``spot`` in (0, 1) after a sigmoid, ``logits`` before any softmax, as the released forward returns them.

    Structure (``dim = 128``): a stem (two 3-tap convolutions, BatchNorm, ReLU) gives the fast path
    ``[B, T, dim]``; a stride-2 convolution gives the slow path ``[B, T/2, 2 dim]``. Three stages of four
    residual Mamba blocks run on each path (``block1..3`` slow, ``block1..3_fast`` fast; each block is
    ``x + drop_path(LayerNorm(Mamba(LayerNorm(x))))``, Mamba with ``d_state = 64``, ``d_conv = 4``,
    ``expand = 2``; drop-path rates 0, 0, 1/15, 2/15); after stages 1 and 2 the fast path joins the slow one
    through a stride-2 convolution (``fuse_1``, ``fuse_2``). The slow path is upsampled (nearest) to T
    frames and concatenated with the fast one (``3 dim`` features per frame), then ``fc_spot`` (sigmoid) and
    ``fc_recog``.

    Initialisation as released: every Linear truncated-normal (std 0.02) with zero bias, LayerNorm and
    BatchNorm ones and zeros, then every Linear bias zeroed again except Mamba's ``dt_proj.bias`` (marked
    ``_no_reinit``) and every Mamba ``out_proj.weight`` Kaiming-uniform (a = sqrt 5) divided by 2
    (sqrt of the 4 layers). Convolutions keep PyTorch's default. So, as in the released network, Mamba's
    own dt initialisation is overwritten: ``dt_proj.weight`` by the truncated normal and ``dt_proj.bias`` by
    zeros (the first pass zeroes it before the marker can spare it).

    The released training wraps the model in ``nn.DataParallel``, so its saved state_dicts carry a
    ``module.`` prefix: :meth:`load_released` strips it and loads strictly.
    """

    def __init__(self, out_channels: int = 3, in_channels: int = 36, dim: int = 128, depth: int = 4,
                 d_state: int = 64, drop_path: float = 0.2) -> None:
        super().__init__()
        self.Stem = nn.Sequential(
            nn.Conv1d(in_channels, dim, 3, 1, 1), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
            nn.Conv1d(dim, dim, 3, 1, 1), nn.BatchNorm1d(dim), nn.ReLU(inplace=True),
        )
        self.Stem_slow = nn.Sequential(nn.Conv1d(dim, dim * 2, 3, 2, 1), nn.BatchNorm1d(dim * 2), nn.ReLU(inplace=True))
        # The released rates: [0] + linspace(0, drop_path, depth), the first `depth` of them.
        rates = [0.0] + torch.linspace(0, drop_path, depth).tolist()

        def stage(width: int) -> nn.ModuleList:
            return nn.ModuleList(_Block(width, d_state, rates[i]) for i in range(depth))

        self.block1, self.block2, self.block3 = stage(dim * 2), stage(dim * 2), stage(dim * 2)
        self.block1_fast, self.block2_fast, self.block3_fast = stage(dim), stage(dim), stage(dim)
        self.fuse_1 = _LateralConnection(dim, dim * 2)
        self.fuse_2 = _LateralConnection(dim, dim * 2)
        self.upsample = nn.Sequential(nn.Upsample(scale_factor=2))
        self.fc_spot = nn.Sequential(nn.Linear(dim * 3, 1))
        self.fc_recog = nn.Sequential(nn.Linear(dim * 3, out_channels))
        self.sigmoid = nn.Sigmoid()
        self.apply(_released_init)
        self.apply(_released_mamba_init)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        shape = list(x.shape)
        if x.dim() == 4 and x.shape[1] == 1:
            x = x.squeeze(1)
        channels = self.Stem[0].in_channels
        if x.dim() != 3 or x.shape[1] != channels:
            raise ValueError(f"METST_SF: x must be [B, 1, {channels}, T] or [B, {channels}, T], got {shape}")
        if x.shape[2] % 2:
            raise ValueError(f"METST_SF: the number of frames T must be even (the slow path halves it and is "
                             f"upsampled back), got T = {x.shape[2]}")
        x = self.Stem(x)
        fast = x.transpose(1, 2)
        slow = self.Stem_slow(x).transpose(1, 2)
        for stage, (slow_blocks, fast_blocks) in enumerate(((self.block1, self.block1_fast),
                                                             (self.block2, self.block2_fast),
                                                             (self.block3, self.block3_fast))):
            for block in slow_blocks:
                slow = block(slow)
            for block in fast_blocks:
                fast = block(fast)
            if stage < 2:
                slow = (self.fuse_1, self.fuse_2)[stage](slow, fast)
        slow = self.upsample(slow.transpose(1, 2)).transpose(1, 2)
        fused = torch.cat((slow, fast), dim=2)
        return self.sigmoid(self.fc_spot(fused)).squeeze(-1), self.fc_recog(fused)

    def load_released(self, state_dict: Mapping[str, Tensor], strict: bool = True):
        """Load a state_dict saved by the released training (``module.``-prefixed from ``nn.DataParallel``)
        or by this class."""
        prefix = "module."
        stripped = {k[len(prefix):] if k.startswith(prefix) else k: v for k, v in state_dict.items()}
        return self.load_state_dict(stripped, strict=strict)


def _released_init(m: nn.Module) -> None:
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, (nn.LayerNorm, nn.GroupNorm, nn.BatchNorm2d)):
        nn.init.zeros_(m.bias)
        nn.init.ones_(m.weight)


def _released_mamba_init(m: nn.Module, n_layer: int = 4) -> None:
    # The released version walks every module's named parameters for one named "out_proj.weight": only a
    # Mamba block has a direct child of that name.
    if isinstance(m, nn.Linear) and m.bias is not None and not getattr(m.bias, "_no_reinit", False):
        nn.init.zeros_(m.bias)
    if isinstance(m, Mamba):
        nn.init.kaiming_uniform_(m.out_proj.weight, a=math.sqrt(5))
        with torch.no_grad():
            m.out_proj.weight /= math.sqrt(n_layer)


def metst_sf_loss(spot: Tensor, logits: Tensor, spot_target: Tensor, class_target: Tensor,
                  class_weights: Tensor | None = None, spot_weight: float = 0.9) -> Tensor:
    """The released training loss: ``0.9 MSE(spot, spot_target) + 0.1 CE(logits, class_target)`` over every
    frame, the cross entropy weighted per class (the released code passes balanced weights with the last,
    neutral, class's weight times 6) and taking one-hot or probability targets ``[B, T, classes]`` (as
    released) or class indices ``[B, T]`` (taken as one-hot). With probability targets torch's weighted
    cross entropy is ``-mean over frames of sum_c w_c y_c log softmax(logits)_c``."""
    classes = logits.shape[-1]
    if class_target.dim() == logits.dim():
        target = class_target.reshape(-1, classes).to(logits.dtype)
    else:  # indices: as one-hot targets, so the weighting is the released one (a mean over frames, not over
        # the weights of the frames' classes as torch's index targets would take it)
        target = F.one_hot(class_target.reshape(-1), classes).to(logits.dtype)
    recog = F.cross_entropy(logits.reshape(-1, classes), target, weight=class_weights)
    return spot_weight * F.mse_loss(spot.reshape(-1), spot_target.reshape(-1)) + (1 - spot_weight) * recog
