"""DeepLabV3+: ResNet encoder with atrous convolutions, ASPP and a low-level-feature decoder, dimension-generic."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Pool
from monai.networks.layers.utils import get_act_layer

from lesionlab.networks.utils import check_io_args

__all__ = ["DeepLabV3Plus", "ResNetEncoder"]


class _Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck (1x1, 3x3 with stride/dilation, 1x1 x4) with an identity or projection shortcut.

    Written here (not MONAI's ``ResNetBottleneck``) because DeepLab's output stride needs dilated 3x3 convolutions.
    """

    expansion = 4

    def __init__(self, spatial_dims: int, in_ch: int, planes: int, stride: int, dilation: int, act, norm) -> None:
        super().__init__()
        out = planes * self.expansion
        self.conv1 = Convolution(spatial_dims, in_ch, planes, kernel_size=1, act=act, norm=norm, bias=False)
        self.conv2 = Convolution(spatial_dims, planes, planes, strides=stride, kernel_size=3, dilation=dilation,
                                 padding=dilation, act=act, norm=norm, bias=False)
        self.conv3 = Convolution(spatial_dims, planes, out, kernel_size=1, act=None, norm=norm, bias=False)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_ch != out:
            self.shortcut = Convolution(spatial_dims, in_ch, out, strides=stride, kernel_size=1, act=None, norm=norm,
                                        bias=False)
        self.act = get_act_layer(act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv3(self.conv2(self.conv1(x))) + self.shortcut(x))


class _ASPP(nn.Module):
    """Atrous spatial pyramid pooling: a 1x1 branch, one 3x3 branch per rate and an image-pooling branch (each
    conv + norm + act; the pooling branch without norm), concatenated and projected by a 1x1 conv with dropout."""

    def __init__(self, spatial_dims: int, in_ch: int, ch: int, rates: Sequence[int], dropout: float, act, norm):
        super().__init__()
        branches = [Convolution(spatial_dims, in_ch, ch, kernel_size=1, act=act, norm=norm, bias=False)]
        for r in rates:
            branches.append(Convolution(spatial_dims, in_ch, ch, kernel_size=3, dilation=r, padding=r, act=act,
                                        norm=norm, bias=False))
        self.branches = nn.ModuleList(branches)
        self.image_pool = nn.Sequential(
            Pool[Pool.ADAPTIVEAVG, spatial_dims](1),
            Convolution(spatial_dims, in_ch, ch, kernel_size=1, act=act, norm=None),
        )
        self.project = Convolution(spatial_dims, ch * (len(rates) + 2), ch, kernel_size=1, act=act, norm=norm,
                                   dropout=dropout, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(F.interpolate(self.image_pool(x), size=x.shape[2:], mode="nearest"))
        return self.project(torch.cat(outs, dim=1))


class ResNetEncoder(nn.Module):
    """Bottleneck ResNet encoder (He et al., CVPR 2016) returning the stride-4 and the deepest feature maps.

    ``output_stride`` 16 replaces the stride of stage 4 by dilation 2; 8 replaces stages 3 and 4 by dilations 2 and
    4 (Chen et al. 2018, §3.2). ``layers=(3, 4, 23, 3)`` is ResNet-101 (42,500,160 parameters without the
    classifier, as torchvision's ``resnet101``), ``(3, 4, 6, 3)`` ResNet-50.
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        layers: Sequence[int] = (3, 4, 23, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_channels: int = 64,
        output_stride: int = 16,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if output_stride not in (8, 16, 32):
            raise ValueError(f"output_stride must be 8, 16 or 32, got {output_stride}")
        if len(layers) != 4 or len(widths) != 4 or min(layers) < 1 or min(widths) < 1:
            raise ValueError(f"layers and widths need 4 positive entries, got {tuple(layers)}, {tuple(widths)}")
        self.stem = nn.Sequential(
            Convolution(spatial_dims, in_channels, stem_channels, strides=2, kernel_size=7, act=act, norm=norm,
                        bias=False),
            Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1),
        )
        strides, dilations = [1, 2, 2, 2], [1, 1, 1, 1]
        if output_stride <= 16:
            strides[3], dilations[3] = 1, 2
        if output_stride == 8:
            strides[2], dilations[2], dilations[3] = 1, 2, 4
        stages, ch = [], stem_channels
        for n, w, s, d in zip(layers, widths, strides, dilations):
            blocks = []
            for i in range(n):
                blocks.append(_Bottleneck(spatial_dims, ch, w, s if i == 0 else 1, d, act, norm))
                ch = w * _Bottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.stages = nn.ModuleList(stages)
        self.low_channels = widths[0] * _Bottleneck.expansion
        self.out_channels = ch

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``(B, C, *spatial)`` → (stride-4 features of stage 1, deepest features)."""
        x = self.stem(x)
        low = x
        for i, stage in enumerate(self.stages):
            x = stage(x)
            if i == 0:
                low = x
        return low, x


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ semantic segmentation network (encoder-decoder with atrous separable pyramid pooling).

    Chen L-C, Zhu Y, Papandreou G, Schroff F, Adam H. "Encoder-Decoder with Atrous Separable Convolution for
    Semantic Image Segmentation." ECCV 2018. https://arxiv.org/abs/1802.02611. Used as "DeepLab" by the nuclei
    class-imbalance thesis (seed 001 §4), which describes a ResNet-101 backbone, ASPP, and a decoder that
    concatenates low-level backbone features.

    Mapping to the paper (Fig. 2 of Chen et al.):
        - DCNN backbone with atrous convolution -> :class:`ResNetEncoder` (ResNet-101 by default; output stride 16
          or 8 via dilation).
        - ASPP (1x1 conv, three 3x3 atrous convs at rates 6/12/18 for output stride 16, doubled for 8; image
          pooling; each with batch norm and ReLU), concatenated and projected by a 1x1 conv to 256 with dropout
          -> ``self.aspp`` (MONAI's ``SimpleASPP`` has no per-branch norm/activation and no pooling branch).
        - decoder: 1x1 conv of the low-level (stride-4) features to 48 channels -> ``self.low_proj``; upsample the
          ASPP output by 4, concatenate, two 3x3 convs -> ``self.decoder``; 1x1 classifier -> ``self.head``;
          upsample by 4 to the input size.

    Deviations: plain (not depthwise-separable) convolutions in ASPP and decoder, as in the ResNet-101 variant of
    the paper's Table 3; the image-pooling branch has no normalisation (batch norm on a 1x1 map fails at batch
    size 1, the thesis's batch size); no ImageNet pre-training (nothing is downloaded; the thesis does not say).
    segmentation-models-pytorch was not used: it needs timm and torchvision (whose wheels do not match the CPU
    torch here) and would replace the installed torch.

    Input: ``(B, in_channels, *spatial)``; any size works (features are interpolated back to the input size);
    multiples of ``output_stride`` keep the feature grid aligned. ``spatial_dims`` 2 or 3 (bi/trilinear upsampling).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels (3 for RGB H&E).
        out_channels: output channels (classes; 1 for the binary sigmoid model).
        layers: bottleneck blocks per ResNet stage. Defaults to ResNet-101 ``(3, 4, 23, 3)``.
        widths: bottleneck widths per stage (outputs are 4x). Defaults to ``(64, 128, 256, 512)``.
        stem_channels: channels of the 7x7 stem. Defaults to 64.
        output_stride: 8, 16 or 32. Defaults to 16.
        atrous_rates: ASPP dilation rates at output stride 16 (doubled at 8, halved at 32). Defaults to (6, 12, 18).
        aspp_channels: channels of each ASPP branch and of the projection. Defaults to 256.
        low_level_channels: channels of the projected low-level features. Defaults to 48.
        decoder_channels: channels of the decoder convolutions. Defaults to 256.
        dropout: dropout after the ASPP projection. Defaults to 0.1.
        act: activation. Defaults to ReLU.
        norm: normalisation. Defaults to batch norm.

    Example::

        >>> net = DeepLabV3Plus(2, 3, 7)
        >>> net(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 7, 256, 256])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 7,
        layers: Sequence[int] = (3, 4, 23, 3),
        widths: Sequence[int] = (64, 128, 256, 512),
        stem_channels: int = 64,
        output_stride: int = 16,
        atrous_rates: Sequence[int] = (6, 12, 18),
        aspp_channels: int = 256,
        low_level_channels: int = 48,
        decoder_channels: int = 256,
        dropout: float = 0.1,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        check_io_args(spatial_dims, in_channels, out_channels)
        if len(atrous_rates) < 1 or min(atrous_rates) < 1:
            raise ValueError(f"atrous_rates must be positive integers, got {tuple(atrous_rates)}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.encoder = ResNetEncoder(spatial_dims, in_channels, layers, widths, stem_channels, output_stride, act, norm)
        rates = [max(1, int(r * 16 // output_stride)) for r in atrous_rates]
        self.aspp = _ASPP(spatial_dims, self.encoder.out_channels, aspp_channels, rates, dropout, act, norm)
        self.low_proj = Convolution(spatial_dims, self.encoder.low_channels, low_level_channels, kernel_size=1,
                                    act=act, norm=norm, bias=False)
        self.decoder = nn.Sequential(
            Convolution(spatial_dims, aspp_channels + low_level_channels, decoder_channels, act=act, norm=norm,
                        bias=False),
            Convolution(spatial_dims, decoder_channels, decoder_channels, act=act, norm=norm, bias=False),
        )
        self.head = Conv[Conv.CONV, spatial_dims](decoder_channels, out_channels, kernel_size=1)
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` → logits ``(B, out_channels, *spatial)``."""
        size = x.shape[2:]
        low, deep = self.encoder(x)
        y = self.aspp(deep)
        y = F.interpolate(y, size=low.shape[2:], mode=self.mode, align_corners=False)
        y = self.decoder(torch.cat([y, self.low_proj(low)], dim=1))
        return F.interpolate(self.head(y), size=size, mode=self.mode, align_corners=False)
