"""The improved SE-ResNet residual block: 1x3 / 3x1 factorised convolutions, squeeze-and-excitation, shortcut."""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.blocks import ChannelSELayer, Convolution
from monai.networks.layers.factories import Act
from monai.networks.layers.utils import get_act_layer

__all__ = ["BLOCK_READINGS", "FactorizedConv", "ImprovedSEResBlock", "check_reading"]

#: The three readings of the improved block (seed 004 §3.4 / §9.1): factorised passes and 1x1 bottleneck or not.
BLOCK_READINGS = {"A": (2, True), "B": (1, True), "C": (2, False)}


def check_reading(spatial_dims: int, reading: str) -> None:
    """Raise ``ValueError`` unless ``spatial_dims`` is 1, 2 or 3 and ``reading`` one of :data:`BLOCK_READINGS`."""
    if spatial_dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
    if reading not in BLOCK_READINGS:
        raise ValueError(f"reading must be one of {sorted(BLOCK_READINGS)}, got {reading!r}.")


class FactorizedConv(nn.Sequential):
    """One k x k (x k) convolution factorised into one k-tap convolution per spatial axis, last axis first.

    In 2D this is the paper's ``1x3 -> 3x1`` pair (seed 004 §3.3: 1x3 filters along the width, then 3x1 along the
    height); in 3D it is ``1x1x3 -> 1x3x1 -> 3x1x1``. Each convolution is followed by normalisation and activation
    except the last one when ``last_act`` is false (the pre-SE output of a residual branch). A stride is split over
    the axes: the convolution along axis ``i`` strides only along axis ``i``, so the pair subsamples like a strided
    3x3 convolution.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3).
        in_channels: input channels.
        out_channels: output channels of every convolution.
        kernel_size: taps of each 1-D convolution. Defaults to 3.
        stride: stride of the factorised convolution (applied axis by axis). Defaults to 1.
        act: activation. Defaults to ReLU.
        norm: normalisation. Defaults to batch norm.
        last_act: activation after the last convolution. Defaults to True.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        kernel_size: int = 3,
        stride: int = 1,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
        last_act: bool = True,
    ) -> None:
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be odd and >= 1, got {kernel_size}.")
        if stride < 1:
            raise ValueError(f"stride must be >= 1, got {stride}.")
        layers = []
        axes = list(reversed(range(spatial_dims)))  # width axis first: 1x3 then 3x1 in 2D
        for n, axis in enumerate(axes):
            kernel = [1] * spatial_dims
            kernel[axis] = kernel_size
            strides = [1] * spatial_dims
            strides[axis] = stride
            is_last = n == len(axes) - 1
            layers.append(
                Convolution(
                    spatial_dims,
                    in_channels if n == 0 else out_channels,
                    out_channels,
                    strides=strides,
                    kernel_size=kernel,
                    act=act if (last_act or not is_last) else None,
                    norm=norm,
                    bias=False,
                )
            )
        super().__init__(*layers)


class ImprovedSEResBlock(nn.Module):
    """Improved SE-ResNet module (Sun et al. 2022, seed 004 §3.3, Fig. 2), in one of three readings.

    The residual branch is built from :class:`FactorizedConv` passes (2D: ``1x3 -> 3x1``); the branch output goes
    through squeeze-and-excitation (eq. 1-3, MONAI ``ChannelSELayer``: GAP -> FC to C/r -> ReLU -> FC -> sigmoid ->
    channel re-weighting), is added to the shortcut and passed through the activation::

        x --+-- branch --- SE --(+)-- act -->
            |                    |
            +---- shortcut ------+        (identity, or 1x1 conv + norm when shape or stride change)

    Readings (``reading``; parameter counts of the whole network in the network's docstring):

    - ``"A"``: 1x1 reduce to ``width`` -> ``1x3, 3x1, 1x3, 3x1`` at ``width`` -> 1x1 expand to ``out_channels``
      (Fig. 2's four asymmetric convolutions inside a ResNet-50 bottleneck).
    - ``"B"``: 1x1 reduce -> ``1x3, 3x1`` -> 1x1 expand (the bottleneck's 3x3 factorised once).
    - ``"C"``: ``1x3, 3x1, 1x3, 3x1`` from ``in_channels`` to ``out_channels`` with no 1x1 (eq. 7 literally, the
      "small SE-ResNet module" of Jiang et al. 2019); ``width`` is ignored.

    Post-activation ordering (conv -> norm -> act, as the ResNet-50 backbone whose ImageNet weights the paper
    fine-tunes); the last convolution of the branch has no activation. The stride sits in the first factorised
    pass (ResNet v1.5 placement), split over the axes.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3; the paper is 2D).
        in_channels: input channels.
        out_channels: output channels.
        width: channels inside the bottleneck (readings A and B). Defaults to ``out_channels // 4``.
        reading: ``"A"``, ``"B"`` or ``"C"``. Defaults to ``"B"``.
        stride: stride of the block. Defaults to 1.
        reduction: SE reduction ratio r (the paper: 16). Defaults to 16.
        act: activation. Defaults to ReLU.
        norm: normalisation. Defaults to batch norm.

    Example::

        >>> blk = ImprovedSEResBlock(2, 64, 256, width=64, reading="A")
        >>> blk(torch.zeros(1, 64, 56, 56)).shape
        torch.Size([1, 256, 56, 56])
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        out_channels: int,
        width: int | None = None,
        reading: str = "B",
        stride: int = 1,
        reduction: int = 16,
        act: str | tuple = ("relu", {"inplace": True}),
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        check_reading(spatial_dims, reading)
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels} and {out_channels}.")
        if reduction < 1 or out_channels // reduction < 1:
            raise ValueError(f"reduction must be in [1, out_channels={out_channels}], got {reduction}.")
        width = out_channels // 4 if width is None else width
        if width < 1:
            raise ValueError(f"width must be >= 1, got {width}.")
        self.reading = reading
        passes, bottleneck = BLOCK_READINGS[reading]
        conv = {"act": act, "norm": norm, "bias": False}
        mid = width if bottleneck else out_channels
        branch: list[nn.Module] = []
        if bottleneck:
            branch.append(Convolution(spatial_dims, in_channels, mid, kernel_size=1, **conv))
        for p in range(passes):
            last = p == passes - 1 and not bottleneck
            branch.append(
                FactorizedConv(
                    spatial_dims,
                    in_channels if (p == 0 and not bottleneck) else mid,
                    mid,
                    stride=stride if p == 0 else 1,
                    act=act,
                    norm=norm,
                    last_act=not last,
                )
            )
        if bottleneck:
            branch.append(Convolution(spatial_dims, mid, out_channels, kernel_size=1, act=None, norm=norm, bias=False))
        self.branch = nn.Sequential(*branch)
        self.se = ChannelSELayer(spatial_dims, out_channels, r=reduction)
        if stride != 1 or in_channels != out_channels:
            self.shortcut: nn.Module = Convolution(
                spatial_dims, in_channels, out_channels, strides=stride, kernel_size=1, act=None, norm=norm, bias=False
            )
        else:
            self.shortcut = nn.Identity()
        self.act = get_act_layer(act) if act is not None else Act["identity"]()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_channels, *spatial)``; returns ``(B, out_channels, *spatial / stride)``."""
        return self.act(self.se(self.branch(x)) + self.shortcut(x))
