"""Networks that drive a stylised blendshape rig (our reading of the seed's emotion-transfer and real-time
adaptation networks; the paper publishes no code).

- :class:`BlendshapeAdapter`: source expression coefficients (ARKit-52) over a short causal window -> the
  target rig's weights, per frame; offline over sequences or streaming frame by frame with identical results.
- :class:`EmotionTransfer`: a face image -> the target rig's weights, on a small CNN encoder (or a timm
  backbone).
- :func:`adapter_loss`: the training objective: the vertex error through the target rig's Gram matrix, a
  temporal-stability term (vertex-space acceleration) and a range penalty.
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from ..animation.losses import range_penalty, temporal_smoothness
from ..animation.rig import Rig, _fail, _shape

__all__ = ["BlendshapeAdapter", "EmotionTransfer", "adapter_loss"]


class _RangeHead(nn.Module):
    """Features -> K weights in the rig's ``[lower, upper]`` (``lower + (upper - lower) sigmoid``) or
    unbounded (then train with the range penalty)."""

    def __init__(self, features: int, rig: Rig, bounded: bool) -> None:
        super().__init__()
        self.linear = nn.Linear(features, rig.num_shapes)
        self.bounded = bounded
        self.register_buffer("lower", rig.lower.detach().clone().float())
        self.register_buffer("upper", rig.upper.detach().clone().float())

    def forward(self, h: Tensor) -> Tensor:
        z = self.linear(h)
        if not self.bounded:
            return z
        return self.lower.to(z) + (self.upper - self.lower).to(z) * torch.sigmoid(z)


class BlendshapeAdapter(nn.Module):
    r"""Real-time blendshape adaptation: ``[B, T, S]`` source coefficients -> ``[B, T, K]`` target weights.

    Frame ``t`` sees frames ``t - window + 1 .. t`` only (a causal temporal convolution, the first frame
    repeated before the start), then an MLP and the range head. ``forward`` runs whole sequences;
    ``step(frame, state)`` one frame ``[B, S]`` at a time with a ``[B, window - 1, S]`` history and gives the
    same outputs.

    Args:
        source_dim: S (52 for ARKit coefficients).
        rig: the target rig (K, and its bounds for the head).
        window: causal window in frames.
        hidden: MLP width.
        bounded: outputs squashed into the rig's range (default) or left free.
    """

    def __init__(self, source_dim: int, rig: Rig, window: int = 5, hidden: int = 128, bounded: bool = True):
        super().__init__()
        if window < 1:
            _fail(ValueError, "BlendshapeAdapter", "window", ">= 1", window)
        self.source_dim, self.window = source_dim, window
        self.temporal = nn.Conv1d(source_dim, hidden, window)
        self.mlp = nn.Sequential(nn.GELU(), nn.Linear(hidden, hidden), nn.GELU())
        self.head = _RangeHead(hidden, rig, bounded)

    def _check(self, where: str, x: Tensor, dims: int) -> None:
        if not isinstance(x, Tensor):
            _fail(TypeError, where, "x", "a tensor", type(x).__name__)
        if x.dim() != dims or x.shape[-1] != self.source_dim:
            layout = "[B, T, S]" if dims == 3 else "[B, S]"
            _fail(ValueError, where, "x", f"{layout} with S = {self.source_dim}", _shape(x))

    def _head(self, windows: Tensor) -> Tensor:
        """``[B, S, window + n - 1]`` -> ``[B, n, K]``."""
        return self.head(self.mlp(self.temporal(windows).transpose(1, 2)))

    def forward(self, x: Tensor) -> Tensor:
        self._check("BlendshapeAdapter.forward", x, 3)
        seq = x.transpose(1, 2)
        if self.window > 1:
            seq = torch.cat([seq[:, :, :1].expand(-1, -1, self.window - 1), seq], dim=2)
        return self._head(seq)

    def step(self, frame: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """One frame ``[B, S]`` -> (weights ``[B, K]``, the new history ``[B, window - 1, S]``); ``state=None``
        starts a stream (the first frame repeated back in time, as ``forward`` pads)."""
        self._check("BlendshapeAdapter.step", frame, 2)
        if state is None:
            state = frame[:, None].expand(-1, self.window - 1, -1)
        seq = torch.cat([state, frame[:, None]], dim=1)
        return self._head(seq.transpose(1, 2))[:, 0], seq[:, 1:]


class EmotionTransfer(nn.Module):
    """A face image ``[B, 3, H, W]`` -> the target rig's weights ``[B, K]``.

    The encoder is a small CNN (four stride-2 conv-BN-ReLU stages, global average pooling) unless
    ``backbone`` names a timm model (``timm.create_model(backbone, num_classes=0)``, the ``[fer]`` extra) or is
    an ``nn.Module`` returning ``[B, F]`` features (then give ``features=F``).
    """

    def __init__(self, rig: Rig, backbone: str | nn.Module | None = None, width: int = 32,
                 features: int | None = None, bounded: bool = True, in_chans: int = 3) -> None:
        super().__init__()
        if backbone is None:
            chans = [in_chans, width, 2 * width, 4 * width, 8 * width]
            layers: list[nn.Module] = []
            for a, b in itertools.pairwise(chans):
                layers += [nn.Conv2d(a, b, 3, 2, 1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True)]
            self.encoder = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
            features = chans[-1]
        elif isinstance(backbone, str):
            try:
                import timm
            except ImportError as e:  # pragma: no cover - depends on the environment
                raise ImportError("EmotionTransfer(backbone=<timm name>) needs timm: pip install 'facekernels[fer]'") from e
            self.encoder = timm.create_model(backbone, pretrained=False, num_classes=0, in_chans=in_chans)
            features = self.encoder.num_features
        elif isinstance(backbone, nn.Module):
            if features is None:
                _fail(ValueError, "EmotionTransfer", "features", "the backbone's feature width (an int)", None)
            self.encoder = backbone
        else:
            _fail(TypeError, "EmotionTransfer", "backbone", "None, a timm model name or an nn.Module",
                  type(backbone).__name__)
        self.head = _RangeHead(int(features), rig, bounded)

    def forward(self, image: Tensor) -> Tensor:
        if not isinstance(image, Tensor) or image.dim() != 4:
            _fail(ValueError, "EmotionTransfer.forward", "image", "a [B, C, H, W] tensor",
                  _shape(image) if isinstance(image, Tensor) else type(image).__name__)
        return self.head(self.encoder(image))


def adapter_loss(rig: Rig, w_pred: Tensor, w_target: Tensor, *, smooth_weight: float = 1.0,
                 range_weight: float = 1.0, smooth_order: int = 2) -> tuple[Tensor, dict[str, Tensor]]:
    """``vertex_mse + smooth_weight * temporal_smoothness(w_pred, smooth_order, rig) + range_weight *
    range_penalty`` for ``[B, T, K]`` predictions; returns the total and its terms. The smoothness term is
    skipped for sequences shorter than ``smooth_order + 1`` frames."""
    terms = {"vertex": rig.vertex_mse(w_pred, w_target)}
    if w_pred.dim() >= 2 and w_pred.shape[-2] > smooth_order:
        terms["smooth"] = smooth_weight * temporal_smoothness(w_pred, smooth_order, rig)
    terms["range"] = range_weight * range_penalty(w_pred, rig.lower, rig.upper)
    return sum(terms.values()), terms
