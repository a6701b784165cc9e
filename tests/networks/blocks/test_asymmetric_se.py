"""Seed 004 §3.3: the factorised 1x3 -> 3x1 convolution of the improved SE-ResNet block, counted by hand."""

from __future__ import annotations

import pytest
import torch

from lesionlab.networks.blocks.asymmetric_se import FactorizedConv


def _params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_factorised_conv_parameters_by_hand(spatial_dims):
    cin, cout, k = 16, 32, 3
    conv = FactorizedConv(spatial_dims, cin, cout, kernel_size=k)
    convs = [m for m in conv.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Conv3d))]
    assert len(convs) == spatial_dims  # one k-tap convolution per axis
    # the first k-tap conv maps cin -> cout, every later one cout -> cout; each followed by BN (2 x cout);
    # whether the convolutions carry a bias is read off the modules (MONAI drops it before batch norm)
    bias = sum(c.bias.numel() for c in convs if c.bias is not None)
    expected = cin * cout * k + (spatial_dims - 1) * cout * cout * k + spatial_dims * 2 * cout + bias
    assert _params(conv) == expected
    # against a full k x k (x k) convolution: the point of the factorisation
    assert cin * cout * k + (spatial_dims - 1) * cout * cout * k < cout * cin * k ** spatial_dims + 1


def test_factorised_conv_kernels_run_along_one_axis_each_last_axis_first():
    conv = FactorizedConv(2, 3, 4, kernel_size=3, stride=2)
    convs = [m for m in conv.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [tuple(c.kernel_size) for c in convs] == [(1, 3), (3, 1)]
    assert [tuple(c.stride) for c in convs] == [(1, 2), (2, 1)]
    assert conv(torch.zeros(1, 3, 16, 12)).shape == (1, 4, 8, 6)  # subsamples like a strided 3x3


@pytest.mark.parametrize("kwargs", [{"spatial_dims": 4}, {"kernel_size": 2}, {"kernel_size": 0}, {"stride": 0}])
def test_factorised_conv_refuses(kwargs):
    args = {"spatial_dims": 2, "in_channels": 3, "out_channels": 4, **kwargs}
    with pytest.raises(ValueError):
        FactorizedConv(**args)
