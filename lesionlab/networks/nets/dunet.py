"""D-UNet: a 2.5D U-Net with a 2D and a 3D encoder on a stack of neighbouring slices."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

from lesionlab.networks.blocks import DoubleConv, DUNetEncoder, UpConv
from lesionlab.networks.nets.slice_stack import check_fusion, check_odd_kernel, check_slice_stack

__all__ = ["DUNet"]


class DUNet(nn.Module):
    """D-UNet, the 2.5D stroke-lesion segmentation backbone used by AGMR-Net and TSRL-Net.

    Zhou Y, Huang W, Dong P, Xia Y, Wang S. "D-UNet: a dimension-fusion U shape network for chronic stroke lesion
    segmentation." IEEE/ACM TCBB 18(3), 2021. https://doi.org/10.1109/TCBB.2019.2939522. Re-run as the baseline of
    Ma Kunpeng's thesis (seed 002), Table 3.1 row 1 and Table 4.3 (9,503,779 parameters).

    Mapping to the paper (seed 002 §3.0); the encoder is :class:`~lesionlab.networks.blocks.DUNetEncoder`, shared
    with AGMR-Net and TSRL-Net:
        - 2D encoder "E_Block" stages 1-5 -> ``self.encoder.enc2d`` (``DoubleConv``, i.e. BN_block; 2x2 max-pool
          between stages; dropout 0.3 after stages 4 and 5).
        - 3D encoder "3D_Block" stages 1-3 -> ``self.encoder.enc3d`` on the stack seen as a volume ``(B, 1, S, H, W)``.
        - fusion "D_SE_Add" at stages 2 and 3 -> ``self.encoder.fusion`` (:class:`SEAddFusion`: 1x1x1 Conv3d to one
          channel, slices to channels, 3x3 Conv2d + ReLU, SE on both branches, bias-free, ratio 16, then add). Stage 1
          has no fusion (commented out in the original code).
        - decoder x4 -> ``self.decoder`` (3x3 stride-2 transposed conv + ReLU to ``c`` channels, concatenate the
          skip, BN_block ``2c -> c``, with c = 256, 128, 64, 32); head 1x1 conv -> ``self.head``.

    Checkpoints written before the encoder was shared (keys ``enc2d.*``, ``enc3d.*``, ``fusion.*``) load: the keys
    are moved under ``encoder.`` on load.

    Deviations and decisions: the original Keras code up-samples with ``UpSampling2D`` + 2x2 conv (8,633,379
    parameters); the thesis's count is reproduced exactly only with a 3x3 up-convolution, which is used here. The
    final sigmoid of the original is not part of the network: ``forward`` returns logits.

    Tensor layout (2.5D contract, also in the bundle's ``network_data_format``): the ``in_channels`` neighbouring
    slices are the channels, ``(B, S, H, W)``, ordered ``[i-2, i-1, i, i+1]`` for the paper's 4-slice input; the
    output is the logit map of the centre slice ``i``, ``(B, out_channels, H, W)``.

    Input size constraints: ``H`` and ``W`` divisible by 16 (four 2x poolings); ``in_channels`` divisible by 4 (the 3D
    branch pools the slice axis twice); the paper uses 4 x 192 x 192.

    Args:
        spatial_dims: must be 2 (the output is a 2D map; the 3D branch is internal). Defaults to 2.
        in_channels: number of stacked slices ``S``. Defaults to 4.
        out_channels: output channels (1 for the paper's binary sigmoid output). Defaults to 1.
        features: channels of the five encoder stages. Defaults to ``(32, 64, 128, 256, 512)``.
        fusion_reduction: SE reduction ratio in the fusion blocks. Defaults to 16.
        dropout: dropout after encoder stages 4 and 5. Defaults to 0.3.
        up_kernel_size: kernel of the decoder's transposed convolutions. Defaults to 3.
        act: activation. Defaults to ReLU.
        norm: normalisation. Defaults to batch norm.

    Example::

        >>> net = DUNet()
        >>> net(torch.zeros(2, 4, 192, 192)).shape
        torch.Size([2, 1, 192, 192])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 4,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        fusion_reduction: int = 16,
        dropout: float = 0.3,
        up_kernel_size: int = 3,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        features = check_slice_stack(spatial_dims, in_channels, out_channels, features)
        check_fusion("se_add", features, 8, "separate", fusion_reduction)
        check_odd_kernel("up_kernel_size", up_kernel_size)
        self.in_channels = in_channels
        self.encoder = DUNetEncoder(in_channels, features, attention="none", fusion="se_add",
                                    fusion_reduction=fusion_reduction, dropout=dropout, act=act, norm=norm)
        self.decoder = nn.ModuleList(
            [_DecoderBlock(features[i], features[i - 1], up_kernel_size, act, norm) for i in (4, 3, 2, 1)]
        )
        self.head = Conv[Conv.CONV, 2](features[0], out_channels, kernel_size=1)
        self._register_load_state_dict_pre_hook(_prefix_encoder_keys)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, S, H, W) slice stack; returns logits (B, out_channels, H, W) of the centre slice."""
        skips, f, _ = self.encoder(x)
        for i, block in enumerate(self.decoder):
            f = block(f, skips[3 - i])
        return self.head(f)


def _prefix_encoder_keys(state_dict, prefix, *args) -> None:
    """Checkpoints written before D-UNet shared its encoder (``enc2d.*``, ``enc3d.*``, ``fusion.*`` at the top level)
    load into ``encoder.*``."""
    for key in [k for k in state_dict if k.startswith(tuple(prefix + p for p in ("enc2d.", "enc3d.", "fusion.")))]:
        state_dict[prefix + "encoder." + key[len(prefix):]] = state_dict.pop(key)


class _DecoderBlock(nn.Module):
    """Up-convolution to ``out_channels``, concatenation with the skip, then ``DoubleConv(2 * out, out)``."""

    def __init__(self, in_channels: int, out_channels: int, up_kernel_size: int, act: str | tuple,
                 norm: str | tuple) -> None:
        super().__init__()
        self.up = UpConv(2, in_channels, out_channels, kernel_size=up_kernel_size, act=act)
        self.conv = DoubleConv(2, 2 * out_channels, out_channels, act=act, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), skip], dim=1))
