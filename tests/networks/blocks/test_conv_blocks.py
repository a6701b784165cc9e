"""Tests of ``DoubleConv`` and ``UpConv`` (shape, backward, TorchScript, invalid arguments, parameter counts)."""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from lesionlab.networks.blocks import DoubleConv, UpConv
from tests.utils import check_backward, check_shape, check_torchscript, count_parameters

# DoubleConv: [kwargs, input shape, expected shape]; 'same' padding keeps odd and even sizes
CASES_DOUBLE = []
for _dims, _size in ((2, (9, 12)), (3, (5, 6, 7))):
    for _cin, _cout in ((1, 2), (3, 5)):
        for _dropout in (0.0, 0.3):
            CASES_DOUBLE.append(
                [{"spatial_dims": _dims, "in_channels": _cin, "out_channels": _cout, "dropout": _dropout},
                 (2, _cin, *_size), (2, _cout, *_size)]
            )
CASES_DOUBLE.append([{"spatial_dims": 2, "in_channels": 2, "out_channels": 4, "kernel_size": 5}, (1, 2, 8, 8),
                     (1, 4, 8, 8)])
CASES_DOUBLE.append([{"spatial_dims": 1, "in_channels": 2, "out_channels": 4, "norm": "instance"}, (2, 2, 11),
                     (2, 4, 11)])

# UpConv doubles every spatial size for odd kernels, odd and even inputs
CASES_UP = []
for _k in (3, 5, 7):
    for _dims, _size in ((2, (5, 6)), (3, (3, 4, 5))):
        CASES_UP.append(
            [{"spatial_dims": _dims, "in_channels": 4, "out_channels": 2, "kernel_size": _k}, (2, 4, *_size),
             (2, 2, *(2 * s for s in _size))]
        )
CASES_UP.append([{"spatial_dims": 1, "in_channels": 3, "out_channels": 3, "act": None}, (1, 3, 7), (1, 3, 14)])


class TestDoubleConv(unittest.TestCase):
    @parameterized.expand(CASES_DOUBLE)
    def test_shape(self, kwargs: dict, input_shape: tuple[int, ...], expected_shape: tuple[int, ...]) -> None:
        check_shape(DoubleConv(**kwargs), input_shape, expected_shape)

    @parameterized.expand([[2, (2, 3, 8, 8)], [3, (2, 3, 4, 6, 6)]])
    def test_backward(self, dims: int, input_shape: tuple[int, ...]) -> None:
        check_backward(DoubleConv(dims, 3, 4, dropout=0.2), input_shape)

    @parameterized.expand([[2, (2, 3, 8, 8)], [3, (1, 3, 4, 6, 6)]])
    def test_script(self, dims: int, input_shape: tuple[int, ...]) -> None:
        check_torchscript(DoubleConv(dims, 3, 4, dropout=0.2), input_shape)

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
    @parameterized.expand(CASES_UP)
    def test_shape(self, kwargs: dict, input_shape: tuple[int, ...], expected_shape: tuple[int, ...]) -> None:
        check_shape(UpConv(**kwargs), input_shape, expected_shape)

    @parameterized.expand([[2, (2, 4, 5, 6)], [3, (2, 4, 3, 4, 5)]])
    def test_backward(self, dims: int, input_shape: tuple[int, ...]) -> None:
        check_backward(UpConv(dims, 4, 2), input_shape)

    @parameterized.expand([[2, (2, 4, 5, 6)], [3, (1, 4, 3, 4, 5)]])
    def test_script(self, dims: int, input_shape: tuple[int, ...]) -> None:
        check_torchscript(UpConv(dims, 4, 2), input_shape)

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
