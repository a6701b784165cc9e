"""Renogram pipeline pieces: datalist split by patient, per-image metrics (seed 003 §6), evaluation handler, and the
clinical read-out (split function / relative uptake and time-activity curves per kidney).

Metrics (eqs. 6-10) per image, from MONAI: the confusion matrix (``get_confusion_matrix``) gives precision, recall
(sensitivity) and accuracy (``compute_confusion_matrix_metric``), ``DiceMetric`` the Dice coefficient and
``MeanIoU`` the Jaccard index; the table reports means over images and the pooled values over the test set (the
paper's Dice and its P/R/J disagree slightly as if computed in these two ways, spec §6).

Split function (differential renal function): the parenchyma mask is split into the two kidneys (the two largest
connected components, left/right by their centroid column; in the posterior view the patient's left kidney is on
the image's left). In the uptake window (default 60-120 s after the start of acquisition) each kidney's counts are
summed over its parenchyma ROI, minus its background: the mean count of a ring 1-3 pixels outside the kidney
(away from the other kidney) times the ROI's pixel count. The split is each kidney's share of the two corrected
sums, in %. The time-activity curve of a kidney is its background-corrected count rate (counts/s) per frame.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.metrics import DiceMetric, MeanIoU, compute_confusion_matrix_metric, get_confusion_matrix

from lesionlab.data.datalist import split_subjects
from lesionlab.errors import DataError
from lesionlab.pipelines.metrics import case_metrics, write_reports
from lesionlab.utils import atomic_path, atomic_write_text, save_figure

__all__ = [
    "build_renogram_datalist", "renogram_image_metrics", "summarize_renogram", "RenogramMetricsHandler",
    "kidney_masks", "time_activity_curves", "split_function", "plot_time_activity_curves", "renogram_readout",
    "renogram_inference_items", "write_label_image", "RenogramOutputHandler",
]

logger = logging.getLogger(__name__)


def build_renogram_datalist(root: str, out_path: str | None = None, frames: Sequence[int] = (1, 2),
                            val_fraction: float = 0.2, test_fraction: float = 0.2, seed: int = 0) -> dict:
    """Datalist of the study folders under ``root`` (``<study>/renogram.dcm`` + ``parenchyma.png``, or one mask per
    labelled fused frame ``parenchyma_fused<k>.png``), split by patient into training / validation / test.

    Each labelled fused frame of a study is one item ``{"image", "label", "frame", "subject"}``; every item of a
    study stays on one side (the paper split images at random, so both labelled frames of one child could fall on
    both sides; this is fixed here). ``test_fraction`` of the studies is held out first, then ``val_fraction`` of
    the rest (for early stopping).

    Returns:
        the datalist dict (also written atomically to ``out_path`` when given, paths relative to its folder).
    """
    root = os.path.abspath(root)
    if not os.path.isdir(root):
        raise DataError(root, "no such folder")
    items = []
    for name in sorted(os.listdir(root)):
        folder = os.path.join(root, name)
        image = os.path.join(folder, "renogram.dcm")
        if not os.path.isfile(image):
            continue
        for k in frames:
            label = os.path.join(folder, f"parenchyma_fused{k}.png")
            label = label if os.path.isfile(label) else os.path.join(folder, "parenchyma.png")
            if not os.path.isfile(label):
                raise DataError(folder, f"no parenchyma mask for fused frame {k} (parenchyma_fused{k}.png or "
                                        "parenchyma.png)")
            items.append({"image": image, "label": label, "frame": int(k), "subject": name})
    if not items:
        raise DataError(root, "no study folders with renogram.dcm found")
    rest, test = split_subjects(items, test_fraction, seed)
    train, val = split_subjects(rest, val_fraction, seed + 1)
    data = {"training": train, "validation": val, "test": test}
    if out_path is not None:
        base = os.path.dirname(os.path.abspath(out_path))
        rel = {k: [{**it, "image": os.path.relpath(it["image"], base), "label": os.path.relpath(it["label"], base)}
                   for it in v] for k, v in data.items()}
        atomic_write_text(out_path, json.dumps(rel, indent=2))
    return data


def renogram_image_metrics(pred: Any, label: Any, threshold: float = 0.5) -> dict[str, float]:
    """Dice, precision, recall, accuracy, Jaccard (eqs. 6-10) of one image with MONAI's metrics, plus the counts
    ``tp, fp, fn, tn`` and the surface distances of :func:`lesionlab.pipelines.metrics.case_metrics` (pixels)."""
    p = (torch.as_tensor(np.asarray(pred)) > threshold).float().reshape(1, 1, *np.shape(pred)[-2:])
    g = (torch.as_tensor(np.asarray(label)) > threshold).float().reshape(1, 1, *np.shape(label)[-2:])
    cm = get_confusion_matrix(p, g, include_background=True)  # (1, 1, 4): tp, fp, tn, fn
    tp, fp, tn, fn = (int(v) for v in cm[0, 0])
    out: dict[str, float] = {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    for key, name in (("precision", "precision"), ("recall", "sensitivity"), ("accuracy", "accuracy")):
        v = float(compute_confusion_matrix_metric(name, cm)[0, 0])
        out[key] = 0.0 if math.isnan(v) and key == "precision" else (1.0 if math.isnan(v) else v)
    empty = tp + fp + fn == 0
    out["dsc"] = 1.0 if empty else float(DiceMetric(include_background=True)(p, g)[0, 0])
    out["jaccard"] = 1.0 if empty else float(MeanIoU(include_background=True)(p, g)[0, 0])
    surface = case_metrics(p[0, 0], g[0, 0])
    out["asd_mm"], out["hd95_mm"] = surface["asd_mm"], surface["hd95_mm"]
    return out


def summarize_renogram(cases: Sequence[dict]) -> dict[str, float]:
    """Means over images and pooled values (confusion matrix summed over the test set) of the five metrics."""
    if not cases:
        return {}
    out = {f"{k}_mean": float(np.mean([c[k] for c in cases])) for k in ("dsc", "precision", "recall", "accuracy",
                                                                         "jaccard")}
    tp, fp, tn, fn = (sum(c[k] for c in cases) for k in ("tp", "fp", "tn", "fn"))
    out.update({"dsc_pooled": 2 * tp / max(2 * tp + fp + fn, 1), "precision_pooled": tp / max(tp + fp, 1),
                "recall_pooled": tp / max(tp + fn, 1), "accuracy_pooled": (tp + tn) / max(tp + tn + fp + fn, 1),
                "jaccard_pooled": tp / max(tp + fp + fn, 1), "n_images": len(cases)})
    return out


def _case_name(x: Any, fallback: str) -> str:
    meta = getattr(x, "meta", None) or {}
    name = meta.get("filename_or_obj", fallback)
    name = str(name[0] if isinstance(name, (list, tuple)) else name)
    return f"{os.path.basename(os.path.dirname(name))}/{os.path.splitext(os.path.basename(name))[0]}"


class RenogramMetricsHandler:
    """Per-image metrics (:func:`renogram_image_metrics`) during an evaluator run; at completion the reports of
    :func:`~lesionlab.pipelines.metrics.write_reports` plus ``metrics_renogram.json`` / ``.md`` (the paper's Table 4
    columns, mean and pooled) in ``output_dir``. Case names come from the image's ``filename_or_obj`` (study folder
    and fused frame).

    Args:
        output_dir: folder of the reports.
        title: title of the markdown tables.
    """

    def __init__(self, output_dir: str, title: str = "Renal parenchyma segmentation") -> None:
        self.output_dir, self.title = output_dir, title
        self.cases: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: self.cases.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _iteration(self, engine: Engine) -> None:
        out = engine.state.output
        for item in out if isinstance(out, list) else [out]:
            name = _case_name(item.get("image"), f"image_{len(self.cases)}")
            self.cases.append({"case": name, **renogram_image_metrics(item["pred"], item["label"])})

    def _completed(self, engine: Engine) -> None:
        write_reports(self.cases, self.output_dir, self.title)
        s = summarize_renogram(self.cases)
        atomic_write_text(os.path.join(self.output_dir, "metrics_renogram.json"), json.dumps(s, indent=2))
        cols = ("dsc", "precision", "recall", "accuracy", "jaccard")
        md = [f"### {self.title}", "", "| | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
        for kind in ("mean", "pooled"):
            md.append(f"| {kind} | " + " | ".join(f"{s.get(f'{c}_{kind}', math.nan):.4f}" for c in cols) + " |")
        atomic_write_text(os.path.join(self.output_dir, "metrics_renogram.md"), "\n".join(md) + "\n")
        for k, v in s.items():
            engine.state.metrics[k] = v
        logger.info("renogram metrics (%d images): %s", len(self.cases), "\n".join(md))


def kidney_masks(mask: np.ndarray, view: str = "POSTERIOR", min_fraction: float = 0.02) -> dict[str, np.ndarray]:
    """``{"left", "right"}`` boolean masks of the kidneys in a parenchyma mask (patient sides: in the posterior view
    the patient's left is the image's left).

    Every connected component (a kidney's parenchyma may come in pieces around the hilum) goes to the side of the
    image its centroid lies on; components smaller than ``min_fraction`` of the mask are ignored (specks). A
    missing kidney gives an empty mask (logged).
    """
    from scipy.ndimage import label as components

    lab, n = components(np.asarray(mask) > 0)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)[1:]
    out = {"left": np.zeros(lab.shape, bool), "right": np.zeros(lab.shape, bool)}
    mid = (lab.shape[1] - 1) / 2.0
    for k in range(1, n + 1):
        if sizes[k - 1] < min_fraction * sizes.sum():
            continue
        m = lab == k
        image_left = np.nonzero(m)[1].mean() < mid
        out["left" if image_left == (view.upper() != "ANTERIOR") else "right"] |= m
    for side, m in out.items():
        if not m.any():
            logger.warning("no %s kidney in the parenchyma mask", side)
    return out


def _background_ring(kidney: np.ndarray, others: np.ndarray, inner: int = 1, outer: int = 3) -> np.ndarray:
    from scipy.ndimage import binary_dilation, binary_fill_holes

    filled = binary_fill_holes(kidney)
    ring = binary_dilation(filled, iterations=outer) & ~binary_dilation(filled, iterations=inner)
    return ring & ~binary_dilation(binary_fill_holes(others), iterations=inner)


def time_activity_curves(frames: np.ndarray, frame_duration_s: np.ndarray, kidneys: dict[str, np.ndarray]) -> dict:
    """Background-corrected count rate (counts/s) per kidney and frame: ``{side: array (n_frames,)}``."""
    frames = np.asarray(frames, dtype=float)
    out = {}
    for side, m in kidneys.items():
        other = kidneys["right" if side == "left" else "left"]
        ring = _background_ring(m, other)
        roi = frames[:, m].sum(axis=1)
        bg = frames[:, ring].mean(axis=1) * m.sum() if ring.any() else 0.0
        out[side] = (roi - bg) / np.asarray(frame_duration_s, dtype=float)
    return out


def split_function(frames: np.ndarray, frame_start_s: np.ndarray, frame_duration_s: np.ndarray, mask: np.ndarray,
                   window_s: Sequence[float] = (60.0, 120.0), view: str = "POSTERIOR") -> dict[str, float]:
    """Relative uptake of each kidney (%) from the frames inside ``window_s`` (see the module docstring)."""
    start, dur = np.asarray(frame_start_s, float), np.asarray(frame_duration_s, float)
    inside = (start >= window_s[0] - 1e-6) & (start + dur <= window_s[1] + 1e-6)
    if not inside.any():
        raise ValueError(f"no frame lies inside the uptake window {tuple(window_s)} s")
    kidneys = kidney_masks(mask, view)
    rates = time_activity_curves(np.asarray(frames)[inside], dur[inside], kidneys)
    counts = {s: float(np.sum(np.clip(rates[s] * dur[inside], 0, None))) for s in ("left", "right")}
    total = counts["left"] + counts["right"]
    left = 100.0 * counts["left"] / total if total > 0 else math.nan
    return {"left_percent": left, "right_percent": 100.0 - left, "left_counts": counts["left"],
            "right_counts": counts["right"], "window_s": [float(w) for w in window_s],
            "left_pixels": int(kidneys["left"].sum()), "right_pixels": int(kidneys["right"].sum())}


def plot_time_activity_curves(start_s: np.ndarray, duration_s: np.ndarray, curves: dict, out_png: str,
                              title: str = "", split: dict | None = None) -> str:
    """Write the per-kidney time-activity curves (counts/s against minutes) as a PNG (atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    t = (np.asarray(start_s) + np.asarray(duration_s) / 2) / 60.0
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for side, colour in (("left", "tab:blue"), ("right", "tab:red")):
        label = f"{side} kidney" + (f" ({split[f'{side}_percent']:.1f} %)" if split else "")
        ax.plot(t, curves[side], color=colour, label=label)
    if split:
        ax.axvspan(split["window_s"][0] / 60, split["window_s"][1] / 60, color="0.85", label="uptake window")
    ax.set_xlabel("time after start of acquisition (min)")
    ax.set_ylabel("background-corrected counts / s")
    ax.set_title(title or "renogram time-activity curves", fontsize=9)
    ax.legend()
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)
    return out_png


def renogram_readout(study: Any, mask: np.ndarray, out_dir: str, name: str = "readout",
                     window_s: Sequence[float] = (60.0, 120.0)) -> dict:
    """Split function and time-activity curves of a :class:`~lesionlab.data.renogram.RenogramStudy` with a
    parenchyma ``mask`` on its grid; writes ``<name>.json`` and ``<name>_tac.png`` into ``out_dir``."""
    mask = np.asarray(mask) > 0
    if mask.shape != study.frames.shape[1:]:
        raise ValueError(f"mask {mask.shape} is not on the study grid {study.frames.shape[1:]}")
    view = study.view or "POSTERIOR"
    split = split_function(study.frames, study.frame_start_s, study.frame_duration_s, mask, window_s, view)
    curves = time_activity_curves(study.frames, study.frame_duration_s, kidney_masks(mask, view))
    os.makedirs(out_dir, exist_ok=True)
    png = plot_time_activity_curves(study.frame_start_s, study.frame_duration_s, curves,
                                    os.path.join(out_dir, f"{name}_tac.png"), title=os.path.basename(study.source),
                                    split=split)
    report = {"source": study.source, "view": view, **split, "tac_png": png,
              "time_s": [float(v) for v in study.frame_start_s + study.frame_duration_s / 2],
              "tac_counts_per_s": {s: [float(v) for v in c] for s, c in curves.items()}}
    atomic_write_text(os.path.join(out_dir, f"{name}.json"), json.dumps(report, indent=2))
    return report


def renogram_inference_items(dataset_dir: str, frames: Sequence[int] = (1, 2)) -> list:
    """Inference items ``{"image", "frame"}``: every study under ``dataset_dir`` (see
    :func:`lesionlab.data.renogram.find_renogram_studies`; a file is one study), one item per fused frame."""
    from lesionlab.data.renogram import find_renogram_studies

    return [{"image": f, "frame": int(k)} for f in find_renogram_studies(dataset_dir) for k in frames]


def write_label_image(mask: np.ndarray, out_base: str, spacing: Sequence[float] = (1.0, 1.0),
                      formats: Sequence[str] = ("png", "nii.gz")) -> list[str]:
    """Write a 2D label ``(rows, columns)`` as ``<out_base>.png`` (0/255, for viewing) and/or ``.nii.gz`` (0/1,
    pixel spacing kept), atomically. Returns the paths."""
    import SimpleITK as sitk
    from PIL import Image

    mask = (np.asarray(mask) > 0).astype(np.uint8)
    paths = []
    for fmt in formats:
        path = f"{out_base}.{fmt}"
        with atomic_path(path, suffix=f".{fmt}") as tmp:
            if fmt == "png":
                Image.fromarray(mask * 255).save(tmp, format="PNG")
            elif fmt in ("nii", "nii.gz"):
                img = sitk.GetImageFromArray(mask)  # x = columns, y = rows
                img.SetSpacing((float(spacing[1]), float(spacing[0])))
                sitk.WriteImage(img, tmp, True)
            else:
                raise ValueError(f"unknown label format {fmt!r}; use png, nii or nii.gz")
        paths.append(path)
    return paths


class RenogramOutputHandler:
    """Write each predicted parenchyma mask (on the study grid, after ``Invertd``) as label images and, with
    ``readout``, the clinical read-out of its study (split function JSON and time-activity-curve PNG, see
    :func:`renogram_readout`). Files are named ``<study folder>_<study stem>_fused<k>``.

    With ``"seg.dcm"`` among the formats, a DICOM SEG of each fused frame's mask is written too
    (:func:`lesionlab.data.nm_dicom.write_renogram_seg`, DICOM NM multi-frame sources only). It is written last:
    when the source cannot carry a SEG, the other files of every item are still written and the first
    :class:`~lesionlab.errors.DataError` is raised when the run completes.

    Args:
        output_dir: output folder.
        formats: label formats (``"png"``, ``"nii.gz"``, ``"seg.dcm"``).
        readout: also write the split function and time-activity curves (needs the study file).
        window_s: uptake window of the split function.
        algorithm_name: the segmentation algorithm recorded in DICOM SEGs (e.g. the bundle's name).
    """

    def __init__(self, output_dir: str, formats: Sequence[str] = ("png", "nii.gz"), readout: bool = True,
                 window_s: Sequence[float] = (60.0, 120.0), algorithm_name: str = "lesionlab") -> None:
        self.output_dir, self.formats, self.readout, self.window_s = output_dir, list(formats), readout, window_s
        self.algorithm_name = algorithm_name
        self.written: list[dict] = []
        self.seg_errors: list[DataError] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda e: (self.written.clear(), self.seg_errors.clear()))
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _completed(self, engine: Engine) -> None:
        """With a ``truth.json`` next to the studies (synthetic data), write the split-function errors; then raise
        the first DICOM SEG refusal, if any."""
        rows = [r for r in self.written if "truth_left_percent" in r]
        if rows:
            self._split_errors(engine, rows)
        if self.seg_errors:
            raise self.seg_errors[0]

    def _split_errors(self, engine: Engine, rows: list[dict]) -> None:
        errors = np.abs([r["readout"] - r["truth_left_percent"] for r in rows])
        defined = errors[~np.isnan(errors)]  # an empty predicted parenchyma has no split function
        summary = {"n": len(rows), "n_undefined": int(errors.size - defined.size),
                   "mae_percent_points": float(defined.mean()) if defined.size else math.nan,
                   "max_abs_error_percent_points": float(defined.max()) if defined.size else math.nan, "cases": rows}
        atomic_write_text(os.path.join(self.output_dir, "split_function_errors.json"), json.dumps(summary, indent=2))
        engine.state.metrics["split_mae"] = summary["mae_percent_points"]
        logger.info("split function against the synthetic truth: MAE %.2f %%-points over %d images",
                    summary["mae_percent_points"], len(rows))

    def _iteration(self, engine: Engine) -> None:
        from lesionlab.data.nm_dicom import write_renogram_seg
        from lesionlab.data.renogram import read_renogram

        out = engine.state.output
        seg = "seg.dcm" in self.formats
        for item in out if isinstance(out, list) else [out]:
            pred = item["pred"]
            meta = getattr(pred, "meta", {}) or {}
            mask = np.asarray(pred.detach().cpu())[0] > 0.5
            name = _case_name(pred, f"image_{len(self.written)}").replace("/", "_")
            base = os.path.join(self.output_dir, name)
            spacing = meta.get("pixel_spacing", (1.0, 1.0))
            images = [f for f in self.formats if f != "seg.dcm"]
            record = {"case": name, "labels": write_label_image(mask, base, spacing, images)}
            source = meta.get("source_file")
            study = read_renogram(str(source)) if source and (self.readout or seg) else None
            if self.readout and study is not None:
                record["readout"] = renogram_readout(study, mask, self.output_dir, name, self.window_s)["left_percent"]
                truth = os.path.join(os.path.dirname(str(source)), "truth.json")
                if os.path.isfile(truth):
                    with open(truth) as f:
                        record["truth_left_percent"] = float(json.load(f)["split_left_percent"])
            if seg:
                try:
                    if study is None:
                        raise DataError(name, "no source file in the prediction's meta data: no DICOM SEG")
                    start, dur = (float(np.ravel(meta[k])[0]) for k in ("frame_start_s", "frame_duration_s"))
                    record["labels"].append(write_renogram_seg(mask, study, start, dur, f"{base}.seg.dcm",
                                                               self.algorithm_name))
                except DataError as err:  # the other outputs stay; the run fails at the end (see _completed)
                    logger.error("%s: no DICOM SEG: %s", name, err)
                    self.seg_errors.append(err)
            self.written.append(record)
            logger.info("%s: wrote %s", name, ", ".join(record["labels"]))
