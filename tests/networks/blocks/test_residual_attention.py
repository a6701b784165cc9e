"""Tests of ``CoarseResidualLearning`` (CRL of TSRL-Net, thesis §4.2, Eqs. 4.1-4.3)."""

from __future__ import annotations

import unittest

import torch
from parameterized import parameterized

from lesionlab.networks.blocks import CoarseResidualLearning
from tests.utils import count_parameters, make_inputs


def _inputs(shapes: tuple) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    skip, prob, attn = make_inputs(shapes)
    return torch.relu(skip), torch.sigmoid(prob), torch.sigmoid(attn)  # ReLU feature, probabilities


def _by_hand(mode: str, skip: torch.Tensor, prob: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
    """Eqs. 4.1-4.3 with the patch map block-upsampled by ``torch.kron`` (2D only)."""
    b = skip.shape[0]
    fh, fw = skip.shape[2] // attn.shape[2], skip.shape[3] // attn.shape[3]
    up = torch.stack([torch.kron(attn[i, 0], torch.ones(fh, fw)) for i in range(b)])[:, None]
    ra = skip * skip * (1 - prob)  # Eq. 4.1
    pa = skip * up  # Eq. 4.2
    return {"crl": ra + pa, "ra": ra, "pa": pa}[mode]  # Eq. 4.3


class TestCoarseResidualLearning(unittest.TestCase):
    @parameterized.expand([["crl"], ["ra"], ["pa"]])
    def test_hand_value(self, mode: str) -> None:
        skip, prob, attn = _inputs(((2, 4, 12, 18), (2, 1, 12, 18), (2, 1, 6, 6)))
        torch.testing.assert_close(CoarseResidualLearning(mode)(skip, prob, attn), _by_hand(mode, skip, prob, attn))

    def test_suppression(self) -> None:
        # Fig. 4.2: a fully predicted region (P = 1) in a zero-attention patch is removed; elsewhere C^2 (1-P) + C A
        skip = torch.full((1, 1, 12, 12), 2.0)
        prob = torch.zeros(1, 1, 12, 12)
        prob[..., :6, :] = 1.0
        attn = torch.zeros(1, 1, 6, 6)
        attn[..., 3:, :] = 0.5
        out = CoarseResidualLearning()(skip, prob, attn)
        self.assertTrue(torch.equal(out[..., :6, :], torch.zeros(1, 1, 6, 12)))
        self.assertTrue(torch.equal(out[..., 6:, :], torch.full((1, 1, 6, 12), 4.0 + 1.0)))

    @parameterized.expand([["crl", (True, True, True)], ["ra", (True, True, False)], ["pa", (True, False, True)]])
    def test_gradients(self, mode: str, used: tuple[bool, bool, bool]) -> None:
        # the module has no parameters: check the gradients of its inputs instead of check_backward
        self.assertEqual(count_parameters(CoarseResidualLearning(mode)), 0)
        inputs = [t.requires_grad_() for t in _inputs(((2, 4, 12, 12), (2, 1, 12, 12), (2, 1, 6, 6)))]
        CoarseResidualLearning(mode)(*inputs).mean().backward()
        for t, is_used in zip(inputs, used):
            self.assertEqual(t.grad is not None, is_used)
            if is_used:
                self.assertTrue(torch.isfinite(t.grad).all())

    def test_detach(self) -> None:
        skip, prob, attn = [t.requires_grad_() for t in _inputs(((1, 2, 6, 6), (1, 1, 6, 6), (1, 1, 6, 6)))]
        CoarseResidualLearning("crl", detach=True)(skip, prob, attn).sum().backward()
        self.assertIsNotNone(skip.grad)
        self.assertIsNone(prob.grad)
        self.assertIsNone(attn.grad)

    def test_size_not_multiple(self) -> None:
        with self.assertRaises(ValueError):
            CoarseResidualLearning("pa")(torch.zeros(1, 2, 10, 12), torch.zeros(1, 1, 10, 12), torch.zeros(1, 1, 6, 6))

    @parameterized.expand([["both"], ["RA"], [""]])
    def test_ill_arg(self, mode: str) -> None:
        with self.assertRaises(ValueError):
            CoarseResidualLearning(mode)


if __name__ == "__main__":
    unittest.main()
