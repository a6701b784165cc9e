"""Networks, one file per network."""

from __future__ import annotations

from .agmr_net import AGMRNet
from .dunet import DUNet
from .se_resnet_improved import SEResNet50Improved
from .slice_stack import split_train_output
from .tsrl_net import TSRLNet

__all__ = ["DUNet", "AGMRNet", "TSRLNet", "SEResNet50Improved", "split_train_output"]
