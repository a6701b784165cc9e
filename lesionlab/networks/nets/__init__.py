"""Networks, one file per network."""

from __future__ import annotations

from .agmr_net import AGMREncoder, AGMRNet, split_train_output
from .dunet import DUNet
from .pspnet_cbam import PSPNetCBAM
from .tsrl_net import TSRLNet

__all__ = ["DUNet", "AGMRNet", "AGMREncoder", "TSRLNet", "PSPNetCBAM", "split_train_output"]
