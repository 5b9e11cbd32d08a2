"""nn.Module blocks of the source papers, built on the facekernels ops."""

from .fcc import FCC
from .local_sfft import LocalSFFT, dafe_alignment_loss

__all__ = ["FCC", "LocalSFFT", "dafe_alignment_loss"]
