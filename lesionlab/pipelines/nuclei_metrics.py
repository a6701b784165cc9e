"""Evaluation glue for the nuclei bundle: the confusion-matrix scores as a key metric and a report in the thesis's
columns (seed 001 §7: per-class IoU, precision, recall, Dice; mIoU, "mAP" = mean precision, mean recall, Dice).

The scores themselves are :mod:`lesionlab.pipelines.confusion` (one confusion matrix over the whole test split,
means over all classes including background, NaN-skipping for classes absent from truth and prediction).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from ignite.engine import Engine, Events

from lesionlab.pipelines.confusion import ConfusionMatrixScores, segmentation_scores
from lesionlab.utils import atomic_write_text

__all__ = ["ConfusionKeyMetric", "paper_columns", "scores_markdown", "per_image_scores", "ConfusionReportHandler"]

#: the thesis's overall columns -> keys of :func:`segmentation_scores`
PAPER_COLUMNS = {"Dice": "mDice", "mIoU": "mIoU", "mAP": "mPrecision", "Mean recall": "mRecall"}


class ConfusionKeyMetric(ConfusionMatrixScores):
    """:class:`ConfusionMatrixScores` whose own entry in ``engine.state.metrics`` is one score (``key``, default
    mIoU), so MONAI's best-checkpoint and stats handlers can use it as the key metric; every other score stays in
    ``engine.state.metrics`` under its own name and the whole result under ``<name>_all``."""

    def __init__(self, *args: Any, key: str = "mIoU", **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.key = key

    def completed(self, engine: Engine, name: str) -> None:
        result = self.compute()
        for k, v in result.items():
            engine.state.metrics[k] = v
        engine.state.metrics[f"{name}_all"] = result
        engine.state.metrics[name] = result[self.key]


def _paper_precision(row: dict[str, float]) -> float:
    """A class present in the truth but never predicted has precision 0 (the thesis's convention: its all-background
    rows have mAP = background share / C), not NaN as in MMSeg; classes absent from truth and prediction stay NaN."""
    p, r = row["Precision"], row["Recall"]
    return p if np.isfinite(p) else (0.0 if np.isfinite(r) else float("nan"))


def paper_columns(scores: dict[str, Any]) -> dict[str, float]:
    """``{"Dice", "mIoU", "mAP", "Mean recall"}`` from :func:`segmentation_scores` output.

    Dice is the mean per-class Dice of the global confusion matrix (the thesis's own "Dice" is an unexplained,
    optimistic aggregate, spec §7); mAP is the mean precision with never-predicted classes counted as 0.
    """
    out = {col: float(scores[key]) for col, key in PAPER_COLUMNS.items()}
    prec = [_paper_precision(row) for row in scores["per_class"].values()]
    out["mAP"] = float(np.nanmean(prec)) if np.isfinite(prec).any() else float("nan")
    return out


def _f(v: float) -> str:
    return "n/a" if v is None or not np.isfinite(v) else f"{v:.4f}"


def scores_markdown(scores: dict[str, Any], title: str = "") -> str:
    """Markdown: the paper's overall columns, then per-class IoU / precision / recall / Dice."""
    cols = paper_columns(scores)
    lines = [f"### {title}", ""] if title else []
    lines += ["| " + " | ".join(cols) + " | aAcc |", "|" + "---|" * (len(cols) + 1),
              "| " + " | ".join(_f(v) for v in cols.values()) + f" | {_f(scores['aAcc'])} |", "",
              "| Class | IoU | Precision | Recall | Dice |", "|---|---|---|---|---|"]
    for name, row in scores["per_class"].items():
        lines.append(f"| {name} | {_f(row['IoU'])} | {_f(_paper_precision(row))} | {_f(row['Recall'])} | "
                     f"{_f(row['Dice'])} |")
    return "\n".join(lines) + "\n"


def _index_maps(t: Any) -> np.ndarray:
    """Class-index maps ``(B, ...)`` from logits / probabilities ``(B, C, ...)`` (arg-max; one channel: > 0 for
    logits) or index maps ``(B, 1, ...)``."""
    import torch

    t = torch.as_tensor(t).detach().cpu()
    if t.shape[1] > 1:
        return t.argmax(1).numpy()
    return (t[:, 0] > 0).long().numpy() if t.is_floating_point() and t.min() < 0 else t[:, 0].long().numpy()


def per_image_scores(cm: np.ndarray) -> dict[str, float]:
    """mIoU and mean Dice of one image's confusion matrix over the classes present in its truth or prediction."""
    s = segmentation_scores(cm)
    return {"mIoU": s["mIoU"], "mDice": s["mDice"]}


class ConfusionReportHandler:
    """Writes ``scores.json`` (all scores + the confusion matrix), ``scores.md`` and ``per_image.json`` (per-image
    mIoU / mean Dice, for paired tests between runs) when an evaluation completes.

    Args:
        output_dir: report folder.
        class_names: class names in index order.
        title: heading of the markdown report.
        cm_key: ``engine.state.metrics`` entry holding the confusion matrix (from :class:`ConfusionKeyMetric`).
    """

    def __init__(self, output_dir: str, class_names: Sequence[str], title: str = "Evaluation",
                 cm_key: str = "confusion_matrix") -> None:
        self.output_dir = output_dir
        self.class_names = [str(n) for n in class_names]
        self.title = title
        self.cm_key = cm_key

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._collect)
        engine.add_event_handler(Events.COMPLETED, self)

    def _reset(self, engine: Engine) -> None:
        self._images: list[dict[str, float]] = []

    def _collect(self, engine: Engine) -> None:
        from lesionlab.pipelines.confusion import confusion_matrix

        out = engine.state.output
        decollated = isinstance(out, list)  # MONAI's default: one dict per sample, without the batch axis
        for item in out if decollated else [out]:
            pred, label = item["pred"], item["label"]
            if decollated:
                pred, label = pred[None], label[None]
            p, t = _index_maps(pred), _index_maps(label)
            for k in range(p.shape[0]):
                self._images.append(per_image_scores(confusion_matrix(p[k], t[k], len(self.class_names))))

    def __call__(self, engine: Engine) -> None:
        cm = np.asarray(engine.state.metrics[self.cm_key], dtype=np.int64)
        scores = segmentation_scores(cm, self.class_names)
        scores["confusion_matrix"] = cm.tolist()
        scores["class_names"] = self.class_names
        os.makedirs(self.output_dir, exist_ok=True)
        atomic_write_text(os.path.join(self.output_dir, "scores.json"), json.dumps(scores, indent=2) + "\n")
        atomic_write_text(os.path.join(self.output_dir, "scores.md"), scores_markdown(scores, self.title))
        atomic_write_text(os.path.join(self.output_dir, "per_image.json"),
                          json.dumps(getattr(self, "_images", []), indent=1) + "\n")
