"""DeepLabV3+ specifics (the shared matrix covers shape, backward, TorchScript, ONNX and invalid arguments)."""

from __future__ import annotations

import torch

from lesionlab.networks.nets import DeepLabV3Plus
from lesionlab.networks.nets.deeplabv3plus import ResNetEncoder
from tests.utils import count_parameters


def test_resnet_backbone_parameter_counts():
    # He et al. ResNet-101 / ResNet-50 without the classifier (torchvision: 44,549,160 - 2,049,000 and
    # 25,557,032 - 2,049,000)
    assert count_parameters(ResNetEncoder(2, 3)) == 42_500_160
    assert count_parameters(ResNetEncoder(2, 3, layers=(3, 4, 6, 3))) == 23_508_032


def test_output_stride_sets_feature_grid():
    for os_, grid in ((8, 8), (16, 4), (32, 2)):
        enc = ResNetEncoder(2, 3, layers=(1, 1, 1, 1), widths=(4, 4, 4, 4), stem_channels=4, output_stride=os_)
        low, deep = enc(torch.zeros(1, 3, 64, 64))
        assert low.shape[-1] == 16 and deep.shape[-1] == grid


def test_atrous_rates_follow_output_stride():
    net = DeepLabV3Plus(2, 3, 2, layers=(1, 1, 1, 1), widths=(4, 4, 4, 4), output_stride=8)
    dil = [b.conv.dilation[0] for b in net.aspp.branches[1:]]
    assert dil == [12, 24, 36]
