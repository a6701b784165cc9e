"""SegNet specifics (Badrinarayanan et al., TPAMI 2017): parameters counted by hand against the paper's VGG16
encoder, max-unpooling by the stored indices, and the input-size check. Shape, backward and TorchScript: the
network matrix (``tests/networks/matrix/cases_renogram.py``)."""

from __future__ import annotations

import pytest
import torch

from lesionlab.networks.nets import SegNet
from tests.utils import count_parameters

VGG16_CONV_LAYERS = 14_714_688  # the 13 convolutions of VGG16 (weights + biases), the paper's 14.7 M encoder


def _conv(cin: int, cout: int, bn: bool = True) -> int:
    return 9 * cin * cout + cout + (2 * cout if bn else 0)


def test_parameter_count_by_hand():
    # encoder: VGG16's convolutions, each with batch norm
    enc_stages = [(3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3)]
    encoder = sum(_conv(cin if i == 0 else cout, cout) for cin, cout, n in enc_stages for i in range(n))
    assert encoder - 2 * (64 * 2 + 128 * 2 + 256 * 3 + 512 * 6) == VGG16_CONV_LAYERS
    # decoder, deepest first: the first convolution of a stage narrows to the next width (see the class docstring)
    dec_stages = [(512, 512, 3), (512, 256, 3), (256, 128, 3), (128, 64, 2), (64, 64, 2)]
    decoder = sum(_conv(cin if i == 0 else cout, cout) for cin, cout, n in dec_stages for i in range(n))
    head = 64 * 2 + 2  # 1x1 classifier to 2 classes
    assert count_parameters(SegNet(2, 3, 2)) == encoder + decoder + head
    # without batch norm: 24.93 M, against the paper's 29.5 M (its decoder keeps the wide width until the last conv)
    no_bn = sum(_conv(cin if i == 0 else cout, cout, bn=False) for cin, cout, n in enc_stages + dec_stages
                for i in range(n))
    assert round((no_bn + head) / 1e6, 2) == 24.93


def test_unpooling_puts_values_back_at_the_pooled_positions():
    net = SegNet(2, 1, 1, channels=(2, 2, 2, 2, 2), convs_per_stage=(1, 1, 1, 1, 1))
    x = torch.tensor([[[[1.0, 5.0, 2.0, 0.0], [3.0, 4.0, 7.0, 1.0], [0.0, 0.0, 1.0, 1.0], [9.0, 2.0, 3.0, 8.0]]]])
    pooled, idx = net.pools[0](x)
    up = net._unpool(pooled, idx, [4, 4])
    expected = torch.zeros_like(x)
    for r, c in [(0, 1), (1, 2), (3, 0), (3, 3)]:  # the maximum of each 2x2 window, nothing else
        expected[0, 0, r, c] = x[0, 0, r, c]
    torch.testing.assert_close(up, expected)


def test_input_size_must_be_a_multiple_of_32():
    net = SegNet(2, 1, 1, channels=(2, 2, 2, 2, 2), convs_per_stage=(1, 1, 1, 1, 1))
    with pytest.raises(ValueError, match="multiple of 32"):
        net(torch.zeros(1, 1, 48, 64))
    assert net(torch.zeros(1, 1, 32, 64)).shape == (1, 1, 32, 64)
