"""D-UNet's encoder (shared by D-UNet, AGMR-Net and TSRL-Net): the stage shapes of thesis Fig. 3.1 / D-UNet Fig. 2,
the 3D branch's slice depth at the two fusions (S/2, S/4), switched-off parts adding no parameters, the old ``cpa.``
checkpoint keys, and argument errors. Backward and TorchScript: the network matrix (``cases_stroke_blocks.py``)."""

from __future__ import annotations

import pytest
import torch

from lesionlab.networks.blocks import DUNetEncoder
from tests.utils import count_parameters

FEATURES = (4, 8, 8, 16, 16)


def test_stage_shapes_skips_and_attention_maps():
    enc = DUNetEncoder(4, FEATURES, attention="cpa", fusion="cff", cpa_grid=2, cff_reduction=2).eval()
    skips, bottom, cpa = enc(torch.randn(2, 4, 32, 32))
    assert [tuple(s.shape) for s in skips] == [(2, 4, 32, 32), (2, 8, 16, 16), (2, 8, 8, 8), (2, 16, 4, 4)]
    assert bottom.shape == (2, 16, 2, 2)
    assert [tuple(a.shape) for a in cpa] == [(2, 1, 2, 2)] * 5  # one CPA map per stage
    raw = DUNetEncoder(4, FEATURES, fusion_reduction=2, raw_skips=True).eval()
    skips, _, cpa = raw(torch.randn(1, 4, 32, 32))
    assert [s.shape[1] for s in skips] == [8, 16, 16, 32] and cpa == []  # [stage output, E_Block output]


def test_fusion_sees_the_3d_feature_at_slice_depth_s_over_2_and_s_over_4():
    enc = DUNetEncoder(8, FEATURES, fusion="cff", cff_reduction=2)
    assert [f.transform.depth for f in enc.fusion] == [4, 2]  # the dimension transform checks it in forward
    assert enc(torch.randn(1, 8, 32, 32))[1].shape == (1, 16, 2, 2)


def test_dunet_configuration_has_no_parameters_outside_its_parts():
    enc = DUNetEncoder(4, FEATURES, fusion_reduction=2)  # attention "none", fusion "se_add": D-UNet's encoder
    parts = sum(count_parameters(m) for m in (enc.enc2d, enc.enc3d, enc.fusion))
    assert count_parameters(enc) == parts
    assert count_parameters(enc.attention) == 0 and count_parameters(enc.stage_mdu) == 0


def test_checkpoints_with_the_old_cpa_keys_load():
    torch.manual_seed(0)
    enc = DUNetEncoder(4, FEATURES, attention="cpa", cpa_grid=2, fusion="cff", cff_reduction=2)
    old = {k.replace("attention.", "cpa.", 1) if k.startswith("attention.") else k: v
           for k, v in enc.state_dict().items()}
    assert any(k.startswith("cpa.") for k in old)
    fresh = DUNetEncoder(4, FEATURES, attention="cpa", cpa_grid=2, fusion="cff", cff_reduction=2)
    fresh.load_state_dict(old, strict=True)
    for k, v in enc.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[k], v)


@pytest.mark.parametrize("kwargs, message", [
    ({"in_channels": 6}, "multiple of 4"),
    ({"features": (4, 8, 8, 16)}, "5 positive"),
    ({"attention": "spatial"}, "attention must be one of"),
    ({"fusion": "sum"}, "fusion must be one of"),
])
def test_invalid_arguments(kwargs, message):
    args = {"in_channels": 4, "features": FEATURES, "fusion_reduction": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        DUNetEncoder(args.pop("in_channels"), args.pop("features"), **args)
