"""Whole networks built from facekernels.nn."""

from .landmark_stgcn import LandmarkSTGCN
from .mol import MOL, MOLLoss, mol_loss

__all__ = ["MOL", "LandmarkSTGCN", "MOLLoss", "mol_loss"]
