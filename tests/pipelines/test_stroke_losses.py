"""Stroke-thesis losses against hand-computed values (seed 002 §4: Eqs. 3.13-3.16, 4.4-4.8; ambiguities 29-40).

Every expected value is written out with plain Python / NumPy arithmetic, never by calling the code under test.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from monai.losses import DiceLoss, FocalLoss

from lesionlab.networks.blocks.patch_attention import prior_location_map
from lesionlab.pipelines.losses import (
    AGMRLoss,
    CPAPriorLoss,
    EMLLoss,
    SobelEdgeLoss,
    TargetAwareLoss,
    TSRLLoss,
    target_focus_map,
)

__all__: list[str] = []


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _t(rows: list[list[float]]) -> torch.Tensor:
    """A (1, 1, H, W) float64 tensor from nested lists."""
    return torch.tensor(rows, dtype=torch.float64)[None, None]


# ---------------------------------------------------------------- Sobel


def _sobel_magnitude_np(img: np.ndarray) -> np.ndarray:
    """[78]'s edge map written out: 3x3 zero-padded mean (/9), then Sobel/4 cross-correlation, sqrt(.. + 1e-4)."""
    h, w = img.shape
    pad = np.zeros((h + 2, w + 2))
    pad[1:-1, 1:-1] = img
    smooth = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            smooth[i, j] = pad[i : i + 3, j : j + 3].sum() / 9.0
    kx = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]], dtype=float) / 4.0
    ky = kx.T
    pad = np.zeros((h + 2, w + 2))
    pad[1:-1, 1:-1] = smooth
    mag = np.zeros((h, w))
    for i in range(h):
        for j in range(w):
            win = pad[i : i + 3, j : j + 3]
            gx, gy = (win * kx).sum(), (win * ky).sum()
            mag[i, j] = math.sqrt(gx * gx + gy * gy + 1e-4)
    return mag


def test_sobel_hand_computed():
    logits = np.array([[2.0, -1.0, 0.5, -3.0], [0.0, 1.5, -2.0, 1.0], [-0.5, 3.0, 0.2, -1.2], [1.1, -0.7, 0.3, 2.2]])
    target = np.array([[0, 0, 1, 1], [0, 1, 1, 0], [0, 1, 1, 0], [0, 0, 0, 0]], dtype=float)
    prob = 1.0 / (1.0 + np.exp(-logits))
    expected = np.abs(_sobel_magnitude_np(prob) - _sobel_magnitude_np(target)).mean()
    got = SobelEdgeLoss()(torch.tensor(logits)[None, None], torch.tensor(target)[None, None])
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # probabilities given directly
    got_p = SobelEdgeLoss(sigmoid=False)(torch.tensor(prob)[None, None], torch.tensor(target)[None, None])
    assert got_p.item() == pytest.approx(expected, rel=1e-10)


def test_sobel_perfect_good_bad_and_gradient():
    y = torch.zeros(2, 1, 12, 12)
    y[0, :, 3:8, 2:9] = 1
    y[1, :, 6:10, 6:10] = 1
    loss = SobelEdgeLoss()
    assert loss((y * 2 - 1) * 30, y).item() == pytest.approx(0.0, abs=1e-6)
    good = (y * 2 - 1) * 2.0
    bad = torch.zeros_like(y)
    bad[:, :, 0:4, 0:4] = 1
    assert loss(good, y) < loss((bad * 2 - 1) * 2.0, y)
    x = torch.zeros(2, 1, 12, 12, requires_grad=True)  # flat prediction: the eps keeps sqrt differentiable
    loss(x, y).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_sobel_invalid():
    with pytest.raises(ValueError, match="same shape"):
        SobelEdgeLoss()(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1, 4, 5))
    with pytest.raises(ValueError, match="2D"):
        SobelEdgeLoss()(torch.zeros(1, 1, 4, 4, 4), torch.zeros(1, 1, 4, 4, 4))
    with pytest.raises(ValueError, match="eps"):
        SobelEdgeLoss(eps=0.0)


# ---------------------------------------------------------------- prior location map and CPA loss


def _prior_np(label: np.ndarray, grid: int) -> np.ndarray:
    k = label.shape[0] // grid
    return np.array([[label[i * k : (i + 1) * k, j * k : (j + 1) * k].max() for j in range(grid)] for i in range(grid)])


def test_prior_location_map_192():
    lab = torch.zeros(1, 1, 192, 192)
    lab[0, 0, 100, 40] = 1  # patch (100 // 32, 40 // 32) = (3, 1)
    lab[0, 0, 0:3, 190:192] = 1  # patch (0, 5)
    prior = prior_location_map(lab)
    expected = np.zeros((6, 6))
    expected[3, 1] = expected[0, 5] = 1
    assert prior.shape == (1, 1, 6, 6)
    np.testing.assert_array_equal(prior[0, 0].numpy(), expected)
    np.testing.assert_array_equal(expected, _prior_np(lab[0, 0].numpy(), 6))


def test_cpa_prior_loss_hand_computed():
    rng = np.random.default_rng(0)
    label = np.zeros((12, 12))
    label[2:5, 7:11] = 1
    prior = _prior_np(label, 6)  # 2x2 patches
    maps = [rng.uniform(0.05, 0.95, (6, 6)) for _ in range(5)]
    expected = 0.0
    for m in maps:  # mean BCE of each stage, summed; 0.15 on the sum (ambiguity 12)
        expected += sum(
            -(prior[i, j] * math.log(m[i, j]) + (1 - prior[i, j]) * math.log(1 - m[i, j]))
            for i in range(6)
            for j in range(6)
        ) / 36.0
    expected *= 0.15
    lab_t = torch.tensor(label)[None, None]
    seq = [torch.tensor(m)[None, None] for m in maps]
    assert CPAPriorLoss()(seq, lab_t).item() == pytest.approx(expected, rel=1e-10)
    stacked = torch.cat(seq, dim=1)  # (1, 5, 6, 6): one stage per channel
    assert CPAPriorLoss()(stacked, lab_t).item() == pytest.approx(expected, rel=1e-10)
    # block-upsampled (nearest) to 12x12, as the networks hand them over: averaged back exactly
    up = stacked.repeat_interleave(2, dim=2).repeat_interleave(2, dim=3)
    assert CPAPriorLoss()(up, lab_t).item() == pytest.approx(expected, rel=1e-10)
    # logits give the same value as their sigmoids
    logits = torch.log(stacked / (1 - stacked))
    assert CPAPriorLoss(logits=True)(logits, lab_t).item() == pytest.approx(expected, rel=1e-8)
    assert CPAPriorLoss(weight=1.0)(seq, lab_t).item() == pytest.approx(expected / 0.15, rel=1e-10)


def test_cpa_prior_loss_perfect_good_bad_gradient_and_invalid():
    lab = torch.zeros(2, 1, 24, 24)
    lab[0, :, 4:9, 13:20] = 1
    prior = prior_location_map(lab)
    perfect = prior.clamp(1e-7, 1 - 1e-7).repeat(1, 5, 1, 1)
    assert CPAPriorLoss()(perfect, lab).item() < 1e-5
    assert CPAPriorLoss()(0.2 + 0.6 * prior.repeat(1, 5, 1, 1), lab) < CPAPriorLoss()(
        0.8 - 0.6 * prior.repeat(1, 5, 1, 1), lab
    )
    x = torch.zeros(2, 5, 6, 6, requires_grad=True)
    CPAPriorLoss(logits=True)(x, lab).backward()
    assert torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="weight"):
        CPAPriorLoss(weight=-1)
    with pytest.raises(ValueError, match="grid"):
        CPAPriorLoss(grid=0)
    with pytest.raises(ValueError, match="no CPA map"):
        CPAPriorLoss()([], lab)
    with pytest.raises(ValueError, match="does not match"):
        CPAPriorLoss()(torch.rand(3, 5, 6, 6), lab)
    with pytest.raises(ValueError, match="label"):
        CPAPriorLoss()(torch.rand(2, 5, 6, 6), lab.repeat(1, 2, 1, 1))


# ---------------------------------------------------------------- TAL focus map


def test_focus_map_hand_drawn_8x8_beta4():
    g = [
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 1, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
        [0, 0, 1, 1, 0, 0, 0, 0],
        [0, 0, 1, 0, 0, 0, 0, 0],
        [0, 0, 0, 0, 0, 0, 0, 0],
    ]
    expected = [  # top-right and bottom-left 4x4 windows hold a positive
        [0, 0, 0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1, 1],
        [0, 0, 0, 0, 1, 1, 1, 1],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
        [1, 1, 1, 1, 0, 0, 0, 0],
    ]
    np.testing.assert_array_equal(target_focus_map(_t(g), 4)[0, 0].numpy(), np.array(expected))
    # a positive on the window border (row 3 / row 4) does not leak into the next window: no overlap (ambiguity 33)
    g2 = np.zeros((8, 8))
    g2[3, 3] = 1
    a2 = np.zeros((8, 8))
    a2[:4, :4] = 1
    np.testing.assert_array_equal(target_focus_map(torch.tensor(g2)[None, None], 4)[0, 0].numpy(), a2)


def test_focus_map_not_divisible_beta1_and_3d():
    g = np.zeros((10, 9))
    g[9, 8] = 1  # in the partial last window rows 8-9, columns 8
    a = np.zeros((10, 9))
    a[8:10, 8:9] = 1
    got = target_focus_map(torch.tensor(g)[None, None], 4)
    assert got.shape == (1, 1, 10, 9)
    np.testing.assert_array_equal(got[0, 0].numpy(), a)
    g1 = (torch.rand(2, 1, 7, 5) > 0.6).float()
    assert torch.equal(target_focus_map(g1, 1), g1)  # beta = 1: A = g
    g3 = torch.zeros(1, 1, 4, 4, 4)
    g3[0, 0, 3, 0, 1] = 1
    a3 = target_focus_map(g3, 2)
    assert a3.sum().item() == 8 and a3[0, 0, 2:4, 0:2, 0:2].sum().item() == 8
    for bad in (0, -2, 2.5, True):
        with pytest.raises(ValueError, match="beta"):
            target_focus_map(g1, bad)


# ---------------------------------------------------------------- TAL


def _tal_np(logits, target, focus, alpha=0.75, gamma=2.0, eps=1.0, dice="one_minus", parts=False):
    """Eqs. 4.5-4.7 for a batch of images given as flat lists; per-image means, then the batch mean.

    Returns the loss, or ``(focal part, Dice part)`` when ``parts``.
    """
    total_focal = total_dice = 0.0
    for xs, gs, focus_maps in zip(logits, target, focus):
        focal = inter = sp = sg = 0.0
        for x, g, a in zip(xs, gs, focus_maps):
            p = _sigmoid(x)
            pt = p * g + (1 - p) * (1 - g)
            w = alpha if a == 1 else 1 - alpha
            focal += -w * (1 - pt) ** gamma * math.log(pt)
            inter, sp, sg = inter + g * p, sp + p * p, sg + g * g
        total_focal += focal / len(xs)
        coef = (2 * inter + eps) / (sp + sg + eps)
        total_dice += 1 - coef if dice == "one_minus" else -math.log(coef)
    n = len(logits)
    return (total_focal / n, total_dice / n) if parts else (total_focal + total_dice) / n


def test_tal_hand_computed_beta2():
    x = [[2.0, -1.0, 0.5, -3.0, 1.2, -0.4, 0.0, 2.5], [-2.0, 0.3, -1.5, 0.8, -0.2, -2.2, 1.4, -0.9]]
    g = [[1, 0, 0, 0, 0, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0]]
    # images are 2x4, beta = 2: windows are columns {0,1} and {2,3}; image 0 has positives at (0,0) and (1,3)
    a = [[1, 1, 1, 1, 1, 1, 1, 1], [0, 0, 0, 0, 0, 0, 0, 0]]
    xt = torch.tensor(x, dtype=torch.float64).view(2, 1, 2, 4)
    gt = torch.tensor(g, dtype=torch.float64).view(2, 1, 2, 4)
    np.testing.assert_array_equal(target_focus_map(gt, 2).view(2, 8).numpy(), np.array(a))
    for dice in ("one_minus", "neg_log"):
        expected = _tal_np(x, g, a, dice=dice)
        got = TargetAwareLoss(beta=2, dice=dice)(xt, gt)
        assert got.item() == pytest.approx(expected, rel=1e-10), dice
    # other hyper-parameters
    expected = _tal_np(x, g, a, alpha=0.4, gamma=0.5, eps=0.5)
    got = TargetAwareLoss(gamma=0.5, alpha=0.4, beta=2, smooth=0.5)(xt, gt)
    assert got.item() == pytest.approx(expected, rel=1e-10)
    # batch=True pools the Dice sums over the batch
    focal_part, _ = _tal_np(x, g, a, parts=True)
    p = [_sigmoid(v) for row in x for v in row]
    flat_g = [v for row in g for v in row]
    inter = sum(gi * pi for gi, pi in zip(flat_g, p))
    den = sum(pi * pi for pi in p) + sum(gi * gi for gi in flat_g)
    expected_batch = focal_part + 1 - (2 * inter + 1) / (den + 1)
    assert TargetAwareLoss(beta=2, batch=True)(xt, gt).item() == pytest.approx(expected_batch, rel=1e-10)


def test_tal_beta4_focus_weights_nearby_negatives():
    """With beta = 4 negatives next to the lesion get alpha, far ones 1 - alpha (8x8 example)."""
    g = torch.zeros(1, 1, 8, 8, dtype=torch.float64)
    g[0, 0, 1, 1] = 1
    x = torch.full((1, 1, 8, 8), 0.5, dtype=torch.float64)  # every negative equally wrong
    x[0, 0, 1, 1] = 3.0
    p_neg, p_pos = _sigmoid(0.5), _sigmoid(3.0)
    neg_term = p_neg**2 * -math.log(1 - p_neg)  # (1 - p_t)^2 (-log p_t) with p_t = 1 - p
    focal = (0.75 * (1 - p_pos) ** 2 * -math.log(p_pos) + 15 * 0.75 * neg_term + 48 * 0.25 * neg_term) / 64
    coef = (2 * p_pos + 1) / (p_pos**2 + 63 * p_neg**2 + 1 + 1)
    assert TargetAwareLoss()(x, g).item() == pytest.approx(focal + 1 - coef, rel=1e-10)


def test_tal_beta1_is_alpha_balanced_focal_plus_dice():
    """beta = 1 gives A = g: TAL = alpha-balanced focal loss (MONAI's, mean) + 1 - squared Dice (MONAI's, eps 1)."""
    torch.manual_seed(0)
    x = torch.randn(3, 1, 9, 7, dtype=torch.float64)
    g = (torch.rand(3, 1, 9, 7) > 0.7).double()
    focal = FocalLoss(gamma=2.0, alpha=0.75, use_softmax=False, reduction="mean")(x, g)
    dice = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=1.0, smooth_dr=1.0, batch=False)(x, g)
    assert TargetAwareLoss(beta=1)(x, g).item() == pytest.approx((focal + dice).item(), rel=1e-8)


def test_tal_perfect_good_bad_gradient():
    y = torch.zeros(2, 1, 16, 16)
    y[0, :, 3:9, 4:12] = 1
    y[1, :, 10:14, 2:5] = 1
    tal = TargetAwareLoss()
    perfect = (y * 2 - 1) * 30
    assert tal(perfect, y).item() == pytest.approx(0.0, abs=1e-6)
    assert TargetAwareLoss(dice="neg_log")(perfect, y).item() == pytest.approx(0.0, abs=1e-6)
    assert tal(perfect * 0.05, y) < tal(-perfect * 0.05, y)
    for gamma in (0.0, 0.5, 2.0):  # extreme logits stay finite, also for gamma < 1
        x = (torch.randn(2, 1, 16, 16) * 200).requires_grad_(True)
        loss = TargetAwareLoss(gamma=gamma)(x, y)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(x.grad).all()


def test_tal_invalid():
    for kwargs, match in [
        ({"alpha": -0.1}, "alpha"),
        ({"alpha": 1.1}, "alpha"),
        ({"beta": 0}, "beta"),
        ({"beta": 1.5}, "beta"),
        ({"gamma": -1.0}, "gamma"),
        ({"dice": "plain"}, "dice"),
        ({"smooth": 0.0}, "smooth"),
    ]:
        with pytest.raises(ValueError, match=match):
            TargetAwareLoss(**kwargs)
    with pytest.raises(ValueError, match="same shape"):
        TargetAwareLoss()(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 7))
    with pytest.raises(ValueError, match="1 logit channel"):
        TargetAwareLoss()(torch.zeros(1, 2, 8, 8), torch.zeros(1, 2, 8, 8))
    with pytest.raises(ValueError, match="spatial"):
        TargetAwareLoss()(torch.zeros(1, 1), torch.zeros(1, 1))


# ---------------------------------------------------------------- AGMR-Net and TSRL-Net totals


def _bce_mean_np(m: np.ndarray, prior: np.ndarray) -> float:
    return float(np.mean(-(prior * np.log(m) + (1 - prior) * np.log(1 - m))))


def _case(n_side: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, np.ndarray, np.ndarray, list[np.ndarray]]:
    """A (2, 1 + n_side + 5, 12, 12) train-mode output and its label.

    The CPA channels are logits of 6x6 probability maps ``cpa6``, block-upsampled by 2, as AGMRNet/TSRLNet give them.
    """
    rng = np.random.default_rng(seed)
    label = np.zeros((2, 12, 12))
    label[0, 3:7, 2:9] = 1
    label[1, 8:11, 8:12] = 1
    logits = rng.normal(0, 2, (2, 1 + n_side, 12, 12))
    cpa6 = [rng.uniform(0.05, 0.95, (2, 6, 6)) for _ in range(5)]
    cpa = np.stack([np.log(c / (1 - c)).repeat(2, axis=1).repeat(2, axis=2) for c in cpa6], axis=1)
    out = torch.tensor(np.concatenate([logits, cpa], axis=1))
    return out, torch.tensor(label)[:, None], logits, label, cpa6


def _cpa_term_np(label: np.ndarray, cpa6: list[np.ndarray]) -> float:
    priors = np.stack([_prior_np(lab, 6) for lab in label])
    return 0.15 * sum(_bce_mean_np(c, priors) for c in cpa6)


def test_agmr_loss_is_eml_plus_sobel_plus_cpa():
    out, lab, logits, label, cpa6 = _case(n_side=0)
    # L1 (Eq. 3.13) written out: mean alpha-focal - log(batch Dice coefficient)
    p = 1 / (1 + np.exp(-logits[:, 0]))
    focal = np.where(label == 1, -0.75 * (1 - p) ** 2 * np.log(p), -0.25 * p**2 * np.log(1 - p)).mean()
    l1 = focal - math.log((2 * (label * p).sum() + 1) / ((p * p).sum() + (label * label).sum() + 1))
    l2 = np.mean([np.abs(_sobel_magnitude_np(p[b]) - _sobel_magnitude_np(label[b])).mean() for b in range(2)])
    expected = l1 + l2 + _cpa_term_np(label, cpa6)
    loss = AGMRLoss(n_cpa=5)  # rel 1e-6: MONAI's FocalLoss, inside EMLLoss, is not exact to float64 precision
    assert loss(out, lab).item() == pytest.approx(expected, rel=1e-6)
    # eval mode: one channel, main terms only
    assert loss(out[:, :1], lab).item() == pytest.approx(l1 + l2, rel=1e-6)
    assert AGMRLoss(n_cpa=0)(out[:, :1], lab).item() == pytest.approx(l1 + l2, rel=1e-6)
    # CPA channels given as probabilities
    as_prob = torch.cat([out[:, :1], torch.sigmoid(out[:, 1:])], dim=1)
    assert AGMRLoss(cpa_logits=False)(as_prob, lab).item() == pytest.approx(expected, rel=1e-6)
    # n_side channels are skipped by Eq. 3.16
    with_side = torch.cat([out[:, :1], torch.randn(2, 2, 12, 12, dtype=out.dtype), out[:, 1:]], dim=1)
    assert AGMRLoss(n_side=2)(with_side, lab).item() == pytest.approx(expected, rel=1e-6)
    assert isinstance(loss.eml, EMLLoss)


def test_tsrl_loss_is_sum_of_tal_plus_cpa():
    out, lab, logits, label, cpa6 = _case(n_side=4, seed=1)
    focus = [target_focus_map(lab[b : b + 1], 4)[0, 0].numpy().ravel().tolist() for b in range(2)]
    gl = [label[b].ravel().tolist() for b in range(2)]
    tal = sum(_tal_np([logits[b, k].ravel().tolist() for b in range(2)], gl, focus) for k in range(5))
    expected = tal + _cpa_term_np(label, cpa6)
    loss = TSRLLoss()
    assert loss(out, lab).item() == pytest.approx(expected, rel=1e-8)
    as_prob = torch.cat([out[:, :5], torch.sigmoid(out[:, 5:])], dim=1)
    assert TSRLLoss(cpa_logits=False)(as_prob, lab).item() == pytest.approx(expected, rel=1e-8)
    main_only = _tal_np([logits[b, 0].ravel().tolist() for b in range(2)], gl, focus)
    assert loss(out[:, :1], lab).item() == pytest.approx(main_only, rel=1e-8)
    no_cpa = TSRLLoss(n_cpa=0)(out[:, :5], lab)
    assert no_cpa.item() == pytest.approx(tal, rel=1e-8)


def test_stroke_net_losses_gradient_good_bad_and_invalid():
    y = torch.zeros(2, 1, 24, 24)
    y[0, :, 5:13, 6:18] = 1
    y[1, :, 14:20, 2:8] = 1
    for loss, n_logit in ((AGMRLoss(), 1), (TSRLLoss(), 5)):
        good_logits = ((y * 2 - 1) * 3).repeat(1, n_logit, 1, 1)
        bad_logits = -good_logits
        pri = prior_location_map(y).repeat_interleave(4, 2).repeat_interleave(4, 3)
        good = torch.cat([good_logits, (2 * pri - 1).repeat(1, 5, 1, 1)], dim=1)  # CPA logits
        bad = torch.cat([bad_logits, (1 - 2 * pri).repeat(1, 5, 1, 1)], dim=1)
        assert loss(good, y) < loss(bad, y)
        x = (torch.randn(2, n_logit + 5, 24, 24) * 50).requires_grad_(True)
        value = loss(x, y)
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(x.grad).all()
        with pytest.raises(ValueError, match="channels"):
            loss(torch.rand(2, n_logit + 4, 24, 24), y)
        with pytest.raises(ValueError, match="label"):
            loss(torch.rand(2, 1, 24, 24), y[:, :, :20])
        with pytest.raises(ValueError, match="label"):
            loss(torch.rand(2, 1, 24, 24), y[:1])
        with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
            loss(torch.rand(2, 1, 24, 24, 3), y)
    for cls in (AGMRLoss, TSRLLoss):
        with pytest.raises(ValueError, match="n_side"):
            cls(n_side=-1)
        with pytest.raises(ValueError, match="n_cpa"):
            cls(n_cpa=1.5)
        with pytest.raises(ValueError, match="weight"):
            cls(cpa_weight=-0.1)
    with pytest.raises(ValueError, match="alpha"):
        TSRLLoss(alpha=2.0)
    with pytest.raises(ValueError, match="sobel_weight"):
        AGMRLoss(sobel_weight=-1)


@pytest.mark.parametrize("net_name", ["AGMRNet", "TSRLNet"])
def test_losses_take_the_networks_train_and_eval_outputs(net_name: str):
    """The default AGMRLoss/TSRLLoss match the channel layout of the networks (tiny widths, 96x96 input)."""
    from lesionlab.networks import nets
    from lesionlab.networks.nets.agmr_net import split_train_output

    torch.manual_seed(0)
    net = getattr(nets, net_name)(features=(4, 8, 8, 8, 8))
    loss = AGMRLoss() if net_name == "AGMRNet" else TSRLLoss()
    x = torch.randn(2, 4, 96, 96)
    y = torch.zeros(2, 1, 96, 96)
    y[0, :, 20:50, 30:70] = 1
    out = net.train()(x)
    value = loss(out, y)
    value.backward()
    assert torch.isfinite(value)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters() if p.requires_grad)
    # the CPA term is computed on the networks' logits, pooled back to 6x6 (exact for block upsampling)
    _logits, _sides, cpa = split_train_output(out.detach(), 1, loss.n_side, 5, grid=6)
    prior = prior_location_map(y)
    cpa_term = 0.15 * sum(torch.nn.functional.binary_cross_entropy_with_logits(c, prior) for c in cpa)
    assert loss.cpa(out.detach()[:, 1 + loss.n_side :], y).item() == pytest.approx(cpa_term.item(), rel=1e-5)
    with torch.no_grad():
        eval_out = net.eval()(x)
    assert eval_out.shape == (2, 1, 96, 96) and torch.isfinite(loss(eval_out, y))
