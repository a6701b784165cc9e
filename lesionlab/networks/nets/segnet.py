"""SegNet: encoder-decoder with max-unpooling by pooling indices (baseline of the renogram comparison, seed 003)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers import Conv, Pool

from lesionlab.networks.blocks.vgg import VGG16_CHANNELS, VGG16_CONVS, vgg_encoder_stages, vgg_stage

__all__ = ["SegNet"]


class SegNet(nn.Module):
    """SegNet (Badrinarayanan, Kendall, Cipolla, "SegNet: A Deep Convolutional Encoder-Decoder Architecture for Image
    Segmentation", IEEE TPAMI 2017, arXiv:1511.00561).

    Paper → code: the encoder is VGG16's 13 convolutions in five stages (conv + batch norm + ReLU), each stage ending
    in 2x2 max pooling that **stores the indices** → ``encoders`` / ``pools``; the decoder mirrors it, each stage
    first **max-unpooling with the stored indices** (sparse upsampling, no learned deconvolution) then convolutions
    → ``_unpool`` / ``decoders``; a final 1x1 convolution gives the class scores (logits; the paper's softmax belongs
    to the loss). Deviations: the last decoder stage ends in the 1x1 classifier instead of a 3x3 convolution to
    ``out_channels``; each decoder stage narrows to the next stage's width at its *first* convolution, where the
    paper's decoder keeps the wide width until the stage's last one, so the decoder has 10.2 M instead of about
    14.7 M parameters (24.9 M in all against the paper's 29.5 M; counted in ``tests/networks/nets/test_segnet.py``).

    Input: ``(B, in_channels, *spatial)``, sizes multiples of 32. Output: same size, ``out_channels`` logits.

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels.
        out_channels: output logit channels.
        channels: widths of the five stages. Defaults to VGG16's (64, 128, 256, 512, 512).
        convs_per_stage: convolutions per stage. Defaults to (2, 2, 3, 3, 3).

    Example::

        net = SegNet(2, 3, 1)
        logits = net(torch.rand(1, 3, 384, 384))   # (1, 1, 384, 384)
    """

    def __init__(self, spatial_dims: int = 2, in_channels: int = 3, out_channels: int = 1,
                 channels: Sequence[int] = VGG16_CHANNELS, convs_per_stage: Sequence[int] = VGG16_CONVS) -> None:
        super().__init__()
        self.encoders = nn.ModuleList(
            vgg_encoder_stages(spatial_dims, in_channels, out_channels, channels, convs_per_stage))
        self.spatial_dims = spatial_dims
        self.pools = nn.ModuleList(
            [Pool[Pool.MAX, spatial_dims](kernel_size=2, stride=2, return_indices=True) for _ in channels])
        # decoder stage k (deepest first) maps channels[k] to channels[k - 1] (the first stage keeps its width)
        outs = [channels[k - 1] if k > 0 else channels[0] for k in range(5)][::-1]
        self.decoders = nn.ModuleList(
            [vgg_stage(spatial_dims, ch, out, n) for ch, out, n in zip(channels[::-1], outs, convs_per_stage[::-1])])
        self.head = Conv[Conv.CONV, spatial_dims](channels[0], out_channels, kernel_size=1)

    def _unpool(self, y: torch.Tensor, idx: torch.Tensor, size: list[int]) -> torch.Tensor:
        # functional unpooling: nn.MaxUnpool*d modules do not script with this PyTorch (int-list assertion)
        if self.spatial_dims == 1:
            return F.max_unpool1d(y, idx, 2, 2, 0, size)
        if self.spatial_dims == 2:
            return F.max_unpool2d(y, idx, 2, 2, 0, size)
        return F.max_unpool3d(y, idx, 2, 2, 0, size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *spatial)`` → ``(B, out_channels, *spatial)`` logits; sizes multiples of 32."""
        for s in x.shape[2:]:
            if s % 32 != 0:
                raise ValueError(f"input size {list(x.shape[2:])} must be a multiple of 32")
        indices: list[torch.Tensor] = []
        sizes: list[list[int]] = []
        y = x
        for encoder, pool in zip(self.encoders, self.pools):
            y = encoder(y)
            sizes.append(list(y.shape))
            y, idx = pool(y)
            indices.append(idx)
        for k, decoder in enumerate(self.decoders):
            j = len(indices) - 1 - k
            y = decoder(self._unpool(y, indices[j], sizes[j][2:]))
        return self.head(y)
