"""Paper numbers of ``SEResNet50Improved`` (seed 004): eq. 5-7 block weights, the §3.4 parameter table, Fig. 3 sizes.

Shape, backward, TorchScript, ONNX and invalid arguments are in the shared matrix
(``tests/networks/matrix/cases_glomerulus_cls.py``).
"""

from __future__ import annotations

import unittest

import torch
from monai.networks.nets import ResNet, SEResNet50
from parameterized import parameterized

from lesionlab.networks.blocks import ImprovedSEResBlock
from lesionlab.networks.nets import SEResNet50Improved
from tests.utils import count_parameters

# seed 004 §3.4 "[Inference] Computed counts" (weights + BN affine + SE FC with bias, 4-class head)
SPEC_COUNTS = {"A": 29_842_292, "B": 22_282_356, "C": 14_950_384}
RESNET50_4CLS = 23_516_228
SE_RESNET50_4CLS = 26_047_220


def _conv_weights(module: torch.nn.Module) -> int:
    """Weights of the convolutions only (eq. 4 counts C x H x W x K, no bias, no BN)."""
    return sum(m.weight.numel() for m in module.modules() if isinstance(m, torch.nn.Conv2d))


class TestPaperNumbers(unittest.TestCase):
    def test_eq7_improved_block_is_12_x_64_squared(self):
        # eq. 7: the four asymmetric convolutions at 64 -> 64 (reading C is eq. 7's block)
        blk = ImprovedSEResBlock(2, 64, 64, reading="C")
        self.assertEqual(_conv_weights(blk.branch), 12 * 64**2)
        # eq. 5 / eq. 6 reductions: 12/18 -> -33.3 %, 12/17 -> -29.4 %
        self.assertAlmostEqual(1 - 12 / 18, 0.333, places=3)
        self.assertAlmostEqual(1 - 12 / 17, 0.294, places=3)

    def test_reading_b_block_is_14_x_64_squared(self):
        # 256 -> 64 (1x1), 1x3, 3x1 at 64, 64 -> 256 (1x1): (4 + 3 + 3 + 4) x 64^2, eq. 6's bottleneck is 17 x 64^2
        blk = ImprovedSEResBlock(2, 256, 256, width=64, reading="B")
        self.assertEqual(_conv_weights(blk.branch), 14 * 64**2)

    def test_reading_a_block(self):
        # 1x1 256->64, four asymmetric 64->64 convs (12 x 64^2), 1x1 64->256
        blk = ImprovedSEResBlock(2, 256, 256, width=64, reading="A")
        self.assertEqual(_conv_weights(blk.branch), (4 + 12 + 4) * 64**2)

    @parameterized.expand(list(SPEC_COUNTS.items()))
    def test_parameter_counts_match_spec_table(self, reading, expected):
        self.assertEqual(count_parameters(SEResNet50Improved(2, 3, 4, reading=reading)), expected)

    def test_baselines_and_smaller_than_resnet50_claim(self):
        resnet = ResNet("bottleneck", [3, 4, 6, 3], [64, 128, 256, 512], spatial_dims=2, n_input_channels=3,
                        num_classes=4, bias_downsample=False)
        se_resnet = SEResNet50(spatial_dims=2, in_channels=3, num_classes=4)
        self.assertEqual(count_parameters(resnet), RESNET50_4CLS)
        self.assertEqual(count_parameters(se_resnet), SE_RESNET50_4CLS)
        # §7.1 "our model size is smaller than ResNet50": true for B (default) and C, false for A
        self.assertLess(SPEC_COUNTS["B"], RESNET50_4CLS)
        self.assertLess(SPEC_COUNTS["C"], RESNET50_4CLS)
        self.assertGreater(SPEC_COUNTS["A"], RESNET50_4CLS)
        self.assertEqual(SEResNet50Improved().stages[0][0].branch[1][0].conv.kernel_size, (1, 3))  # default is B

    @parameterized.expand([("A", 256), ("B", 256), ("C", 64)])
    def test_fig3_stage_sizes(self, reading, stage1_channels):
        net = SEResNet50Improved(2, 3, 4, reading=reading, layers=(1, 1, 1, 1)).eval()
        x = net.stem(torch.zeros(1, 3, 224, 224))
        self.assertEqual(tuple(x.shape[1:]), (64, 56, 56))
        for i, stage in enumerate(net.stages):
            x = stage(x)
            self.assertEqual(tuple(x.shape[1:]), (stage1_channels * 2**i, 56 // 2**i, 56 // 2**i))


if __name__ == "__main__":
    unittest.main()
