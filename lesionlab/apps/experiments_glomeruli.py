"""``lesionlab experiments glomeruli``: the thesis's 2 x 2 ablation (Table 4.5: CE vs CE+Dice x CBAM off/on).

Each row is the glomerulus bundle plus one override file (``configs/ablation/t45_*.json``). For each row the bundle is
copied, trained with MONAI's runner (iteration-based, the bundle's schedule) and evaluated on the validation tiles
(dataset-level confusion-matrix scores, as MMSeg reports them). The runner writes:

- ``table_4_5.md``: a protocol header (iterations, batch, network, data, split), then the paper's columns (test
  mIoU, mDice, glomerulus IoU, glomerulus Dice) for our run next to the thesis's numbers, and the Wilcoxon
  signed-rank p-value of each row against the CE row on per-tile glomerulus Dice;
- ``table_4_5_curves.png``: training loss and validation glomerulus Dice against iteration for every row
  (the thesis's Figs 4.6-4.17 in one plot);
- ``table_4_5.json``: everything in machine-readable form.
"""

from __future__ import annotations

import json
import math
import os
import time
from typing import Any

import numpy as np

from lesionlab.apps.bundle import copy_bundle, run_bundle, set_config_values
from lesionlab.apps.experiments import wilcoxon_p
from lesionlab.apps.glomeruli import DEMO_NETWORK, GLOMERULI_BUNDLE, load_bundle_network
from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_write_text, save_figure

__all__ = ["ABLATION_ROWS", "run_glomeruli_ablation", "per_tile_dice"]

#: (row name, override file, thesis Table 4.5: mIoU, mDice, glomerulus IoU, glomerulus Dice in %)
ABLATION_ROWS = [
    ("CE (PSPNet)", "t45_ce.json", (90.72, 94.95, 84.26, 91.46)),
    ("CE+Dice", "t45_ce_dice.json", (91.07, 95.11, 84.38, 91.53)),
    ("CE+CBAM", "t45_ce_cbam.json", (86.22, 92.04, 84.40, 91.54)),
    ("CE+Dice+CBAM (CBAM-PSPNet)", "t45_ce_dice_cbam.json", (88.38, 93.45, 84.21, 91.43)),
]


_QUICK_NET = "reduced network (1 bottleneck per stage, width 16), 512 -> 128 tiles"


def per_tile_dice(root: str, tiles: list[dict], overrides: dict[str, Any] | None = None) -> list[float]:
    """Glomerulus Dice of every validation tile (NaN when a tile has no glomerulus in truth and prediction)."""
    import torch
    from PIL import Image

    from lesionlab.pipelines.glomeruli import ResizeInferer

    net, cfg = load_bundle_network(root, overrides=overrides)
    infer = ResizeInferer(int(cfg["network_size"]))
    mean = torch.tensor(cfg["imagenet_mean"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["imagenet_std"]).view(1, 3, 1, 1)
    out = []
    with torch.no_grad():
        for rec in tiles:
            img = torch.from_numpy(np.asarray(Image.open(rec["image"]).convert("RGB"))).permute(2, 0, 1)[None].float()
            lab = np.asarray(Image.open(rec["label"])) > 0
            pred = infer((img - mean) / std, net).argmax(1)[0].numpy() > 0
            den = lab.sum() + pred.sum()
            out.append(float(2 * (lab & pred).sum() / den) if den else math.nan)
    return out


def _curves(histories: dict[str, list[dict]], interval: int, out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for name, hist in histories.items():
        it = [h["epoch"] * interval for h in hist]
        axes[0].plot(it, [h["loss"] for h in hist], "o-", label=name)
        axes[1].plot(it, [h.get("Dice_glomerulus", np.nan) for h in hist], "s-", label=name)
    axes[0].set_title("training loss")
    axes[1].set_title("validation glomerulus Dice")
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)


def _fmt(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{100 * v:.2f}"


def run_glomeruli_ablation(datalist: str, workdir: str, iterations: int = 24000, batch_size: int = 8,
                           quick: bool = False, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Train and evaluate the four Table 4.5 rows on a tile datalist (``lesionlab tile hubmap``); returns the paths.

    ``quick``: the demo's reduced network at 512 -> 128 tiles (CPU smoke runs); ``extra``: config overrides for
    every row, applied last.
    """
    datalist = os.path.abspath(datalist)
    if not os.path.isfile(datalist):
        raise LesionlabError(f"{datalist}: datalist not found (build one with `lesionlab tile hubmap`)")
    data = json.load(open(datalist))
    workdir = os.path.join(os.path.abspath(workdir), "table_4_5")
    os.makedirs(workdir, exist_ok=True)
    interval = max(1, min(500, iterations // 4))
    net_over = {f"network_def#{k}": v for k, v in DEMO_NETWORK.items()} if quick else {}
    size = 128 if quick else 256
    results: dict[str, dict] = {}
    histories: dict[str, list[dict]] = {}
    for name, override, _ in ABLATION_ROWS:
        print(f"[table 4.5] {name}: training {iterations} iterations and evaluating ...", flush=True)
        root = copy_bundle(GLOMERULI_BUNDLE, os.path.join(workdir, override[:-5]))
        row_over = json.load(open(os.path.join(root, "configs", "ablation", override)))
        set_config_values(root, {**net_over, **row_over, "network_size": size})
        common = {"dataset_dir": os.path.dirname(datalist), "datalist": datalist, "progress": False,
                  **(extra or {})}
        t0 = time.time()
        run_bundle(root, "train", iterations=iterations, val_interval_iterations=interval, batch_size=batch_size,
                   warmup_iterations=min(500, max(1, iterations // 20)), crop_size=[size, size], **common)
        run_bundle(root, "evaluate", **common)
        scores = json.load(open(os.path.join(root, "eval", "scores.json")))
        histories[name] = json.load(open(os.path.join(root, "eval", "history.json")))["epochs"]
        results[name] = {"scores": scores, "seconds": round(time.time() - t0, 1),
                         "tile_dice": per_tile_dice(root, data["validation"])}
    ref = ABLATION_ROWS[0][0]
    pvals = {}
    for name in results:
        if name != ref:
            a, b = np.array(results[name]["tile_dice"]), np.array(results[ref]["tile_dice"])
            keep = ~(np.isnan(a) | np.isnan(b))
            pvals[name] = wilcoxon_p(a[keep], b[keep])
    header = (f"Protocol: {iterations} iterations of batch {batch_size} (thesis: 24,000 of 8), "
              f"{_QUICK_NET if quick else 'paper-size network, 1024 -> 256 tiles'}, "
              f"{len(data['training'])} training / {len(data['validation'])} validation tiles, split by "
              f"{data.get('split', 'slide')} (thesis: 2,060 / 515 HuBMAP tiles, random tile split), validation tiles "
              "scored at full resolution, last checkpoint. Thesis numbers are on its data and protocol.")
    lines = ["## Table 4.5: CE vs CE+Dice x CBAM", "", header, "",
             "| model | mIoU | mDice | glom. IoU | glom. Dice | p (tile Dice vs CE) "
             "| thesis mIoU / mDice / IoU / Dice |",
             "|---|---|---|---|---|---|---|"]
    for name, _, paper in ABLATION_ROWS:
        s = results[name]["scores"]
        g = s["per_class"]["glomerulus"]
        p = "ref." if name == ref else ("–" if math.isnan(pvals[name]) else f"{pvals[name]:.4f}")
        cells = " | ".join(_fmt(v) for v in (s["mIoU"], s["mDice"], g["IoU"], g["Dice"]))
        lines.append(f"| {name} | {cells} | {p} | "
                     + " / ".join(f"{v:.2f}" for v in paper) + " |")
    lines += ["", "Scores in %, dataset-level from the accumulated confusion matrix (means over background and "
              "glomerulus); p: two-sided Wilcoxon signed-rank test on per-tile glomerulus Dice against the CE row "
              "(tiles without glomerulus in truth and prediction left out)."]
    paths = {"table": os.path.join(workdir, "table_4_5.md"), "curves": os.path.join(workdir, "table_4_5_curves.png"),
             "json": os.path.join(workdir, "table_4_5.json")}
    atomic_write_text(paths["table"], "\n".join(lines) + "\n")
    _curves(histories, interval, paths["curves"])
    atomic_write_text(paths["json"], json.dumps({"protocol": header, "results": results, "p_values": pvals,
                                                 "histories": histories}, indent=2, default=float))
    return paths
