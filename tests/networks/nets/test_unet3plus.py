"""UNet 3+ specifics: the paper's parameter count and the full-scale deep-supervision outputs."""

from __future__ import annotations

import torch

from lesionlab.networks.nets import UNet3Plus
from tests.utils import count_parameters


def test_parameter_count_matches_paper():
    # Huang et al. 2020, Table 1: UNet 3+ 26.97 M (one output channel, no deep-supervision heads)
    assert round(count_parameters(UNet3Plus(2, 3, 1, deep_supervision=False)) / 1e6, 2) == 26.97


def test_deep_supervision_stack_first_is_eval_output():
    torch.manual_seed(0)
    net = UNet3Plus(2, 3, 4, features=(4, 8, 8, 16, 16), cat_channels=4, norm="instance")
    x = torch.randn(2, 3, 32, 32)
    net.train()
    stacked = net(x)
    assert stacked.shape == (2, 5, 4, 32, 32)
    net.eval()
    torch.testing.assert_close(net(x), stacked[:, 0])


def test_classification_gate_scales_foreground_probabilities():
    torch.manual_seed(0)
    net = UNet3Plus(2, 3, 3, features=(4, 8, 8), cat_channels=4, deep_supervision=False, classification_guided=True,
                    norm="instance").eval()
    x = torch.randn(1, 3, 16, 16)
    gated = net(x)
    net.classification_guided = False
    plain = net(x)
    p_present = torch.sigmoid(net.cgm(net.encoder[2](net.encoder[1](net.encoder[0](x)))))
    torch.testing.assert_close(gated[:, 0], plain[:, 0])
    torch.testing.assert_close(torch.exp(gated[:, 1:] - plain[:, 1:]), p_present.expand_as(plain[:, 1:]))
