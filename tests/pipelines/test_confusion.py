"""Dataset-level confusion-matrix scores (MMSeg definitions) against hand-computed values."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from lesionlab.apps.figures import plot_confusion_matrix
from lesionlab.pipelines.confusion import ConfusionMatrixScores, confusion_matrix, segmentation_scores

# rows = truth, columns = prediction; class 2 is never predicted right, class 3 never occurs at all
CM = np.array([[50, 2, 3, 0], [4, 30, 6, 0], [1, 5, 0, 0], [0, 0, 0, 0]])


def test_scores_by_hand():
    s = segmentation_scores(CM, ["bg", "a", "b", "absent"])
    assert s["aAcc"] == pytest.approx(80 / 101)
    pc = s["per_class"]
    # IoU = TP / (row + col - TP)
    assert pc["bg"]["IoU"] == pytest.approx(50 / 60)
    assert pc["a"]["IoU"] == pytest.approx(30 / 47)
    assert pc["b"]["IoU"] == 0.0
    assert math.isnan(pc["absent"]["IoU"])
    assert pc["bg"]["Dice"] == pytest.approx(100 / 110)
    assert pc["a"]["Dice"] == pytest.approx(60 / 77)
    assert pc["a"]["Precision"] == pytest.approx(30 / 37)
    assert pc["a"]["Recall"] == pytest.approx(30 / 40) == pc["a"]["Acc"]
    assert pc["b"]["Precision"] == 0.0 and pc["b"]["Recall"] == 0.0
    assert math.isnan(pc["b"]["Fscore"])  # 0 * 0 / (0 + 0), NaN as in MMSeg, left out of mFscore
    assert pc["a"]["Fscore"] == pytest.approx(pc["a"]["Dice"])  # beta = 1
    assert s["mIoU"] == pytest.approx((50 / 60 + 30 / 47 + 0) / 3)  # the absent class is not averaged
    assert s["mDice"] == pytest.approx((100 / 110 + 60 / 77 + 0) / 3)
    assert s["mPrecision"] == pytest.approx((50 / 55 + 30 / 37 + 0) / 3)
    assert s["mRecall"] == pytest.approx((50 / 55 + 30 / 40 + 0) / 3)
    assert s["mFscore"] == pytest.approx((100 / 110 + 60 / 77) / 2)


def test_f2_score_by_hand():
    p, r = 30 / 37, 30 / 40
    s = segmentation_scores(CM[:3, :3], beta=2.0)
    assert s["per_class"]["1"]["Fscore"] == pytest.approx(5 * p * r / (4 * p + r))


def test_confusion_matrix_from_label_maps():
    target = np.array([[0, 0, 1], [2, 1, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    cm = confusion_matrix(pred, target, 3, ignore_index=255)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [0, 1, 0]])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix(pred, target, 3)  # 255 without ignore_index
    with pytest.raises(ValueError, match="same number"):
        confusion_matrix(pred[:1], target, 3)


@pytest.mark.parametrize("bad", [np.ones((2, 3)), -np.ones((2, 2))])
def test_invalid_matrix(bad):
    with pytest.raises(ValueError):
        segmentation_scores(bad)
    with pytest.raises(ValueError):
        segmentation_scores(np.ones((2, 2)), ["only one name"])


def _run(metric: ConfusionMatrixScores, batches):
    engine = Engine(lambda e, b: b)
    metric.attach(engine, "scores")
    engine.run(batches, max_epochs=1)
    return engine.state.metrics


def test_ignite_metric_accumulates_logits_over_batches():
    gen = torch.Generator().manual_seed(0)
    logits = [torch.randn(2, 3, 8, 8, generator=gen) for _ in range(3)]
    labels = [torch.randint(0, 3, (2, 1, 8, 8), generator=gen) for _ in range(3)]
    metrics = _run(ConfusionMatrixScores(3, ["bg", "a", "b"]), list(zip(logits, labels)))
    want_cm = sum(confusion_matrix(lg.argmax(1), lb[:, 0], 3) for lg, lb in zip(logits, labels))
    np.testing.assert_array_equal(np.array(metrics["confusion_matrix"]), want_cm)
    want = segmentation_scores(want_cm, ["bg", "a", "b"])
    assert metrics["mIoU"] == pytest.approx(want["mIoU"])
    assert metrics["Dice_a"] == pytest.approx(want["per_class"]["a"]["Dice"])
    assert metrics["aAcc"] == pytest.approx(want["aAcc"])


def test_ignite_metric_decollated_and_binary():
    # decollated per-sample lists (MONAI post-transforms), one-channel logits thresholded at sigmoid 0.5
    preds = [torch.tensor([[[2.0, -2.0], [0.5, -0.1]]]), torch.tensor([[[-3.0, 3.0], [1.0, 1.0]]])]
    labels = [torch.tensor([[[1, 0], [0, 0]]]), torch.tensor([[[0, 1], [1, 1]]])]
    metrics = _run(ConfusionMatrixScores(2), [(preds, labels)])
    # sample 1: pred [[1,0],[1,0]] vs [[1,0],[0,0]]; sample 2: pred [[0,1],[1,1]] vs same -> one FP
    np.testing.assert_array_equal(np.array(metrics["confusion_matrix"]), [[3, 1], [0, 4]])
    assert metrics["IoU_1"] == pytest.approx(4 / 5)


def test_ignite_metric_arguments():
    with pytest.raises(ValueError):
        ConfusionMatrixScores(1)
    with pytest.raises(ValueError):
        ConfusionMatrixScores(3, ["a", "b"])


def test_confusion_matrix_png(tmp_path):
    out = plot_confusion_matrix(CM, ["bg", "a", "b", "absent"], str(tmp_path / "cm.png"), title="test")
    from PIL import Image

    with Image.open(out) as im:
        assert im.size[0] > 200 and im.size[1] > 200
    assert not [p for p in tmp_path.iterdir() if p.name != "cm.png"]  # no temp file left behind
