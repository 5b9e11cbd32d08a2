"""Whole networks built from facekernels.nn (later issues)."""

from .landmark_stgcn import LandmarkSTGCN

__all__ = ["LandmarkSTGCN"]
