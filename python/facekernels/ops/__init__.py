"""The facekernels ops: public functions over ``torch.ops.facekernels``, with fake and autograd
registrations."""

from .circular_conv import circular_conv

__all__ = ["circular_conv"]
