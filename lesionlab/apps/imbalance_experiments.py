"""``lesionlab experiments imbalance``: the sub-studies of the nuclei class-imbalance thesis (seed 001 §8).

Tables (CoNIC columns of the thesis; every row is the nuclei bundle plus config overrides, no copied configs):

- ``4.3``: network x loss screening (5 networks x {Dice, Focal(②)}),
- ``4.4``: DeepLabV3+ and Attention U-Net x the five single losses (CE, Focal, Dice, Tversky, OB k=512),
- ``4.8``: loss combinations on DeepLabV3+ and Attention U-Net (Dice, Focal, OB k=512 and their sums),
- ``4.12``: Focal class-weight functions ① ... ⑥ on Attention U-Net (④ added; the thesis did not run it),
- ``4.13``: OB hard-pixel count k = 512 ... 65536 (network unstated in the thesis; DeepLabV3+ here),
- ``4.20``: two-stage background reuse, normal vs fused (DeepLabV3+ + Focal(⑤) + Dice, binary model the same).

For each table the runner trains and evaluates every row on the bundle's seeded 9 : 1 split and writes
``table_<id>.md`` (our Dice, mIoU, mAP, mean recall next to the thesis's, with the Wilcoxon signed-rank p-value of
per-image mIoU against the baseline row, and a protocol header), ``table_<id>.png`` (mIoU ours vs thesis) and
``table_<id>.json``. The shared statistics come from :mod:`lesionlab.apps.experiments`.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lesionlab.apps.bundle import bundle_path, copy_bundle
from lesionlab.apps.experiments import Row, wilcoxon_p
from lesionlab.errors import LesionlabError
from lesionlab.pipelines.nuclei_metrics import paper_columns
from lesionlab.utils import atomic_write_text

__all__ = ["IMBALANCE_TABLES", "run_imbalance_table"]

BUNDLE = "colon_he_nuclei_imbalance_segmentation"
COLS = ("Dice", "mIoU", "mAP", "Mean recall")
_NETS = {"DeepLab": None, "AttU-Net": "attention_unet", "U-Net": "unet", "U-Net++": "unetpp", "U-Net3+": "unet3plus"}
# narrow networks for --quick CPU runs (applied to both the multi-class and the binary network)
_QUICK_NET = {
    None: {"layers": [1, 1, 1, 1], "widths": [8, 16, 16, 16], "stem_channels": 16, "aspp_channels": 16,
           "low_level_channels": 8, "decoder_channels": 16, "output_stride": 8},
    "attention_unet": {"channels": [8, 16, 16, 32, 32]},
    "unet": {"features": [8, 16, 16, 32, 32, 8]},
    "unetpp": {"features": [8, 16, 16, 32, 32, 8]},
    "unet3plus": {"features": [8, 16, 16, 32, 32], "cat_channels": 8},
}


def _p(dice: float, miou: float, mapr: float, rec: float) -> dict[str, float]:
    return dict(zip(COLS, (dice, miou, mapr, rec)))


@dataclass
class NucleiRow(Row):
    """A :class:`~lesionlab.apps.experiments.Row` of the nuclei bundle with its config overrides (losses, weights)."""

    config: dict[str, Any] = field(default_factory=dict)


def _row(name: str, net: str, paper: dict[str, float] | None = None, reference: bool = False, **cfg: Any) -> NucleiRow:
    variant = _NETS[net]
    quick = {f"{key}#{k}": v for key in ("network_def", "binary_network_def") for k, v in _QUICK_NET[variant].items()}
    return NucleiRow(name, BUNDLE, [f"variants/{variant}.json"] if variant else [], paper or {}, quick, reference, cfg)


_T43 = {("DeepLab", "dice"): _p(0.6167, 0.2640, 0.4043, 0.3032),
        ("AttU-Net", "dice"): _p(0.6045, 0.2683, 0.3525, 0.3521),
        ("U-Net3+", "dice"): _p(0.4978, 0.1705, 0.2049, 0.2722),
        ("U-Net++", "dice"): _p(0.5248, 0.1955, 0.2424, 0.2746),
        ("U-Net", "dice"): _p(0.4102, 0.2231, 0.2996, 0.3899),
        ("DeepLab", "focal"): _p(0.2823, 0.1314, 0.2944, 0.2484),
        ("AttU-Net", "focal"): _p(0.2957, 0.1644, 0.2866, 0.3018),
        ("U-Net3+", "focal"): _p(0.3363, 0.1916, 0.3487, 0.2959),
        ("U-Net++", "focal"): _p(0.3962, 0.2279, 0.3695, 0.3395),
        ("U-Net", "focal"): _p(0.3360, 0.1924, 0.3400, 0.3020)}
_T44 = {("DeepLab", "ce"): _p(0.5034, 0.1678, 0.1945, 0.2050), ("DeepLab", "focal"): _p(0.2823, 0.1314, 0.2944, 0.2484),
        ("DeepLab", "dice"): _p(0.6167, 0.2640, 0.4043, 0.3032),
        ("DeepLab", "tversky"): _p(0.5857, 0.2408, 0.4074, 0.2790),
        ("DeepLab", "ob"): _p(0.4023, 0.1076, 0.1405, 0.1257), ("AttU-Net", "ce"): _p(0.5459, 0.2218, 0.2651, 0.2969),
        ("AttU-Net", "focal"): _p(0.2957, 0.1644, 0.2866, 0.3018),
        ("AttU-Net", "dice"): _p(0.6045, 0.2683, 0.3525, 0.3521),
        ("AttU-Net", "tversky"): _p(0.5905, 0.2444, 0.3279, 0.3584),
        ("AttU-Net", "ob"): _p(0.2849, 0.0644, 0.1540, 0.1561)}
_T48 = {("DeepLab", ("dice", "focal")): _p(0.6148, 0.3396, 0.5908, 0.6029),
        ("AttU-Net", ("dice", "focal")): _p(0.6115, 0.4034, 0.5505, 0.6263),
        ("DeepLab", ("dice", "ob")): _p(0.4591, 0.2328, 0.3603, 0.5599),
        ("AttU-Net", ("dice", "ob")): _p(0.4178, 0.2222, 0.2896, 0.5252),
        ("DeepLab", ("focal", "ob")): _p(0.4122, 0.1929, 0.2556, 0.5431),
        ("AttU-Net", ("focal", "ob")): _p(0.2154, 0.1254, 0.2575, 0.2088),
        ("DeepLab", ("dice", "focal", "ob")): _p(0.4503, 0.2221, 0.3522, 0.5433),
        ("AttU-Net", ("dice", "focal", "ob")): _p(0.4258, 0.2327, 0.3509, 0.3967)}
# Table 4.12 (CoNIC) has no Dice column; its mAP / recall columns look swapped (spec §7 item 3): printed as is
_T412 = {1: (0.2105, 0.2534, 0.2919), 2: (0.1758, 0.2959, 0.3088), 3: (0.1200, 0.1429, 0.1200),
         5: (0.2768, 0.3611, 0.3911), 6: (0.0482, 0.2561, 0.0590)}
_T413 = {512: (0.1075, 0.1607, 0.1928), 1024: (0.1358, 0.1843, 0.1916), 2048: (0.1269, 0.1591, 0.1492),
         4096: (0.1739, 0.2327, 0.2680), 8192: (0.1573, 0.1972, 0.2319), 16384: (0.1199, 0.1427, 0.1324)}
_WF = ("equal", "balanced", "exp_increasing", "exp_decreasing", "proposed", "proposed_zero_background")
_SYM = "①②③④⑤⑥"


def _no_dice(v: tuple[float, float, float]) -> dict[str, float]:
    return {"mIoU": v[0], "mAP": v[1], "Mean recall": v[2]}


IMBALANCE_TABLES: dict[str, dict[str, Any]] = {
    "4.3": {"title": "Table 4.3 — networks x {Dice, Focal(②)}, CoNIC",
            "rows": [_row(f"{n} / {loss.capitalize()}", n, _T43[(n, loss)], reference=(n, loss) == ("DeepLab", "dice"),
                          loss_names=[loss], focal_weight="balanced")
                     for loss in ("dice", "focal") for n in _NETS]},
    "4.4": {"title": "Table 4.4 — {DeepLabV3+, Attention U-Net} x {CE, Focal(②), Dice, Tversky, OB k = 512}, CoNIC",
            "rows": [_row(f"{n} / {loss.upper() if loss in ('ce', 'ob') else loss.capitalize()}", n, _T44[(n, loss)],
                          reference=(n, loss) == ("DeepLab", "ce"), loss_names=[loss], focal_weight="balanced",
                          hard_num=512)
                     for n in ("DeepLab", "AttU-Net") for loss in ("ce", "focal", "dice", "tversky", "ob")]},
    "4.8": {"title": "Table 4.8 — loss combinations (Focal(②), OB k = 512), CoNIC",
            "rows": [_row(f"{n} / {' '.join(x.capitalize() if x != 'ob' else 'OB' for x in combo)}", n,
                          _T48.get((n, combo), {}), reference=(n, combo) == ("DeepLab", ("dice",)),
                          loss_names=list(combo), focal_weight="balanced", hard_num=512)
                     for combo in (("dice",), ("dice", "focal"), ("dice", "ob"), ("focal", "ob"),
                                   ("dice", "focal", "ob")) for n in ("DeepLab", "AttU-Net")]},
    "4.12": {"title": "Table 4.12 — Focal class-weight functions, Attention U-Net, CoNIC",
             "rows": [_row(f"{_SYM[i]} {wf}", "AttU-Net", _no_dice(_T412[i + 1]) if i + 1 in _T412 else {},
                           reference=wf == "balanced", loss_names=["focal"], focal_weight=wf)
                      for i, wf in enumerate(_WF)]},
    "4.13": {"title": "Table 4.13 — OB hard-pixel count k, CoNIC (DeepLabV3+; the thesis does not name the network)",
             "rows": [_row(f"k = {k}", "DeepLab", _no_dice(_T413[k]) if k in _T413 else {}, reference=k == 512,
                           loss_names=["ob"], hard_num=k) for k in (512, 1024, 2048, 4096, 8192, 16384, 32768, 65536)]},
    "4.20": {"title": "Table 4.20 — two-stage background reuse, CoNIC (DeepLabV3+ + Focal(⑤) + Dice)",
             "rows": [_row("Normal", "DeepLab", _p(0.6227, 0.2703, 0.4010, 0.3093), reference=True,
                           loss_names=["focal", "dice"], focal_weight="proposed"),
                      _row("Background reuse", "DeepLab", _p(0.6509, 0.300, 0.3915, 0.3611),
                           loss_names=["focal", "dice"], focal_weight="proposed", two_stage=True)]},
}

_DIFF = ("Protocol differences: synthetic tiles (not CoNIC), far fewer epochs and updates, narrower networks with "
         "--quick, no ImageNet pre-training, metrics from one confusion matrix over the test split (the thesis's "
         "'Dice' is an unexplained optimistic aggregate, spec §7), precision of never-predicted classes counted 0.")


def _run_row(row: NucleiRow, workdir: str, data: str, epochs: int, quick: bool, extra: dict[str, Any]) -> dict:
    from monai.bundle import run

    root = copy_bundle(bundle_path(row.bundle), os.path.join(workdir, row.slug))
    cfg = dict(row.config)
    two_stage = cfg.pop("two_stage", False)
    over = {"dataset_dir": data, "bundle_root": root, "progress": False, "val_interval": max(epochs, 1), **cfg}
    if quick:
        over.update(row.quick)
    over.update(extra)
    c = os.path.join(root, "configs")
    files = [os.path.join(c, "train.json")] + [os.path.join(c, o) for o in row.overrides]
    log = os.path.join(c, "logging.conf")
    t0 = time.time()
    run("training", config_file=files, logging_file=log, epochs=epochs, **over)
    out = os.path.join(root, "eval")
    if two_stage:
        run("training", config_file=files + [os.path.join(c, "binary.json")], logging_file=log, epochs=epochs,
            **over)
        run("evaluating", config_file=files + [os.path.join(c, "evaluate.json"),
                                               os.path.join(c, "evaluate_two_stage.json")], logging_file=log, **over)
        out = os.path.join(out, "two_stage")
    else:
        run("evaluating", config_file=files + [os.path.join(c, "evaluate.json")], logging_file=log, **over)
    scores = json.load(open(os.path.join(out, "scores.json")))
    images = json.load(open(os.path.join(out, "per_image.json")))
    n_train = len(json.load(open(os.path.join(root, "eval", "history.json"))).get("epochs", [])) or epochs
    pixels = int(sum(map(sum, scores["confusion_matrix"])) / max(len(images), 1))
    return {"columns": paper_columns(scores), "per_class": scores["per_class"], "images": images,
            "pixels_per_image": pixels,
            "seconds": round(time.time() - t0, 1), "epochs_run": n_train}


def _fmt(v: float | None) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.4f}"


def _markdown(spec: dict, results: dict[str, dict], pvals: dict[str, float], protocol: str) -> str:
    lines = [f"## {spec['title']}", "", f"Protocol: {protocol}", "",
             "| row | " + " | ".join(COLS) + " | p (per-image mIoU vs baseline) | thesis " + " | thesis ".join(COLS)
             + " |", "|" + "---|" * (2 * len(COLS) + 2)]
    for row in spec["rows"]:
        thesis = " | ".join(_fmt(row.paper.get(c)) for c in COLS)
        if row.name not in results:
            lines.append(f"| {row.name} | not run" + " |" * len(COLS) + f" | {thesis} |")
            continue
        cols = results[row.name]["columns"]
        p = "baseline" if row.reference else _fmt(pvals.get(row.name))
        k, pixels = row.config.get("hard_num"), results[row.name].get("pixels_per_image", 0)
        note = f" (k >= the {pixels} pixels of a tile: plain CE)" if "ob" in row.config.get(
            "loss_names", []) and k and pixels and k >= pixels else ""
        lines.append(f"| {row.name}{note} | " + " | ".join(_fmt(cols[c]) for c in COLS) + f" | {p} | {thesis} |")
    lines += ["", "Dice: mean per-class Dice; mIoU, mAP (mean precision), mean recall: means over all classes "
              "including background, from one confusion matrix over the test split; p: two-sided Wilcoxon "
              "signed-rank test on per-image mIoU against the baseline row.", "", _DIFF]
    return "\n".join(lines) + "\n"


def _plot(spec: dict, results: dict[str, dict], out_png: str) -> None:
    from lesionlab.apps.figures import plot_paired_bars

    names = [r.name for r in spec["rows"] if r.name in results]
    paper = {r.name: r.paper.get("mIoU", math.nan) for r in spec["rows"]}
    plot_paired_bars(names, {"this run (synthetic)": [results[n]["columns"]["mIoU"] for n in names],
                             "thesis (CoNIC)": [paper[n] for n in names]}, out_png, "mIoU", spec["title"])


def run_imbalance_table(table_id: str, dataset_dir: str, workdir: str, epochs: int = 10, quick: bool = False,
                        rows: Sequence[str] | None = None, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Run the rows of one sub-study on a CoNIC-format folder and write its table, plot and JSON into ``workdir``.

    Args:
        table_id: one of :data:`IMBALANCE_TABLES` (``4.3``, ``4.4``, ``4.8``, ``4.12``, ``4.13``, ``4.20``).
        dataset_dir: CoNIC-format folder (``images.npy``, ``labels.npy``), e.g. from ``lesionlab synth nuclei``.
        workdir: output folder (one trained bundle copy per row).
        epochs: training epochs per row (the thesis's demo: 10).
        quick: narrow networks for CPU smoke runs.
        rows: restrict to these row names.
        extra: further config overrides for every row, applied last (e.g. ``{"roi_size": [64, 64]}`` for small
            tiles, ``{"dataset": "monusac"}``).
    """
    if table_id not in IMBALANCE_TABLES:
        raise LesionlabError(f"unknown table {table_id!r}; choose from {sorted(IMBALANCE_TABLES)}")
    data = os.path.abspath(dataset_dir)
    if not os.path.isdir(data):
        raise LesionlabError(f"{data}: data folder not found (write one with `lesionlab synth nuclei`)")
    spec = IMBALANCE_TABLES[table_id]
    workdir = os.path.join(os.path.abspath(workdir), f"table_{table_id.replace('.', '_')}")
    os.makedirs(workdir, exist_ok=True)
    results: dict[str, dict] = {}
    for row in spec["rows"]:
        if rows and row.name not in rows:
            continue
        print(f"[table {table_id}] {row.name}: training {epochs} epoch(s) and evaluating ...", flush=True)
        results[row.name] = _run_row(row, workdir, data, epochs, quick, extra or {})
    ref = next((r.name for r in spec["rows"] if r.reference and r.name in results), None)
    pvals: dict[str, float] = {}
    if ref is not None:
        base = [im["mIoU"] for im in results[ref]["images"]]
        for name, r in results.items():
            mine = [im["mIoU"] for im in r["images"]]
            if name != ref and len(mine) == len(base):
                pvals[name] = wilcoxon_p(mine, base)
    e = extra or {}
    protocol = (f"{epochs} epoch(s) per row, batch size {e.get('batch_size', 1)}, Adam lr "
                f"{e.get('learning_rate', 0.001)}, every training tile once per epoch in random order, no "
                f"augmentation; data {data} (seeded 9 : 1 split unless test_fraction is set: "
                f"{e.get('test_fraction', 0.1)}); {'narrow networks (--quick)' if quick else 'paper-width networks'}")
    stem = os.path.join(workdir, f"table_{table_id.replace('.', '_')}")
    paths = {"table": stem + ".md", "plot": stem + ".png", "json": stem + ".json"}
    atomic_write_text(paths["table"], _markdown(spec, results, pvals, protocol))
    if results:
        _plot(spec, results, paths["plot"])
    atomic_write_text(paths["json"], json.dumps({"table": table_id, "epochs": epochs, "quick": quick,
                                                 "protocol": protocol, "results": results, "p_values": pvals},
                                                indent=2, default=float))
    return paths
