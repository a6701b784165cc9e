"""U-Net++ with a single-tensor output: MONAI's ``BasicUNetPlusPlus`` in the project's output contract."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.nets import BasicUNetPlusPlus

__all__ = ["UNetPlusPlus"]


class UNetPlusPlus(nn.Module):
    """U-Net++ (nested U-Net) returning logits as one tensor, with stacked deep-supervision outputs in training.

    Zhou Z, Siddiquee MMR, Tajbakhsh N, Liang J. "UNet++: A Nested U-Net Architecture for Medical Image
    Segmentation." DLMIA 2018. https://arxiv.org/abs/1807.10165. One of the five networks of the nuclei
    class-imbalance thesis (seed 001 §4, demo name ``unet++``).

    The architecture is MONAI's ``BasicUNetPlusPlus`` unchanged. MONAI returns a list (one map, or four with deep
    supervision) and keeps the three side heads even without deep supervision, where they get no gradient. This
    subclass returns the X^{0,4} logits as a tensor in eval mode, ``(B, 4, C, *spatial)`` (X^{0,4} first, then
    X^{0,1..3}) in training mode with ``deep_supervision``, and drops the unused heads otherwise. It wraps (rather
    than subclasses) MONAI's module so that TorchScript can compile it.

    Input: every spatial size divisible by 16.

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels.
        features: six channel counts (five levels + the last up-sampling). Defaults to MONAI's
            ``(32, 32, 64, 128, 256, 32)``.
        deep_supervision: stacked side outputs in training mode. Defaults to False.
        act, norm, bias, dropout, upsample: as MONAI's ``BasicUNetPlusPlus``.

    Example::

        >>> UNetPlusPlus(2, 3, 7).eval()(torch.zeros(1, 3, 64, 64)).shape
        torch.Size([1, 7, 64, 64])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 7,
        features: Sequence[int] = (32, 32, 64, 128, 256, 32),
        deep_supervision: bool = False,
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.1, "inplace": True}),
        norm: str | tuple = ("instance", {"affine": True}),
        bias: bool = True,
        dropout: float | tuple = 0.0,
        upsample: str = "deconv",
    ) -> None:
        if len(features) != 6:
            raise ValueError(f"features needs 6 channel counts, got {tuple(features)}")
        super().__init__()
        self.deep_supervision = deep_supervision
        self.net = BasicUNetPlusPlus(spatial_dims, in_channels, out_channels, features, deep_supervision, act, norm,
                                     bias, dropout, upsample)
        if not deep_supervision:
            self.net.final_conv_0_1 = nn.Identity()
            self.net.final_conv_0_2 = nn.Identity()
            self.net.final_conv_0_3 = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` → logits ``(B, out_channels, *spatial)`` (or stacked, see class doc)."""
        outs = self.net(x)
        if self.training and self.deep_supervision:
            return torch.stack([outs[3], outs[0], outs[1], outs[2]], dim=1)
        return outs[-1]
