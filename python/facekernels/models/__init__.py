"""Whole networks built from facekernels.nn."""

from .animation import BlendshapeAdapter, EmotionTransfer, adapter_loss
from .engagement import EngagementSTGCN
from .fer import convnext_tripse, resnet18_tripse
from .landmark_stgcn import LandmarkSTGCN
from .lipreading import LandmarkGuidedLipReader
from .mol import MOL, MOLLoss, mol_loss

__all__ = ["MOL", "BlendshapeAdapter", "EmotionTransfer", "EngagementSTGCN", "LandmarkGuidedLipReader", "LandmarkSTGCN",
           "MOLLoss",
           "adapter_loss", "convnext_tripse", "mol_loss", "resnet18_tripse"]
