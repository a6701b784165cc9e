"""Tests of ``MultiScaleDeconvUpsample`` (MDU, thesis §3.4)."""

from __future__ import annotations

import unittest

import torch
import torch.nn.functional as F
from parameterized import parameterized

from lesionlab.networks.blocks import MultiScaleDeconvUpsample
from lesionlab.networks.blocks.multiscale import MultiScaleConv
from tests.utils import count_parameters, make_inputs

#: AGMR-Net's MDU inputs C_in at decoder levels 1-4 (C' = C_in); sum of C_in^2 = 348,160
LEVELS = (512, 256, 128, 64)
#: thesis Table 3.7 totals
THESIS = {(3, 5, 7, 9): 23_799_283, (3,): 12_658_163, (5,): 18_228_723, (7,): 26_584_563, (9,): 37_725_683}


def _mdu_params(kernels: tuple[int, ...]) -> int:
    """MDU parameters over AGMR-Net's four decoder levels (built on the meta device, no memory, no init cost)."""
    with torch.device("meta"):
        return sum(count_parameters(MultiScaleDeconvUpsample(2, c, c, kernels)) for c in LEVELS)


class TestMultiScaleDeconvUpsample(unittest.TestCase):
    def test_hand_value(self) -> None:
        # eval mode: each branch is ConvTranspose(k, stride 2, pad (k-1)/2, out pad 1) -> BN -> ReLU; concat in order
        mdu = MultiScaleDeconvUpsample(2, 8, 8, (3, 5, 7, 9)).eval()
        with torch.no_grad():
            for branch in mdu.branches:  # non-trivial BN statistics
                bn = branch.adn.N
                bn.running_mean.uniform_(-0.5, 0.5)
                bn.running_var.uniform_(0.5, 2.0)
                bn.weight.uniform_(0.5, 1.5)
                bn.bias.uniform_(-0.2, 0.2)
            x = make_inputs((2, 8, 5, 4))[0]
            parts = []
            for k, branch in zip((3, 5, 7, 9), mdu.branches):
                conv, bn = branch.conv, branch.adn.N
                y = F.conv_transpose2d(x, conv.weight, conv.bias, stride=2, padding=(k - 1) // 2, output_padding=1)
                y = (y - bn.running_mean[:, None, None]) / torch.sqrt(bn.running_var[:, None, None] + bn.eps)
                parts.append(torch.relu(y * bn.weight[:, None, None] + bn.bias[:, None, None]))
            torch.testing.assert_close(mdu(x), torch.cat(parts, dim=1), atol=1e-5, rtol=1e-5)

    def test_dropout_train_only(self) -> None:
        mdu = MultiScaleDeconvUpsample(2, 8, dropout=0.5)
        x = make_inputs((2, 8, 4, 4))[0]
        with torch.no_grad():
            mdu.eval()
            self.assertTrue(torch.equal(mdu(x), mdu(x)))
            mdu.train()
            torch.manual_seed(0)
            self.assertTrue((mdu(x) == 0).float().mean() > 0.5)  # ReLU zeros plus about half dropped

    @parameterized.expand([[(3, 5, 7, 9), 8, 8], [(3,), 6, 6], [(5, 7), 8, 4], [(3, 5, 7, 9), 12, 16]])
    def test_parameter_count(self, kernels: tuple[int, ...], cin: int, cout: int) -> None:
        branch = cout // len(kernels)
        expected = sum(k * k * cin * branch for k in kernels) + cout + 2 * cout  # weights, biases, BN
        self.assertEqual(count_parameters(MultiScaleDeconvUpsample(2, cin, cout, kernels)), expected)

    def test_thesis_differences(self) -> None:
        # Table 3.7: differences between kernel variants are delta(k^2) * sum(C_in * C'), C' = C_in (ambiguity 19)
        self.assertEqual(sum(c * c for c in LEVELS), 348_160)
        base = _mdu_params((3,))
        for kernels, total in THESIS.items():
            with self.subTest(kernels=kernels):
                self.assertEqual(_mdu_params(kernels) - base, total - THESIS[(3,)])
        # "Size = k" means four k x k branches or one: the count is the same
        self.assertEqual(_mdu_params((5,) * 4), _mdu_params((5,)))

    @parameterized.expand([[{"kernel_sizes": (3, 4)}], [{"kernel_sizes": ()}], [{"kernel_sizes": (0,)}],
                           [{"out_channels": 6}], [{"out_channels": 0}], [{"in_channels": 0}], [{"dropout": 1.0}],
                           [{"dropout": -0.1}]])
    def test_ill_arg(self, bad: dict) -> None:
        kwargs = {"spatial_dims": 2, "in_channels": 8, **bad}
        with self.assertRaises(ValueError):
            MultiScaleDeconvUpsample(**kwargs)


class TestMultiScaleConv(unittest.TestCase):
    """``MultiScaleConv``: the MDU's branches as stride-1 convolutions (Table 3.8's encoder / skip positions)."""

    def test_hand_value(self) -> None:
        # without dropout, in eval mode: each branch is conv (stride 1, padding (k-1)/2) -> BN (running stats) -> ReLU
        msc = MultiScaleConv(2, 4, kernel_sizes=(3, 5), dropout=0.0).eval()
        x = make_inputs((2, 4, 8, 6))[0]
        parts = []
        for k, branch in zip((3, 5), msc.branches):
            conv, bn = branch.conv, branch.adn.N
            y = F.conv2d(x, conv.weight, conv.bias, padding=(k - 1) // 2)
            parts.append(torch.relu(F.batch_norm(y, bn.running_mean, bn.running_var, bn.weight, bn.bias, eps=bn.eps)))
        with torch.no_grad():
            torch.testing.assert_close(msc(x), torch.cat(parts, dim=1))

    def test_parameter_count_equals_mdu(self) -> None:
        for kernels in ((3, 5, 7, 9), (3,), (7,)):
            with torch.device("meta"):
                same = count_parameters(MultiScaleConv(2, 64, 64, kernels))
                up = count_parameters(MultiScaleDeconvUpsample(2, 64, 64, kernels))
            self.assertEqual(same, up)
            self.assertEqual(same, sum(k * k * 64 * (64 // len(kernels)) for k in kernels) + 3 * 64)

    @parameterized.expand([[{"kernel_sizes": (3, 4)}], [{"kernel_sizes": ()}], [{"out_channels": 6}],
                           [{"in_channels": 0}], [{"dropout": 1.0}]])
    def test_ill_arg(self, bad: dict) -> None:
        with self.assertRaises(ValueError):
            MultiScaleConv(**{"spatial_dims": 2, "in_channels": 8, **bad})


if __name__ == "__main__":
    unittest.main()
