"""The nuclei report columns (seed 001 §7) and the confusion key metric, against hand-computed values."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from ignite.engine import Engine

from lesionlab.pipelines.confusion import segmentation_scores
from lesionlab.pipelines.nuclei_metrics import ConfusionKeyMetric, ConfusionReportHandler, paper_columns


def test_all_background_prediction_matches_the_thesis_convention():
    # 84 % background, two nucleus classes never predicted: mIoU = 0.84 / 3, mAP = 0.84 / 3, recall = 1 / 3
    cm = np.array([[84, 0, 0], [10, 0, 0], [6, 0, 0]])
    cols = paper_columns(segmentation_scores(cm))
    assert cols["mIoU"] == pytest.approx(0.84 / 3)
    assert cols["mAP"] == pytest.approx(0.84 / 3)  # never-predicted classes count 0 (MMSeg would give 0.84)
    assert cols["Mean recall"] == pytest.approx(1 / 3)
    assert cols["Dice"] == pytest.approx((2 * 84 / (84 + 100)) / 3)


def test_class_absent_from_truth_and_prediction_is_skipped():
    cm = np.array([[5, 1, 0], [1, 3, 0], [0, 0, 0]])
    cols = paper_columns(segmentation_scores(cm))
    assert cols["mAP"] == pytest.approx((5 / 6 + 3 / 4) / 2)
    assert cols["mIoU"] == pytest.approx((5 / 7 + 3 / 5) / 2)


def _engine(outputs):
    it = iter(outputs)
    return Engine(lambda e, b: next(it))


def test_key_metric_and_report(tmp_path):
    pred = torch.tensor([[[[0, 1], [2, 2]]]])
    label = torch.tensor([[[[0, 1], [1, 2]]]])
    logits = torch.nn.functional.one_hot(pred[:, 0], 3).permute(0, 3, 1, 2).float()
    engine = _engine([{"pred": logits, "label": label}])
    ConfusionKeyMetric(3, ["bg", "a", "b"], output_transform=lambda o: (o["pred"], o["label"])).attach(engine, "v")
    ConfusionReportHandler(str(tmp_path), ["bg", "a", "b"], "t").attach(engine)
    engine.run([0], max_epochs=1)
    m = engine.state.metrics
    assert m["v"] == pytest.approx((1 + 0.5 + 0.5) / 3) and m["v"] == m["mIoU"]
    scores = json.load(open(tmp_path / "scores.json"))
    assert scores["confusion_matrix"] == [[1, 0, 0], [0, 1, 1], [0, 0, 1]]
    assert json.load(open(tmp_path / "per_image.json")) == [{"mIoU": pytest.approx(2 / 3), "mDice": pytest.approx(
        (1 + 2 / 3 + 2 / 3) / 3)}]
    assert "| a | 0.5000 | 1.0000 | 0.5000 | 0.6667 |" in (tmp_path / "scores.md").read_text()
