"""Glomerulus training pieces checked by hand: loss terms, lambda ramp, warm-up + poly schedule, resize inferer,
confusion-matrix scores from a hand-built matrix and the report files."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events

from lesionlab.pipelines.confusion import segmentation_scores
from lesionlab.pipelines.glomeruli import (
    ConfusionReportHandler,
    ConfusionScore,
    DiceWeightHandler,
    PSPNetLoss,
    ResizeInferer,
    WarmupPolyLR,
)


def _hand_terms(logits: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """Softmax CE and per-class batch soft Dice (smooth 1e-5) written out."""
    p = torch.softmax(logits, 1)
    y = torch.cat([(target == 0), (target == 1)], 1).float()
    ce = -(y * torch.log(p)).sum(1).mean()
    inter = (p * y).sum(dim=(0, 2, 3))
    den = p.sum(dim=(0, 2, 3)) + y.sum(dim=(0, 2, 3))
    dice = (1 - (2 * inter + 1e-5) / (den + 1e-5)).mean()
    return float(ce), float(dice)


def test_loss_terms_by_hand():
    torch.manual_seed(0)
    main, aux = torch.randn(2, 2, 4, 4), torch.randn(2, 2, 4, 4)
    target = (torch.rand(2, 1, 4, 4) > 0.7).long()
    ce, dice = _hand_terms(main, target)
    ce_aux, _ = _hand_terms(aux, target)
    stacked = torch.stack([main, aux], 1)
    assert PSPNetLoss(lambda_dice=0.0)(stacked, target).item() == pytest.approx(ce + 0.4 * ce_aux, rel=1e-5)
    assert PSPNetLoss(lambda_dice=1.0)(stacked, target).item() == pytest.approx(ce + dice + 0.4 * ce_aux, rel=1e-5)
    assert PSPNetLoss(lambda_dice=0.5)(main, target).item() == pytest.approx(ce + 0.5 * dice, rel=1e-5)
    # a good prediction scores below a bad one
    good = torch.where(target.bool(), 1.0, -1.0).repeat(1, 2, 1, 1) * torch.tensor([-4.0, 4.0])[None, :, None, None]
    assert PSPNetLoss()(good, target) < PSPNetLoss()(-good, target)
    with pytest.raises(ValueError, match="class indices"):
        PSPNetLoss()(main, target[:, 0])
    with pytest.raises(ValueError):
        PSPNetLoss(lambda_dice=-1)


def test_lambda_ramp_follows_trainer_iteration():
    loss = PSPNetLoss(lambda_dice=1.0, ramp_iterations=100)
    engine = Engine(lambda e, b: None)
    DiceWeightHandler(loss).attach(engine)
    seen = []
    engine.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(loss.current_lambda()))
    engine.run([0] * 10, max_epochs=1)
    assert seen == pytest.approx([i / 100 for i in range(10)])
    loss.iteration = 500
    assert loss.current_lambda() == 1.0


def test_warmup_poly_schedule_by_hand():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01, momentum=0.9, weight_decay=5e-4)
    sched = WarmupPolyLR(opt, total_iterations=24000, warmup_iterations=500, warmup_start_factor=1e-6)
    lrs = {}
    for t in range(24002):
        if t in (0, 250, 500, 12250, 24000, 24001):
            lrs[t] = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
    assert lrs[0] == pytest.approx(0.01 * 1e-6)
    assert lrs[250] == pytest.approx(0.01 * (1e-6 + (1 - 1e-6) * 0.5))
    assert lrs[500] == pytest.approx(0.01)
    assert lrs[12250] == pytest.approx((0.01 - 1e-4) * 0.5**0.9 + 1e-4)
    assert lrs[24000] == pytest.approx(1e-4) and lrs[24001] == pytest.approx(1e-4)
    # resumable: a new scheduler loaded from the state dict continues the same curve
    state = sched.state_dict()
    opt2 = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.01)
    sched2 = WarmupPolyLR(opt2, total_iterations=24000)
    sched2.load_state_dict(state)
    assert sched2.get_lr()[0] == pytest.approx(1e-4)
    with pytest.raises(ValueError):
        WarmupPolyLR(opt2, total_iterations=100, warmup_iterations=100)


def test_resize_inferer_runs_at_training_scale():
    seen = []

    def net(x):
        seen.append(tuple(x.shape))
        return x[:, :2] * 2

    out = ResizeInferer(8)(torch.ones(1, 3, 32, 32), net)
    assert seen == [(1, 3, 8, 8)] and out.shape == (1, 2, 32, 32)
    torch.testing.assert_close(out, torch.full((1, 2, 32, 32), 2.0))


def test_scores_from_hand_built_confusion_matrix(tmp_path):
    """rows truth, columns prediction: bg 90 right / 10 wrong, glomerulus 5 missed / 15 right."""
    cm = np.array([[90, 10], [5, 15]])
    s = segmentation_scores(cm, ["background", "glomerulus"])
    g, b = s["per_class"]["glomerulus"], s["per_class"]["background"]
    assert g["IoU"] == pytest.approx(15 / 30) and b["IoU"] == pytest.approx(90 / 105)
    assert g["Dice"] == pytest.approx(30 / 45) and b["Dice"] == pytest.approx(180 / 195)
    assert g["Precision"] == pytest.approx(15 / 25) and g["Recall"] == pytest.approx(15 / 20)
    assert s["aAcc"] == pytest.approx(105 / 120)
    assert s["mIoU"] == pytest.approx((0.5 + 90 / 105) / 2)
    assert s["mDice"] == pytest.approx((30 / 45 + 180 / 195) / 2)
    # the same matrix accumulated by the Ignite metric over two batches, and the report files
    pred = torch.tensor([0] * 90 + [1] * 10 + [0] * 5 + [1] * 15)
    true = torch.tensor([0] * 100 + [1] * 20)
    logits = torch.stack([1 - pred, pred], 0).float()[None, :, :, None]  # (1, 2, 120, 1)
    metric = ConfusionScore(2, score="IoU_glomerulus", class_names=["background", "glomerulus"])
    metric.update((logits[:, :, :60], true[None, None, :60, None]))
    metric.update((logits[:, :, 60:], true[None, None, 60:, None]))
    assert metric.compute() == pytest.approx(0.5)
    engine = Engine(lambda e, b: None)
    engine.state.metrics["confusion_matrix"] = cm.tolist()
    plotted = []
    ConfusionReportHandler(str(tmp_path), plot=lambda *a, **k: plotted.append(a[2]))(engine)
    saved = json.load(open(tmp_path / "scores.json"))
    assert saved["mIoU"] == pytest.approx(s["mIoU"]) and saved["confusion_matrix"] == cm.tolist()
    assert "| 50.00 | 66.67 |" in (tmp_path / "scores.md").read_text() and plotted
    assert not math.isnan(saved["mFscore"])
