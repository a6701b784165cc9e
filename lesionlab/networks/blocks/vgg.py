"""VGG-style convolution stages shared by the FCN-8s and SegNet baselines (seed 003 comparison)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["VGG16_CHANNELS", "VGG16_CONVS", "vgg_stage", "vgg_encoder_stages"]

#: VGG16's stage widths and convolutions per stage (Simonyan and Zisserman, ICLR 2015, configuration D)
VGG16_CHANNELS = (64, 128, 256, 512, 512)
VGG16_CONVS = (2, 2, 3, 3, 3)


def vgg_stage(spatial_dims: int, in_channels: int, out_channels: int, n_convs: int) -> nn.Sequential:
    """``n_convs`` 3x3 convolutions with batch norm and ReLU; the first maps ``in_channels`` to ``out_channels``."""
    return nn.Sequential(*[Convolution(spatial_dims, in_channels if i == 0 else out_channels, out_channels,
                                       kernel_size=3, norm="batch", act="relu") for i in range(n_convs)])


def vgg_encoder_stages(spatial_dims: int, in_channels: int, out_channels: int, channels: Sequence[int],
                       convs_per_stage: Sequence[int]) -> list[nn.Sequential]:
    """Check a VGG-style network's arguments and build its five encoder stages (no pooling inside).

    Raises:
        ValueError: for ``spatial_dims`` outside 1-3, channels below 1, or not five positive stage widths and
            convolution counts.
    """
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")
    if len(channels) != 5 or len(convs_per_stage) != 5 or min(channels) < 1 or min(convs_per_stage) < 1:
        raise ValueError(f"channels and convs_per_stage must be 5 positive values, got {channels}, {convs_per_stage}")
    stages, prev = [], in_channels
    for ch, n in zip(channels, convs_per_stage):
        stages.append(vgg_stage(spatial_dims, prev, ch, n))
        prev = ch
    return stages
