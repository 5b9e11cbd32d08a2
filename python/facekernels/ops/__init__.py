"""The facekernels ops: public functions over ``torch.ops.facekernels``, with fake and autograd
registrations."""

from .alignment_energy import alignment_energy
from .circular_conv import circular_conv
from .diff_attention import diff_attention
from .edge_conv import cosine_topk, edge_conv_max
from .local_stats import local_mean_var, local_stat_transform
from .st_graph_conv import st_graph_conv

__all__ = [
    "alignment_energy", "circular_conv", "cosine_topk", "diff_attention", "edge_conv_max", "local_mean_var",
    "local_stat_transform", "st_graph_conv",
]
