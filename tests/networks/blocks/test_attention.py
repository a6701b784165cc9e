"""CBAM blocks: equations 2-28..2-31 checked by hand on small tensors, shapes in 1D/2D/3D, invalid arguments."""

from __future__ import annotations

import pytest
import torch

from lesionlab.networks.blocks import CBAM, ChannelAttention, SpatialAttention
from tests.utils import check_backward, check_shape, check_torchscript, count_parameters


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_shapes_and_backward(dims):
    shape = (2, 32) + (6,) * dims
    check_shape(CBAM(dims, 32), shape, shape)
    check_backward(CBAM(dims, 32), shape)


def test_torchscript():
    check_torchscript(CBAM(2, 16, reduction=4), (1, 16, 8, 8))


def test_channel_attention_equation():
    """Mc = sigmoid(W1 relu(W0 avg) + W1 relu(W0 max)), shared MLP (eq. 2-29)."""
    torch.manual_seed(0)
    ca = ChannelAttention(2, 8, reduction=4)
    x = torch.randn(2, 8, 5, 5)
    w0, b0 = ca.mlp[0].weight[:, :, 0, 0], ca.mlp[0].bias
    w1, b1 = ca.mlp[2].weight[:, :, 0, 0], ca.mlp[2].bias

    def mlp(v):
        return torch.relu(v @ w0.T + b0) @ w1.T + b1

    avg, mx = x.mean(dim=(2, 3)), x.amax(dim=(2, 3))
    want = x * torch.sigmoid(mlp(avg) + mlp(mx))[:, :, None, None]
    torch.testing.assert_close(ca(x), want)
    assert count_parameters(ca) == 8 * 2 + 2 + 2 * 8 + 8


def test_spatial_attention_equation():
    """Ms = sigmoid(BN(conv7x7([mean_c; max_c]))) (eq. 2-31), eval-mode BN with unit statistics."""
    torch.manual_seed(0)
    sa = SpatialAttention(2, kernel_size=7).eval()
    x = torch.randn(1, 4, 9, 9)
    pooled = torch.cat([x.mean(1, keepdim=True), x.amax(1, keepdim=True)], 1)
    conv = torch.nn.functional.conv2d(pooled, sa.conv.weight, padding=3)
    bn = sa.norm
    norm = (conv - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias
    torch.testing.assert_close(sa(x), x * torch.sigmoid(norm))
    assert count_parameters(sa) == 2 * 49 + 2


def test_cbam_is_channel_then_spatial():
    cbam = CBAM(2, 16, reduction=16).eval()
    x = torch.randn(1, 16, 6, 6)
    torch.testing.assert_close(cbam(x), cbam.spatial(cbam.channel(x)))
    # r = 16 on 1024 channels: 2 * 1024 * 64 weights + 64 + 1024 biases, plus the 7x7 spatial conv and its BN
    assert count_parameters(CBAM(2, 1024)) == 2 * 1024 * 64 + 64 + 1024 + 98 + 2


@pytest.mark.parametrize(
    "make",
    [
        lambda: ChannelAttention(4, 8),
        lambda: ChannelAttention(2, 0),
        lambda: ChannelAttention(2, 8, reduction=0),
        lambda: SpatialAttention(2, kernel_size=4),
        lambda: SpatialAttention(0),
    ],
)
def test_invalid_arguments(make):
    with pytest.raises(ValueError):
        make()
