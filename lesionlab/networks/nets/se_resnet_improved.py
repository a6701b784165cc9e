"""Improved SE-ResNet50: ResNet-50 layout with 1x3/3x1 factorised SE residual blocks (glomerulus classification)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Norm, Pool

from lesionlab.networks.blocks.asymmetric_se import ImprovedSEResBlock, check_reading

__all__ = ["SEResNet50Improved"]


class SEResNet50Improved(nn.Module):
    """Improved SE-ResNet50 classifier of glomerular lesions (four classes from single-glomerulus crops).

    Sun X, Kong X, Wu Y, Wang P, Cai J, Peng R, Wang Y. "Glomerular pathological image classification algorithm
    based on convolutional neural network." Chinese Journal of Medical Physics 39(10):1313-1320, 2022.
    https://doi.org/10.3969/j.issn.1005-202X.2022.10.023 (seed 004). Block after Jiang et al., PLoS One
    14(3):e0214587, 2019.

    Mapping to the paper (seed 004 §3):
        - Fig. 3 stem "7x7 conv + max pooling" (224 -> 56 x 56 x 64) -> ``self.stem`` (stride-2 7x7 conv, norm, ReLU,
          3x3 stride-2 max-pool).
        - Fig. 2 improved SE-ResNet module, eq. 1-3 (SE, r = 16) and eq. 7 (1x3/3x1 convolutions) ->
          :class:`~lesionlab.networks.blocks.ImprovedSEResBlock`, stacked ``layers = (3, 4, 6, 3)`` times (the
          ResNet-50 backbone) in ``self.stages``; stages 2-4 halve the size (stride 2 in their first block).
        - Fig. 3 head "average pooling -> flatten -> fully connected" with dropout before the FC (§1.2.1, rate not
          given; 0.5 here) -> ``self.head``. No softmax: ``forward`` returns logits.

    The three block readings (§9.1) and their parameter counts at 3 x 224 x 224 input with 4 classes
    (weights, norm affine parameters and SE biases), against MONAI's baselines built the same way:

    ========================  ==========  ====================================================
    network                   parameters  note
    ========================  ==========  ====================================================
    MONAI ResNet-50           23,516,228  baseline (Table 1 "ResNet50")
    MONAI SE-ResNet-50        26,047,220  baseline
    reading ``"A"``           29,842,292  4 asymmetric convs in a bottleneck: LARGER than ResNet-50
    reading ``"B"`` (default) 22,282,356  bottleneck with the 3x3 factorised once; widths 256...2048
    reading ``"C"``           14,950,384  eq. 7 literally (no 1x1): widths 64...512, not 256...2048
    ========================  ==========  ====================================================

    Default ``"B"``: the only reading that keeps the stage outputs of Fig. 3 (56 x 56 x 256 ... 7 x 7 x 2048), is
    smaller than ResNet-50 as §7.1 claims (-5.2 %), and can take ImageNet ResNet-50 stem, 1x1 and norm weights
    (:func:`lesionlab.pipelines.finetune.load_pretrained_resnet50`). Its branch costs 14 x 64^2 weights at width 64
    against the bottleneck's 17 x 64^2 (eq. 6): -17.6 % per block instead of eq. 7's -29.4 %. ``"C"`` is eq. 7's
    block (12 x 64^2, tested) and ``"A"`` Fig. 2's wording; both are selectable.

    Deviations: the stride of a down-sampling block sits in its first factorised pass (ResNet v1.5), split over the
    axes; projection shortcuts are 1x1 conv + norm.

    Input layout and size: ``(B, in_channels, H, W)`` RGB crops, the paper resizes to 224 x 224; any size >= 32
    works (five stride-2 steps; the head pools globally).

    Args:
        spatial_dims: number of spatial dimensions (2 for the paper; 1 and 3 build the axis-factorised analogue).
            Defaults to 2.
        in_channels: input channels. Defaults to 3.
        out_channels: number of classes (the paper: 4). Defaults to 4.
        reading: block reading ``"A"``, ``"B"`` or ``"C"`` (see above). Defaults to ``"B"``.
        layers: blocks per stage. Defaults to ``(3, 4, 6, 3)`` (ResNet-50).
        channels: bottleneck width per stage (the stage output is ``4 x`` that for A and B and equal to it for C).
            Defaults to ``(64, 128, 256, 512)``.
        stem_channels: channels of the 7x7 stem. Defaults to 64.
        reduction: SE reduction ratio. Defaults to 16.
        dropout_prob: dropout before the classifier (0 disables it). Defaults to 0.5.

    Example::

        >>> net = SEResNet50Improved(2, 3, 4)
        >>> net(torch.zeros(1, 3, 224, 224)).shape
        torch.Size([1, 4])
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 4,
        reading: str = "B",
        layers: Sequence[int] = (3, 4, 6, 3),
        channels: Sequence[int] = (64, 128, 256, 512),
        stem_channels: int = 64,
        reduction: int = 16,
        dropout_prob: float = 0.5,
    ) -> None:
        super().__init__()
        check_reading(spatial_dims, reading)
        if in_channels < 1 or out_channels < 1 or stem_channels < 1:
            raise ValueError(
                f"in_channels, out_channels and stem_channels must be >= 1, got {in_channels}, {out_channels}, "
                f"{stem_channels}."
            )
        if len(layers) != len(channels) or len(layers) == 0 or min(layers) < 1 or min(channels) < 1:
            raise ValueError(f"layers and channels must be equally long positive sequences, got {layers}, {channels}.")
        if not 0.0 <= dropout_prob < 1.0:
            raise ValueError(f"dropout_prob must be in [0, 1), got {dropout_prob}.")
        expansion = 1 if reading == "C" else 4
        self.stem = nn.Sequential(
            Convolution(spatial_dims, in_channels, stem_channels, strides=2, kernel_size=7, bias=False, norm=Norm.BATCH,
                        act=("relu", {"inplace": True})),
            Pool[Pool.MAX, spatial_dims](kernel_size=3, stride=2, padding=1),
        )
        stages = []
        cin = stem_channels
        for i, (n, width) in enumerate(zip(layers, channels)):
            cout = width * expansion
            blocks = [
                ImprovedSEResBlock(spatial_dims, cin if b == 0 else cout, cout, width=width, reading=reading,
                                   stride=2 if (b == 0 and i > 0) else 1, reduction=reduction)
                for b in range(n)
            ]
            stages.append(nn.Sequential(*blocks))
            cin = cout
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(
            Pool[Pool.ADAPTIVEAVG, spatial_dims](1),
            nn.Flatten(1),
            nn.Dropout(dropout_prob),
            nn.Linear(cin, out_channels),
        )
        self.num_features = cin
        for m in self.modules():
            if isinstance(m, Conv[Conv.CONV, spatial_dims]):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``(B, in_channels, *spatial)``; returns class logits ``(B, out_channels)``."""
        return self.head(self.stages(self.stem(x)))
