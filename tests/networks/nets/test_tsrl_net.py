"""Tests of ``lesionlab.networks.nets.TSRLNet`` specific to the paper: the train-mode output layout, parameter counts
against the thesis, the Table 4.1 baseline and CRL wiring. Shapes, gradients, TorchScript (eval and train), ONNX and
invalid arguments are in the shared network matrix (``tests/networks/matrix/cases_stroke.py``)."""

from __future__ import annotations

import unittest

import torch
import torch.nn.functional as F
from parameterized import parameterized

from lesionlab.networks.nets import AGMRNet, TSRLNet
from tests.utils import count_parameters, make_inputs

SMALL = {"features": (4, 8, 16, 32, 64), "cpa_grid": 2, "fusion_reduction": 4}
NO_DROPOUT = {"dropout": 0.0, "mdu_dropout": 0.0}
THESIS_TSRL = 12_854_496  # Table 4.3
THESIS_AGMR_SIZE3 = 12_658_163  # Table 3.7, "Size = 3"
AGMR_GAP = 784_482  # constant gap of AGMRNet to the thesis (see test_agmr_net.py)
SIDE_HEADS = sum(c + 1 for c in (512, 256, 128, 64))  # 1x1 conv C' -> 1 on each upsampled feature: 964

def _count(cls: type = TSRLNet, **kwargs) -> int:
    with torch.device("meta"):
        return count_parameters(cls(**kwargs))


class TestTSRLNet(unittest.TestCase):
    @parameterized.expand([[True, 1], [False, 1], [True, 2]])
    def test_train_output(self, deep_supervision: bool, out_channels: int) -> None:
        net = TSRLNet(deep_supervision=deep_supervision, out_channels=out_channels, **SMALL, **NO_DROPOUT).train()
        sides: list[torch.Tensor] = []
        hooks = [block.side_head.register_forward_hook(lambda m, a, o: sides.append(o)) for block in net.decoder]
        out = net(make_inputs((2, 4, 64, 32))[0])
        for h in hooks:
            h.remove()
        n_side = 4 if deep_supervision else 0
        self.assertEqual(tuple(out.shape), (2, out_channels * (1 + n_side) + 5, 64, 32))
        logits, side, cpa = TSRLNet.split_train_output(out, out_channels, n_side, grid=2)
        self.assertEqual(tuple(logits.shape), (2, out_channels, 64, 32))
        self.assertEqual(len(side), n_side)
        self.assertEqual([tuple(m.shape) for m in cpa], [(2, 1, 2, 2)] * 5)
        # side outputs: coarsest level first (8 x 4 ... 64 x 32 here: stage 5 is 4 x 2), logits upsampled bilinearly
        self.assertEqual([tuple(s.shape[2:]) for s in sides], [(8, 4), (16, 8), (32, 16), (64, 32)])
        for s_out, s_head in zip(side, sides):
            expected = F.interpolate(s_head, size=[64, 32], mode="bilinear", align_corners=False)
            torch.testing.assert_close(s_out, expected)

    def test_parameter_counts(self) -> None:
        count = _count()
        self.assertEqual(count, 11_874_645)
        self.assertEqual(count, _count(AGMRNet, mdu_kernels=(3,)) + SIDE_HEADS)  # AGMR-Net "Size = 3" + side heads
        self.assertEqual(THESIS_TSRL - count, 979_851)
        self.assertEqual(THESIS_TSRL - count, AGMR_GAP + (THESIS_TSRL - THESIS_AGMR_SIZE3) - SIDE_HEADS)
        self.assertEqual(_count(skip_mode="both"), 12_658_005)
        # CRL has no parameters; without side heads ("pa", no deep supervision) TSRL-Net is AGMR-Net "Size = 3"
        self.assertEqual(_count(residual_attention="pa", deep_supervision=False), _count(AGMRNet, mdu_kernels=(3,)))
        self.assertEqual(_count(residual_attention="none", deep_supervision=False, mdu="none"), 9_521_201)

    def test_baseline_equals_agmr_without_mdu(self) -> None:
        # Table 4.1's baseline: no CRL, no side outputs, D-UNet upsampling == AGMRNet(mdu="none"), weights included
        kwargs = {"mdu": "none", **SMALL}
        agmr = AGMRNet(**kwargs).eval()
        tsrl = TSRLNet(residual_attention="none", deep_supervision=False, **kwargs).eval()
        tsrl.load_state_dict(agmr.state_dict(), strict=True)
        x = make_inputs((2, 4, 32, 32))[0]
        with torch.no_grad():
            torch.testing.assert_close(tsrl(x), agmr(x))

    def test_attention_matters(self) -> None:
        # same weights, different residual attention: different outputs (CRL is wired in)
        nets = {m: TSRLNet(residual_attention=m, **SMALL).eval() for m in ("crl", "ra", "pa")}
        nets["ra"].load_state_dict(nets["crl"].state_dict())
        nets["pa"].load_state_dict(nets["crl"].state_dict())
        x = make_inputs((1, 4, 32, 32))[0]
        with torch.no_grad():
            out = {m: n(x) for m, n in nets.items()}
        self.assertFalse(torch.allclose(out["crl"], out["ra"]))
        self.assertFalse(torch.allclose(out["crl"], out["pa"]))


if __name__ == "__main__":
    unittest.main()
