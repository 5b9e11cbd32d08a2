"""nn.Module blocks of the source papers, built on the facekernels ops."""

from .fcc import FCC

__all__ = ["FCC"]
