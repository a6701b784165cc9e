"""U-Net++ specifics: MONAI's ``BasicUNetPlusPlus`` in the project's output contract (one tensor; stacked side
outputs X^{0,4}, X^{0,1..3} in training with deep supervision) and the side heads dropped without it. Shape, backward
and TorchScript: the network matrix (``tests/networks/matrix/cases_nuclei.py``)."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import BasicUNetPlusPlus

from lesionlab.networks.nets import UNetPlusPlus
from tests.utils import count_parameters

FEATURES = (4, 4, 8, 8, 16, 4)


def test_single_tensor_and_stack():
    net = UNetPlusPlus(2, 3, 3, features=FEATURES, deep_supervision=True, norm="instance")
    x = torch.randn(1, 3, 32, 32)
    stacked = net.train()(x)
    assert stacked.shape == (1, 4, 3, 32, 32)
    torch.testing.assert_close(net.eval()(x), stacked[:, 0])


def test_same_network_as_monai_without_the_three_unused_heads():
    torch.manual_seed(0)
    monai_net = BasicUNetPlusPlus(2, 3, 5, FEATURES).eval()
    ours = UNetPlusPlus(2, 3, 5, features=FEATURES).eval()
    # each side head is a 1x1 convolution features[5] -> out_channels with bias: 3 x (4 * 5 + 5) parameters fewer
    assert count_parameters(monai_net) - count_parameters(ours) == 3 * (FEATURES[5] * 5 + 5)
    missing, unexpected = ours.net.load_state_dict(monai_net.state_dict(), strict=False)
    heads = [f"final_conv_0_{i}.{w}" for i in (1, 2, 3) for w in ("bias", "weight")]
    assert not missing and sorted(unexpected) == heads
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(ours(x), monai_net(x)[-1])


def test_features_must_be_six():
    with pytest.raises(ValueError, match="6 channel counts"):
        UNetPlusPlus(2, 3, 3, features=(4, 4, 8, 8, 16))
