"""Tests of ``DoubleConv`` and ``UpConv``: parameter counts, layers, invalid arguments (shape, backward and TorchScript
are in the shared matrix, ``tests/networks/matrix/cases_stroke_blocks.py``)."""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from lesionlab.networks.blocks import DoubleConv, UpConv
from tests.utils import count_parameters


class TestDoubleConv(unittest.TestCase):
    @parameterized.expand([[2, 9], [3, 27]])
    def test_parameter_count(self, dims: int, kernel_volume: int) -> None:
        cin, c = 3, 8
        # conv k*cin*c + c, BN 2c, conv k*c*c + c, BN 2c
        expected = kernel_volume * cin * c + c + 2 * c + kernel_volume * c * c + c + 2 * c
        self.assertEqual(count_parameters(DoubleConv(dims, cin, c)), expected)

    def test_dropout_layer(self) -> None:
        self.assertEqual(len(DoubleConv(2, 1, 2)), 2)
        self.assertIsInstance(DoubleConv(2, 1, 2, dropout=0.3)[-1], torch.nn.Dropout)

    @parameterized.expand([[{"in_channels": 0}], [{"out_channels": 0}], [{"dropout": 1.0}], [{"dropout": -0.1}]])
    def test_ill_arg(self, bad: dict) -> None:
        kwargs = {"spatial_dims": 2, "in_channels": 2, "out_channels": 2, **bad}
        with self.assertRaises(ValueError):
            DoubleConv(**kwargs)


class TestUpConv(unittest.TestCase):
    @parameterized.expand([[3], [5], [7]])
    def test_parameter_count(self, k: int) -> None:
        self.assertEqual(count_parameters(UpConv(2, 6, 4, kernel_size=k)), k * k * 6 * 4 + 4)

    def test_activation(self) -> None:
        x = torch.randn(2, 4, 5, 5)
        with torch.no_grad():
            self.assertGreaterEqual(float(UpConv(2, 4, 8).eval()(x).min()), 0.0)  # ReLU by default
            self.assertLess(float(UpConv(2, 4, 8, act=None).eval()(x).min()), 0.0)  # act=None: plain conv

    @parameterized.expand([[2], [4], [0], [-1]])
    def test_ill_arg(self, k: int) -> None:
        with self.assertRaises(ValueError):
            UpConv(2, 4, 2, kernel_size=k)


if __name__ == "__main__":
    unittest.main()
