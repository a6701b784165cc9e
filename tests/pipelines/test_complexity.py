"""Tests of ``lesionlab.pipelines.complexity`` against hand-computed counts."""

from __future__ import annotations

import unittest

import torch.nn as nn
from parameterized import parameterized

from lesionlab.networks.blocks import SEAddFusion
from lesionlab.networks.nets import DUNet
from lesionlab.pipelines.complexity import (
    complexity_table,
    count_flops_torch,
    count_macs_thop_style,
    count_parameters,
)
from tests.networks.nets.test_dunet import dunet_layer_table, table_macs

INPUT = (1, 4, 192, 192)
# D-UNet on 1 x 4 x 192 x 192, all derivable from the layer table (tests.networks.nets.test_dunet)
DUNET_THOP_LEGACY_CONV = 18_046_607_616  # spec Appendix A: "18.047 G"
DUNET_THOP_CURRENT_CONV = 18_022_072_320
DUNET_THESIS = 18_089_374_976  # thesis Table 4.3 "FLOPs" of D-UNet
DUNET_SE_POOLS = 1_769_856  # thop's count of the four SE nn.AdaptiveAvgPool2d: 2 * (64 * 9217 + 128 * 2305)
DUNET_TORCH_FLOPS = 31_967_291_392  # FlopCounterMode; MACs = 15,983,645,696


class TestSingleLayers(unittest.TestCase):
    def test_conv2d(self) -> None:
        # 1x2x4x4 -> Conv2d(2, 3, 3, padding 1) -> 1x3x4x4: 48 outputs x (2 * 9) MACs, +48 for the bias in legacy thop
        conv = nn.Conv2d(2, 3, 3, padding=1)
        self.assertEqual(count_macs_thop_style(conv, (1, 2, 4, 4), convention="current"), 48 * 18)
        self.assertEqual(count_macs_thop_style(conv, (1, 2, 4, 4)), 48 * 19)
        self.assertEqual(count_flops_torch(conv, (1, 2, 4, 4)), 2 * 48 * 18)
        no_bias = nn.Conv2d(2, 3, 3, padding=1, bias=False)
        self.assertEqual(count_macs_thop_style(no_bias, (1, 2, 4, 4)), 48 * 18)

    def test_conv_transpose2d(self) -> None:
        # 1x2x4x4 -> ConvTranspose2d(2, 3, 3, s2, p1, op1) -> 1x3x8x8
        up = nn.ConvTranspose2d(2, 3, 3, stride=2, padding=1, output_padding=1)
        # thop: per output pixel, 3 * 8 * 8 = 192 outputs x 2 * 9
        self.assertEqual(count_macs_thop_style(up, (1, 2, 4, 4), convention="current"), 192 * 18)
        self.assertEqual(count_macs_thop_style(up, (1, 2, 4, 4)), 192 * 19)
        # PyTorch: per input pixel, 4 * 4 input pixels x prod(weight.shape) = 2 * 3 * 9; FLOPs = 2 x MACs
        self.assertEqual(count_flops_torch(up, (1, 2, 4, 4)), 2 * 16 * 54)
        # stride 2 in 2D: thop counts 4x PyTorch's MACs
        thop_current = count_macs_thop_style(up, (1, 2, 4, 4), convention="current")
        self.assertEqual(4 * count_flops_torch(up, (1, 2, 4, 4)) // 2, thop_current)

    def test_grouped_conv_and_batch(self) -> None:
        # 2x4x5x5 -> Conv2d(4, 6, 3, groups=2) -> 2x6x3x3: 108 outputs x (4 / 2) * 9
        conv = nn.Conv2d(4, 6, 3, groups=2, bias=False)
        self.assertEqual(count_macs_thop_style(conv, (2, 4, 5, 5)), 108 * 18)
        self.assertEqual(count_flops_torch(conv, (2, 4, 5, 5)), 2 * 108 * 18)

    def test_conv3d(self) -> None:
        conv = nn.Conv3d(1, 2, 3, padding=1, bias=False)  # 1x1x2x3x3 -> 1x2x2x3x3: 36 outputs x 27
        self.assertEqual(count_macs_thop_style(conv, (1, 1, 2, 3, 3)), 36 * 27)

    def test_linear(self) -> None:
        lin = nn.Linear(10, 4)  # 3 samples: in_features x output numel = 10 * 12
        self.assertEqual(count_macs_thop_style(lin, (3, 10), convs_only=False), 120)
        self.assertEqual(count_macs_thop_style(lin, (3, 10)), 0)  # convs only
        self.assertEqual(count_flops_torch(lin, (3, 10)), 2 * 120)

    def test_other_layers(self) -> None:
        bn = nn.BatchNorm2d(3)  # 2x3x4x4 = 96 elements
        self.assertEqual(count_macs_thop_style(bn, (2, 3, 4, 4), convs_only=False), 2 * 96)
        self.assertEqual(count_macs_thop_style(bn, (2, 3, 4, 4), convs_only=False, convention="current"), 4 * 96)
        self.assertEqual(count_flops_torch(bn, (2, 3, 4, 4)), 0)
        gap = nn.AdaptiveAvgPool2d(1)  # 1x8x6x6 -> 1x8x1x1: (36 adds + 1 division) per output
        self.assertEqual(count_macs_thop_style(gap, (1, 8, 6, 6), convs_only=False), 37 * 8)
        relu_pool = nn.Sequential(nn.ReLU(), nn.MaxPool2d(2), nn.Dropout(0.5))
        self.assertEqual(count_macs_thop_style(relu_pool, (1, 8, 6, 6), convs_only=False), 0)
        up = nn.Upsample(scale_factor=2, mode="bilinear")  # 1x2x3x3 -> 1x2x6x6 = 72 outputs x 11
        self.assertEqual(count_macs_thop_style(up, (1, 2, 3, 3), convs_only=False), 72 * 11)

    def test_restores_model(self) -> None:
        net = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2)).train()
        count_macs_thop_style(net, (1, 1, 5, 5), convs_only=False)
        count_flops_torch(net, (1, 1, 5, 5))
        count_macs_thop_style(net, (1, 1, 5, 5), device="meta")
        self.assertTrue(net.training)
        self.assertTrue(all(not m._forward_hooks for m in net.modules()))
        self.assertEqual(net[0].weight.device.type, "cpu")
        self.assertEqual(int(net[1].num_batches_tracked), 0)  # ran in eval mode: running statistics untouched

    def test_multiple_inputs(self) -> None:
        # (f3d, f2d) of D-UNet's stage-3 fusion at 48 x 48, convolutions only
        fusion = SEAddFusion(128, 1, 16)
        expected = 48 * 48 * 1 * (128 + 1) + 48 * 48 * 128 * (1 * 9 + 1)
        self.assertEqual(count_macs_thop_style(fusion, ((1, 128, 1, 48, 48), (1, 128, 48, 48))), expected)

    @parameterized.expand([["thop"], ["0.1"], [""]])
    def test_ill_convention(self, convention: str) -> None:
        with self.assertRaises(ValueError):
            count_macs_thop_style(nn.Conv2d(1, 1, 1), (1, 1, 2, 2), convention=convention)


class TestDUNetComplexity(unittest.TestCase):
    def test_thop_style(self) -> None:
        net = DUNet()
        table = dunet_layer_table()
        macs = count_macs_thop_style(net, INPUT)  # real forward on the CPU
        self.assertEqual(macs, DUNET_THOP_LEGACY_CONV)
        self.assertEqual(macs, table_macs(table, "thop_legacy_conv"))
        self.assertAlmostEqual(macs / 18.047e9, 1.0, delta=0.005)  # spec Appendix A
        current = count_macs_thop_style(net, INPUT, convention="current", device="meta")
        self.assertEqual(current, DUNET_THOP_CURRENT_CONV)
        self.assertEqual(current, table_macs(table, "thop_current_conv"))
        full = count_macs_thop_style(net, INPUT, convs_only=False, device="meta")
        self.assertEqual(full, table_macs(table, "thop_legacy_all"))
        # the thesis's figure = legacy convolutions + BatchNorm + Linear, i.e. all but the SE pools
        self.assertEqual(table_macs(table, "thesis"), DUNET_THESIS)
        self.assertEqual(full - DUNET_SE_POOLS, DUNET_THESIS)

    def test_torch_flops(self) -> None:
        net = DUNet()
        flops = count_flops_torch(net, INPUT)
        self.assertEqual(flops, DUNET_TORCH_FLOPS)
        self.assertEqual(flops // 2, table_macs(dunet_layer_table(), "torch"))
        self.assertAlmostEqual(flops / 2 / 16e9, 1.0, delta=0.005)  # ~16 G MACs
        # the difference to thop is the up-convolutions (counted 4x by thop) and the bias terms
        self.assertEqual(count_flops_torch(net, INPUT, device="meta"), flops)

    def test_half_width_and_batch(self) -> None:
        kwargs = {"features": (16, 32, 64, 128, 256)}
        net = DUNet(**kwargs)
        table = dunet_layer_table(features=kwargs["features"])
        macs = count_macs_thop_style(net, (2,) + INPUT[1:], device="meta")
        self.assertEqual(macs, table_macs(table, "thop_legacy_conv", batch=2))
        self.assertEqual(count_flops_torch(net, INPUT, device="meta") // 2, table_macs(table, "torch"))

    def test_keras_variant_arithmetic(self) -> None:
        # spec Appendix A: the Keras 2x2 up-convolution gives 16.537 G (arithmetic only; the net is not built)
        macs = table_macs(dunet_layer_table(up="keras"), "thop_legacy_conv")
        self.assertAlmostEqual(macs / 16.537e9, 1.0, delta=0.0005)

    def test_complexity_table(self) -> None:
        models = {"D-UNet": DUNet(), "D-UNet/2": DUNet(features=(16, 32, 64, 128, 256))}
        rows = complexity_table(models, INPUT, device="meta")
        self.assertEqual([r["model"] for r in rows], ["D-UNet", "D-UNet/2"])
        self.assertEqual(
            rows[0],
            {"model": "D-UNet", "params": 9_503_779, "macs_thop": DUNET_THOP_LEGACY_CONV,
             "macs_thop_all": DUNET_THESIS + DUNET_SE_POOLS, "flops_torch": DUNET_TORCH_FLOPS,
             "macs_torch": DUNET_TORCH_FLOPS // 2},
        )
        self.assertEqual(rows[1]["params"], count_parameters(models["D-UNet/2"]))
        self.assertLess(rows[1]["macs_thop"], rows[0]["macs_thop"] / 3)


if __name__ == "__main__":
    unittest.main()
