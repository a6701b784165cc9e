"""CBAM-PSPNet: PSPNet on a dilated ResNet-50 with CBAM in the stage-3/4 bottlenecks (glomerulus segmentation)."""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.layers.factories import Conv, Dropout, Norm, Pool

from lesionlab.networks.blocks.attention import CBAM
from lesionlab.networks.blocks.pyramid_pooling import PyramidPooling

__all__ = ["PSPNetCBAM", "DilatedBottleneck", "load_resnet50_weights"]

_DECODERS = ("psp", "skip")


class DilatedBottleneck(nn.Module):
    """ResNet bottleneck ``1x1 -> 3x3 (dilated) -> 1x1`` with optional CBAM before the identity addition.

    ``out = relu(CBAM(bn3(conv3(relu(bn2(conv2(relu(bn1(conv1(x))))))))) + shortcut(x))`` -- CBAM sits "at the end
    of the bottleneck, before the residual sum" (spec §3.2). Module names follow torchvision's ResNet so that an
    ImageNet ``resnet50`` state dict loads into the backbone unchanged (see :func:`load_resnet50_weights`).
    """

    expansion = 4

    def __init__(
        self, spatial_dims: int, in_channels: int, planes: int, stride: int = 1, dilation: int = 1,
        cbam: bool = False, cbam_reduction: int = 16, cbam_kernel_size: int = 7,
    ) -> None:
        super().__init__()
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        out = planes * self.expansion
        self.conv1 = conv(in_channels, planes, 1, bias=False)
        self.bn1 = norm(planes)
        self.conv2 = conv(planes, planes, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = norm(planes)
        self.conv3 = conv(planes, out, 1, bias=False)
        self.bn3 = norm(out)
        self.relu = nn.ReLU(inplace=True)
        self.cbam = CBAM(spatial_dims, out, cbam_reduction, cbam_kernel_size) if cbam else nn.Identity()
        self.downsample = (
            nn.Sequential(conv(in_channels, out, 1, stride=stride, bias=False), norm(out))
            if stride != 1 or in_channels != out else nn.Identity()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.relu(self.bn1(self.conv1(x)))
        y = self.relu(self.bn2(self.conv2(y)))
        y = self.cbam(self.bn3(self.conv3(y)))
        return self.relu(y + self.downsample(x))


def _fcn_head(spatial_dims: int, in_channels: int, channels: int, out_channels: int, dropout: float) -> nn.Sequential:
    """3x3 conv + BN + ReLU -> dropout -> 1x1 classifier (PSPNet's auxiliary head, MMSeg ``FCNHead``)."""
    return nn.Sequential(
        Convolution(spatial_dims, in_channels, channels, kernel_size=3, act="relu", norm="batch", bias=False),
        Dropout[Dropout.DROPOUT, spatial_dims](dropout),
        Conv[Conv.CONV, spatial_dims](channels, out_channels, 1),
    )


class PSPNetCBAM(nn.Module):
    """PSPNet with a dilated ResNet-50 encoder and CBAM in stages 3 and 4, for glomerulus segmentation.

    Guo Pengpeng, "Research on Glomerulus Image Segmentation Method Based on Convolutional Neural Network" (基于卷积
    神经网络的肾小球图像分割方法研究), undergraduate thesis, Shandong Agricultural University, 2025 (spec seed 000),
    building on PSPNet (Zhao et al., CVPR 2017, https://arxiv.org/abs/1612.01105) and CBAM (Woo et al., ECCV 2018,
    https://arxiv.org/abs/1807.06521). With ``cbam=False`` this is the plain PSPNet baseline of the 2x2 ablation.

    Paper -> code:

    - §3.1.1 encoder: 7x7/2 stem + 3x3/2 max-pool -> ``stem``; stages 1-4 (``layers`` bottlenecks, default
      [3, 4, 6, 3]) -> ``layer1..layer4`` with strides (1, 2, 1, 1) and dilations (1, 1, 2, 4): output stride 8
      (eq. 3-1 dilated conv). As in torchvision's ``replace_stride_with_dilation`` the first block of a dilated stage
      uses the previous stage's dilation, so ImageNet ResNet-50 weights fit unchanged.
    - §3.2 CBAM (eq. 2-28..2-31): in every bottleneck of the stages listed in ``cbam_stages`` (3 and 4), after the
      last 1x1 conv + BN and before the identity addition (ambiguity 6: "every block" chosen).
    - §3.3 PPM (eq. 3-3/3-4): bins (1, 2, 3, 6), 512 channels per branch, concat to 4096, 3x3 conv to
      ``head_channels`` (512; the thesis's "4096" output width is read as the concatenated width) -> ``ppm`` +
      ``bottleneck``.
    - §3.4 decoder, two readings (ambiguity 3):

      * ``decoder="psp"`` (default): dropout 0.1 -> 1x1 classifier at 1/8 -> bilinear upsampling to the input size.
        This is MMSeg's ``PSPHead``, which the thesis's experiments ran (MMSegmentation 1.2.2); it is the reading
        behind the reported numbers.
      * ``decoder="skip"``: eq. 3-5/3-6 with shape-consistent resolutions: concat(PPM output, stage-2 features)
        at 1/8 -> 3x3 conv (512); x2 upsampling, concat stage-1 features at 1/4 -> 3x3 conv (256); dropout -> 1x1
        classifier -> bilinear x4 to the input size.

    - §3.5 auxiliary head: FCN head (3x3 conv to 256 + BN + ReLU, dropout 0.1, 1x1) on the stage-3 output; its
      logits (upsampled to the input size) are returned in training mode only, for ``L = L_main + 0.4 L_aux``.

    Parameter counts (``in_channels=3, out_channels=2``, auxiliary head included; ``tests/networks/nets``):

    ========================  ============  ============
    configuration             decoder psp   decoder skip
    ========================  ============  ============
    PSPNet (``cbam=False``)   48,943,172    55,432,260
    CBAM-PSPNet               51,316,424    57,805,512
    ========================  ============  ============

    CBAM adds 2,373,252 parameters (6 x 132,260 in stage 3, 3 x 526,564 in stage 4); the auxiliary head (used in
    training mode only) accounts for 2,360,322 of each count.

    Deviations: the 7x7 stem of the thesis text (torchvision ResNet-50 "V1b"), not MMSeg's deep "V1c" stem; batch
    norm throughout (no SyncBN); Kaiming initialisation for all convolutions (Table 4.4) except the two 1x1
    classifiers (normal, std 0.01), optionally followed by a local ImageNet ResNet-50 state dict
    (``backbone_weights``; nothing is ever downloaded).

    Input: ``(B, in_channels, *spatial)`` RGB tiles (256 x 256 in the paper), any size >= 32 per axis; the logits are
    resized to the input size, so sizes need not be multiples of 8. Training needs a batch of 2 or more: the 1x1
    pyramid branch has one value per channel, which batch norm cannot normalise (as in PSPNet/MMSeg).

    Args:
        spatial_dims: 2 (the paper) or 3; the blocks are dimension-generic.
        in_channels: input channels (3 for RGB).
        out_channels: classes (2: background, glomerulus).
        layers: bottleneck blocks per stage.
        width: stem/stage-1 width (64 for ResNet-50); stage ``i`` has ``width * 2**i`` planes.
        cbam: insert CBAM in the bottlenecks of ``cbam_stages``.
        cbam_stages: 1-based stages that get CBAM.
        cbam_reduction: CBAM channel reduction r.
        cbam_kernel_size: CBAM spatial kernel.
        ppm_bins: pyramid pooling grid sizes.
        ppm_channels: channels per pyramid branch.
        head_channels: channels after the PPM fusion conv.
        aux_channels: hidden channels of the auxiliary FCN head (0 disables the auxiliary head).
        decoder: ``"psp"`` or ``"skip"`` (see above).
        dropout: dropout before both classifiers.
        backbone_weights: optional path of a local torchvision-format ResNet-50 state dict.

    Example::

        net = PSPNetCBAM(spatial_dims=2, in_channels=3, out_channels=2)
        net.eval()
        logits = net(torch.randn(1, 3, 256, 256))   # (1, 2, 256, 256)
        net.train()
        both = net(torch.randn(2, 3, 256, 256))     # (2, 2, 2, 256, 256): [:, 0] main, [:, 1] auxiliary
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 3,
        out_channels: int = 2,
        layers: Sequence[int] = (3, 4, 6, 3),
        width: int = 64,
        cbam: bool = True,
        cbam_stages: Sequence[int] = (3, 4),
        cbam_reduction: int = 16,
        cbam_kernel_size: int = 7,
        ppm_bins: Sequence[int] = (1, 2, 3, 6),
        ppm_channels: int = 512,
        head_channels: int = 512,
        aux_channels: int = 256,
        decoder: str = "psp",
        dropout: float = 0.1,
        backbone_weights: str | None = None,
    ) -> None:
        super().__init__()
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if in_channels < 1 or out_channels < 1:
            raise ValueError(f"in_channels and out_channels must be positive, got {in_channels}, {out_channels}")
        if len(layers) != 4 or any(int(n) < 1 for n in layers):
            raise ValueError(f"layers must give 4 positive block counts, got {layers}")
        if any(s not in (1, 2, 3, 4) for s in cbam_stages):
            raise ValueError(f"cbam_stages must be stages 1..4, got {cbam_stages}")
        if decoder not in _DECODERS:
            raise ValueError(f"decoder must be one of {_DECODERS}, got {decoder!r}")
        if width < 1 or not 0.0 <= dropout < 1.0:
            raise ValueError(f"width must be positive and dropout in [0, 1), got width={width}, dropout={dropout}")
        conv, norm = Conv[Conv.CONV, spatial_dims], Norm[Norm.BATCH, spatial_dims]
        self.spatial_dims, self.decoder, self.use_aux = spatial_dims, decoder, aux_channels > 0
        self.mode = "bilinear" if spatial_dims == 2 else "trilinear"
        # torchvision names (conv1/bn1/layerN) so that ImageNet weights load without renaming
        self.conv1 = conv(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = norm(width)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = Pool[Pool.MAX, spatial_dims](3, stride=2, padding=1)
        strides, dilations = (1, 2, 1, 1), (1, 1, 2, 4)
        channels, prev_dilation, stages = width, 1, []
        for i in range(4):
            blocks = []
            for j in range(int(layers[i])):
                blocks.append(DilatedBottleneck(
                    spatial_dims, channels, width * 2**i, stride=strides[i] if j == 0 else 1,
                    dilation=prev_dilation if j == 0 else dilations[i], cbam=cbam and (i + 1) in cbam_stages,
                    cbam_reduction=cbam_reduction, cbam_kernel_size=cbam_kernel_size))
                channels = width * 2**i * DilatedBottleneck.expansion
            prev_dilation = dilations[i]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        c1, c2, c3, c4 = (width * 2**i * DilatedBottleneck.expansion for i in range(4))
        self.ppm = PyramidPooling(spatial_dims, c4, ppm_channels, ppm_bins)
        self.bottleneck = Convolution(spatial_dims, self.ppm.out_channels, head_channels, kernel_size=3,
                                      act="relu", norm="batch", bias=False)
        drop = Dropout[Dropout.DROPOUT, spatial_dims]
        if decoder == "skip":
            self.fuse2 = Convolution(spatial_dims, head_channels + c2, head_channels, kernel_size=3, act="relu",
                                     norm="batch", bias=False)
            self.fuse1 = Convolution(spatial_dims, head_channels + c1, head_channels // 2, kernel_size=3,
                                     act="relu", norm="batch", bias=False)
            self.classifier = nn.Sequential(drop(dropout), conv(head_channels // 2, out_channels, 1))
        else:
            self.fuse2 = nn.Identity()
            self.fuse1 = nn.Identity()
            self.classifier = nn.Sequential(drop(dropout), conv(head_channels, out_channels, 1))
        self.aux_head = _fcn_head(spatial_dims, c3, aux_channels, out_channels, dropout) if self.use_aux else None
        self._init_weights()
        if backbone_weights:
            load_resnet50_weights(self, backbone_weights)

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        # classifiers start near zero logits (normal std 0.01, as PSPNet/MMSeg heads): Kaiming fan-out on a 1x1
        # classifier gives logits of tens and an initial loss far above log(2)
        for head in (self.classifier, self.aux_head):
            if head is not None:
                nn.init.normal_(head[-1].weight, std=0.01)
                nn.init.zeros_(head[-1].bias)

    def _upsample(self, x: torch.Tensor, size: list[int]) -> torch.Tensor:
        return F.interpolate(x, size=size, mode=self.mode, align_corners=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *S)`` -> logits ``(B, out_channels, *S)`` in eval mode.

        In training mode with the auxiliary head: ``(B, 2, out_channels, *S)``, index 0 the main logits and index 1
        the auxiliary logits (MONAI's stacked deep-supervision layout).
        """
        size = list(x.shape[2:])
        f0 = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        f1 = self.layer1(f0)
        f2 = self.layer2(f1)
        f3 = self.layer3(f2)
        f4 = self.layer4(f3)
        y = self.bottleneck(self.ppm(f4))
        if self.decoder == "skip":
            y = self.fuse2(torch.cat([y, f2], dim=1))
            y = self.fuse1(torch.cat([self._upsample(y, list(f1.shape[2:])), f1], dim=1))
        out = self._upsample(self.classifier(y), size)
        if self.training and self.aux_head is not None:
            aux = self._upsample(self.aux_head(f3), size)
            return torch.stack([out, aux], dim=1)
        return out


def load_resnet50_weights(net: PSPNetCBAM, path: str | os.PathLike) -> list[str]:
    """Load a local torchvision-format ResNet-50 state dict (``resnet50-*.pth``) into ``net``'s backbone.

    The ``fc`` classifier is ignored; CBAM, PPM and heads keep their Kaiming initialisation. Returns the names of
    the network parameters the file did not provide.

    Raises:
        FileNotFoundError: ``path`` does not exist (nothing is ever downloaded).
        ValueError: the file has backbone tensors of another shape (not a ResNet-50 of this width/dimension).
    """
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: backbone weights file not found (lesionlab never downloads weights)")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    own = net.state_dict()
    stems = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
    backbone = {k: v for k, v in state.items() if k.split(".")[0] in stems}
    wrong = [k for k, v in backbone.items() if k not in own or own[k].shape != v.shape]
    if wrong:
        raise ValueError(f"{path}: {len(wrong)} backbone tensors do not fit this network, e.g. {wrong[:3]}")
    net.load_state_dict(backbone, strict=False)
    return sorted(k for k in own if k not in backbone)
