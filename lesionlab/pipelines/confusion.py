"""Dataset-level segmentation scores from one accumulated confusion matrix, as MMSegmentation reports them.

Several papers report per-class and mean scores over a whole test set (seed 000 §6: aAcc, mIoU, mDice, mFscore,
mPrecision, mRecall; seed 001 §7: per-class IoU / precision / recall / Dice and their means, the paper's "mAP" being
mean precision). They are computed from a single ``C x C`` confusion matrix accumulated over every pixel of the set
(rows: ground-truth class, columns: predicted class), not averaged per image. With ``TP_c`` the diagonal,
``FN_c = row_c - TP_c`` and ``FP_c = col_c - TP_c``:

- aAcc = ``sum(TP) / N`` (pixel accuracy over all classes),
- IoU_c = ``TP / (TP + FP + FN)``, Dice_c = ``2TP / (2TP + FP + FN)``,
- Precision_c = ``TP / (TP + FP)``, Recall_c = Acc_c = ``TP / (TP + FN)``,
- Fscore_c = ``(1 + b^2) P R / (b^2 P + R)`` (b = 1: equal to Dice_c),
- each ``m<score>`` is the mean over classes ignoring NaN, a class's score being NaN when its denominator is 0
  (e.g. a class absent from both truth and prediction), as in MMSeg's ``nanmean``.

:class:`ConfusionMatrixScores` accumulates the matrix in an Ignite evaluator (it extends
``ignite.metrics.ConfusionMatrix``)
and returns every score in ``engine.state.metrics``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from ignite.metrics import ConfusionMatrix
from ignite.metrics.metric import reinit__is_reduced, sync_all_reduce

__all__ = ["confusion_matrix", "segmentation_scores", "ConfusionMatrixScores", "SCORE_NAMES"]

#: per-class score names, in report order (``m`` + name is the class mean)
SCORE_NAMES = ("IoU", "Dice", "Fscore", "Precision", "Recall", "Acc")


def confusion_matrix(
    pred: np.ndarray | torch.Tensor, target: np.ndarray | torch.Tensor, num_classes: int,
    ignore_index: int | None = None,
) -> np.ndarray:
    """``C x C`` int64 confusion matrix of two label maps of the same shape (rows truth, columns prediction).

    Args:
        pred: predicted class index per pixel.
        target: true class index per pixel.
        num_classes: number of classes ``C``.
        ignore_index: a target value whose pixels are left out (e.g. 255), or None.

    Raises:
        ValueError: shapes differ, or a label lies outside ``[0, C)`` (other than ``ignore_index``).
    """
    p = np.asarray(pred.detach().cpu() if isinstance(pred, torch.Tensor) else pred).astype(np.int64).ravel()
    t = np.asarray(target.detach().cpu() if isinstance(target, torch.Tensor) else target).astype(np.int64).ravel()
    if p.shape != t.shape:
        raise ValueError(f"prediction and target must have the same number of pixels, got {p.size} and {t.size}.")
    if ignore_index is not None:
        keep = t != ignore_index
        p, t = p[keep], t[keep]
    for name, a in (("prediction", p), ("target", t)):
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise ValueError(f"{name} holds class ids outside [0, {num_classes}): {np.unique(a).tolist()[:10]}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)


def segmentation_scores(
    cm: np.ndarray | torch.Tensor, class_names: Sequence[str] | None = None, beta: float = 1.0
) -> dict[str, Any]:
    """Every MMSeg score of a confusion matrix: ``aAcc``, the ``m<score>`` means and a per-class table.

    Args:
        cm: ``C x C`` confusion matrix (rows truth, columns prediction), counts.
        class_names: ``C`` names for the per-class table (default ``"0"``, ``"1"``, ...).
        beta: F-score beta.

    Returns:
        ``{"aAcc": float, "mIoU": float, "mDice": ..., "mFscore", "mPrecision", "mRecall", "mAcc",
        "per_class": {name: {"IoU": ..., "Dice": ..., ...}}}``; scores are fractions in [0, 1], NaN where undefined.

    Raises:
        ValueError: ``cm`` is not square, has negative entries, or the names do not match its size.
    """
    m = np.asarray(cm.detach().cpu() if isinstance(cm, torch.Tensor) else cm, dtype=np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise ValueError(f"the confusion matrix must be square, got shape {m.shape}.")
    if (m < 0).any():
        raise ValueError("the confusion matrix has negative counts.")
    names = [str(i) for i in range(m.shape[0])] if class_names is None else [str(n) for n in class_names]
    if len(names) != m.shape[0]:
        raise ValueError(f"{len(names)} class names for a {m.shape[0]}-class confusion matrix.")
    tp = np.diag(m)
    row, col = m.sum(1), m.sum(0)
    fp, fn = col - tp, row - tp
    precision, recall = _ratio(tp, tp + fp), _ratio(tp, tp + fn)
    b2 = beta * beta
    per = {
        "IoU": _ratio(tp, tp + fp + fn),
        "Dice": _ratio(2 * tp, 2 * tp + fp + fn),
        "Fscore": _ratio((1 + b2) * precision * recall, b2 * precision + recall),
        "Precision": precision,
        "Recall": recall,
        "Acc": recall,
    }
    total = m.sum()
    out: dict[str, Any] = {"aAcc": float(tp.sum() / total) if total > 0 else float("nan")}
    for key in SCORE_NAMES:
        vals = per[key]
        out[f"m{key}"] = float(np.nanmean(vals)) if np.isfinite(vals).any() else float("nan")
    out["per_class"] = {n: {k: float(per[k][i]) for k in SCORE_NAMES} for i, n in enumerate(names)}
    return out


def _drop_channel(t: torch.Tensor) -> torch.Tensor:
    """``(B, 1, ...)`` -> indices; ``(B, C, ...)`` logits / probabilities / one-hot -> arg-max over channels."""
    return t[:, 0].long() if t.shape[1] == 1 else t.argmax(1)


class ConfusionMatrixScores(ConfusionMatrix):
    """Ignite metric: accumulates a ``C x C`` confusion matrix over an evaluation and returns every MMSeg score.

    Accepts the engine output as ``(y_pred, y)`` where each is a batch tensor or a list of per-sample tensors (MONAI's
    decollated output): ``y_pred`` as logits / probabilities / one-hot ``(B, C, ...)`` (arg-maxed) or class indices
    ``(B, 1, ...)``; ``y`` as class indices ``(B, 1, ...)`` / ``(B, ...)`` or one-hot ``(B, C, ...)``. A binary
    model with one output channel is thresholded at ``threshold`` (on the sigmoid of logits).

    ``compute()`` returns the dict of :func:`segmentation_scores` flattened for Ignite: ``aAcc``, ``mIoU``, ...,
    ``IoU_<class>``, ``Dice_<class>``, ... and ``confusion_matrix`` (the int64 matrix as a nested list), so
    ``engine.state.metrics["mIoU"]`` works with MONAI's checkpoint and stats handlers.

    Args:
        num_classes: number of classes ``C``.
        class_names: names used in the per-class keys.
        ignore_index: target value left out.
        binary_logits: for one-channel predictions, whether they are logits (sigmoid first) or probabilities.
        threshold: foreground threshold of one-channel predictions.
        output_transform: Ignite output transform giving ``(y_pred, y)``.
        device: where the matrix is accumulated.
    """

    def __init__(
        self,
        num_classes: int,
        class_names: Sequence[str] | None = None,
        ignore_index: int | None = None,
        binary_logits: bool = True,
        threshold: float = 0.5,
        output_transform: Callable = lambda x: x,
        device: str | torch.device = "cpu",
    ) -> None:
        if num_classes < 2:
            raise ValueError(f"num_classes must be at least 2, got {num_classes}.")
        if class_names is not None and len(class_names) != num_classes:
            raise ValueError(f"{len(class_names)} class names for {num_classes} classes.")
        self.class_names = [str(n) for n in class_names] if class_names is not None else None
        self.binary_logits = binary_logits
        self.threshold = threshold
        self._ignore = ignore_index
        super().__init__(num_classes, output_transform=output_transform, device=device)

    @reinit__is_reduced
    def update(self, output: Sequence[Any]) -> None:
        y_pred, y = output[0], output[1]
        if isinstance(y_pred, (list, tuple)):
            y_pred = torch.stack([torch.as_tensor(v) for v in y_pred])
        if isinstance(y, (list, tuple)):
            y = torch.stack([torch.as_tensor(v) for v in y])
        y_pred, y = torch.as_tensor(y_pred), torch.as_tensor(y)
        if y_pred.ndim < 2:
            raise ValueError(f"y_pred must be (B, C, ...), got shape {tuple(y_pred.shape)}.")
        if y_pred.shape[1] == 1 and y_pred.is_floating_point():
            prob = torch.sigmoid(y_pred) if self.binary_logits else y_pred
            pred_idx = (prob[:, 0] > self.threshold).long()
        else:
            pred_idx = _drop_channel(y_pred)
        # the label has a channel axis when it has one dimension more than the index map
        true_idx = _drop_channel(y) if y.ndim == pred_idx.ndim + 1 else y.long()
        if true_idx.shape != pred_idx.shape:
            raise ValueError(f"prediction map {tuple(pred_idx.shape)} and label map {tuple(true_idx.shape)} differ.")
        if self._ignore is not None:
            keep = true_idx != self._ignore
            pred_idx, true_idx = pred_idx[keep], true_idx[keep]
        cm = confusion_matrix(pred_idx, true_idx, self.num_classes)
        self.confusion_matrix += torch.as_tensor(cm, dtype=torch.int64, device=self.confusion_matrix.device)
        self._num_examples += int(y.shape[0]) if y.ndim else 1

    @sync_all_reduce("confusion_matrix", "_num_examples")
    def compute(self) -> Mapping[str, Any]:  # type: ignore[override]
        cm = self.confusion_matrix.cpu().numpy()
        scores = segmentation_scores(cm, self.class_names)
        flat: dict[str, Any] = {k: v for k, v in scores.items() if k != "per_class"}
        for name, row in scores["per_class"].items():
            for key, value in row.items():
                flat[f"{key}_{name}"] = value
        flat["confusion_matrix"] = cm.tolist()
        return flat
