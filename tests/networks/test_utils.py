"""FirstOutput adapter, to_memory_format, and the 2.5D baseline variants of the D-UNet bundle."""

from __future__ import annotations

import json
import os

import pytest
import torch
from monai.bundle import ConfigParser

from lesionlab.apps.bundle import bundle_path
from lesionlab.networks.nets import DUNet
from lesionlab.networks.utils import FirstOutput, to_memory_format
from tests.utils import check_backward, check_torchscript


class _ListNet(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        y = self.conv(x)
        return [y, y * 2]


def test_first_output_returns_first_tensor_and_scripts():
    net = FirstOutput(_ListNet())
    x = torch.rand(2, 4, 8, 8)
    torch.testing.assert_close(net(x), net.network.conv(x))
    check_backward(net, (2, 4, 8, 8))
    check_torchscript(net, (1, 4, 8, 8))


@pytest.mark.parametrize("variant", ["unet2d", "unetpp2d", "attention_unet2d"])
def test_variants_build_and_keep_the_25d_contract(variant):
    cfg_dir = os.path.join(bundle_path("brain_mri_dunet_stroke_segmentation"), "configs")
    parser = ConfigParser()
    parser.read_config([os.path.join(cfg_dir, "inference.json"), os.path.join(cfg_dir, "variants", f"{variant}.json")])
    net = parser.get_parsed_content("network_def").eval()
    with torch.no_grad():
        y = net(torch.rand(1, 4, 64, 64))
    assert isinstance(y, torch.Tensor) and y.shape == (1, 1, 64, 64)
    assert json.load(open(os.path.join(cfg_dir, "variants", f"{variant}.json")))["_desc_"]


def test_to_memory_format_mixed_2d_3d():
    net = DUNet(features=(4, 8, 16, 32, 64), fusion_reduction=4).eval()
    x = torch.randn(1, 4, 32, 32)
    with torch.no_grad():
        ref = net(x)
        with pytest.raises(RuntimeError):  # why the helper exists: D-UNet mixes 2D and 3D convolutions
            net.to(memory_format=torch.channels_last)
        to_memory_format(net)
        w5 = [p for p in net.parameters() if p.dim() == 5]
        w4 = [p for p in net.parameters() if p.dim() == 4]
        assert w5 and all(p.is_contiguous(memory_format=torch.channels_last_3d) for p in w5)
        assert w4 and all(p.is_contiguous(memory_format=torch.channels_last) for p in w4)
        torch.testing.assert_close(net(x), ref, atol=1e-5, rtol=1e-4)
        to_memory_format(net, False)
        assert all(p.is_contiguous() for p in net.parameters())
