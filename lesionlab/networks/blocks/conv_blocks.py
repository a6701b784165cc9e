"""Plain convolution blocks shared by the 2.5D stroke networks (D-UNet family)."""

from __future__ import annotations

from collections.abc import Sequence

import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["DoubleConv", "UpConv"]


class DoubleConv(nn.Sequential):
    """Two ``kernel_size`` convolutions, each followed by normalisation and activation ("BN_block" of D-UNet).

    Conv -> Norm -> Act, twice, with 'same' padding, for any ``spatial_dims``. With ``norm="batch"`` this is
    D-UNet's ``BN_block`` (2D) or ``BN_block3d`` (3D).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: input channels.
        out_channels: output channels of both convolutions.
        kernel_size: convolution kernel size. Defaults to 3.
        act: activation type and arguments. Defaults to ReLU.
        norm: normalisation type and arguments. Defaults to batch norm.
        dropout: dropout applied after the second convolution's activation (0 disables it). Defaults to 0.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int] | int = 3,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        dropout: float = 0.0,
    ) -> None:
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}.")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
        layers: list[nn.Module] = [
            Convolution(spatial_dims, in_channels, out_channels, kernel_size=kernel_size, act=act, norm=norm,
                        adn_ordering="NA"),
            Convolution(spatial_dims, out_channels, out_channels, kernel_size=kernel_size, act=act, norm=norm,
                        adn_ordering="NA"),
        ]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
        super().__init__(*layers)


class UpConv(nn.Sequential):
    """Stride-2 transposed convolution that doubles every spatial size, followed by an activation.

    ``kernel_size=3`` with padding 1 and output padding 1 is the up-convolution that reproduces D-UNet's
    published parameter count (9,503,779); see ``DUNet``.

    Args:
        spatial_dims: number of spatial dimensions.
        in_channels: input channels.
        out_channels: output channels.
        kernel_size: odd kernel size of the transposed convolution. Defaults to 3.
        act: activation after the convolution, ``None`` for none. Defaults to ReLU.
    """

    def __init__(
        self, spatial_dims: int, in_channels: int, out_channels: int, kernel_size: int = 3,
        act: str | tuple | None = "relu",
    ) -> None:
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        # padding (k-1)/2 and output_padding 1 give exactly 2x the input size for odd k.
        super().__init__(
            Convolution(spatial_dims, in_channels, out_channels, strides=2, kernel_size=kernel_size, act=act,
                        norm=None, is_transposed=True, conv_only=act is None)
        )
