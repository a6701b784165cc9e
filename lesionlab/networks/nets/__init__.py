"""Networks, one file per network."""

from __future__ import annotations

from .agmr_net import AGMRNet
from .dunet import DUNet
from .pspnet_cbam import PSPNetCBAM
from .slice_stack import split_train_output
from .tsrl_net import TSRLNet

__all__ = ["DUNet", "AGMRNet", "TSRLNet", "PSPNetCBAM", "split_train_output"]
