"""Imbalance losses of seed 001 §3 against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch

from lesionlab.pipelines.imbalance_losses import (
    CompoundLoss,
    SoftmaxFocalLoss,
    TopKCrossEntropyLoss,
    build_imbalance_loss,
    two_class_logits,
)

# two pixels, three classes; logits per pixel and true class
PIX = [([2.0, 0.5, -1.0], 0), ([0.1, 0.3, 1.2], 1)]


def _softmax(z):
    m = [math.exp(v) for v in z]
    return [v / sum(m) for v in m]


def _tensors():
    x = torch.tensor([p[0] for p in PIX]).T.reshape(1, 3, 1, 2)
    y = torch.tensor([p[1] for p in PIX]).reshape(1, 1, 1, 2)
    return x, y


def test_focal_eq_2_2_by_hand():
    alpha, gamma = [0.2, 0.5, 0.3], 2.0
    expected = 0.0
    for z, t in PIX:
        pt = _softmax(z)[t]
        expected += -alpha[t] * (1 - pt) ** gamma * math.log(pt)
    x, y = _tensors()
    assert SoftmaxFocalLoss(alpha=alpha, gamma=gamma)(x, y).item() == pytest.approx(expected / 2, rel=1e-6)
    # gamma 0 without alpha is cross-entropy
    ce = sum(-math.log(_softmax(z)[t]) for z, t in PIX) / 2
    assert SoftmaxFocalLoss(gamma=0)(x, y[:, 0]).item() == pytest.approx(ce, rel=1e-6)


def test_focal_alpha_from_weight_function():
    loss = SoftmaxFocalLoss(shares=[0.8, 0.15, 0.05], weight_function="balanced")
    w = [1 / 0.8, 1 / 0.15, 1 / 0.05]
    torch.testing.assert_close(loss.alpha, torch.tensor([v / sum(w) for v in w]))


def test_focal_binary_one_channel_is_sigmoid_form():
    z, a_bg, a_fg, g = 0.7, 0.16023, 0.83977, 2.0
    p = 1 / (1 + math.exp(-z))
    fg = -a_fg * (1 - p) ** g * math.log(p)
    bg = -a_bg * p**g * math.log(1 - p)
    x = torch.tensor([z, z]).reshape(1, 1, 1, 2)
    y = torch.tensor([1, 0]).reshape(1, 1, 1, 2)
    got = SoftmaxFocalLoss(alpha=[a_bg, a_fg], gamma=g)(x, y)
    assert got.item() == pytest.approx((fg + bg) / 2, rel=1e-5)


def test_topk_selects_hardest_by_distance():
    # 4 pixels, 2 classes; the distance mean_i |p_i - y_i| ranks pixels like CE
    x = torch.tensor([[3.0, -1.0, 0.0, 2.0], [0.0, 1.0, 0.0, -2.0]]).reshape(1, 2, 2, 2)
    y = torch.tensor([0, 0, 1, 1]).reshape(1, 1, 2, 2)
    p = torch.softmax(x, 1).flatten(2)[0]  # (2, 4)
    onehot = torch.nn.functional.one_hot(y.flatten(), 2).T.float()
    dist = (p - onehot).abs().mean(0)
    ce = -torch.log((p * onehot).sum(0))
    top2 = dist.topk(2).indices
    expected = ce[top2].mean().item()
    assert TopKCrossEntropyLoss(k=2)(x, y).item() == pytest.approx(expected, rel=1e-6)
    assert sorted(TopKCrossEntropyLoss(k=2).hardest(x, y)[1][0].tolist()) == sorted(top2.tolist())
    assert TopKCrossEntropyLoss(k=100)(x, y).item() == pytest.approx(ce.mean().item(), rel=1e-6)
    assert TopKCrossEntropyLoss(k=None)(x, y).item() == pytest.approx(ce.mean().item(), rel=1e-6)


def test_topk_is_per_image():
    x = torch.zeros(2, 2, 1, 3)
    x[0, 1] = torch.tensor([5.0, 0.0, -5.0])  # image 0: true class 0 everywhere → CEs differ
    y = torch.zeros(2, 1, 1, 3, dtype=torch.long)
    ce0 = torch.nn.functional.cross_entropy(x[:1], y[:1, 0], reduction="none").flatten()
    expected = (ce0.max() + math.log(2)) / 2  # image 1 is uniform: CE log 2
    assert TopKCrossEntropyLoss(k=1)(x, y).item() == pytest.approx(expected.item(), rel=1e-6)


def test_dice_and_tversky_by_hand_include_background():
    x, y = _tensors()
    probs = [_softmax(z) for z, _ in PIX]
    dice = tversky = 0.0
    for c in range(3):
        tp = sum(p[c] * (t == c) for p, (_, t) in zip(probs, PIX))
        fp = sum(p[c] * (t != c) for p, (_, t) in zip(probs, PIX))
        fn = sum((1 - p[c]) * (t == c) for p, (_, t) in zip(probs, PIX))
        s = 1e-5
        dice += 1 - (2 * tp + s) / (2 * tp + fp + fn + s)
        tversky += 1 - (tp + s) / (tp + 0.3 * fp + 0.7 * fn + s)
    assert build_imbalance_loss(["dice"])(x, y).item() == pytest.approx(dice / 3, rel=1e-5)
    assert build_imbalance_loss(["tversky"])(x, y).item() == pytest.approx(tversky / 3, rel=1e-5)


def test_compound_is_sum_and_binary_two_class():
    torch.manual_seed(0)
    x = torch.randn(2, 1, 4, 4)
    y = torch.randint(0, 2, (2, 1, 4, 4))
    shares = [0.84, 0.16]
    total = build_imbalance_loss(["dice", "focal", "ob"], shares=shares, weight_function="balanced", k=5)(x, y)
    x2 = two_class_logits(x)
    torch.testing.assert_close(torch.softmax(x2, 1)[:, 1:], torch.sigmoid(x))
    parts = (build_imbalance_loss(["dice"])(x2, y) + SoftmaxFocalLoss(shares=shares, weight_function=2)(x2, y)
             + TopKCrossEntropyLoss(5)(x2, y))
    assert total.item() == pytest.approx(parts.item(), rel=1e-6)
    weighted = CompoundLoss([TopKCrossEntropyLoss(5), TopKCrossEntropyLoss(None)], [2.0, 0.5])(x, y)
    assert weighted.item() == pytest.approx(2 * TopKCrossEntropyLoss(5)(x, y).item()
                                            + 0.5 * TopKCrossEntropyLoss(None)(x, y).item(), rel=1e-6)


def test_named_terms_weighted():
    torch.manual_seed(1)
    x, y = torch.randn(1, 3, 4, 4), torch.randint(0, 3, (1, 1, 4, 4))
    got = build_imbalance_loss(["dice", "ob"], k=4, weights=[0.25, 3.0])(x, y)
    want = 0.25 * build_imbalance_loss(["dice"])(x, y) + 3.0 * TopKCrossEntropyLoss(4)(x, y)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)


def test_gradients_flow():
    x = torch.randn(1, 4, 8, 8, requires_grad=True)
    y = torch.randint(0, 4, (1, 1, 8, 8))
    build_imbalance_loss(["dice", "focal", "ob", "tversky", "ce"], shares=[0.7, 0.1, 0.1, 0.1],
                         weight_function="proposed", k=16)(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


@pytest.mark.parametrize("make", [
    lambda: SoftmaxFocalLoss(gamma=-1), lambda: SoftmaxFocalLoss(shares=[0.5, 0.5]),
    lambda: SoftmaxFocalLoss(alpha=[1, 1], shares=[0.5, 0.5], weight_function=1), lambda: TopKCrossEntropyLoss(0),
    lambda: CompoundLoss([]), lambda: CompoundLoss([TopKCrossEntropyLoss()], [1, 2]),
    lambda: build_imbalance_loss(["bce"]), lambda: build_imbalance_loss(["focal"]),
])
def test_invalid(make):
    with pytest.raises(ValueError):
        make()


def test_bad_target_shape():
    with pytest.raises(ValueError, match="target"):
        SoftmaxFocalLoss()(torch.randn(1, 3, 4, 4), torch.zeros(1, 2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="alpha"):
        SoftmaxFocalLoss(alpha=[0.5, 0.5])(torch.randn(1, 3, 4, 4), torch.zeros(1, 1, 4, 4, dtype=torch.long))
