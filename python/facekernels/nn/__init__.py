"""nn.Module blocks of the source papers, built on the facekernels ops."""

from .ccc import CCC, F5C
from .diff_attention import MD2A, MultiheadDiffAttention
from .fcc import FCC
from .local_sfft import LocalSFFT, dafe_alignment_loss
from .losses import flow_epe, landmark_nme_loss
from .mamba import Mamba
from .stgcn import STGCNBlock, masked_batch_norm
from .triplet_attention import TripletAttention, TripSE

__all__ = ["CCC", "F5C", "FCC", "MD2A", "LocalSFFT", "Mamba", "MultiheadDiffAttention", "STGCNBlock", "TripSE",
           "TripletAttention", "dafe_alignment_loss", "flow_epe", "landmark_nme_loss", "masked_batch_norm"]
