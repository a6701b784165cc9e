"""UNet 3+: a U-Net with full-scale skip connections and full-scale deep supervision, dimension-generic."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Pool

from lesionlab.networks.blocks import DoubleConv
from lesionlab.networks.utils import check_io_args

__all__ = ["UNet3Plus"]


class _FullScaleLevel(nn.Module):
    """One decoder level: every encoder/decoder scale resampled to this level, conv to ``cat`` channels, fused."""

    def __init__(self, spatial_dims: int, level: int, sources: Sequence[int], cat: int, act, norm) -> None:
        super().__init__()
        mode = "bilinear" if spatial_dims == 2 else "trilinear"
        branches = []
        for s, ch in enumerate(sources):
            if s < level:  # shallower encoder level: max-pool down by 2^(level - s)
                k = 2 ** (level - s)
                resample: nn.Module = Pool[Pool.MAX, spatial_dims](kernel_size=k, stride=k, ceil_mode=True)
            elif s == level:
                resample = nn.Identity()
            else:  # deeper decoder level (or the bottom encoder level): upsample by 2^(s - level)
                resample = nn.Upsample(scale_factor=float(2 ** (s - level)), mode=mode, align_corners=False)
            branches.append(nn.Sequential(resample, Convolution(spatial_dims, ch, cat, act=act, norm=norm)))
        self.branches = nn.ModuleList(branches)
        self.fuse = Convolution(spatial_dims, cat * len(sources), cat * len(sources), act=act, norm=norm)

    def forward(self, feats: list[torch.Tensor]) -> torch.Tensor:
        outs: list[torch.Tensor] = []
        for i, branch in enumerate(self.branches):
            outs.append(branch(feats[i]))
        return self.fuse(torch.cat(outs, dim=1))


class UNet3Plus(nn.Module):
    """UNet 3+ (full-scale connected U-Net) for semantic segmentation.

    Huang H, Lin L, Tong R, Hu H, Zhang Q, Iwamoto Y, Han X, Chen Y-W, Wu J. "UNet 3+: A Full-Scale Connected UNet
    for Medical Image Segmentation." ICASSP 2020. https://arxiv.org/abs/2004.08790. One of the five networks of the
    nuclei class-imbalance thesis (seed 001 §4: "U-Net3+").

    Mapping to the paper:
        - encoder X_En^1..5 (two 3x3 conv + BN + ReLU per level, 2x max-pooling between) -> ``self.encoder``.
        - full-scale skip connections, Eq. (1) and Fig. 2: decoder level i receives the encoder levels <= i
          (max-pooled by 2^(i-j)), the decoder levels > i and X_En^5 (bilinearly upsampled by 2^(j-i)), each through
          a 3x3 conv to ``cat_channels`` (64); the five maps are concatenated and fused by a 3x3 conv (320 channels)
          -> ``self.decoder`` (:class:`_FullScaleLevel` per level, deepest first).
        - full-scale deep supervision (§2.2): a 3x3 conv head on every decoder level and on X_En^5, upsampled to the
          input size -> ``self.heads``. In training mode with ``deep_supervision`` the forward returns all five
          logit maps stacked ``(B, 5, C, *spatial)``, the full-resolution X_De^1 map first (MONAI's DynUNet layout,
          for ``DeepSupervisionLoss``); in eval mode only the X_De^1 logits.

        - classification-guided module (§2.3, off by default; the nuclei thesis does not use it) -> ``self.cgm``:
          dropout, 1x1 conv to one "image has foreground" logit, global max-pooling of X_En^5.

    Deviations: the outputs are logits (no sigmoid; the hybrid loss is configured outside). The paper trains the CGM
    with its own BCE loss and multiplies the maps by its arg-max; here the gate is soft and part of the logits, so the
    network keeps one output tensor and the segmentation loss trains it: ``log sigmoid(c)`` is added to every
    foreground channel (channels >= 1; with one output channel, to that channel), i.e. the foreground probabilities
    are multiplied by P(foreground present) before the softmax renormalises them. Norm and activation are
    configurable.

    Input: ``(B, in_channels, *spatial)`` with every spatial size divisible by ``2 ** (len(features) - 1)`` (16).

    Args:
        spatial_dims: 2 or 3.
        in_channels: input channels.
        out_channels: output channels (classes; 1 for a binary sigmoid model).
        features: encoder channels per level. Defaults to ``(64, 128, 256, 512, 1024)``.
        cat_channels: channels of every full-scale skip branch. Defaults to 64.
        deep_supervision: return the stacked side outputs in training mode. Defaults to True.
        classification_guided: add the classification-guided module (soft gate, see above). Defaults to False.
        cgm_dropout: dropout before the CGM classifier. Defaults to 0.5.
        act: activation. Defaults to ReLU.
        norm: normalisation. Defaults to batch norm.

    Example::

        >>> net = UNet3Plus(2, 3, 7).eval()
        >>> net(torch.zeros(1, 3, 256, 256)).shape
        torch.Size([1, 7, 256, 256])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 7,
        features: Sequence[int] = (64, 128, 256, 512, 1024),
        cat_channels: int = 64,
        deep_supervision: bool = True,
        classification_guided: bool = False,
        cgm_dropout: float = 0.5,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        check_io_args(spatial_dims, in_channels, out_channels)
        if len(features) < 3 or min(features) < 1:
            raise ValueError(f"features needs >= 3 positive channel counts, got {tuple(features)}")
        if cat_channels < 1:
            raise ValueError(f"cat_channels must be >= 1, got {cat_channels}")
        n = len(features)
        self.deep_supervision = deep_supervision
        enc = [DoubleConv(spatial_dims, in_channels, features[0], act=act, norm=norm)]
        for i in range(1, n):
            enc.append(nn.Sequential(Pool[Pool.MAX, spatial_dims](kernel_size=2),
                                     DoubleConv(spatial_dims, features[i - 1], features[i], act=act, norm=norm)))
        self.encoder = nn.ModuleList(enc)
        up = cat_channels * n
        levels = []
        for level in range(n - 2, -1, -1):  # deepest decoder level first
            sources = [features[s] if s <= level or s == n - 1 else up for s in range(n)]
            levels.append(_FullScaleLevel(spatial_dims, level, sources, cat_channels, act, norm))
        self.decoder = nn.ModuleList(levels)
        mode = "bilinear" if spatial_dims == 2 else "trilinear"
        heads = []
        for level in range(n):  # head of X_De^1 first, X_En^5 last
            ch = features[-1] if level == n - 1 else up
            conv = Convolution(spatial_dims, ch, out_channels, conv_only=True)
            heads.append(conv if level == 0 else
                         nn.Sequential(conv, nn.Upsample(scale_factor=float(2**level), mode=mode, align_corners=False)))
        self.heads = nn.ModuleList(heads if deep_supervision else heads[:1])
        if not 0.0 <= cgm_dropout < 1.0:
            raise ValueError(f"cgm_dropout must be in [0, 1), got {cgm_dropout}")
        self.classification_guided = classification_guided
        self.cgm: nn.Module = nn.Identity()
        if classification_guided:
            self.cgm = nn.Sequential(
                nn.Dropout(cgm_dropout),
                Convolution(spatial_dims, features[-1], 1, kernel_size=1, conv_only=True),
                Pool[Pool.ADAPTIVEMAX, spatial_dims](1),
            )
        self.first_gated = 1 if out_channels > 1 else 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` → logits ``(B, out_channels, *spatial)`` (eval) or, in training mode with
        deep supervision, ``(B, len(features), out_channels, *spatial)``."""
        enc: list[torch.Tensor] = []
        for stage in self.encoder:
            x = stage(x)
            enc.append(x)
        n = len(enc)
        dec: list[torch.Tensor] = [enc[n - 1]]  # deepest first: X_En^5, X_De^4, ..., X_De^1
        for i, level in enumerate(self.decoder):
            lv = n - 2 - i
            feats = enc[: lv + 1] + dec[::-1]
            dec.append(level(feats))
        dec = dec[::-1]  # X_De^1, ..., X_De^4, X_En^5
        if self.training and self.deep_supervision:
            outs: list[torch.Tensor] = []
            for j, head in enumerate(self.heads):
                outs.append(self._gate(head(dec[j]), enc[n - 1]))
            return torch.stack(outs, dim=1)
        return self._gate(self.heads[0](dec[0]), enc[n - 1])

    def _gate(self, logits: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
        """Add ``log P(foreground present)`` from the CGM to the foreground logits (identity without CGM)."""
        if not self.classification_guided:
            return logits
        gate = F.logsigmoid(self.cgm(bottom))  # (B, 1, 1, ...)
        k = self.first_gated
        return torch.cat([logits[:, :k], logits[:, k:] + gate], dim=1)
