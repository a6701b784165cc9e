"""Networks, one file per network."""

from __future__ import annotations

from .agmr_net import AGMRNet
from .dunet import DUNet
from .fcn import FCN
from .segnet import SegNet
from .slice_stack import split_train_output
from .transformer_encoder_unet import TransformerEncoderUNet
from .tsrl_net import TSRLNet

__all__ = ["DUNet", "AGMRNet", "TSRLNet", "split_train_output", "TransformerEncoderUNet", "FCN", "SegNet"]
