"""Test-set evaluation of the app: images paired with masks by file name, one confusion matrix over all pixels.

Scores are the project's dataset-level confusion-matrix scores (:mod:`lesionlab.pipelines.confusion`, as in
seed 000 §6: the matrix is accumulated over every pixel of every pair, then IoU, Dice, precision, recall and accuracy
are computed per class, with aAcc and the class means). The heat map is :func:`lesionlab.apps.figures.plot_confusion_
matrix`.

Pairing: an image and a mask pair when their names agree after removing the suffix and a mask marker (``_mask``,
``-mask``, ``_label``, ``_seg``, ``_gt``; case-insensitive), e.g. ``tile_01.png`` with ``tile_01_mask.png`` or with a
``tile_01.png`` uploaded as a mask.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lesionlab.pipelines.confusion import confusion_matrix, segmentation_scores

__all__ = ["Pairing", "pair_files", "pair_key", "EvaluationRun", "scores_table", "scores_csv"]

_MASK_MARKER = re.compile(r"([_\-. ](mask|masks|label|labels|seg|gt|annotation))$", re.IGNORECASE)
_SUFFIX = re.compile(r"(\.nii\.gz|\.[A-Za-z0-9]+)$")


def pair_key(name: str) -> str:
    """The name an image and its mask share: no folder, no suffix, no mask marker, lower case."""
    stem = _SUFFIX.sub("", name.replace("\\", "/").split("/")[-1])
    return _MASK_MARKER.sub("", stem).lower()


@dataclass
class Pairing:
    """Result of :func:`pair_files`: ``pairs`` as (image name, mask name), and the names left without a partner."""

    pairs: list[tuple[str, str]]
    unpaired_images: list[str]
    unpaired_masks: list[str]
    duplicates: list[str] = field(default_factory=list)


def pair_files(images: Iterable[str], masks: Iterable[str]) -> Pairing:
    """Pair image and mask file names by :func:`pair_key`; report unpaired names and keys used twice."""
    def index(names: Iterable[str]) -> tuple[dict[str, str], list[str]]:
        out: dict[str, str] = {}
        dup = []
        for n in names:
            k = pair_key(n)
            if k in out:
                dup.append(n)
            else:
                out[k] = n
        return out, dup

    img, dup_i = index(images)
    msk, dup_m = index(masks)
    pairs = [(img[k], msk[k]) for k in sorted(img) if k in msk]
    return Pairing(pairs, sorted(img[k] for k in img if k not in msk), sorted(msk[k] for k in msk if k not in img),
                   dup_i + dup_m)


class EvaluationRun:
    """Accumulates one confusion matrix over (prediction, mask) pairs and keeps per-file notes.

    Args:
        class_names: ``{class index: name}`` of the task, background included.
    """

    def __init__(self, class_names: Mapping[int, str]) -> None:
        self.num_classes = max(max(class_names) + 1, 2)
        self.names = [class_names.get(i, f"class {i}") for i in range(self.num_classes)]
        self.cm = np.zeros((self.num_classes, self.num_classes), dtype=np.int64)
        self.rows: list[dict] = []

    def add(self, name: str, pred: np.ndarray, mask: np.ndarray) -> dict:
        """Add one pair (label maps of the same shape); return its own row (pixels, Dice of each foreground class)."""
        if pred.shape != mask.shape:
            raise ValueError(f"prediction {list(pred.shape)} and mask {list(mask.shape)} differ in size")
        cm = confusion_matrix(pred, mask, self.num_classes)
        self.cm += cm
        s = segmentation_scores(cm, self.names)
        row = {"image": name, "pixels": int(mask.size), "aAcc": s["aAcc"]}
        for n in self.names[1:]:
            row[f"Dice {n}"] = s["per_class"][n]["Dice"]
        self.rows.append(row)
        return row

    @property
    def scores(self) -> dict:
        return segmentation_scores(self.cm, self.names)


def scores_table(cm: np.ndarray, names: Sequence[str]) -> list[dict]:
    """Per-class rows (IoU, Dice, Precision, Recall, Accuracy, in %) and a ``mean`` row of a confusion matrix.

    IoU, Dice, Precision and Recall come from :func:`segmentation_scores`; Accuracy is seed 000's eq. 4-1 for each
    class against the rest, ``(TP + TN) / (P + N)`` = ``(N - FP - FN) / N`` (MMSeg's per-class "Acc" equals Recall, so
    it is not repeated).
    """
    scores = segmentation_scores(cm, names)
    m = np.asarray(cm, dtype=np.float64)
    total = m.sum()
    tp = np.diag(m)
    acc = (total - (m.sum(0) - tp) - (m.sum(1) - tp)) / total if total else np.full(len(names), np.nan)

    def pct(v: float) -> float:
        return round(100.0 * float(v), 2) if np.isfinite(v) else float("nan")

    keys = ("IoU", "Dice", "Precision", "Recall")
    rows = [{"class": n, **{k: pct(scores["per_class"][n][k]) for k in keys}, "Accuracy": pct(acc[i])}
            for i, n in enumerate(names)]
    rows.append({"class": "mean", **{k: pct(scores[f"m{k}"]) for k in keys}, "Accuracy": pct(np.nanmean(acc))})
    return rows


def scores_csv(rows: Sequence[Mapping], extra: Mapping[str, float] | None = None) -> str:
    """The metrics table as CSV text (plus ``# name,value`` lines for overall scores such as aAcc)."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]))
    w.writeheader()
    w.writerows(rows)
    for k, v in (extra or {}).items():
        buf.write(f"# {k},{v}\n")
    return buf.getvalue()
