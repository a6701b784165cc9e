"""Tests of ``CoarsePatchAttention``, ``prior_location_map`` and ``block_upsample`` (thesis §3.2, Eqs. 3.1-3.4)."""

from __future__ import annotations

import unittest

import torch
import torch.nn.functional as F
from parameterized import parameterized

from lesionlab.networks.blocks import CoarsePatchAttention, block_upsample, prior_location_map
from lesionlab.networks.blocks.patch_attention import FineSpatialAttention
from tests.utils import count_parameters, make_inputs


def _by_hand(cpa: CoarsePatchAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Eqs. 3.1-3.4 and ``A * F + F`` written out for a 2D input, independently of the implementation."""
    b, _, h, w = x.shape
    g = cpa.grid
    ph, pw = h // g, w // g
    mean = x.sum(dim=1) / x.shape[1]  # Eq. 3.1
    desc = mean.reshape(b, g, ph, g, pw).sum(dim=(2, 4)) / (ph * pw)  # Eq. 3.2
    hidden = torch.relu(desc.reshape(b, g * g) @ cpa.fc1.weight.T + cpa.fc1.bias)
    logits = hidden @ cpa.fc2.weight.T + cpa.fc2.bias  # Eq. 3.3 before the sigmoid
    omega = torch.sigmoid(logits).reshape(b, 1, g, g)
    attention = torch.stack([torch.kron(omega[i, 0], torch.ones(ph, pw)) for i in range(b)])[:, None]  # Eq. 3.4
    return attention * x + x, logits.reshape(b, 1, g, g)


class TestCoarsePatchAttention(unittest.TestCase):
    def test_hand_value(self) -> None:
        cpa = CoarsePatchAttention(2, grid=6).eval()
        x = make_inputs((2, 5, 24, 12))[0]
        with torch.no_grad():
            out, logits = cpa(x)
            exp_out, exp_logits = _by_hand(cpa, x)
        torch.testing.assert_close(logits, exp_logits, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(out, exp_out, atol=1e-5, rtol=1e-5)

    def test_zero_fc_gives_half_attention(self) -> None:
        # with f2 = 0 the logits are 0, omega = 0.5 everywhere and the output is 1.5 F
        cpa = CoarsePatchAttention(2, grid=3)
        with torch.no_grad():
            cpa.fc2.weight.zero_()
            cpa.fc2.bias.zero_()
            x = make_inputs((2, 3, 9, 6))[0]
            out, logits = cpa(x)
        torch.testing.assert_close(out, 1.5 * x)
        torch.testing.assert_close(logits, torch.zeros(2, 1, 3, 3))

    def test_attention_is_patch_constant(self) -> None:
        # A is constant over each patch (block upsampling, Eq. 3.4): recover it from a positive input
        cpa = CoarsePatchAttention(2, grid=6).eval()
        x = make_inputs((1, 2, 12, 12))[0].abs() + 0.1
        with torch.no_grad():
            out, _ = cpa(x)
        a = out / x - 1.0  # recovers A
        torch.testing.assert_close(a, a[:, :, ::2, ::2].repeat_interleave(2, 2).repeat_interleave(2, 3))

    @parameterized.expand([[2, 6, None, 36 * 18 + 18 + 18 * 36 + 36], [2, 6, 10, 36 * 10 + 10 + 10 * 36 + 36],
                           [3, 6, None, 216 * 108 + 108 + 108 * 216 + 216], [1, 4, None, 4 * 2 + 2 + 2 * 4 + 4]])
    def test_parameter_count(self, dims: int, grid: int, hidden: int | None, expected: int) -> None:
        self.assertEqual(count_parameters(CoarsePatchAttention(dims, grid, hidden)), expected)

    def test_paper_count(self) -> None:
        # thesis: FC 36 -> 18 -> 36; 1,350 parameters with biases, 1,296 without
        self.assertEqual(count_parameters(CoarsePatchAttention()), 1350)
        self.assertEqual(count_parameters(CoarsePatchAttention(bias=False)), 1296)

    def test_size_not_multiple(self) -> None:
        with self.assertRaises(ValueError):
            CoarsePatchAttention(2, grid=6)(torch.zeros(1, 2, 12, 10))

    @parameterized.expand([[{"spatial_dims": 0}], [{"spatial_dims": 4}], [{"grid": 0}], [{"hidden": 0}]])
    def test_ill_arg(self, kwargs: dict) -> None:
        with self.assertRaises(ValueError):
            CoarsePatchAttention(**kwargs)


class TestPriorLocationMap(unittest.TestCase):
    def test_hand_value(self) -> None:
        y = torch.zeros(2, 1, 192, 192)
        y[0, 0, 40, 100] = 1  # patch (40 // 32, 100 // 32) = (1, 3)
        y[1, 0, 191, 0:40] = 1  # patches (5, 0) and (5, 1)
        prior = prior_location_map(y)
        expected = torch.zeros(2, 1, 6, 6)
        expected[0, 0, 1, 3] = expected[1, 0, 5, 0] = expected[1, 0, 5, 1] = 1
        torch.testing.assert_close(prior, expected)

    def test_equals_max_pool(self) -> None:
        y = (make_inputs((2, 1, 96, 48))[0] > 2.0).float()
        torch.testing.assert_close(prior_location_map(y, grid=6), F.max_pool2d(y, (16, 8)))

    def test_3d_unbatched_and_int(self) -> None:
        y = torch.zeros(1, 4, 6, 8, dtype=torch.uint8)
        y[0, 3, 5, 7] = 1
        prior = prior_location_map(y, grid=2, spatial_dims=3)  # (C, D, H, W) -> (C, 2, 2, 2)
        self.assertEqual(prior.dtype, torch.float32)
        self.assertEqual(tuple(prior.shape), (1, 2, 2, 2))
        self.assertEqual(prior.nonzero().tolist(), [[0, 1, 1, 1]])
        self.assertEqual(tuple(prior_location_map(y[None].float(), grid=2).shape), (1, 1, 2, 2, 2))

    @parameterized.expand([[(1, 1, 12, 12), {"grid": 0}], [(1, 1, 4, 12), {"grid": 6}], [(12, 12), {}],
                           [(1, 1, 12, 12), {"spatial_dims": 4}], [(1, 1, 1, 12, 12), {"spatial_dims": 2}]])
    def test_ill_arg(self, shape: tuple[int, ...], kwargs: dict) -> None:
        with self.assertRaises(ValueError):
            prior_location_map(torch.zeros(shape), **kwargs)


class TestBlockUpsample(unittest.TestCase):
    def test_value(self) -> None:
        x = make_inputs((2, 3, 2, 3))[0]
        out = block_upsample(x, [6, 12])
        expected = torch.stack([torch.stack([torch.kron(x[b, c], torch.ones(3, 4)) for c in range(3)])
                                for b in range(2)])
        torch.testing.assert_close(out, expected)
        self.assertIs(block_upsample(x, [2, 3]), x)  # factor 1: nothing to do

    @parameterized.expand([[[5, 6]], [[4]], [[4, 6, 8]]])
    def test_ill_size(self, size: list[int]) -> None:
        with self.assertRaises(ValueError):
            block_upsample(torch.zeros(1, 1, 2, 3), size)


class TestFineSpatialAttention(unittest.TestCase):
    """``FineSpatialAttention``: Table 3.4's "FA", CBAM spatial attention in CPA's residual form ``A * F + F``."""

    def test_zero_weights_half_gate(self) -> None:
        fa = FineSpatialAttention(2)
        torch.nn.init.zeros_(fa.conv.weight)
        x = make_inputs((2, 4, 9, 11))[0]
        with torch.no_grad():
            out, logits = fa(x)
        torch.testing.assert_close(logits, torch.zeros(2, 1, 9, 11))
        torch.testing.assert_close(out, 1.5 * x)  # A = sigmoid(0) = 0.5

    def test_hand_value(self) -> None:
        fa = FineSpatialAttention(2, kernel_size=3)
        x = make_inputs((2, 4, 6, 5))[0]
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.max(dim=1, keepdim=True).values], dim=1)
        attention = torch.sigmoid(F.conv2d(desc, fa.conv.weight, padding=1))
        with torch.no_grad():
            out, _ = fa(x)
            torch.testing.assert_close(out, attention * x + x)

    def test_parameter_count(self) -> None:
        self.assertEqual(count_parameters(FineSpatialAttention(2)), 2 * 49)
        self.assertEqual(count_parameters(FineSpatialAttention(3, kernel_size=3, bias=True)), 2 * 27 + 1)

    @parameterized.expand([[{"spatial_dims": 4}], [{"kernel_size": 4}], [{"kernel_size": 0}]])
    def test_ill_arg(self, kwargs: dict) -> None:
        with self.assertRaises(ValueError):
            FineSpatialAttention(**kwargs)


if __name__ == "__main__":
    unittest.main()
