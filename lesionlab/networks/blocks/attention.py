"""CBAM, the Convolutional Block Attention Module (channel then spatial attention), spatial_dims-generic.

Woo, Park, Lee, Kweon, "CBAM: Convolutional Block Attention Module", ECCV 2018, https://arxiv.org/abs/1807.06521.
Used by :class:`~lesionlab.networks.nets.PSPNetCBAM` inside the ResNet bottlenecks (spec seed 000 §3.2).
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Norm, Pool

__all__ = ["ChannelAttention", "SpatialAttention", "CBAM"]


class ChannelAttention(nn.Module):
    """Channel attention ``Mc(F) = sigmoid(MLP(AvgPool(F)) + MLP(MaxPool(F)))`` (thesis eq. 2-28/2-29).

    The MLP is shared by the two pooled descriptors: ``C -> C/reduction -> C`` as 1x1 convolutions with bias and a
    ReLU in between (the original CBAM). The thesis's eq. 3-2 adds GAP and GMP *before* the MLP; with the ReLU in
    between that is a different function, and its ``W0`` shape is inconsistent, so eq. 2-29 is followed.

    Args:
        spatial_dims: 1, 2 or 3.
        channels: number of input (= output) channels.
        reduction: hidden width is ``max(channels // reduction, 1)``.

    Returns ``x * Mc(x)``, same shape as ``x``.
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if channels < 1 or reduction < 1:
            raise ValueError(f"channels and reduction must be positive, got channels={channels}, reduction={reduction}")
        conv = Conv[Conv.CONV, spatial_dims]
        hidden = max(channels // reduction, 1)
        self.avg_pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        self.max_pool = Pool[Pool.ADAPTIVEMAX, spatial_dims](1)
        self.mlp = nn.Sequential(conv(channels, hidden, 1), nn.ReLU(inplace=True), conv(hidden, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> same shape, channels re-weighted."""
        return x * torch.sigmoid(self.mlp(self.avg_pool(x)) + self.mlp(self.max_pool(x)))


class SpatialAttention(nn.Module):
    """Spatial attention ``Ms(F) = sigmoid(f^{k x k}([AvgPool_c(F); MaxPool_c(F)]))`` (thesis eq. 2-30/2-31).

    Mean and max over the channel axis give two maps, concatenated and convolved to one channel (kernel
    ``kernel_size``, 'same' padding, no bias, batch norm as in the original CBAM code), then a sigmoid.

    Args:
        spatial_dims: 1, 2 or 3.
        kernel_size: odd kernel side (7 in the paper).

    Returns ``x * Ms(x)``, same shape as ``x``.
    """

    def __init__(self, spatial_dims: int, kernel_size: int = 7) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd number, got {kernel_size}")
        self.conv = Conv[Conv.CONV, spatial_dims](2, 1, kernel_size, padding=kernel_size // 2, bias=False)
        self.norm = Norm[Norm.BATCH, spatial_dims](1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> same shape, positions re-weighted."""
        pooled = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        return x * torch.sigmoid(self.norm(self.conv(pooled)))


class CBAM(nn.Module):
    """Channel attention followed by spatial attention: ``F' = Mc(F) * F``, ``F'' = Ms(F') * F'``.

    The thesis writes the calibration as ``F'' = Mc(F) (x) Ms(F') (x) F``; its figures and the original paper show the
    sequential form implemented here (spec §3.2).

    Args:
        spatial_dims: 1, 2 or 3.
        channels: number of input (= output) channels.
        reduction: channel-MLP reduction ratio r (16 in the paper).
        kernel_size: spatial-attention kernel side (7 in the paper).

    Example::

        cbam = CBAM(spatial_dims=2, channels=1024)
        y = cbam(torch.randn(2, 1024, 32, 32))   # (2, 1024, 32, 32)
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16, kernel_size: int = 7) -> None:
        super().__init__()
        self.channel = ChannelAttention(spatial_dims, channels, reduction)
        self.spatial = SpatialAttention(spatial_dims, kernel_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *spatial)`` -> same shape."""
        return self.spatial(self.channel(x))
