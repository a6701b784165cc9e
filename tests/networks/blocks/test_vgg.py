"""VGG-style stages shared by FCN-8s and SegNet: parameter count by hand, shapes, argument checks."""

from __future__ import annotations

import pytest
import torch

from lesionlab.networks.blocks import VGG16_CHANNELS, VGG16_CONVS, vgg_encoder_stages


def test_vgg16_encoder_parameters_by_hand():
    stages = vgg_encoder_stages(2, 3, 1, VGG16_CHANNELS, VGG16_CONVS)
    expected, prev = 0, 3
    for ch, n in zip(VGG16_CHANNELS, VGG16_CONVS):
        for i in range(n):
            cin = prev if i == 0 else ch
            expected += 3 * 3 * cin * ch + ch + 2 * ch  # conv weights, bias, batch-norm scale and shift
        prev = ch
    assert sum(p.numel() for s in stages for p in s.parameters()) == expected
    assert expected - 2 * sum(c * n for c, n in zip(VGG16_CHANNELS, VGG16_CONVS)) == 14_714_688  # VGG16's conv layers


def test_stage_shapes_and_invalid_arguments():
    stages = vgg_encoder_stages(3, 1, 1, (4, 4, 8, 8, 8), (1, 1, 1, 1, 1))
    assert stages[0](torch.rand(1, 1, 8, 8, 8)).shape == (1, 4, 8, 8, 8)
    for args in [(4, 3, 1, VGG16_CHANNELS, VGG16_CONVS), (2, 0, 1, VGG16_CHANNELS, VGG16_CONVS),
                 (2, 3, 1, (8, 8), VGG16_CONVS), (2, 3, 1, VGG16_CHANNELS, (0, 2, 3, 3, 3))]:
        with pytest.raises(ValueError):
            vgg_encoder_stages(*args)
