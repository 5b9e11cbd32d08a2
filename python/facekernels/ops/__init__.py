"""The facekernels ops: public functions over ``torch.ops.facekernels``, with fake and autograd
registrations."""

from .alignment_energy import alignment_energy
from .circular_conv import circular_conv
from .local_stats import local_mean_var, local_stat_transform

__all__ = ["alignment_energy", "circular_conv", "local_mean_var", "local_stat_transform"]
