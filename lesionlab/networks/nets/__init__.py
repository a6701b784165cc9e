"""Networks, one file per network."""

from __future__ import annotations

from .agmr_net import AGMREncoder, AGMRNet, split_train_output
from .dunet import DUNet
from .se_resnet_improved import SEResNet50Improved
from .tsrl_net import TSRLNet

__all__ = ["DUNet", "AGMRNet", "AGMREncoder", "TSRLNet", "SEResNet50Improved", "split_train_output"]
