"""Whole networks built from facekernels.nn."""

from .animation import BlendshapeAdapter, EmotionTransfer, adapter_loss
from .engagement import EngagementSTGCN
from .fer import convnext_tripse, resnet18_tripse
from .landmark_stgcn import LandmarkSTGCN
from .lipreading import LandmarkGuidedLipReader
from .metst_sf import METST_SF, metst_sf_loss
from .mol import MOL, MOLLoss, mol_loss

__all__ = ["METST_SF", "MOL", "BlendshapeAdapter", "EmotionTransfer", "EngagementSTGCN", "LandmarkGuidedLipReader",
           "LandmarkSTGCN", "MOLLoss", "adapter_loss", "convnext_tripse", "metst_sf_loss", "mol_loss", "resnet18_tripse"]
