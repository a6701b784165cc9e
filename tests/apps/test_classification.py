"""Classification report (hand-computed values), the Ignite output transform, ROC / Grad-CAM figures, and the
Table 1 markdown of ``lesionlab experiments glomerulus-cls``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lesionlab.apps.classification import classification_report, gradcam_figure, plot_roc_curves
from lesionlab.pipelines.classification import class_scores_and_indices

NAMES = ["Normal", "FSG", "MsPGN", "CGN"]
# 6 crops: truths 0 0 1 2 3 3; predictions (argmax) 0 1 1 2 3 0
PROBS = np.array([
    [0.7, 0.1, 0.1, 0.1],
    [0.3, 0.4, 0.2, 0.1],
    [0.1, 0.6, 0.2, 0.1],
    [0.1, 0.1, 0.7, 0.1],
    [0.1, 0.1, 0.1, 0.7],
    [0.5, 0.1, 0.1, 0.3],
])
LABELS = np.array([0, 0, 1, 2, 3, 3])


def test_report_against_hand_computation():
    r = classification_report(PROBS, LABELS, NAMES)
    assert r["accuracy"] == pytest.approx(4 / 6)
    # Normal: predicted for crops 0 and 5, right once -> P = 1/2; 2 true Normals, 1 found -> R = 1/2
    assert r["per_class"]["Normal"]["precision"] == pytest.approx(0.5)
    assert r["per_class"]["Normal"]["recall"] == pytest.approx(0.5)
    # FSG: predicted for crops 1 and 2, right once -> P = 1/2, R = 1, F1 = 2/3
    assert r["per_class"]["FSG"]["f1"] == pytest.approx(2 / 3)
    # CGN AUC: positives 0.7, 0.3; negatives 0.1 x 4 -> every positive above every negative -> 1
    assert r["per_class"]["CGN"]["auc"] == pytest.approx(1.0)
    # Normal AUC: positives 0.7, 0.3; negatives 0.1, 0.1, 0.1, 0.5 -> pairs won 4 + 3 = 7 of 8
    assert r["per_class"]["Normal"]["auc"] == pytest.approx(7 / 8)
    assert r["confusion_matrix"] == [[1, 1, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0], [1, 0, 0, 1]]
    with pytest.raises(ValueError):
        classification_report(PROBS[:, :3], LABELS, NAMES)


def test_ignite_accuracy_is_multiclass_with_the_output_transform():
    from ignite.metrics import Accuracy

    out = [{"prob": torch.tensor(p), "label": torch.tensor(int(y))} for p, y in zip(PROBS, LABELS)]
    onehot = [{"prob": torch.tensor(p), "label": torch.nn.functional.one_hot(torch.tensor(int(y)), 4)}
              for p, y in zip(PROBS, LABELS)]
    for items in (out, onehot):
        acc = Accuracy()
        acc.update(class_scores_and_indices()(items))
        assert acc.compute() == pytest.approx(4 / 6)


def test_roc_and_gradcam_figures(tmp_path):
    from lesionlab.networks.nets import SEResNet50Improved

    png = plot_roc_curves(PROBS, LABELS, NAMES, str(tmp_path / "roc.png"))
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    net = SEResNet50Improved(layers=(1, 1, 1, 1), channels=(4, 8, 8, 16), stem_channels=8, reduction=4)
    png = gradcam_figure(net, torch.randn(2, 3, 64, 64), [0, 3], NAMES, str(tmp_path / "cam.png"), "stages")
    assert open(png, "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_table_markdown_marks_rows_without_networks_not_run():
    from lesionlab.apps.glomerulus_experiments import GLOMERULUS_TABLES, _markdown

    spec = GLOMERULUS_TABLES["1"]
    report = classification_report(PROBS, LABELS, NAMES)
    results = {"Improved SE-ResNet50, reading B (default)": {"report": report, "params": 22282356,
                                                             "flops_torch": 4.0e9}}
    md = _markdown(spec, results, {}, "Protocol: test")
    assert "| VGG16 | not run" in md and "| Inception V3 | not run" in md
    assert "0.6667" in md and "22,282,356" in md and "0.9693" in md and "Protocol: test" in md
