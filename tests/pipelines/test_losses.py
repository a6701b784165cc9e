"""EML loss against hand-computed values (seed 002 Eq. 3.13, D-UNet's form)."""

from __future__ import annotations

import math

import pytest
import torch

from lesionlab.pipelines.losses import EMLLoss


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def test_eml_hand_computed_four_pixels():
    logits = [2.0, -1.0, 0.5, -3.0]
    target = [1.0, 0.0, 0.0, 1.0]
    a, g = 0.75, 2.0
    focal = 0.0
    inter = sq_p = sq_y = 0.0
    for x, y in zip(logits, target):
        p = _sigmoid(x)
        if y == 1:
            focal += -a * (1 - p) ** g * math.log(p)
        else:
            focal += -(1 - a) * p**g * math.log(1 - p)
        inter, sq_p, sq_y = inter + y * p, sq_p + p * p, sq_y + y * y
    dice = (2 * inter + 1) / (sq_y + sq_p + 1)
    expected = focal / 4 - math.log(dice)
    got = EMLLoss()(torch.tensor(logits).view(1, 1, 2, 2), torch.tensor(target).view(1, 1, 2, 2))
    assert got.item() == pytest.approx(expected, rel=1e-6)


def test_eml_batchwise_dice_and_gradient():
    torch.manual_seed(0)
    x = torch.randn(3, 1, 5, 5, requires_grad=True)
    y = (torch.rand(3, 1, 5, 5) > 0.7).float()
    loss = EMLLoss()(x, y)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    # batch=True pools the Dice over the batch (D-UNet), which differs from per-sample averaging
    assert not torch.isclose(loss, EMLLoss(batch=False)(x.detach(), y))


def test_eml_good_prediction_beats_bad_and_perfect_is_small():
    y = torch.zeros(1, 1, 8, 8)
    y[..., 2:5, 2:5] = 1
    perfect = (y * 2 - 1) * 20
    assert EMLLoss()(perfect, y).item() == pytest.approx(0.0, abs=1e-6)
    assert EMLLoss()(perfect * 0.1, y) < EMLLoss()(-perfect * 0.1, y)


def test_eml_invalid():
    with pytest.raises(ValueError):
        EMLLoss(alpha=1.5)
    with pytest.raises(ValueError):
        EMLLoss(gamma=-1)
    with pytest.raises(ValueError):
        EMLLoss(smooth=0)
    with pytest.raises(ValueError):
        EMLLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError):
        EMLLoss()(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2, 4, 4))
