"""Pyramid pooling module (eq. 3-3/3-4): branch values by hand, widths, shapes in 1D/2D/3D, invalid arguments."""

from __future__ import annotations

import pytest
import torch

from lesionlab.networks.blocks import PyramidPooling
from lesionlab.networks.blocks.pyramid_pooling import AdaptiveAvgPool
from tests.utils import check_backward, check_shape, check_torchscript


@pytest.mark.parametrize("dims", [1, 2, 3])
def test_shapes_and_backward(dims):
    shape = (2, 16) + (12,) * dims
    check_shape(PyramidPooling(dims, 16, 4), shape, (2, 16 + 4 * 4) + (12,) * dims)
    check_backward(PyramidPooling(dims, 16, 4), shape)


def test_paper_widths():
    """2048 + 4 x 512 = 4096 channels after concatenation (eq. 3-4), at the 32 x 32 stage-4 size."""
    ppm = PyramidPooling(2, 2048)
    assert ppm.out_channels == 4096
    assert [b[0].output_size for b in ppm.branches] == [1, 2, 3, 6]


def test_input_passes_through_and_bin1_is_global_mean():
    torch.manual_seed(0)
    ppm = PyramidPooling(2, 3, 2, bins=(1,)).eval()
    x = torch.randn(1, 3, 6, 6)
    y = ppm(x)
    torch.testing.assert_close(y[:, :3], x)
    conv, bn = ppm.branches[0][1].conv, ppm.branches[0][1].adn.N
    g = x.mean(dim=(2, 3)) @ conv.weight[:, :, 0, 0].T
    g = torch.relu((g - bn.running_mean) / torch.sqrt(bn.running_var + bn.eps) * bn.weight + bn.bias)
    torch.testing.assert_close(y[:, 3:], g[:, :, None, None].expand(1, 2, 6, 6))


@pytest.mark.parametrize("dims,size", [(1, 7), (2, 32), (2, 13), (3, 9)])
@pytest.mark.parametrize("bins", [1, 2, 3, 6])
def test_adaptive_pool_matches_torch(dims, size, bins):
    x = torch.randn((2, 3) + (size,) * dims)
    want = [torch.nn.AdaptiveAvgPool1d, torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool3d][dims - 1](bins)(x)
    torch.testing.assert_close(AdaptiveAvgPool(bins)(x), want, atol=1e-5, rtol=1e-5)


def test_torchscript():
    check_torchscript(PyramidPooling(2, 8, 4), (1, 8, 12, 12))


@pytest.mark.parametrize(
    "make",
    [lambda: PyramidPooling(4, 8), lambda: PyramidPooling(2, 0), lambda: PyramidPooling(2, 8, bins=()),
     lambda: PyramidPooling(2, 8, bins=(1, 0))],
)
def test_invalid_arguments(make):
    with pytest.raises(ValueError):
        make()
