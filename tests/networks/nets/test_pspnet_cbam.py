"""CBAM-PSPNet: the paper's numbers (parameter counts of both decoder readings, output stride 8, CBAM placement)."""

from __future__ import annotations

import pytest
import torch

from lesionlab.networks.blocks import CBAM
from lesionlab.networks.nets import PSPNetCBAM
from lesionlab.networks.nets.pspnet_cbam import load_resnet50_weights
from tests.utils import count_parameters


@pytest.mark.parametrize(
    "cbam,decoder,count",
    [(False, "psp", 48_943_172), (True, "psp", 51_316_424), (False, "skip", 55_432_260), (True, "skip", 57_805_512)],
)
def test_parameter_counts(cbam, decoder, count):
    net = PSPNetCBAM(2, 3, 2, cbam=cbam, decoder=decoder)
    assert count_parameters(net) == count
    # auxiliary FCN head: 3x3 conv 1024->256 (no bias) + BN + 1x1 conv 256->2
    assert count_parameters(net.aux_head) == 1024 * 256 * 9 + 2 * 256 + 256 * 2 + 2


def test_cbam_in_every_stage3_and_stage4_bottleneck():
    net = PSPNetCBAM(2, 3, 2)
    for name, n_blocks, has in (("layer1", 3, False), ("layer2", 4, False), ("layer3", 6, True), ("layer4", 3, True)):
        blocks = list(getattr(net, name))
        assert len(blocks) == n_blocks
        assert all(isinstance(b.cbam, CBAM) == has for b in blocks), name
    off = PSPNetCBAM(2, 3, 2, cbam=False)
    assert not any(isinstance(m, CBAM) for m in off.modules())


def test_output_stride_8_and_dilations():
    """Stage shapes of §3.1.1 for a 256 x 256 input: 64, 32, 32, 32; dilations 1, 1, 2, 4 (first block: previous)."""
    net = PSPNetCBAM(2, 3, 2, layers=(1, 1, 2, 2), width=8).eval()
    x = torch.randn(1, 3, 256, 256)
    with torch.no_grad():
        f0 = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        f1 = net.layer1(f0)
        f2 = net.layer2(f1)
        f3 = net.layer3(f2)
        f4 = net.layer4(f3)
    assert [tuple(f.shape[2:]) for f in (f0, f1, f2, f3, f4)] == [(64, 64), (64, 64), (32, 32), (32, 32), (32, 32)]
    assert [f.shape[1] for f in (f1, f2, f3, f4)] == [32, 64, 128, 256]
    assert [b.conv2.dilation for b in net.layer3] == [(1, 1), (2, 2)]
    assert [b.conv2.dilation for b in net.layer4] == [(2, 2), (4, 4)]


def test_train_mode_stacks_main_and_aux():
    net = PSPNetCBAM(2, 3, 2, layers=(1, 1, 1, 1), width=8, ppm_channels=8, head_channels=16, aux_channels=8)
    net.train()
    out = net(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, 2, 2, 64, 64)
    net.eval()
    assert net(torch.randn(1, 3, 64, 64)).shape == (1, 2, 64, 64)
    no_aux = PSPNetCBAM(2, 3, 2, layers=(1, 1, 1, 1), width=8, ppm_channels=8, head_channels=16, aux_channels=0)
    assert no_aux.train()(torch.randn(2, 3, 64, 64)).shape == (2, 2, 64, 64)


def test_local_backbone_weights(tmp_path):
    small = {"layers": (1, 1, 1, 1), "width": 8, "ppm_channels": 8, "head_channels": 16, "aux_channels": 8}
    donor = PSPNetCBAM(2, 3, 2, cbam=False, **small)
    state = {k: v for k, v in donor.state_dict().items() if k.split(".")[0] in ("conv1", "bn1", "layer1", "layer4")}
    state["fc.weight"] = torch.zeros(10, 256)  # torchvision's classifier is ignored
    path = tmp_path / "resnet.pth"
    torch.save(state, path)
    net = PSPNetCBAM(2, 3, 2, cbam=True, backbone_weights=str(path), **small)
    torch.testing.assert_close(net.layer4[0].conv2.weight, donor.layer4[0].conv2.weight)
    missing = load_resnet50_weights(net, path)
    assert any(k.startswith("layer3.0.cbam") for k in missing) and "layer1.0.conv1.weight" not in missing
    with pytest.raises(FileNotFoundError, match="never downloads"):
        PSPNetCBAM(2, 3, 2, backbone_weights=str(tmp_path / "none.pth"), **small)
    torch.save({"conv1.weight": torch.zeros(1, 1, 1, 1)}, path)
    with pytest.raises(ValueError, match="do not fit"):
        load_resnet50_weights(net, path)
