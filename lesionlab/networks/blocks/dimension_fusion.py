"""Fusion of 3D-branch features into the 2D branch of 2.5D networks (D-UNet, AGMR-Net, TSRL-Net).

A 2.5D network of the D-UNet family keeps a 2D encoder on the slice stack ``(B, S, H, W)`` and a 3D encoder on the
same stack seen as a volume ``(B, 1, S, H, W)``. At a fusion stage the 3D feature ``(B, C, D, H, W)`` is turned into a
2D feature ``(B, C, H, W)`` (:class:`DimensionTransform`) and merged with the 2D feature of the same stage.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Act, Conv, Pool, split_args

__all__ = ["DimensionTransform", "SqueezeExcitation", "SEAddFusion"]


class DimensionTransform(nn.Module):
    """3D feature ``(B, C, D, H, W)`` -> 2D feature ``(B, C_out, H, W)``.

    Conv3d ``C -> 1`` (kernel 1) gives ``(B, 1, D, H, W)``; the channel axis is squeezed so the ``D`` slices become
    channels, ``(B, D, H, W)``; a 3x3 2D convolution ``D -> C_out`` with an activation follows (D-UNet's fusion
    front end, and the "dimension transform" of AGMR-Net's CFF, thesis §3.3).

    Args:
        in_channels: channels ``C`` of the 3D feature.
        depth: depth ``D`` of the 3D feature (fixed by the network input, e.g. 2 at stage 2 of a 4-slice stack).
        out_channels: channels of the 2D result.
        act: activation after the 2D convolution. Defaults to ReLU.
    """

    def __init__(self, in_channels: int, depth: int, out_channels: int, act: str | tuple = "relu") -> None:
        super().__init__()
        if min(in_channels, depth, out_channels) < 1:
            raise ValueError(
                f"in_channels, depth and out_channels must be >= 1, got {in_channels}, {depth}, {out_channels}."
            )
        self.depth = depth
        self.reduce = Conv[Conv.CONV, 3](in_channels, 1, kernel_size=1)
        self.conv = Conv[Conv.CONV, 2](depth, out_channels, kernel_size=3, padding=1)
        act_name, act_args = split_args(act)
        self.act = Act[act_name](**act_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, D, H, W) with ``D == depth``; returns (B, out_channels, H, W)."""
        if x.shape[2] != self.depth:
            raise ValueError(f"expected a 3D feature of depth {self.depth}, got depth {x.shape[2]}.")
        return self.act(self.conv(self.reduce(x).squeeze(1)))


class SqueezeExcitation(nn.Module):
    """Channel squeeze-and-excitation (Hu et al. 2018) with optional bias, for any ``spatial_dims``.

    MONAI's ``ChannelSELayer`` always has biases; D-UNet's fusion has none, and its published parameter count
    depends on that, hence this small block.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: number of channels.
        reduction: hidden size is ``channels // reduction``. Defaults to 16.
        bias: whether the two fully connected layers have biases. Defaults to False.
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"reduction must be in [1, channels={channels}], got {reduction}.")
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, *spatial); returns ``x`` re-weighted per channel, same shape."""
        w = self.fc(self.pool(x).flatten(1))
        # reshape to (B, C, 1, ..., 1) in a TorchScript-friendly way (no starred list of unknown length)
        for _ in range(x.ndim - 2):
            w = w.unsqueeze(-1)
        return x * w


class SEAddFusion(nn.Module):
    """D-UNet's 2D/3D fusion ("D_SE_Add"): ``SE(T(f3d)) + SE(f2d)``.

    ``T`` is :class:`DimensionTransform`; each branch has its own bias-free :class:`SqueezeExcitation`.

    Args:
        channels: channels ``C`` of both the 2D and the 3D feature.
        depth: depth of the 3D feature.
        reduction: SE reduction ratio. Defaults to 16.
        act: activation of the dimension transform. Defaults to ReLU.
    """

    def __init__(self, channels: int, depth: int, reduction: int = 16, act: str | tuple = "relu") -> None:
        super().__init__()
        self.transform = DimensionTransform(channels, depth, channels, act=act)
        self.se3d = SqueezeExcitation(2, channels, reduction)
        self.se2d = SqueezeExcitation(2, channels, reduction)

    def forward(self, f3d: torch.Tensor, f2d: torch.Tensor) -> torch.Tensor:
        """``f3d``: (B, C, D, H, W), ``f2d``: (B, C, H, W); returns (B, C, H, W)."""
        return self.se3d(self.transform(f3d)) + self.se2d(f2d)
