"""Networks, one file per network."""

from __future__ import annotations

from .agmr_net import AGMREncoder, AGMRNet, split_train_output
from .deeplabv3plus import DeepLabV3Plus
from .dunet import DUNet
from .tsrl_net import TSRLNet
from .unet3plus import UNet3Plus
from .unetplusplus import UNetPlusPlus

__all__ = ["DUNet", "AGMRNet", "AGMREncoder", "TSRLNet", "split_train_output", "DeepLabV3Plus", "UNet3Plus",
           "UNetPlusPlus"]
