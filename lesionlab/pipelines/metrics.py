"""Per-case 3D segmentation metrics of the stroke thesis (seed 002 §6) and their reports.

Per case (all slices of a volume together): DSC = 2TP/(2TP+FP+FN), precision = TP/(TP+FP), recall = TP/(TP+FN),
Jaccard = TP/(TP+FP+FN) (Eqs. 3.9-3.12), ASD (average symmetric surface distance) and HD95 (95th-percentile
symmetric Hausdorff distance), both in mm using the voxel spacing, from MONAI's ``compute_average_surface_distance``
and ``compute_hausdorff_distance``. DSC(G) pools TP/FP/FN over all cases (D-UNet's "global" Dice).

Decisions where the thesis is silent (ambiguities 45-46): an empty prediction has precision 0 (as in D-UNet's
evaluation code); DSC, recall and Jaccard of a case with an empty label and an empty prediction are 1; ASD and HD95
are undefined (NaN) when either mask is empty and are left out of their means, the number of cases used being
reported. Standard deviations use ddof = 1.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance

from lesionlab.utils import atomic_write_text

__all__ = ["case_metrics", "global_dice", "summarize", "format_table", "write_reports", "METRIC_NAMES"]

METRIC_NAMES = ("dsc", "precision", "recall", "jaccard", "asd_mm", "hd95_mm")


def _binary(x: np.ndarray | torch.Tensor, threshold: float) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x.detach().cpu())
    if hasattr(t, "as_tensor"):
        t = t.as_tensor()
    return t > threshold


def case_metrics(
    pred: np.ndarray | torch.Tensor,
    label: np.ndarray | torch.Tensor,
    spacing: Sequence[float] | None = None,
    threshold: float = 0.5,
) -> dict[str, float]:
    """Metrics of one case.

    Args:
        pred: predicted mask or probability volume, spatial shape (optionally with one leading channel).
        label: ground-truth mask, same shape as ``pred``.
        spacing: voxel size in mm per spatial axis (defaults to 1 mm).
        threshold: values above it count as lesion.

    Returns:
        dict with ``dsc, precision, recall, jaccard, asd_mm, hd95_mm`` and the counts ``tp, fp, fn`` plus the
        predicted and true lesion volumes ``pred_ml``, ``label_ml``.
    """
    p, g = _binary(pred, threshold), _binary(label, threshold)
    if p.shape != g.shape:
        raise ValueError(f"prediction {tuple(p.shape)} and label {tuple(g.shape)} differ in shape.")
    if p.ndim == 4 and p.shape[0] == 1:
        p, g = p[0], g[0]
    spacing = tuple(float(s) for s in (spacing if spacing is not None else [1.0] * p.ndim))
    if len(spacing) != p.ndim:
        raise ValueError(f"spacing {spacing} does not match the {p.ndim} spatial axes.")
    tp = int((p & g).sum())
    fp = int((p & ~g).sum())
    fn = int((~p & g).sum())
    voxel_ml = float(np.prod(spacing)) / 1000.0
    out: dict[str, float] = {"tp": tp, "fp": fp, "fn": fn, "pred_ml": (tp + fp) * voxel_ml,
                             "label_ml": (tp + fn) * voxel_ml}
    out["dsc"] = 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0
    out["precision"] = tp / (tp + fp) if (tp + fp) else 0.0
    out["recall"] = tp / (tp + fn) if (tp + fn) else 1.0
    out["jaccard"] = tp / (tp + fp + fn) if (tp + fp + fn) else 1.0
    if p.any() and g.any():
        yp, yg = p[None, None].float(), g[None, None].float()
        out["asd_mm"] = float(compute_average_surface_distance(yp, yg, include_background=True, symmetric=True,
                                                               spacing=list(spacing)).item())
        out["hd95_mm"] = float(compute_hausdorff_distance(yp, yg, include_background=True, percentile=95,
                                                          spacing=list(spacing)).item())
    else:
        out["asd_mm"] = out["hd95_mm"] = math.nan
    return out


def global_dice(cases: Sequence[dict[str, float]]) -> float:
    """DSC(G): Dice of TP/FP/FN summed over all cases."""
    tp = sum(c["tp"] for c in cases)
    fp = sum(c["fp"] for c in cases)
    fn = sum(c["fn"] for c in cases)
    return 2 * tp / (2 * tp + fp + fn) if (tp + fp + fn) else 1.0


def summarize(cases: Sequence[dict[str, float]]) -> dict[str, dict[str, float] | float | int]:
    """Mean, std (ddof 1) and number of defined values of every metric, plus ``dsc_global`` and ``n_cases``."""
    summary: dict = {"n_cases": len(cases), "dsc_global": global_dice(cases) if cases else math.nan}
    for name in METRIC_NAMES:
        vals = np.array([c[name] for c in cases], dtype=float)
        vals = vals[~np.isnan(vals)]
        summary[name] = {
            "mean": float(vals.mean()) if vals.size else math.nan,
            "std": float(vals.std(ddof=1)) if vals.size > 1 else math.nan,
            "n": int(vals.size),
        }
    return summary


def format_table(summary: dict, title: str = "") -> str:
    """Markdown table in the thesis's columns: DSC mean ± std, DSC(G), recall, precision, Jaccard, ASD, HD95."""

    def ms(name: str, digits: int = 3) -> str:
        m = summary[name]
        if math.isnan(m["mean"]):
            return "n/a"
        std = "" if math.isnan(m["std"]) else f" ± {m['std']:.{digits}f}"
        return f"{m['mean']:.{digits}f}{std}"

    head = f"### {title}\n\n" if title else ""
    return (
        head
        + "| cases | DSC | DSC(G) | Rec | Prec | Jac | ASD (mm) | 95HD (mm) |\n"
        + "|---|---|---|---|---|---|---|---|\n"
        + f"| {summary['n_cases']} | {ms('dsc')} | {summary['dsc_global']:.3f} | {ms('recall')} | {ms('precision')} "
        + f"| {ms('jaccard')} | {ms('asd_mm', 2)} | {ms('hd95_mm', 2)} |\n"
    )


def write_reports(cases: Sequence[dict], out_dir: str, title: str = "Evaluation") -> dict[str, str]:
    """Write ``metrics_per_case.csv``, ``metrics_summary.json`` and ``metrics_table.md`` to ``out_dir``.

    Each file is written atomically. ``cases`` items may carry extra fields (e.g. ``case`` name), written as columns.
    Returns the paths.
    """
    os.makedirs(out_dir, exist_ok=True)
    summary = summarize(cases)
    paths = {k: os.path.join(out_dir, f) for k, f in
             (("csv", "metrics_per_case.csv"), ("json", "metrics_summary.json"), ("table", "metrics_table.md"))}
    fields: list[str] = []
    for c in cases:
        fields += [k for k in c if k not in fields]
    rows = [",".join(fields)]
    for c in cases:
        rows.append(",".join(_csv_cell(c.get(k, "")) for k in fields))
    atomic_write_text(paths["csv"], "\n".join(rows) + "\n")
    atomic_write_text(paths["json"], json.dumps({"summary": summary, "cases": list(cases)}, indent=2, default=float))
    atomic_write_text(paths["table"], format_table(summary, title))
    return paths


def _csv_cell(v: object) -> str:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    s = str(v)
    if any(ch in s for ch in ',"\n'):
        s = '"' + s.replace('"', '""') + '"'
    return s
