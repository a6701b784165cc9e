"""Tests of ``DimensionTransform``, ``SqueezeExcitation``, ``SEAddFusion`` and ``CrossDimensionFusion``."""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from lesionlab.networks.blocks import CrossDimensionFusion, DimensionTransform, SEAddFusion, SqueezeExcitation
from lesionlab.networks.blocks.dimension_fusion import AddFusion, CFFConcatFusion, ConcatFusion
from tests.utils import count_parameters, make_inputs


def _zero_se(se: SqueezeExcitation) -> None:
    """Zero the SE's fully connected weights, so its gate is sigmoid(0) = 0.5 for every channel."""
    with torch.no_grad():
        for p in se.fc.parameters():
            p.zero_()


class TestDimensionTransform(unittest.TestCase):
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


def _cff_by_hand(net: CrossDimensionFusion, f3d: torch.Tensor, f2d: torch.Tensor) -> torch.Tensor:
    """Eqs. 3.5-3.8 written out with the module's weights."""
    t = net.transform(f3d)
    g = torch.cat([t.mean(dim=(2, 3)), f2d.mean(dim=(2, 3))], dim=1)  # Eq. 3.5, 3D first

    def lin(layer: torch.nn.Linear, v: torch.Tensor) -> torch.Tensor:
        return v @ layer.weight.T + layer.bias

    h2 = torch.relu(lin(net.fc1_2d, g))
    h3 = h2 if net.mlp_layout == "shared" else torch.relu(lin(net.fc1_3d, g))
    w2 = torch.sigmoid(lin(net.fc2_2d, h2))  # Eq. 3.6
    w3 = torch.sigmoid(lin(net.fc2_3d, h3))  # Eq. 3.7
    return t * w3[:, :, None, None] + f2d * w2[:, :, None, None]  # Eq. 3.8


class TestCrossDimensionFusion(unittest.TestCase):
    @parameterized.expand([["separate"], ["shared"]])
    def test_hand_value(self, layout: str) -> None:
        net = CrossDimensionFusion(16, 2, 4, layout).eval()
        f3d, f2d = make_inputs(((2, 16, 2, 6, 8), (2, 16, 6, 8)))
        with torch.no_grad():
            torch.testing.assert_close(net(f3d, f2d), _cff_by_hand(net, f3d, f2d), atol=1e-5, rtol=1e-5)

    def test_half_gates(self) -> None:
        # last layers zero: omega_2 = omega_3 = 0.5, so the output is 0.5 * T(f3d) + 0.5 * f2d
        net = CrossDimensionFusion(16, 2, 4).eval()
        with torch.no_grad():
            for layer in (net.fc2_2d, net.fc2_3d):
                layer.weight.zero_()
                layer.bias.zero_()
            f3d, f2d = make_inputs(((2, 16, 2, 6, 6), (2, 16, 6, 6)))
            torch.testing.assert_close(net(f3d, f2d), 0.5 * net.transform(f3d) + 0.5 * f2d)

    @parameterized.expand([[64, 8, "separate", True], [128, 8, "separate", True], [64, 8, "shared", True],
                           [128, 8, "shared", False], [64, 32, "separate", False], [48, 5, "shared", True]])
    def test_parameter_count(self, c: int, r: int, layout: str, bias: bool) -> None:
        d = 2
        transform = (c + 1) + (9 * d * c + c)
        if layout == "separate":  # two MLPs 2C -> C/R -> C
            h = c // r
            mlp = 2 * (2 * c * h + h * c) + (2 * (h + c) if bias else 0)
        else:  # shared 2C -> 2C/R, two heads 2C/R -> C
            h = 2 * c // r
            mlp = 2 * c * h + 2 * h * c + (h + 2 * c if bias else 0)
        self.assertEqual(count_parameters(CrossDimensionFusion(c, d, r, layout, bias=bias)), transform + mlp)

    def test_thesis_arithmetic(self) -> None:
        # MLP parameters at AGMR-Net's two fusion stages (C = 64, 128; R = 8), see the class docstring
        def mlp(c: int, layout: str, bias: bool = True, r: int = 8) -> int:
            net = CrossDimensionFusion(c, 2, r, layout, bias=bias)
            return count_parameters(net) - count_parameters(net.transform)

        self.assertEqual([mlp(64, "separate"), mlp(128, "separate")], [3216, 12576])
        self.assertEqual([mlp(64, "shared"), mlp(128, "shared")], [4240, 16672])
        # §3.6.4: with R = 32 the shared layout has C^2/4 weights, the same as D-UNet's two SE blocks
        for c in (64, 128):
            se = SEAddFusion(c, 2, 16)
            self.assertEqual(mlp(c, "shared", bias=False, r=32), c * c // 4)
            self.assertEqual(count_parameters(se) - count_parameters(se.transform), c * c // 4)

    def test_depth_mismatch(self) -> None:
        with self.assertRaises(ValueError):
            CrossDimensionFusion(16, 2, 4)(torch.zeros(1, 16, 1, 6, 6), torch.zeros(1, 16, 6, 6))

    @parameterized.expand([[{"reduction": 17}], [{"reduction": 0}], [{"reduction": 33, "mlp_layout": "shared"}],
                           [{"mlp_layout": "concat"}], [{"depth": 0}], [{"channels": 0}]])
    def test_ill_arg(self, bad: dict) -> None:
        kwargs = {"channels": 16, "depth": 2, "reduction": 4, **bad}
        with self.assertRaises(ValueError):
            CrossDimensionFusion(**kwargs)

    def test_shared_allows_larger_reduction(self) -> None:
        # hidden 2C // R: R = 17 is valid for C = 16 with the shared layout (hidden 1) but not with separate MLPs
        self.assertEqual(CrossDimensionFusion(16, 2, 17, "shared").fc1_2d.out_features, 1)


class TestTable35Fusions(unittest.TestCase):
    """Table 3.5's common fusions: ``AddFusion``, ``ConcatFusion``, ``CFFConcatFusion``."""

    def test_hand_values(self) -> None:
        f3d, f2d = make_inputs(((2, 8, 2, 6, 5), (2, 8, 6, 5)))
        add, concat, cffc = AddFusion(8, 2), ConcatFusion(8, 2), CFFConcatFusion(8, 2, reduction=4)
        with torch.no_grad():
            torch.testing.assert_close(add(f3d, f2d), add.transform(f3d) + f2d)
            cat = torch.cat([concat.transform(f3d), f2d], dim=1)
            expected = torch.einsum("oc,bchw->bohw", concat.proj.weight[:, :, 0, 0], cat)
            torch.testing.assert_close(concat(f3d, f2d), expected + concat.proj.bias[None, :, None, None])
            # CFF-Concatenate: the two CFF-weighted branches, concatenated, mixed by the 1x1 conv
            t, f = cffc.weighted(f3d, f2d)
            torch.testing.assert_close(CrossDimensionFusion.forward(cffc, f3d, f2d), t + f)
            torch.testing.assert_close(cffc(f3d, f2d), cffc.proj(torch.cat([t, f], dim=1)))

    def test_parameter_counts(self) -> None:
        c, d = 64, 2
        transform = count_parameters(DimensionTransform(c, d, c))
        proj = 2 * c * c + c
        self.assertEqual(count_parameters(AddFusion(c, d)), transform)
        self.assertEqual(count_parameters(ConcatFusion(c, d)), transform + proj)
        for layout in ("separate", "shared"):
            self.assertEqual(count_parameters(CFFConcatFusion(c, d, 8, layout)),
                             count_parameters(CrossDimensionFusion(c, d, 8, layout)) + proj)

    def test_ill_arg(self) -> None:
        for cls in (AddFusion, ConcatFusion, CFFConcatFusion):
            with self.assertRaises(ValueError):
                cls(0, 2)
        with self.assertRaises(ValueError):
            CFFConcatFusion(8, 2, mlp_layout="concat")
        with self.assertRaises(ValueError):
            CFFConcatFusion(8, 2, reduction=9)

    def test_depth_mismatch(self) -> None:
        for block in (AddFusion(8, 2), ConcatFusion(8, 2), CFFConcatFusion(8, 2)):
            with self.assertRaises(ValueError):
                block(torch.zeros(1, 8, 1, 6, 6), torch.zeros(1, 8, 6, 6))


if __name__ == "__main__":
    unittest.main()
