"""``lesionlab experiments stroke``: re-run the rows of the stroke thesis's tables (seed 002 §7) on a datalist.

Every row is a bundle plus small override files (no copies of configs). For each row the bundle is copied into the
work folder, trained with MONAI's runner, and evaluated per case on the original grid (``evaluate.json``). The
runner then writes, per table:

- ``table_<id>.md``: a header stating the protocol of our runs (epochs, optimiser updates counted by the trainer,
  slice sampling, batch, data) next to the thesis's (150 epochs of every slice of 183 ATLAS R1.1 volumes, batch 16:
  324,300 updates), then the paper's columns (DSC mean ± std, DSC(G), recall, precision, Jaccard, ASD, 95HD) for our
  run next to the thesis's numbers, the Wilcoxon signed-rank p-value of each row against the table's reference row
  on per-case DSC, and the parameter and FLOP counts (Table 4.3 columns; FLOPs from PyTorch's own counter at the
  network's documented input size, i.e. 2 x MACs with transposed convolutions per input pixel);
- ``table_<id>_dsc_boxplot.png``: per-case DSC box plot;
- ``table_<id>.json``: everything above in machine-readable form.

Rows whose networks the project does not provide are listed as "not run".
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from lesionlab.apps.bundle import bundle_path, copy_bundle
from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_write_text, save_figure

__all__ = ["Row", "TABLES", "run_table", "open_table", "run_rows", "train_and_evaluate_row", "wilcoxon_p"]

DUNET = "brain_mri_dunet_stroke_segmentation"
UNET3D = "brain_mri_unet3d_stroke_segmentation"
AGMR = "brain_mri_agmrnet_stroke_segmentation"
TSRL = "brain_mri_tsrlnet_stroke_segmentation"

_Q25 = {"network_def#features": [8, 16, 32, 64, 128]}  # quarter width for the D-UNet family
# CFF with R = 32 needs >= 32 channels at the fusion stages (2 and 3); same width for every row of Table 3.6
_Q_CFF32 = {"network_def#features": [8, 32, 32, 64, 128]}


@dataclass
class Row:
    """One row of a table: a bundle, override files (relative to its ``configs/``) and the thesis's numbers."""

    name: str
    bundle: str | None
    overrides: Sequence[str] = ()
    paper: dict[str, float] = field(default_factory=dict)
    quick: dict[str, Any] = field(default_factory=dict)  # settings of --quick runs (narrower networks)
    reference: bool = False

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() else "_" for c in self.name.lower()).strip("_")


def _p(dsc_g: float | None, dsc: float | None, rec: float | None = None, prec: float | None = None,
       jac: float | None = None, asd: float | None = None, hd95: float | None = None) -> dict[str, float]:
    vals = {"dsc_global": dsc_g, "dsc": dsc, "recall": rec, "precision": prec, "jaccard": jac, "asd_mm": asd,
            "hd95_mm": hd95}
    return {k: v for k, v in vals.items() if v is not None}


_COMPARISON = [
    Row("2D U-Net", DUNET, ["variants/unet2d.json"], _p(0.712, 0.485, 0.469, 0.574, 0.368),
        {"network_def#features": [8, 16, 32, 64, 128, 8]}),
    Row("SegNet", None, paper=_p(0.662, 0.451, 0.440, 0.545, 0.337)),
    Row("PSPNet", None, paper=_p(0.672, 0.468, 0.443, 0.539, 0.348)),
    Row("DeepLab v3", None, paper=_p(0.641, 0.415, 0.399, 0.492, 0.296)),
    Row("U-Net++", DUNET, ["variants/unetpp2d.json"], _p(0.728, 0.511, 0.494, 0.638, 0.400),
        {"network_def#network#features": [8, 16, 32, 64, 128, 8]}),
    Row("ACSNet", None, paper=_p(0.703, 0.520, 0.462, 0.706, 0.401)),
    Row("Attention U-Net", DUNET, ["variants/attention_unet2d.json"], _p(0.706, 0.536, 0.482, 0.721, 0.406),
        {"network_def#channels": [8, 16, 32, 64, 128]}),
    Row("D-UNet", DUNET, [], _p(0.726, 0.548, 0.530, 0.665, 0.407), _Q25),
    Row("X-Net", None, paper=_p(0.672, 0.499, 0.466, 0.633, 0.382)),
    Row("CLCI-Net", None, paper=_p(None, 0.581, 0.581, 0.649)),
    Row("3D U-Net", UNET3D, [], _p(0.710, 0.471, 0.474, 0.553),
        {"network_def#channels": [4, 8, 16, 32, 64], "patch_size": [32, 32, 32]}),
]

TABLES: dict[str, dict[str, Any]] = {
    "3.1": {
        "title": "Table 3.1: impact of each AGMR-Net module on the D-UNet backbone (ATLAS)",
        "rows": [
            Row("D-UNet (baseline)", AGMR, ["ablation/t31_baseline.json"], _p(0.726, 0.548, 0.530, 0.665, None, 8.932, 36.552), _Q25),
            Row("+CPA", AGMR, ["ablation/t31_cpa.json"], _p(0.741, 0.574, 0.561, 0.682, None, 7.833, 33.544), _Q25),
            Row("+CFF", AGMR, ["ablation/t31_cff.json"], _p(0.734, 0.572, 0.538, 0.701, None, 8.670, 30.197), _Q25),
            Row("+MDU", AGMR, ["ablation/t31_mdu.json"], _p(0.735, 0.570, 0.541, 0.701, None, 7.972, 27.220), _Q25),
            Row("+CPA+CFF", AGMR, ["ablation/t31_cpa_cff.json"], _p(0.744, 0.581, 0.569, 0.667, None, 7.521, 29.174), _Q25),
            Row("AGMR-Net (CPA+CFF+MDU)", AGMR, [], _p(0.754, 0.594, 0.579, 0.713, 0.468, 7.137, 27.005), _Q25, True),
        ],
    },
    "3.2": {
        "title": "Table 3.2: AGMR-Net against previous methods (ATLAS columns)",
        "rows": _COMPARISON + [Row("AGMR-Net", AGMR, [], _p(0.754, 0.594, 0.579, 0.713, 0.468), _Q25, True)],
    },
    "3.4": {
        "title": "Table 3.4: spatial attention methods, coarse (CPA) against fine (pixel-level) attention (ATLAS)",
        "rows": [
            Row("Attention-Unet", DUNET, ["variants/attention_unet2d.json"], _p(0.706, 0.536),
                {"network_def#channels": [8, 16, 32, 64, 128]}),
            Row("D-UNet + FA", AGMR, ["variants/fine_attention.json"], _p(0.724, 0.551), _Q25),
            Row("D-UNet + CPA", AGMR, ["ablation/t31_cpa.json"], _p(0.741, 0.574), _Q25, True),
        ],
    },
    "3.5": {
        "title": "Table 3.5: CFF against common 2D/3D fusions inside AGMR-Net (ATLAS)",
        "rows": [
            Row("Add", AGMR, ["variants/fusion_add.json"], _p(0.750, 0.588), _Q25),
            Row("Concatenate", AGMR, ["variants/fusion_concat.json"], _p(0.749, 0.583), _Q25),
            Row("CFF-Concatenate", AGMR, ["variants/fusion_cff_concat.json"], _p(0.751, 0.593), _Q25),
            Row("AGMR-Net (CFF, add)", AGMR, [], _p(0.754, 0.594), _Q25, True),
        ],
    },
    "3.6": {
        "title": "Table 3.6: CFF reduction rate R, CFF added to the D-UNet backbone (ATLAS)",
        "rows": [
            Row("D-UNet (baseline)", AGMR, ["ablation/t31_baseline.json"], _p(0.726, 0.548), _Q_CFF32, True),
            Row("+CFF (R = 32)", AGMR, ["variants/cff_r32.json"], _p(0.731, 0.566), _Q_CFF32),
            Row("+CFF (R = 8)", AGMR, ["ablation/t31_cff.json"], _p(0.734, 0.572), _Q_CFF32),
        ],
    },
    "3.7": {
        "title": "Table 3.7: MDU (kernels 3, 5, 7, 9) against single-size deconvolution (ATLAS)",
        "rows": [Row("AGMR-Net (MDU: 3, 5, 7, 9)", AGMR, [], _p(0.754, 0.594), _Q25, True)] + [
            Row(f"Size = {k}", AGMR, [f"variants/mdu_k{k}.json"], _p(dsc_g, dsc), _Q25)
            for k, (dsc_g, dsc) in {3: (0.745, 0.579), 5: (0.727, 0.552), 7: (0.735, 0.578), 9: (0.753, 0.587)}.items()
        ],
    },
    "3.8": {
        "title": "Table 3.8: MDU placed at different positions (ATLAS)",
        "rows": [
            Row("MDU in encoder stage", AGMR, ["variants/mdu_encoder.json"], _p(0.748, 0.586), _Q25),
            Row("MDU in skip-connection stage", AGMR, ["variants/mdu_skip.json"], _p(0.748, 0.583), _Q25),
            Row("AGMR-Net (MDU in upsampling)", AGMR, [], _p(0.754, 0.594), _Q25, True),
        ],
    },
    "4.1": {
        "title": "Table 4.1: TSRL-Net ablation (baseline = AGMR-Net without MDU)",
        "rows": [
            Row("Baseline", TSRL, ["ablation/t41_baseline.json"], _p(0.744, 0.581, 0.569, 0.667), _Q25),
            Row("Baseline + CRL", TSRL, ["ablation/t41_crl.json"], _p(0.755, 0.602, 0.605, 0.673), _Q25),
            Row("Baseline + TAL", TSRL, ["ablation/t41_tal.json"], _p(0.756, 0.617, 0.639, 0.660), _Q25),
            Row("Baseline + CRL + TAL (TSRL-Net)", TSRL, [], _p(0.760, 0.634, 0.650, 0.678), _Q25, True),
        ],
    },
    "4.2": {
        "title": "Table 4.2: TSRL-Net against other methods (ATLAS columns)",
        "rows": _COMPARISON + [
            Row("AGMR-Net", AGMR, [], _p(0.754, 0.594, 0.579, 0.713, 0.468), _Q25),
            Row("TSRL-Net", TSRL, [], _p(0.760, 0.634, 0.650, 0.678, 0.504), _Q25, True),
        ],
    },
    "4.7": {
        "title": "Table 4.7: residual learning variants (ATLAS; all without TAL)",
        "rows": [
            Row("Baseline", TSRL, ["ablation/t41_baseline.json"], _p(None, 0.581, 0.569, 0.667), _Q25),
            Row("+ Reverse Attention", TSRL, ["variants/ra_only.json"], _p(None, 0.587, 0.595, 0.647), _Q25),
            Row("+ CRL", TSRL, ["ablation/t41_crl.json"], _p(None, 0.602, 0.605, 0.673), _Q25, True),
        ],
    },
    "4.4": {
        "title": "Table 4.4: TAL focal exponent gamma and focus window beta (TSRL-Net, ATLAS)",
        "rows": [
            Row(f"gamma={g}, beta={b}", TSRL, [f"ablation/t44_g{g}_b{b}.json"], _p(None, dsc, rec, prec), _Q25,
                (g, b) == (2, 4))
            for (g, b), (dsc, rec, prec) in {
                (0, 2): (0.487, 0.479, 0.593), (0, 4): (0.487, 0.458, 0.632), (0, 8): (0.497, 0.456, 0.658),
                (1, 2): (0.472, 0.443, 0.631), (1, 4): (0.485, 0.475, 0.600), (1, 8): (0.460, 0.398, 0.674),
                (2, 2): (0.613, 0.647, 0.663), (2, 4): (0.634, 0.650, 0.678), (2, 8): (0.627, 0.640, 0.687),
                (3, 2): (0.441, 0.510, 0.451), (3, 4): (0.404, 0.339, 0.663), (3, 8): (0.379, 0.297, 0.709),
                (4, 2): (0.400, 0.415, 0.491), (4, 4): (0.408, 0.422, 0.488), (4, 8): (0.242, 0.317, 0.670),
            }.items()
        ],
    },
}


def wilcoxon_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of paired per-case values; NaN when it is undefined (n < 2 or no
    non-zero difference)."""
    from scipy.stats import wilcoxon

    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if x.shape != y.shape:
        raise ValueError(f"paired samples differ in length: {x.shape} vs {y.shape}")
    if x.size < 2 or np.allclose(x, y):
        return math.nan
    return float(wilcoxon(x, y).pvalue)


def _configs(root: str, row: Row, *names: str) -> list[str]:
    cfg = os.path.join(root, "configs")
    files = [os.path.join(cfg, f"{names[0]}.json")] + [os.path.join(cfg, o) for o in row.overrides]
    return files + [os.path.join(cfg, f"{n}.json") for n in names[1:]]


def _complexity(root: str, row: Row) -> dict[str, float]:
    """Parameters and torch FLOPs of the row's network at paper width and the documented input size."""
    from monai.bundle import ConfigParser

    from lesionlab.pipelines.complexity import count_flops_torch, count_parameters

    parser = ConfigParser()
    parser.read_config(_configs(root, row, "inference"))
    parser["bundle_root"] = root
    net = parser.get_parsed_content("network_def")
    meta = json.load(open(os.path.join(root, "configs", "metadata.json")))
    spec = meta["network_data_format"]["inputs"]["image"]
    shape = (1, spec["num_channels"], *[int(s) for s in spec["spatial_shape"]])
    return {"params": count_parameters(net), "flops_torch": count_flops_torch(net, shape), "input_shape": shape}


def _row_overrides(row: Row, root: str, datalist: str, epochs: int, quick: bool,
                   extra: dict[str, Any]) -> dict[str, Any]:
    """The config overrides a row's training and evaluation run with."""
    overrides = {"dataset_dir": os.path.dirname(datalist), "datalist": datalist, "bundle_root": root,
                 "progress": False, "val_interval": max(epochs, 1)}
    if quick:
        overrides.update(row.quick)
    overrides.update(extra)  # last: the caller's settings (e.g. sizes that fit its data) win over the defaults
    return overrides


def train_and_evaluate_row(row: Row, workdir: str, datalist: str, epochs: int, quick: bool,
                           extra: dict[str, Any]) -> tuple[str, float]:
    """Copy the row's bundle into ``workdir``, train it and run its ``evaluate.json``; return (root, seconds)."""
    from monai.bundle import run

    root = copy_bundle(bundle_path(row.bundle), os.path.join(workdir, row.slug))
    for stale in ("models", "eval"):  # a row re-run in the same folder must not resume or report an older run
        shutil.rmtree(os.path.join(root, stale), ignore_errors=True)
    overrides = _row_overrides(row, root, datalist, epochs, quick, extra)
    meta = os.path.join(root, "configs", "metadata.json")
    log = os.path.join(root, "configs", "logging.conf")
    t0 = time.time()
    run("training", meta_file=meta, config_file=_configs(root, row, "train"), logging_file=log, epochs=epochs,
        **overrides)
    run("evaluating", meta_file=meta, config_file=_configs(root, row, "train", "evaluate"), logging_file=log,
        **overrides)
    return root, round(time.time() - t0, 1)


def _run_row(row: Row, workdir: str, datalist: str, epochs: int, quick: bool, extra: dict[str, Any]) -> dict:
    root, seconds = train_and_evaluate_row(row, workdir, datalist, epochs, quick, extra)
    with open(os.path.join(root, "eval", "metrics_summary.json")) as f:
        report = json.load(f)
    overrides = _row_overrides(row, root, datalist, epochs, quick, extra)
    values = _config_values(root, row, {**overrides, "epochs": epochs},
                            ("sampling", "slices_per_volume", "pos_fraction", "batch_size", "epochs",
                             "patches_per_volume", "patch_size", "batch_volumes", "model_selection"))
    protocol = _protocol(values, _trainer_state(root), _data_description(datalist))
    protocol["model_selection"] = values.get("model_selection", "final")
    return {"summary": report["summary"], "cases": report["cases"], "seconds": seconds,
            "protocol": protocol, **_complexity(root, row)}


#: The thesis's training protocol (seed 002 §2.1, §5): 183 training volumes x 189 slices = 34,587 stacks per epoch,
#: batch 16 (2,162 updates per epoch), 150 epochs, tested on 46 volumes (8,694 stacks).
THESIS_PROTOCOL = {"epochs": 150, "batch_size": 16, "samples_per_epoch": 34_587, "updates_per_epoch": 2_162,
                   "updates": 324_300, "n_train": 183, "n_test": 46,
                   "text": "every slice of every training volume once per epoch (183 ATLAS R1.1 volumes x 189 slices "
                           "= 34,587 stacks), batch 16"}


def _config_values(root: str, row: Row, overrides: dict[str, Any], ids: Sequence[str]) -> dict[str, Any]:
    """The resolved values of ``ids`` in the row's training config with ``overrides`` (missing ids are left out)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(_configs(root, row, "train"))
    parser.update(overrides)
    return {i: parser.get_parsed_content(i) for i in ids if i in parser}


def _trainer_state(root: str) -> dict[str, int]:
    """Epochs, iterations (= optimiser updates) and iterations per epoch of a finished run, from its last checkpoint."""
    import glob

    import torch

    from lesionlab.pipelines.resume import find_last_checkpoint

    files = find_last_checkpoint(os.path.join(root, "models")) or glob.glob(os.path.join(root, "models", "last_*.pt"))
    if not files:
        return {}
    state = torch.load(files[0], map_location="cpu", weights_only=True).get("trainer", {})
    return {k: int(state[k]) for k in ("epoch", "iteration", "epoch_length") if k in state}


def _data_description(datalist: str) -> dict[str, Any]:
    """Training / held-out counts of a datalist, its slices per volume and whether it is a synthetic data set."""
    with open(datalist) as f:
        dl = json.load(f)
    folder = os.path.dirname(datalist)
    n_train, n_test = len(dl.get("training", [])), len(dl.get("validation", []))
    depth = None
    if n_train:
        import nibabel as nib

        first = dl["training"][0]["image"]
        try:
            depth = int(nib.load(first if os.path.isabs(first) else os.path.join(folder, first)).shape[2])
        except (OSError, IndexError, ValueError, nib.filebasedimages.ImageFileError):
            depth = None
    readme = os.path.join(folder, "README.txt")
    synthetic = os.path.exists(readme) and open(readme).read(64).startswith("SYNTHETIC DATA")
    return {"datalist": datalist, "n_train": n_train, "n_test": n_test, "slices_per_volume": depth,
            "synthetic": synthetic}


def _protocol(values: dict[str, Any], trainer: dict[str, int], data: dict[str, Any]) -> dict[str, Any]:
    """The protocol of one row's run: the sampling rule from its config, the counts from its trainer."""
    from lesionlab.pipelines.slices import describe_protocol

    if "patches_per_volume" in values:  # 3D U-Net: random patches per volume, volumes per batch
        text = (f"{values['patches_per_volume']} random {'x'.join(str(s) for s in values.get('patch_size', []))} "
                f"patches per volume and epoch, {values.get('batch_volumes', '?')} volumes per batch")
    elif data["n_train"]:
        text = describe_protocol(values, data["n_train"], data["slices_per_volume"])["text"]
    else:
        text = str(values.get("sampling", "?"))
    return {"text": text, "epochs": trainer.get("epoch", values.get("epochs")), "updates": trainer.get("iteration"),
            "updates_per_epoch": trainer.get("epoch_length")}


def _fmt(v: float | None, digits: int = 3) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _protocol_header(results: dict[str, dict], data: dict[str, Any] | None) -> list[str]:
    """The lines stating the protocol of our runs next to the thesis's (rows sharing a protocol are grouped)."""
    t = THESIS_PROTOCOL
    groups: dict[tuple, list[str]] = {}
    for name, r in results.items():
        p = r.get("protocol")
        if not p:  # results from before protocols were recorded
            continue
        key = (p.get("text"), p.get("epochs"), p.get("updates"), p.get("updates_per_epoch"), p.get("model_selection"))
        groups.setdefault(key, []).append(name)
    lines = []
    if data is not None:
        kind = "synthetic data set (not ATLAS)" if data["synthetic"] else "data set"
        lines.append(f"**Our runs** -- data: {data['n_train']} training / {data['n_test']} held-out volumes of "
                     f"`{os.path.basename(os.path.dirname(data['datalist']))}` ({kind}"
                     + (f", {data['slices_per_volume']} slices per volume" if data["slices_per_volume"] else "") + ").")
    for (text, epochs, updates, per_epoch, selection), names in groups.items():
        who = "all rows" if len(groups) == 1 else ", ".join(names)
        share = f" = {updates / t['updates']:.2%} of the thesis's updates" if updates else ""
        lines.append(f"- {who}: {epochs} epochs x {per_epoch if per_epoch is not None else '?'} = "
                     f"{updates if updates is not None else '?'} optimiser updates{share}; sampling: {text}; "
                     f"weights: {'best validation epoch' if selection == 'best' else 'final epoch'}.")
    lines.append(f"**Thesis** -- {t['epochs']} epochs x {t['updates_per_epoch']:,} = {t['updates']:,} optimiser updates; "
                 f"sampling: {t['text']}; final epoch; tested on {t['n_test']} ATLAS R1.1 volumes.")
    return lines + [""]


def _markdown(table_id: str, spec: dict, results: dict[str, dict], pvals: dict[str, float],
              data: dict[str, Any] | None = None) -> str:
    cols = [("dsc", "DSC"), ("dsc_global", "DSC(G)"), ("recall", "Rec"), ("precision", "Prec"), ("jaccard", "Jac"),
            ("asd_mm", "ASD"), ("hd95_mm", "95HD")]
    head = ("| method | " + " | ".join(c for _, c in cols)
            + " | p (DSC vs ref.) | params | FLOPs (torch) | thesis DSC / DSC(G) |")
    lines = [f"## {spec['title']}", "", *(_protocol_header(results, data) if results else []), head,
             "|" + "---|" * (len(cols) + 5)]
    for row in spec["rows"]:
        paper = f"{_fmt(row.paper.get('dsc'))} / {_fmt(row.paper.get('dsc_global'))}"
        if row.name not in results:
            lines.append(f"| {row.name} | " + " | ".join("not run" if i == 0 else "" for i in range(len(cols)))
                         + f" | | | | {paper} |")
            continue
        r = results[row.name]
        s = r["summary"]
        cells = []
        for key, _ in cols:
            if key == "dsc_global":
                cells.append(_fmt(s["dsc_global"]))
            else:
                m = s[key]
                digits = 2 if key.endswith("_mm") else 3
                std = "" if key != "dsc" or math.isnan(m["std"]) else f" ± {m['std']:.3f}"
                cells.append(_fmt(m["mean"], digits) + std)
        p = "ref." if row.reference else _fmt(pvals.get(row.name), 4)
        lines.append(f"| {row.name}{' (ref.)' if row.reference else ''} | " + " | ".join(cells)
                     + f" | {p} | {r['params']:,} | {r['flops_torch'] / 1e9:.2f} G | {paper} |")
    lines += ["", "DSC, Rec, Prec, Jac: means over cases; DSC(G): pooled over cases; ASD and 95HD in mm; p: two-sided "
              "Wilcoxon signed-rank test on per-case DSC against the reference row; FLOPs: PyTorch's counter (2 x "
              "MACs, transposed convolutions per input pixel) at the network's paper width and documented input size; "
              "thesis: the thesis's own numbers on ATLAS R1.1."]
    return "\n".join(lines) + "\n"


def _boxplot(spec: dict, results: dict[str, dict], out_png: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r.name for r in spec["rows"] if r.name in results]
    data = [[c["dsc"] for c in results[n]["cases"]] for n in names]
    fig, ax = plt.subplots(figsize=(max(5, 1.3 * len(names)), 4.5))
    ax.boxplot(data, showmeans=True)
    ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
    ax.set_ylabel("per-case DSC")
    ax.set_ylim(0, 1)
    ax.set_title(spec["title"], fontsize=9)
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)


def open_table(tables: dict[str, dict], table_id: str, datalist: str, workdir: str, prefix: str,
               datalist_command: str) -> tuple[dict, str, str]:
    """Check the table id and the datalist; return (table spec, absolute datalist, created ``<prefix>_<id>`` dir)."""
    if table_id not in tables:
        raise LesionlabError(f"unknown table {table_id!r}; choose from {sorted(tables)}")
    datalist = os.path.abspath(datalist)
    if not os.path.isfile(datalist):
        raise LesionlabError(f"{datalist}: datalist not found (build one with `{datalist_command}`)")
    workdir = os.path.join(os.path.abspath(workdir), f"{prefix}_{table_id}")
    os.makedirs(workdir, exist_ok=True)
    return tables[table_id], datalist, workdir


def run_rows(spec: dict, run_row: Any, label: str, workdir: str, datalist: str, epochs: int, quick: bool,
             extra: dict[str, Any] | None, rows: Sequence[str] | None = None) -> dict[str, dict]:
    """``run_row(row, workdir, datalist, epochs, quick, extra)`` for every runnable row (optionally only ``rows``)."""
    results: dict[str, dict] = {}
    for row in spec["rows"]:
        if row.bundle is None or (rows and row.name not in rows):
            continue
        print(f"[{label}] {row.name}: training {epochs} epoch(s) and evaluating ...", flush=True)
        results[row.name] = run_row(row, workdir, datalist, epochs, quick, extra or {})
    return results


def run_table(table_id: str, datalist: str, workdir: str, epochs: int = 150, quick: bool = False,
              rows: Sequence[str] | None = None, extra: dict[str, Any] | None = None) -> dict[str, str]:
    """Run every runnable row of a table and write its markdown table, box plot and JSON into ``workdir``.

    Args:
        table_id: one of ``TABLES`` ("3.1", "3.2", "3.4", "3.5", "3.6", "3.7", "3.8", "4.1", "4.2", "4.4", "4.7").
        datalist: datalist JSON with ``training`` and ``validation`` keys (``lesionlab datalist``); relative paths
            in it are resolved against its folder.
        workdir: output folder (one trained bundle copy per row).
        epochs: training epochs per row.
        quick: narrower networks (``Row.quick``) for CPU smoke runs; parameter and FLOP columns stay at paper width.
        rows: restrict to these row names.
        extra: further config overrides for every row, applied last (after ``Row.quick``), e.g.
            ``{"slices_per_volume": 4}``, or the in-plane sizes of small test volumes: ``{"roi_start": [0, 0],
            "roi_end": [48, 48], "spatial_size": [96, 96]}`` (AGMR-Net / TSRL-Net need multiples of 96; ids a
            bundle does not use, e.g. ``spatial_size`` for the 3D U-Net, are ignored by it).
    """
    spec, datalist, workdir = open_table(TABLES, table_id, datalist, workdir, "table", "lesionlab datalist")
    results = run_rows(spec, _run_row, f"table {table_id}", workdir, datalist, epochs, quick, extra, rows)
    ref = next((r.name for r in spec["rows"] if r.reference and r.name in results), None)
    pvals: dict[str, float] = {}
    if ref is not None:
        ref_cases = {c["case"]: c["dsc"] for c in results[ref]["cases"]}
        for name, r in results.items():
            if name != ref:
                pairs = [(c["dsc"], ref_cases[c["case"]]) for c in r["cases"] if c["case"] in ref_cases]
                pvals[name] = wilcoxon_p([a for a, _ in pairs], [b for _, b in pairs]) if pairs else math.nan
    paths = {"table": os.path.join(workdir, f"table_{table_id.replace('.', '_')}.md"),
             "boxplot": os.path.join(workdir, f"table_{table_id.replace('.', '_')}_dsc_boxplot.png"),
             "json": os.path.join(workdir, f"table_{table_id.replace('.', '_')}.json")}
    atomic_write_text(paths["table"], _markdown(table_id, spec, results, pvals, _data_description(datalist)))
    if results:
        _boxplot(spec, results, paths["boxplot"])
    atomic_write_text(paths["json"], json.dumps({"table": table_id, "epochs": epochs, "quick": quick,
                                                 "results": results, "p_values": pvals}, indent=2, default=float))
    return paths
