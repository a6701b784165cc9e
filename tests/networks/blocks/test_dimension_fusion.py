"""Tests of ``DimensionTransform``, ``SqueezeExcitation`` and ``SEAddFusion``."""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from lesionlab.networks.blocks import DimensionTransform, SEAddFusion, SqueezeExcitation
from tests.utils import check_backward, check_shape, check_torchscript, count_parameters, make_inputs

# DimensionTransform: [kwargs, input (B, C, D, H, W), expected (B, C_out, H, W)]
CASES_DT = []
for _c, _d, _cout in ((8, 2, 8), (16, 1, 4), (3, 4, 5)):
    for _size in ((8, 8), (7, 10)):
        CASES_DT.append(
            [{"in_channels": _c, "depth": _d, "out_channels": _cout}, (2, _c, _d, *_size), (2, _cout, *_size)]
        )

# SqueezeExcitation keeps the shape, any spatial_dims
CASES_SE = []
for _dims, _size in ((1, (9,)), (2, (6, 7)), (3, (3, 4, 5))):
    for _bias in (False, True):
        CASES_SE.append(
            [{"spatial_dims": _dims, "channels": 16, "reduction": 4, "bias": _bias}, (2, 16, *_size), (2, 16, *_size)]
        )

# SEAddFusion: inputs (f3d, f2d), output like f2d
CASES_FUSION = [
    [{"channels": 16, "depth": 2, "reduction": 4}, ((2, 16, 2, 8, 8), (2, 16, 8, 8)), (2, 16, 8, 8)],
    [{"channels": 32, "depth": 1, "reduction": 16}, ((1, 32, 1, 6, 10), (1, 32, 6, 10)), (1, 32, 6, 10)],
]


def _zero_se(se: SqueezeExcitation) -> None:
    """Zero the SE's fully connected weights, so its gate is sigmoid(0) = 0.5 for every channel."""
    with torch.no_grad():
        for p in se.fc.parameters():
            p.zero_()


class TestDimensionTransform(unittest.TestCase):
    @parameterized.expand(CASES_DT)
    def test_shape(self, kwargs: dict, input_shape: tuple[int, ...], expected_shape: tuple[int, ...]) -> None:
        check_shape(DimensionTransform(**kwargs), input_shape, expected_shape)

    def test_backward(self) -> None:
        check_backward(DimensionTransform(8, 2, 8), (2, 8, 2, 6, 6))

    def test_script(self) -> None:
        check_torchscript(DimensionTransform(8, 2, 4), (2, 8, 2, 6, 6))

    def test_parameter_count(self) -> None:
        c, d, cout = 8, 2, 6
        # Conv3d C -> 1 (1x1x1) with bias, Conv2d D -> C_out (3x3) with bias
        self.assertEqual(count_parameters(DimensionTransform(c, d, cout)), c + 1 + 9 * d * cout + cout)

    def test_depth_mismatch(self) -> None:
        net = DimensionTransform(8, 2, 8)
        with self.assertRaises(ValueError):
            net(torch.zeros(1, 8, 3, 6, 6))

    @parameterized.expand([[0, 2, 4], [4, 0, 4], [4, 2, 0]])
    def test_ill_arg(self, c: int, d: int, cout: int) -> None:
        with self.assertRaises(ValueError):
            DimensionTransform(c, d, cout)


class TestSqueezeExcitation(unittest.TestCase):
    @parameterized.expand(CASES_SE)
    def test_shape(self, kwargs: dict, input_shape: tuple[int, ...], expected_shape: tuple[int, ...]) -> None:
        check_shape(SqueezeExcitation(**kwargs), input_shape, expected_shape)

    @parameterized.expand([[2, False], [3, True]])
    def test_backward(self, dims: int, bias: bool) -> None:
        check_backward(SqueezeExcitation(dims, 16, 4, bias=bias), (2, 16) + (5,) * dims)

    @parameterized.expand([[1], [2], [3]])
    def test_script(self, dims: int) -> None:
        check_torchscript(SqueezeExcitation(dims, 16, 4), (2, 16) + (4,) * dims)

    @parameterized.expand([[64, 16], [128, 16], [16, 4], [10, 3]])
    def test_parameter_count(self, c: int, r: int) -> None:
        hidden = c // r
        self.assertEqual(count_parameters(SqueezeExcitation(2, c, r)), 2 * c * hidden)  # D-UNet: no bias
        self.assertEqual(count_parameters(SqueezeExcitation(2, c, r, bias=True)), 2 * c * hidden + hidden + c)

    def test_half_gate(self) -> None:
        se = SqueezeExcitation(2, 8, 2).eval()
        _zero_se(se)
        x = make_inputs((2, 8, 5, 5))[0]
        with torch.no_grad():
            torch.testing.assert_close(se(x), 0.5 * x)

    @parameterized.expand([[0], [17], [-1]])
    def test_ill_arg(self, r: int) -> None:
        with self.assertRaises(ValueError):
            SqueezeExcitation(2, 16, r)


class TestSEAddFusion(unittest.TestCase):
    @parameterized.expand(CASES_FUSION)
    def test_shape(self, kwargs: dict, input_shape: tuple, expected_shape: tuple[int, ...]) -> None:
        check_shape(SEAddFusion(**kwargs), input_shape, expected_shape)

    def test_backward(self) -> None:
        check_backward(SEAddFusion(16, 2, 4), ((2, 16, 2, 6, 6), (2, 16, 6, 6)))

    def test_script(self) -> None:
        check_torchscript(SEAddFusion(16, 2, 4), ((2, 16, 2, 6, 6), (2, 16, 6, 6)))

    def test_hand_value(self) -> None:
        # with both SE gates at sigmoid(0) = 0.5 the fusion is 0.5 * T(f3d) + 0.5 * f2d
        net = SEAddFusion(16, 2, 4).eval()
        _zero_se(net.se3d)
        _zero_se(net.se2d)
        f3d, f2d = make_inputs(((2, 16, 2, 6, 6), (2, 16, 6, 6)))
        with torch.no_grad():
            expected = 0.5 * net.transform(f3d) + 0.5 * f2d
            torch.testing.assert_close(net(f3d, f2d), expected)
            # T itself, by hand: 1x1x1 Conv3d to one channel, the slices become channels, 3x3 Conv2d, ReLU
            t = net.transform
            reduced = torch.einsum("bcdhw,c->bdhw", f3d, t.reduce.weight.flatten()) + t.reduce.bias
            by_hand = torch.relu(torch.nn.functional.conv2d(reduced, t.conv.weight, t.conv.bias, padding=1))
            torch.testing.assert_close(net.transform(f3d), by_hand, atol=1e-5, rtol=1e-5)

    def test_parameter_count(self) -> None:
        c, d, r = 64, 2, 16  # D-UNet's stage-2 fusion
        expected = (c + 1) + (9 * d * c + c) + 2 * (2 * c * (c // r))
        self.assertEqual(count_parameters(SEAddFusion(c, d, r)), expected)

    def test_depth_mismatch(self) -> None:
        with self.assertRaises(ValueError):
            SEAddFusion(16, 2, 4)(torch.zeros(1, 16, 1, 6, 6), torch.zeros(1, 16, 6, 6))

    @parameterized.expand([[{"reduction": 17}], [{"reduction": 0}], [{"depth": 0}], [{"channels": 0}]])
    def test_ill_arg(self, bad: dict) -> None:
        kwargs = {"channels": 16, "depth": 2, "reduction": 4, **bad}
        with self.assertRaises(ValueError):
            SEAddFusion(**kwargs)


if __name__ == "__main__":
    unittest.main()
