"""Whole networks built from facekernels.nn."""

from .fer import convnext_tripse, resnet18_tripse
from .landmark_stgcn import LandmarkSTGCN
from .mol import MOL, MOLLoss, mol_loss

__all__ = ["MOL", "LandmarkSTGCN", "MOLLoss", "convnext_tripse", "mol_loss", "resnet18_tripse"]
