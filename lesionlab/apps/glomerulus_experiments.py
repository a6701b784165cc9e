"""``lesionlab experiments glomerulus-cls``: the paper's Table 1 (seed 004 §7.1) and the freezing study (§5).

Uses the shared experiment machinery of :mod:`lesionlab.apps.experiments` (``Row``, bundle copies with override
files, parameter/FLOP counts, Wilcoxon p-values); only the classification columns and the report reading live here.
Each row trains a copy of the glomerulus bundle with MONAI's runner and evaluates it on the datalist's ``test`` part
(``evaluate.json``: accuracy, per-class P/R/F1, one-vs-rest AUC). Rows whose networks are not available without
extra dependencies (VGG16, Inception V3: not in MONAI, and torchvision is not used) are marked "not run".
"""

from __future__ import annotations

import csv
import json
import os
from typing import Any

import numpy as np

from lesionlab.apps.experiments import Row, _complexity, open_table, run_rows, train_and_evaluate_row, wilcoxon_p
from lesionlab.utils import atomic_write_text

__all__ = ["GLOMERULUS_TABLES", "run_glomerulus_table"]

BUNDLE = "kidney_pathology_seresnet_glomerulus_classification"
# --quick: one block per stage, a quarter of the widths, 64 x 64 inputs (CPU smoke runs); the params/FLOPs columns
# stay at paper size. MONAI's SENet fixes its stage widths, so SE-ResNet-50 keeps full width (slowest quick row).
_Q = {"network_def#layers": [1, 1, 1, 1], "network_def#channels": [16, 32, 64, 128], "network_def#stem_channels": 16,
      "spatial_size": [64, 64]}
_Q_RESNET = {"network_def#layers": [1, 1, 1, 1], "network_def#block_inplanes": [16, 32, 64, 128],
             "spatial_size": [64, 64]}
_Q_SERESNET = {"network_def#layers": [1, 1, 1, 1], "spatial_size": [64, 64]}
_QUICK_TEXT = "quick: one block per stage, quarter widths (SE-ResNet-50: full), 64 x 64 inputs"

GLOMERULUS_TABLES: dict[str, dict[str, Any]] = {
    "1": {
        "title": "Table 1: classification models on the same training and test sets (test accuracy)",
        "rows": [
            Row("VGG16", None, paper={"accuracy": 0.9342}),
            Row("Inception V3", None, paper={"accuracy": 0.9503}),
            Row("ResNet50 (MONAI)", BUNDLE, ["variants/resnet50.json"], {"accuracy": 0.9618}, _Q_RESNET),
            Row("SE-ResNet50 (MONAI)", BUNDLE, ["variants/se_resnet50.json"], {}, _Q_SERESNET),
            Row("Improved SE-ResNet50, reading A", BUNDLE, ["variants/reading_a.json"], {}, _Q),
            Row("Improved SE-ResNet50, reading C", BUNDLE, ["variants/reading_c.json"], {}, _Q),
            Row("Improved SE-ResNet50, reading B (default)", BUNDLE, [], {"accuracy": 0.9693}, _Q, True),
        ],
    },
    "freeze": {
        "title": "Freezing study: share of pretrained weights frozen (paper: 100/75/25/0 %, best 0 %)",
        "rows": [
            Row("100 % frozen", BUNDLE, ["variants/freeze_100.json"], {}, _Q),
            Row("75 % frozen", BUNDLE, ["variants/freeze_75.json"], {}, _Q),
            Row("25 % frozen", BUNDLE, ["variants/freeze_25.json"], {}, _Q),
            Row("0 % frozen", BUNDLE, [], {}, _Q, True),
        ],
    },
}


def _run_row(row: Row, workdir: str, datalist: str, epochs: int, quick: bool, extra: dict[str, Any]) -> dict:
    root, seconds = train_and_evaluate_row(row, workdir, datalist, epochs, quick, extra)
    with open(os.path.join(root, "eval", "metrics.json")) as f:
        report = json.load(f)
    with open(os.path.join(root, "eval", "predictions.csv"), newline="") as f:
        correct = {r["file"]: float(r["true"] == r["predicted"]) for r in csv.DictReader(f)}
    return {"report": report, "correct": correct, "seconds": seconds, **_complexity(root, row)}


def _fmt(v: Any, digits: int = 4) -> str:
    return "–" if v is None or (isinstance(v, float) and np.isnan(v)) else f"{v:.{digits}f}"


def _markdown(spec: dict, results: dict[str, dict], pvals: dict[str, float], protocol: str) -> str:
    head = ("| model | accuracy | macro F1 | macro AUC | AUC Normal / FSG / MsPGN / CGN | p (vs ref.) | params | "
            "FLOPs (torch) | paper accuracy |")
    lines = [f"## {spec['title']}", "", protocol, "", head, "|" + "---|" * 9]
    for row in spec["rows"]:
        paper = _fmt(row.paper.get("accuracy"))
        if row.name not in results:
            lines.append(f"| {row.name} | not run (no dependency-clean network) | | | | | | | {paper} |")
            continue
        r = results[row.name]
        rep = r["report"]
        aucs = " / ".join(_fmt(v["auc"], 3) for v in rep["per_class"].values())
        p = "ref." if row.reference else _fmt(pvals.get(row.name))
        lines.append(f"| {row.name} | {_fmt(rep['accuracy'])} | {_fmt(rep['macro_f1'])} | {_fmt(rep['macro_auc'])} | "
                     f"{aucs} | {p} | {r['params']:,} | {r['flops_torch'] / 1e9:.2f} G | {paper} |")
    lines += ["", "accuracy, F1, AUC on the datalist's test part (slides never seen in training); p: two-sided "
              "Wilcoxon signed-rank test on per-crop correctness (0/1) against the reference row (a sign test on the "
              "crops the two models disagree on); params and FLOPs at the paper's 3 x 224 x 224 input and full "
              "width; paper: Sun et al. 2022 (their split of the augmented set, see the bundle card)."]
    return "\n".join(lines) + "\n"


def run_glomerulus_table(table_id: str, datalist: str, workdir: str, epochs: int = 200, quick: bool = False,
                         extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Run the rows of Table 1 (``"1"``) or the freezing study (``"freeze"``); write markdown and JSON.

    Args:
        table_id: ``"1"`` or ``"freeze"``.
        datalist: slide-grouped datalist with ``training``, ``validation`` and ``test`` (``lesionlab synth
            glomeruli-cls`` or ``lesionlab datalist-glomeruli``).
        workdir: output folder (one trained bundle copy per row).
        epochs: training epochs per row (paper: 200).
        quick: one block per stage at 64 x 64 (CPU smoke runs).
        extra: config overrides for every row, applied last (e.g. ``{"learning_rate": 1e-3}``).
    """
    spec, datalist, workdir = open_table(GLOMERULUS_TABLES, table_id, datalist, workdir, "glomerulus_table",
                                         "lesionlab datalist-glomeruli")
    with open(datalist) as f:
        counts = {k: len(v) for k, v in json.load(f).items()}
    settings = {"epochs": epochs, "quick": quick, **(extra or {})}
    protocol = (f"Protocol: {epochs} epoch(s) per row, batch 16, Adam (lr and weight decay from train.json unless "
                f"overridden: {json.dumps(extra or {})}), MultiStepLR at 60/120/160 (gamma 0.1), random "
                f"initialisation (no ImageNet weights), augmentation (rotation, noise, same-class mixup) on the "
                f"training part only; data {datalist} with {counts.get('training', 0)}/{counts.get('validation', 0)}/"
                f"{counts.get('test', 0)} train/validation/test crops split by slide; "
                f"{_QUICK_TEXT if quick else 'full networks at 224 x 224'}.")
    results = run_rows(spec, _run_row, f"glomerulus table {table_id}", workdir, datalist, epochs, quick, extra)
    ref = next((r.name for r in spec["rows"] if r.reference and r.name in results), None)
    pvals: dict[str, float] = {}
    if ref is not None:
        base = results[ref]["correct"]
        for name, r in results.items():
            if name != ref:
                common = sorted(set(base) & set(r["correct"]))
                pvals[name] = wilcoxon_p([r["correct"][c] for c in common], [base[c] for c in common])
    stem = os.path.join(workdir, f"glomerulus_table_{table_id}")
    paths = {"table": stem + ".md", "json": stem + ".json"}
    atomic_write_text(paths["table"], _markdown(spec, results, pvals, protocol))
    atomic_write_text(paths["json"], json.dumps({"table": table_id, "settings": settings, "results": results,
                                                 "p_values": pvals}, indent=2, default=float))
    return paths
