"""MOL's CCC block ("channel correspondence convolution") and its F5C block (FCC, then CCC added back),
on the cosine_topk and edge_conv_max ops."""

from __future__ import annotations

from torch import Tensor, nn

from ..ops import cosine_topk, edge_conv_max
from .fcc import FCC

__all__ = ["CCC", "F5C"]


def _cosine_neighbours(x: Tensor, k: int) -> Tensor:
    """Indices ``[B, N, k]`` of the k positions most cosine-similar to each position (itself included)."""
    return cosine_topk(x, k)[1]


class CCC(nn.Module):
    r"""MOL's channel correspondence convolution: an EdgeConv over a cosine kNN graph of the positions.

    Input ``[B, C, H, W]`` with ``H * W = positions`` (or ``[B, C, positions]``); the output has the
    input's shape. With ``x`` the input as ``[B, C, N]`` (N = positions), ``idx[b, n, :]`` the ``k``
    positions whose C-channel vectors have the largest cosine similarity to position n's (the position
    itself included, as in the released code: its own similarity is 1), and ``W1, b1``, ``W2, b2`` the
    weights ``[N, N]`` and biases ``[N]`` of ``conv1`` and ``conv2``::

        out[b, c, m] = max_j ReLU( (W1 x[b, c])[m] + b1[m] + (W2 (x[b, c, idx[b, :, j]] - 2 x[b, c]))[m] + b2[m] )

    which is :func:`facekernels.ops.edge_conv_max` with ``w_self = W1 - W2``, ``w_edge = W2`` and
    ``bias = b1 + b2`` (derived in every forward, so gradients reach conv1 and conv2). The neighbour
    indices come from :func:`facekernels.ops.cosine_topk` and carry no gradient (as the released topk's).

    ``conv1`` and ``conv2`` are ``nn.Conv1d(1, positions, kernel_size=positions)``, the released
    ``edge_feature``'s parameters with its names and shapes, so its state_dicts load directly.

    Args:
        positions: N = H * W, the number of positions (256 in MOL: 16 x 16).
        k: neighbours per position, ``1 <= k <= positions`` (4 in MOL).
    """

    # The ops this block runs; benchmark peers swap in plain-PyTorch versions.
    knn = staticmethod(_cosine_neighbours)
    edge_conv = staticmethod(edge_conv_max)

    def __init__(self, positions: int = 256, k: int = 4) -> None:
        super().__init__()
        if not isinstance(positions, int) or positions < 1:
            raise ValueError(f"CCC: positions must be a positive int, got {positions!r}")
        if not isinstance(k, int) or not 1 <= k <= positions:
            raise ValueError(f"CCC: k must be an int in [1, positions = {positions}], got {k!r}")
        self.positions = positions
        self.k = k
        self.conv1 = nn.Conv1d(1, positions, kernel_size=positions)
        self.conv2 = nn.Conv1d(1, positions, kernel_size=positions)

    def forward(self, x: Tensor) -> Tensor:
        n = self.positions
        if x.dim() not in (3, 4) or x.shape[2:].numel() != n:
            raise ValueError(
                f"CCC: x must be [B, C, H, W] with H*W = positions = {n} (or [B, C, {n}]), got {list(x.shape)}"
            )
        flat = x.flatten(2)
        w1 = self.conv1.weight.view(n, n)
        w2 = self.conv2.weight.view(n, n)
        out = self.edge_conv(flat, self.knn(flat, self.k), w1 - w2, w2, self.conv1.bias + self.conv2.bias)
        return out.view(x.shape)

    def extra_repr(self) -> str:
        return f"positions={self.positions}, k={self.k}"


class F5C(nn.Module):
    r"""MOL's F5C block: the FCC block, then its CCC added back, as the released MOL model wires them::

        y = fcc(x)
        out = y + ccc(y)

    Input ``[B, 2*dim, H, W]`` with ``H, W <= meta_kernel_size`` and ``H * W = positions`` (MOL: 128
    channels at 16 x 16); the output has its shape. ``fcc`` is :class:`FCC` and ``ccc`` is :class:`CCC`,
    so a state_dict with ``fcc.*`` entries of the released FCC (its unused ``ffn.*`` included) and
    ``ccc.*`` entries of the released ``edge_feature`` loads with ``strict=True``.

    Args:
        dim: channels per half of the FCC input.
        meta_kernel_size: the FCC's stored kernel length.
        positions: H * W.
        k: neighbours per position of the CCC's cosine kNN graph.
    """

    def __init__(self, dim: int = 64, meta_kernel_size: int = 32, positions: int = 256, k: int = 4) -> None:
        super().__init__()
        self.fcc = FCC(dim, meta_kernel_size)
        self.ccc = CCC(positions, k)

    def forward(self, x: Tensor) -> Tensor:
        y = self.fcc(x)
        return y + self.ccc(y)
