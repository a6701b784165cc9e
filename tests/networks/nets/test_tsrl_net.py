"""Tests of ``lesionlab.networks.nets.TSRLNet`` (shape, train-mode layout, backward, TorchScript, arguments, counts)."""

from __future__ import annotations

import unittest

import torch
import torch.nn.functional as F
from parameterized import parameterized

from lesionlab.networks.nets import AGMRNet, TSRLNet
from tests.utils import check_backward, check_shape, check_torchscript, count_parameters, make_inputs

SMALL = {"features": (4, 8, 16, 32, 64), "cpa_grid": 2, "fusion_reduction": 4}
NO_DROPOUT = {"dropout": 0.0, "mdu_dropout": 0.0}
THESIS_TSRL = 12_854_496  # Table 4.3
THESIS_AGMR_SIZE3 = 12_658_163  # Table 3.7, "Size = 3"
AGMR_GAP = 784_482  # constant gap of AGMRNet to the thesis (see test_agmr_net.py)
SIDE_HEADS = sum(c + 1 for c in (512, 256, 128, 64))  # 1x1 conv C' -> 1 on each upsampled feature: 964

# eval-mode shape cases, loops over the ablation switches
CASES_SHAPE = []
for _attention in ("crl", "ra", "pa", "none"):
    for _ds in (True, False):
        CASES_SHAPE.append(
            [{"residual_attention": _attention, "deep_supervision": _ds, "out_channels": 2, **SMALL}, (2, 4, 32, 64),
             (2, 2, 32, 64)]
        )
CASES_SHAPE += [
    [{"use_mdu": False, **SMALL}, (1, 4, 64, 32), (1, 1, 64, 32)],
    [{"mdu_kernels": (3, 5, 7, 9), "use_cff": False, **SMALL}, (1, 4, 32, 32), (1, 1, 32, 32)],
    [{"skip_mode": "both", "in_channels": 8, **SMALL}, (1, 8, 32, 32), (1, 1, 32, 32)],
    [{"features": (4, 8, 16, 32, 64)}, (1, 4, 96, 96), (1, 1, 96, 96)],  # 6 x 6 grid
    [{}, (1, 4, 192, 192), (1, 1, 192, 192)],  # the paper's configuration, once
]

CASES_ILL = [
    [{"spatial_dims": 3}],
    [{"in_channels": 2}],
    [{"out_channels": 0}],
    [{"features": (4, 8, 16, 32)}],
    [{"residual_attention": "both"}],
    [{"skip_mode": "concat"}],
    [{"skip_mode": "both", "residual_attention": "none"}],
    [{"mdu_kernels": (2,)}],
    [{"use_mdu": False, "up_kernel_size": 4}],
    [{"cff_reduction": 0}],
    [{"cpa_grid": 0}],
    [{"mdu_dropout": 1.5}],
]


def _count(cls: type = TSRLNet, **kwargs) -> int:
    with torch.device("meta"):
        return count_parameters(cls(**kwargs))


class TestTSRLNet(unittest.TestCase):
    @parameterized.expand(CASES_SHAPE)
    def test_shape(self, kwargs: dict, input_shape: tuple[int, ...], expected_shape: tuple[int, ...]) -> None:
        check_shape(TSRLNet(**kwargs), input_shape, expected_shape)

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

    @parameterized.expand(
        [[{**SMALL}], [{"residual_attention": "ra", "deep_supervision": False, **SMALL}],
         [{"residual_attention": "pa", "out_channels": 2, **SMALL}],
         [{"residual_attention": "none", "deep_supervision": False, "use_mdu": False, **SMALL}],
         [{"skip_mode": "both", "detach_attention": True, **SMALL}]]
    )
    def test_backward(self, kwargs: dict) -> None:
        # with deep_supervision=False the side heads still get gradients through reverse attention (Eq. 4.1)
        check_backward(TSRLNet(**kwargs), (2, 4, 32, 32))

    def test_script_eval(self) -> None:
        check_torchscript(TSRLNet(out_channels=2, **SMALL), (2, 4, 32, 32))

    def test_script_train(self) -> None:
        x = make_inputs((2, 4, 32, 32))[0]
        loaded = check_torchscript(TSRLNet(**SMALL, **NO_DROPOUT), (2, 4, 32, 32), train=True)
        with torch.no_grad():
            self.assertEqual(tuple(loaded(x).shape), (2, 10, 32, 32))

    @parameterized.expand(CASES_ILL)
    def test_ill_arg(self, kwargs: dict) -> None:
        with self.assertRaises(ValueError):
            TSRLNet(**kwargs)

    def test_parameter_counts(self) -> None:
        count = _count()
        self.assertEqual(count, 11_874_645)
        self.assertEqual(count, _count(AGMRNet, mdu_kernels=(3,)) + SIDE_HEADS)  # AGMR-Net "Size = 3" + side heads
        self.assertEqual(THESIS_TSRL - count, 979_851)
        self.assertEqual(THESIS_TSRL - count, AGMR_GAP + (THESIS_TSRL - THESIS_AGMR_SIZE3) - SIDE_HEADS)
        self.assertEqual(_count(skip_mode="both"), 12_658_005)
        # CRL has no parameters; without side heads ("pa", no deep supervision) TSRL-Net is AGMR-Net "Size = 3"
        self.assertEqual(_count(residual_attention="pa", deep_supervision=False), _count(AGMRNet, mdu_kernels=(3,)))
        self.assertEqual(_count(residual_attention="none", deep_supervision=False, use_mdu=False), 9_521_201)

    def test_baseline_equals_agmr_without_mdu(self) -> None:
        # Table 4.1's baseline: no CRL, no side outputs, D-UNet upsampling == AGMRNet(use_mdu=False), weights included
        kwargs = {"use_mdu": False, **SMALL}
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
