"""Networks, one file per network."""

from __future__ import annotations

from .agmr_net import AGMREncoder, AGMRNet, split_train_output
from .dunet import DUNet
from .fcn import FCN
from .segnet import SegNet
from .transformer_encoder_unet import TransformerEncoderUNet
from .tsrl_net import TSRLNet

__all__ = ["DUNet", "AGMRNet", "AGMREncoder", "TSRLNet", "split_train_output", "TransformerEncoderUNet", "FCN", "SegNet"]
