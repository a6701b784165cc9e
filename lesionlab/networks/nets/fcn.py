"""FCN-8s: fully convolutional network with two skip fusions (baseline of the renogram comparison, seed 003)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers import Conv, Pool

from lesionlab.networks.blocks.vgg import VGG16_CHANNELS, VGG16_CONVS, vgg_encoder_stages

__all__ = ["FCN"]

_INTERP = {1: "linear", 2: "bilinear", 3: "trilinear"}


class FCN(nn.Module):
    """FCN-8s (Long, Shelhamer, Darrell, "Fully Convolutional Networks for Semantic Segmentation", CVPR 2015,
    arXiv:1411.4038): a VGG-style encoder of five conv stages with max pooling, "fully connected" layers as
    convolutions, class scores at strides 32, 16 and 8 fused by addition after x2 transposed-convolution upsampling,
    then x8 upsampling to the input size.

    Paper → code: VGG16 conv stages (2, 2, 3, 3, 3 convolutions; 64-512 channels) → ``stages``; fc6/fc7 as
    convolutions (7x7 then 1x1, ``fc_channels``) with dropout → ``fc``; score layers (1x1) on fc7, pool4 and pool3 →
    ``score_*``; "2x upsampling ... summed" (FCN-16s / 8s) → ``up2_a``, ``up2_b`` (learned transposed convolutions);
    the final x8 → bilinear interpolation (the paper initialises that deconvolution to bilinear and keeps it fixed).
    Deviations: batch norm after every convolution (the paper relies on ImageNet-pretrained VGG weights, not used
    here), fc6 padded to keep the stride-32 map size, logits out (no softmax).

    Input: ``(B, in_channels, *spatial)`` with every spatial size a multiple of 32. Output: same size,
    ``out_channels`` logits.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output logit channels.
        channels: widths of the five encoder stages. Defaults to VGG16's (64, 128, 256, 512, 512).
        convs_per_stage: convolutions per stage. Defaults to (2, 2, 3, 3, 3).
        fc_channels: width of fc6/fc7. Defaults to 4096.
        dropout: dropout after fc6 and fc7. Defaults to 0.5.

    Example::

        net = FCN(2, 3, 1)
        logits = net(torch.rand(1, 3, 384, 384))   # (1, 1, 384, 384)
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 1,
                 channels: Sequence[int] = VGG16_CHANNELS, convs_per_stage: Sequence[int] = VGG16_CONVS,
                 fc_channels: int = 4096, dropout: float = 0.5) -> None:
        super().__init__()
        if fc_channels < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"fc_channels must be >= 1 and dropout in [0, 1), got {fc_channels}, {dropout}")
        encoder = vgg_encoder_stages(spatial_dims, in_channels, out_channels, channels, convs_per_stage)
        self.stages = nn.ModuleList(
            [nn.Sequential(*stage, Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2)) for stage in encoder])
        prev = channels[-1]
        self.interp_mode = _INTERP[spatial_dims]
        self.fc = nn.Sequential(
            Convolution(spatial_dims, prev, fc_channels, kernel_size=7, norm="batch", act="relu", dropout=dropout),
            Convolution(spatial_dims, fc_channels, fc_channels, kernel_size=1, norm="batch", act="relu",
                        dropout=dropout),
        )
        conv = Conv[Conv.CONV, spatial_dims]
        up = Conv[Conv.CONVTRANS, spatial_dims]
        self.score_fc = conv(fc_channels, out_channels, kernel_size=1)
        self.score_pool4 = conv(channels[3], out_channels, kernel_size=1)
        self.score_pool3 = conv(channels[2], out_channels, kernel_size=1)
        self.up2_a = up(out_channels, out_channels, kernel_size=2, stride=2)
        self.up2_b = up(out_channels, out_channels, kernel_size=2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)`` logits; sizes multiples of 32."""
        size = list(x.shape[2:])
        for s in size:
            if s % 32 != 0:
                raise ValueError(f"input size {size} must be a multiple of 32")
        feats: list[torch.Tensor] = []
        y = x
        for stage in self.stages:
            y = stage(y)
            feats.append(y)
        score = self.up2_a(self.score_fc(self.fc(y))) + self.score_pool4(feats[3])  # stride 16 (FCN-16s)
        score = self.up2_b(score) + self.score_pool3(feats[2])  # stride 8 (FCN-8s)
        return F.interpolate(score, size=size, mode=self.interp_mode, align_corners=False)
