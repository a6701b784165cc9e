"""FCN-8s (Long et al., CVPR 2015), the renogram comparison's baseline: the paper's fc6/fc7 and score layers by hand."""

from __future__ import annotations

import pytest
import torch

from lesionlab.networks.nets.fcn import FCN


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_fc_layers_and_score_heads_have_the_papers_sizes():
    net = FCN(2, 3, 1)
    # fc6: 7x7 conv 512 -> 4096 (+ bias) + batch norm (2 x 4096); fc7: 1x1 conv 4096 -> 4096 (+ bias) + batch norm
    fc6 = 512 * 4096 * 49 + 4096 + 2 * 4096
    fc7 = 4096 * 4096 + 4096 + 2 * 4096
    assert _count(net.fc) == fc6 + fc7 == 119_562_240
    # score layers: 1x1 convs to one class on fc7, pool4 (512) and pool3 (256); x2 transposed convs 1 -> 1 (2x2 + bias)
    assert _count(net.score_fc) == 4096 + 1 and _count(net.score_pool4) == 512 + 1
    assert _count(net.score_pool3) == 256 + 1 and _count(net.up2_a) == _count(net.up2_b) == 4 + 1


def test_sizes_must_be_multiples_of_32_and_arguments_are_checked():
    net = FCN(2, 1, 2, channels=(4, 4, 4, 4, 4), fc_channels=8).eval()
    assert net(torch.zeros(1, 1, 64, 96)).shape == (1, 2, 64, 96)
    with pytest.raises(ValueError):
        FCN(2, 3, 1, fc_channels=0)
    with pytest.raises(ValueError):
        FCN(2, 3, 1, dropout=1.0)
