"""Whole networks built from facekernels.nn (later issues)."""

from .fer import convnext_tripse, resnet18_tripse
from .landmark_stgcn import LandmarkSTGCN

__all__ = ["LandmarkSTGCN", "convnext_tripse", "resnet18_tripse"]
