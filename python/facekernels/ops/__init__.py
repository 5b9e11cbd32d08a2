"""The facekernels ops: public functions over ``torch.ops.facekernels``, with fake and autograd
registrations."""

from .circular_conv import circular_conv
from .local_stats import local_mean_var, local_stat_transform

__all__ = ["circular_conv", "local_mean_var", "local_stat_transform"]
