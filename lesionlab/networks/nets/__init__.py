"""Networks, one file per network."""

from __future__ import annotations

from .agmr_net import AGMRNet
from .deeplabv3plus import DeepLabV3Plus
from .dunet import DUNet
from .fcn import FCN
from .pspnet_cbam import PSPNetCBAM
from .se_resnet_improved import SEResNet50Improved
from .segnet import SegNet
from .slice_stack import split_train_output
from .transformer_encoder_unet import TransformerEncoderUNet
from .tsrl_net import TSRLNet
from .unet3plus import UNet3Plus
from .unetplusplus import UNetPlusPlus

__all__ = ["DUNet", "AGMRNet", "TSRLNet", "SEResNet50Improved", "split_train_output", "DeepLabV3Plus", "UNet3Plus",
           "UNetPlusPlus", "TransformerEncoderUNet", "FCN", "SegNet", "PSPNetCBAM"]
