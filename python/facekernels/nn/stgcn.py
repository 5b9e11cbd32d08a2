"""ST-GCN's spatio-temporal block on the st_graph_conv op, with a learnable edge mask and graph."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..ops.st_graph_conv import st_graph_conv

__all__ = ["STGCNBlock", "masked_batch_norm"]


class _MaskedBatchNormTrain(torch.autograd.Function):
    """The training-mode masked batch norm on ``x [N, C, L]``, ``mask [N, 1 or C, L]`` (0/1) with its
    closed-form backward: a few fused passes over x where autograd through the composite takes about
    fifteen (the block's batch norms are most of its elementwise time).

    The batch mean and variance come from the sums of ``x * mask`` and its square over the valid count
    (``x_is_masked``: x is already zero at masked points, skip the product); the backward is BatchNorm's restricted to the
    valid points, ``dx = m gamma rstd (g - sum(g) / n - xhat sum(g xhat) / n)`` with ``g = dy m``. Returns
    (y, mean, biased variance); only y is differentiable."""

    @staticmethod
    def forward(ctx, x, mask, weight, bias, eps, x_is_masked):
        c = x.size(1)
        xm = x if x_is_masked else x * mask
        count = mask.sum((0, 2)).expand(c) if mask.size(1) == 1 else mask.sum((0, 2))
        safe = count.clamp_min(1)
        # sums over the contiguous last dim first: var_mean over (0, 2) runs several times slower
        mean = xm.sum(2).sum(0) / safe
        var = ((xm * xm).sum(2).sum(0) / safe - mean * mean).clamp_min(0)
        rstd = torch.rsqrt(var + eps)
        scale = rstd if weight is None else rstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        y = torch.addcmul(shift[:, None] * mask, xm, scale[:, None])
        ctx.save_for_backward(xm, mask, mean, rstd, weight, safe)
        ctx.has_bias = bias is not None
        ctx.mark_non_differentiable(mean, var)
        return y, mean, var

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, _grad_mean, _grad_var):
        xm, mask, mean, rstd, weight, safe = ctx.saved_tensors
        g = grad_y * mask
        sum_g = g.sum((0, 2))
        sum_g_xhat = rstd * ((g * xm).sum((0, 2)) - mean * sum_g)
        a = rstd if weight is None else rstd * weight
        b = -a * rstd * sum_g_xhat / safe
        d = -a * sum_g / safe - b * mean
        grad_x = torch.addcmul(torch.addcmul(d[:, None] * mask, xm, b[:, None]), g, a[:, None])
        grad_weight = sum_g_xhat if weight is not None and ctx.needs_input_grad[2] else None
        grad_bias = sum_g if ctx.has_bias and ctx.needs_input_grad[3] else None
        return grad_x, None, grad_weight, grad_bias, None, None


def masked_batch_norm(x: Tensor, mask: Tensor, bn: nn.modules.batchnorm._BatchNorm, x_is_masked: bool = False
                      ) -> Tensor:
    """``bn`` (a BatchNorm1d/2d's parameters, running statistics, momentum and eps) applied to
    ``x [N, C, ...]`` with statistics over the valid points only; the output is zero at masked points.

    ``mask`` is 0/1 in x's dtype, broadcastable to x with size 1 or C at dim 1 (``[N, 1, T, V]`` for one
    mask over all channels). In training (or without running statistics) the mean and the biased variance
    are taken over the points where the mask is 1, and the running statistics are updated from them as
    BatchNorm does (the variance unbiased by count / (count - 1)); a channel with no valid point in the batch
    leaves its running statistics alone. In eval the running statistics are used. With a mask of ones this
    is ``bn(x)`` up to rounding. x at masked points must be finite (it is multiplied by the mask). Not twice
    differentiable in training mode. ``x_is_masked=True`` promises that x is zero at masked points (as
    st_graph_conv's masked output is) and saves a pass over x.
    """
    shape = [1, x.size(1)] + [1] * (x.dim() - 2)
    if bn.training or bn.running_mean is None:
        n, c = x.shape[:2]
        flat_mask = mask.expand(n, mask.size(1), *x.shape[2:]).reshape(n, mask.size(1), -1)
        y, mean, var = _MaskedBatchNormTrain.apply(x.reshape(n, c, -1), flat_mask, bn.weight, bn.bias, bn.eps,
                                                   x_is_masked)
        if bn.training and bn.running_mean is not None:
            with torch.no_grad():
                count = flat_mask.sum((0, 2))
                bn.num_batches_tracked.add_(1)
                momentum = (1.0 / float(bn.num_batches_tracked)) if bn.momentum is None else bn.momentum
                seen = count > 0
                unbiased = var * count / (count - 1).clamp_min(1)
                bn.running_mean.copy_(torch.where(seen, bn.running_mean.lerp(mean, momentum), bn.running_mean))
                bn.running_var.copy_(torch.where(seen, bn.running_var.lerp(unbiased, momentum), bn.running_var))
        return y.view(x.shape)
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    out = (x - bn.running_mean.view(shape)) * scale.view(shape) * mask
    if bn.bias is not None:
        out = out + bn.bias.view(shape) * mask
    return out


class STGCNBlock(nn.Module):
    r"""One ST-GCN block (Yan et al. 2018, ``st_gcn``) over a landmark graph, with a learned graph term.

    Input ``[N, in_channels, T, V]``, output ``[N, out_channels, T', V]`` with
    ``T' = (T - 1) // stride + 1``::

        A'  = adjacency * edge_importance (+ adaptive_graph when adaptive)      [K, V, V]
        g   = st_graph_conv(x, weight, A', bias)                                 the graph convolution
        y   = BN_t(TemporalConv(ReLU(BN_g(g))))                                  9x1 conv, stride, padding 4
        out = ReLU(Dropout(y) + residual(x))

    with ``st_graph_conv(x, W, A, b)[n, c, t, w] = sum_k sum_v (sum_i W[k, c, i] x[n, i, t, v] + b[k, c])
    A[k, v, w]`` (:func:`facekernels.ops.st_graph_conv`), which is ST-GCN's ``ConvTemporalGraphical``
    (a 1x1 conv to K*out_channels channels, then ``einsum('nkctv,kvw->nctw')``) with
    ``W[k, c, i] = conv.weight[k*out_channels + c, i]``. ``edge_importance`` (ones) is ST-GCN's
    learnable edge-importance weighting; ``adaptive_graph`` (initialised to 1e-6, as 2s-AGCN's B) is the
    learned additive graph of multi-graph ST-GCNs, free to link any two nodes. The residual is none
    (``residual=False``), the identity (in == out channels and stride 1) or a strided 1x1 conv + BN.

    With ``mask`` (``[N, T, V]`` bool, True = valid; ``forward(x, mask)``) a masked point is a missing
    landmark: it contributes nothing and its outputs are zero::

        g   = st_graph_conv(x, weight, A', bias, mask)        masked messages dropped, zero at masked points
        y   = mBN_t(TemporalConv(ReLU(mBN_g(g))))             the temporal conv sees zeros at masked points
        out = ReLU(Dropout(y) + residual(x m)) m'             m' = mask[:, ::stride], zero at masked points

    where ``mBN`` is :func:`masked_batch_norm`: batch statistics (and the running statistics' updates) over
    the valid points only, so the share of missing landmarks does not shift the normalisation, with the
    same parameters and running statistics as the unmasked path (a model trained with masks evaluates
    without one and the other way round). The residual conv's BN is masked alike. The temporal conv reads
    the zeros at masked frames as ST-GCN's zero padding: a valid point next to a gap sees fewer real
    neighbours, and no renormalisation is made for it. With a mask of all True the result equals the
    unmasked forward up to rounding.

    Args:
        in_channels: C_in.
        out_channels: C_out.
        adjacency: the ``[K, V, V]`` partition matrices (:func:`facekernels.graphs.adjacency`); kept as
            the buffer ``adjacency`` (in the default dtype, as the parameters; moves and casts with the
            module).
        stride: the temporal stride.
        residual: add the residual branch.
        adaptive: add the learnable graph ``adaptive_graph`` to the masked adjacency.
        dropout: dropout probability before the residual sum.
        temporal_kernel_size: the temporal kernel length (odd; ST-GCN's 9).
    """

    # The graph convolution this block runs; benchmark peers swap in ST-GCN's 1x1 conv + einsum.
    graph_conv = staticmethod(st_graph_conv)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        adjacency: Tensor,
        stride: int = 1,
        residual: bool = True,
        adaptive: bool = True,
        dropout: float = 0.0,
        temporal_kernel_size: int = 9,
    ) -> None:
        super().__init__()
        adjacency = torch.as_tensor(adjacency)
        if adjacency.dim() != 3 or adjacency.size(1) != adjacency.size(2) or adjacency.numel() == 0:
            raise ValueError(f"STGCNBlock: adjacency must be [K, V, V] with K, V >= 1, got {list(adjacency.shape)}")
        if not adjacency.is_floating_point():
            raise ValueError(f"STGCNBlock: adjacency must be floating point, got {adjacency.dtype}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"STGCNBlock: in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}")
        if stride < 1:
            raise ValueError(f"STGCNBlock: stride must be >= 1, got {stride}")
        if temporal_kernel_size < 1 or temporal_kernel_size % 2 == 0:
            raise ValueError(f"STGCNBlock: temporal_kernel_size must be odd and >= 1, got {temporal_kernel_size}")
        k, v = adjacency.size(0), adjacency.size(1)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.stride = stride
        self.adaptive = adaptive
        self.register_buffer("adjacency", adjacency.detach().to(torch.get_default_dtype()).clone())
        self.weight = nn.Parameter(torch.empty(k, out_channels, in_channels))
        self.bias = nn.Parameter(torch.empty(k, out_channels))
        self.edge_importance = nn.Parameter(torch.ones(k, v, v))
        self.adaptive_graph = nn.Parameter(torch.full((k, v, v), 1e-6)) if adaptive else None
        self.bn_graph = nn.BatchNorm2d(out_channels)
        pad = (temporal_kernel_size - 1) // 2
        self.temporal_conv = nn.Conv2d(out_channels, out_channels, (temporal_kernel_size, 1), (stride, 1), (pad, 0))
        self.bn_temporal = nn.BatchNorm2d(out_channels)
        self.dropout = nn.Dropout(dropout)
        if not residual:
            self.residual: nn.Module | None = None
        elif in_channels == out_channels and stride == 1:
            self.residual = nn.Identity()
        else:
            self.residual = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, (stride, 1)), nn.BatchNorm2d(out_channels)
            )
        self.reset_graph_conv_parameters()

    @property
    def num_partitions(self) -> int:
        return self.adjacency.size(0)

    @property
    def num_nodes(self) -> int:
        return self.adjacency.size(1)

    def reset_graph_conv_parameters(self) -> None:
        """weight and bias as ST-GCN's ``nn.Conv2d(in_channels, K*out_channels, 1)`` initialises them:
        uniform within 1/sqrt(in_channels) (kaiming_uniform with a = sqrt(5))."""
        bound = 1.0 / math.sqrt(self.in_channels)
        with torch.no_grad():
            self.weight.uniform_(-bound, bound)
            self.bias.uniform_(-bound, bound)

    def graph(self) -> Tensor:
        """The ``[K, V, V]`` graph the convolution uses: adjacency * edge_importance (+ adaptive_graph)."""
        a = self.adjacency * self.edge_importance
        if self.adaptive_graph is not None:
            a = a + self.adaptive_graph
        return a

    def forward(self, x: Tensor, mask: Tensor | None = None, *, graph: Tensor | None = None) -> Tensor:
        """``x [N, in_channels, T, V]`` -> ``[N, out_channels, T', V]``; with ``mask [N, T, V]`` (bool, True =
        valid) the masked forward of the class docstring, whose output mask is ``mask[:, ::stride]``
        (:meth:`output_mask`). ``graph`` (default :meth:`graph`): the ``[K, V, V]`` or per-sample
        ``[N, K, V, V]`` graph to convolve with instead, for callers that build it from :meth:`graph` and the
        input (data-dependent graphs)."""
        if x.dim() != 4 or x.size(1) != self.in_channels or x.size(3) != self.num_nodes:
            raise ValueError(
                f"STGCNBlock: x must be [N, {self.in_channels}, T, {self.num_nodes}] "
                f"([N, in_channels, T, V]), got {list(x.shape)}"
            )
        if mask is None:
            res = self.residual(x) if self.residual is not None else None
            y = self.graph_conv(x, self.weight, self.graph() if graph is None else graph, self.bias)
            y = self.bn_temporal(self.temporal_conv(F.relu(self.bn_graph(y))))
            y = self.dropout(y)
            if res is not None:
                y = y + res
            return F.relu(y)
        n, _, t, v = x.shape
        if mask.dtype != torch.bool or mask.shape != (n, t, v):
            raise ValueError(f"STGCNBlock: mask must be a bool [N, T, V] = [{n}, {t}, {v}] tensor, "
                             f"got {mask.dtype} {list(mask.shape)}")
        m = mask.unsqueeze(1).to(x.dtype)                      # [N, 1, T, V]
        m_out = m[:, :, :: self.stride]                        # [N, 1, T', V]
        # masked inputs are zero for the residual branch too (st_graph_conv never reads them); where, not
        # x * m, so that a NaN standing for a missing landmark does not spread
        x = torch.where(mask.unsqueeze(1), x, 0.0)
        res = self._masked_residual(x, m_out)
        y = self.graph_conv(x, self.weight, self.graph() if graph is None else graph, self.bias, mask=mask)
        y = F.relu(masked_batch_norm(y, m, self.bn_graph, x_is_masked=True))  # zero at masked points
        y = masked_batch_norm(self.temporal_conv(y), m_out, self.bn_temporal)
        y = self.dropout(y)
        if res is not None:
            y = y + res
        return F.relu(y)

    def _masked_residual(self, x: Tensor, m_out: Tensor) -> Tensor | None:
        if self.residual is None:
            return None
        if isinstance(self.residual, nn.Identity):
            return x
        conv, bn = self.residual[0], self.residual[1]
        return masked_batch_norm(conv(x), m_out, bn)

    def output_mask(self, mask: Tensor) -> Tensor:
        """The mask of the block's output for an input mask ``[N, T, V]``: the frames the stride keeps."""
        return mask[:, :: self.stride]

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, K={self.num_partitions}, V={self.num_nodes}, "
                f"stride={self.stride}, residual={self.residual is not None}, adaptive={self.adaptive}")
