"""Renogram applications: ``lesionlab infer`` on DICOM NM studies and ``lesionlab experiments renogram``.

* :func:`infer_renogram`: runs the renogram bundle's own ``inference.json`` on every study found under the input
  (a DICOM NM file, a folder of DICOM frames, a folder tree of studies); per study and labelled fused frame it writes
  the parenchyma label image on the study grid (PNG and NIfTI, and a DICOM SEG with ``dicom-seg``), the split
  function (JSON) and the per-kidney time-activity curves (PNG), and a ``summary.json`` listing every study with its
  status (a failing study is reported, the others still run).
* :func:`run_renogram_table`: the paper's Table 2 columns (dice_coeff, precision, recall) and the flip-augmented
  variant of Tables 3/4 (plus accuracy and Jaccard), one bundle run per row through the shared experiments runner
  (:mod:`lesionlab.apps.experiments`), with Wilcoxon p-values against the reference row, parameter counts and a
  contour figure of held-out images.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lesionlab.apps.bundle import bundle_path
from lesionlab.apps.experiments import Row, _fmt, _run_row, wilcoxon_p
from lesionlab.errors import DataError, LesionlabError
from lesionlab.utils import atomic_write_text, save_figure

__all__ = ["BUNDLE", "TABLE", "is_renogram_bundle", "infer_renogram", "run_renogram_table"]

BUNDLE = "kidney_nm_renogram_parenchyma_segmentation"
#: ``--format`` -> the files written per fused frame (dicom-seg: PNG + NIfTI + DICOM SEG, see RenogramOutputHandler)
_LABEL_FORMATS = {"nifti": ["png", "nii.gz"], "png": ["png"], "dicom-seg": ["png", "nii.gz", "seg.dcm"]}


def _archive_metadata(path: str) -> dict | None:
    """``configs/metadata.json`` of a bundle archive (``<bundle>/configs/metadata.json`` in the zip), unextracted."""
    import zipfile

    try:
        with zipfile.ZipFile(path) as z:
            names = [n for n in z.namelist() if n.split("/")[-2:] == ["configs", "metadata.json"] and n.count("/") <= 2]
            return json.loads(z.read(names[0])) if len(names) == 1 else None
    except (OSError, zipfile.BadZipFile, ValueError):
        return None


def is_renogram_bundle(path: str) -> bool:
    """True when ``path`` (bundle folder, project bundle name or ``.zip`` archive) takes NM renograms
    (``network_data_format.inputs.image.modality == "NM"`` in its ``configs/metadata.json``)."""
    if os.path.isfile(path):
        meta = _archive_metadata(path)
    else:
        try:
            root = bundle_path(path)
        except LesionlabError:
            return False
        file = os.path.join(root, "configs", "metadata.json")
        if not os.path.isfile(file):
            return False
        with open(file) as f:
            meta = json.load(f)
    fmt = (meta or {}).get("network_data_format", {}).get("inputs", {}).get("image", {})
    return str(fmt.get("modality", "")).upper() == "NM"


def infer_renogram(bundle: str, inputs: str, output_dir: str, fmt: str = "nifti", device: str = "cpu",
                   overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Segment every renogram study under ``inputs`` with the bundle and write label images and read-outs.

    Args:
        bundle: bundle folder, project bundle name or exported ``.zip`` (weights from ``models/model.pt``).
        inputs: DICOM NM file, folder of DICOM frames, or a folder tree of studies.
        output_dir: output folder (created).
        fmt: ``"nifti"`` (PNG + NIfTI label images), ``"png"``, or ``"dicom-seg"`` (PNG + NIfTI + one DICOM SEG per
            fused frame, :func:`lesionlab.data.nm_dicom.write_renogram_seg`; a study whose source cannot carry a SEG
            keeps its PNG / NIfTI files and is reported failed with the reason).
        device: ``cpu`` or a CUDA device.
        overrides: inference config ids to override (e.g. ``{"frames": [1]}``).

    Returns:
        the summary (also in ``output_dir/summary.json``); ``exit_code`` 0 only when every study succeeded.
    """
    from monai.bundle import run

    from lesionlab.apps.deploy.archive import open_bundle
    from lesionlab.data.renogram import find_renogram_studies

    if fmt not in _LABEL_FORMATS:
        raise LesionlabError(f"format {fmt!r} is not available for NM renograms; choose from {sorted(_LABEL_FORMATS)}")
    output_dir = os.path.abspath(output_dir)
    studies = find_renogram_studies(inputs)
    os.makedirs(output_dir, exist_ok=True)
    cases = []
    with open_bundle(bundle) as src:
        if not os.path.exists(os.path.join(src.root, "models", "model.pt")):
            raise LesionlabError(f"{src.archive or src.root}: no models/model.pt; train or export the bundle first")
        for study in studies:
            t0 = time.time()
            try:
                run("evaluating", config_file=os.path.join(src.root, "configs", "inference.json"),
                    logging_file=os.path.join(src.root, "configs", "logging.conf"), bundle_root=src.root,
                    dataset_dir=study, output_dir=output_dir, label_formats=_LABEL_FORMATS[fmt],
                    device=f"$torch.device({device!r})", **dict(overrides or {}))
                cases.append({"study": study, "status": "ok", "seconds": round(time.time() - t0, 1)})
            except Exception as err:  # noqa: BLE001 - one bad study must not stop the others
                reason = err
                while reason.__cause__ is not None and not isinstance(reason, DataError):
                    reason = reason.__cause__
                cases.append({"study": study, "status": "failed", "error": str(reason)[:500]})
    readouts = sorted(f for f in os.listdir(output_dir) if f.endswith(".json") and f != "summary.json")
    summary = {"bundle": bundle, "inputs": os.path.abspath(inputs), "n_studies": len(cases),
               "n_ok": sum(c["status"] == "ok" for c in cases), "cases": cases, "readouts": readouts}
    summary["exit_code"] = 0 if summary["n_ok"] == len(cases) else 1
    atomic_write_text(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=2))
    return summary


def _p(dsc: float, prec: float, rec: float, acc: float | None = None, jac: float | None = None) -> dict[str, float]:
    vals = {"dsc": dsc, "precision": prec, "recall": rec, "accuracy": acc, "jaccard": jac}
    return {k: v for k, v in vals.items() if v is not None}


_Q = {"network_def#hidden_size": 64, "network_def#mlp_dim": 128, "network_def#num_layers": 4,
      "network_def#num_heads": 4, "network_def#decoder_channels": [64, 32, 16, 16]}

#: Table 2 (no augmentation) and the flip-augmented variant of Tables 3/4 (seed 003 §7)
TABLE: dict[str, Any] = {
    "title": "Tables 2-4: renal parenchyma segmentation, network comparison and flip augmentation (Our*)",
    "rows": [
        Row("FCN", BUNDLE, ["variants/fcn.json"], _p(0.90910, 0.93690, 0.92002),
            {"network_def#channels": [8, 16, 32, 64, 64], "network_def#fc_channels": 128}),
        Row("U-Net", BUNDLE, ["variants/unet.json"], _p(0.91213, 0.93451, 0.93301),
            {"network_def#channels": [8, 16, 32, 64, 128]}),
        Row("SegNet", BUNDLE, ["variants/segnet.json"], _p(0.89526, 0.94037, 0.92433),
            {"network_def#channels": [8, 16, 32, 64, 64]}),
        Row("Deeplab-v3+", BUNDLE, ["variants/deeplabv3plus.json"], _p(0.89156, 0.92684, 0.92139),
            {"network_def#layers": [1, 1, 1, 1], "network_def#widths": [8, 16, 32, 64],
             "network_def#stem_channels": 16, "network_def#aspp_channels": 32, "network_def#low_level_channels": 16,
             "network_def#decoder_channels": 32}),
        Row("Our (3x3 patches)", BUNDLE, [], _p(0.95066, 0.95685, 0.95592, 0.99138, 0.91626), _Q, True),
        Row("Our (16-pixel patches)", BUNDLE, ["variants/patch16.json"], {}, _Q),
        Row("Our* (flip augmentation)", BUNDLE, ["variants/flip_augmentation.json"],
            _p(0.93616, 0.90736, 0.97666, 0.98911, 0.88736), _Q),
    ],
}


def _mean(cases: Sequence[dict], key: str) -> float:
    vals = [c[key] for c in cases if key in c and not (isinstance(c[key], float) and math.isnan(c[key]))]
    return float(np.mean(vals)) if vals else math.nan


def _markdown(results: dict[str, dict], pvals: dict[str, float], epochs: int, quick: bool, n_train: int,
              n_test: int) -> str:
    cols = ("dsc", "precision", "recall", "accuracy", "jaccard")
    protocol = (f"Protocol: synthetic or given datalist, {n_train} training / {n_test} test images (patient-level "
                f"split, two labelled fused frames per study); at most {epochs} epochs per row, batch 8, Adam lr "
                f"0.002, BCE, best validation-Dice weights; {'narrow (quick) networks' if quick else 'paper widths'}. "
                "Paper: 560 training / 140 test images of 700 children's renograms, up to 1000 epochs, image-level "
                "random split.")
    head = "| method | " + " | ".join(cols) + " | Dice (pooled) | p (Dice vs ref.) | params | paper Dice / Prec / Rec |"
    lines = [f"## {TABLE['title']}", "", protocol, "", head, "|" + "---|" * (len(cols) + 5)]
    for row in TABLE["rows"]:
        paper = " / ".join(_fmt(row.paper.get(k), 5) for k in ("dsc", "precision", "recall"))
        if row.name not in results:
            lines.append(f"| {row.name} | not run |" + " |" * (len(cols) + 2) + f" {paper} |")
            continue
        r = results[row.name]
        cells = []
        for k in cols:
            std = np.std([c[k] for c in r["cases"]], ddof=1) if k == "dsc" and len(r["cases"]) > 1 else math.nan
            cells.append(_fmt(_mean(r["cases"], k), 4) + ("" if math.isnan(std) else f" ± {std:.3f}"))
        p = "ref." if row.reference else _fmt(pvals.get(row.name), 4)
        lines.append(f"| {row.name} | " + " | ".join(cells) + f" | {_fmt(r['summary']['dsc_global'], 4)} | {p} | "
                     f"{r['params']:,} | {paper} |")
    lines += ["", "Means over held-out images (Dice ± std); Dice (pooled): confusion matrix summed over the test set; "
              "p: two-sided Wilcoxon signed-rank test on per-image Dice against the reference row; params: the "
              "row's network at the bundle's (paper-size) widths; FCN = FCN-8s and SegNet with VGG16 widths, no "
              "pre-training. The paper's baselines were not retrained with augmentation; neither are ours."]
    return "\n".join(lines) + "\n"


def _contour_figure(results: dict[str, dict], test_items: Sequence[dict], out_png: str, n: int = 3) -> None:
    """Held-out fused frames (pseudo-colour) with the ground-truth contour and each row's predicted contour."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from PIL import Image

    from lesionlab.transforms.renogram import DropEarlyFrames, FuseFrames, LoadRenogram, PseudoColour, SelectFrames

    items = list(test_items)[:n]
    if not items:
        return
    fig, axes = plt.subplots(1, len(items), figsize=(4.2 * len(items), 4.4), squeeze=False)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, item in zip(axes[0], items):
        x = SelectFrames(item["frame"])(FuseFrames()(DropEarlyFrames()(LoadRenogram()(item["image"]))))
        ax.imshow(np.transpose(np.asarray(PseudoColour()(x)), (1, 2, 0)))
        ax.contour(np.asarray(Image.open(item["label"])) > 0, [0.5], colors="white", linewidths=1.5)
        study = os.path.basename(os.path.dirname(item["image"]))
        stem = os.path.splitext(os.path.basename(item["image"]))[0]
        for k, (name, r) in enumerate(results.items()):
            png = os.path.join(r["root"], "eval", "predictions", f"{study}_{stem}_fused{item['frame']}.png")
            if os.path.exists(png):
                ax.contour(np.asarray(Image.open(png)) > 0, [0.5], colors=colours[k % len(colours)], linewidths=1)
                ax.plot([], [], color=colours[k % len(colours)], label=name)
        ax.plot([], [], color="white", label="ground truth")
        ax.set_title(f"{study}, fused frame {item['frame']}", fontsize=9)
        ax.axis("off")
    axes[0][-1].legend(fontsize=7, loc="lower right", facecolor="0.3", labelcolor="white")
    fig.tight_layout()
    save_figure(fig, out_png, dpi=110)


def _size_overrides(row: Row, size: int) -> dict[str, Any]:
    """Input size of a row: ``spatial_size``, and for the Transformer rows the matching ``img_size`` and the patch
    (the 3 x 3 grid of preset A at any size; 16 pixels for the patch-16 row)."""
    out: dict[str, Any] = {"spatial_size": [size, size]}
    if row.name.startswith("Our"):
        patch = 16 if "16-pixel" in row.name else size // 3
        if size % patch or size % 3:
            raise LesionlabError(f"size {size} must be a multiple of 3 and of the patch ({patch})")
        out.update({"network_def#img_size": [size, size], "network_def#patch_size": patch})
    return out


def run_renogram_table(datalist: str, workdir: str, epochs: int = 1000, quick: bool = False,
                       rows: Sequence[str] | None = None, extra: dict[str, Any] | None = None,
                       size: int = 384) -> dict[str, str]:
    """Train and evaluate every runnable row; write ``table_renogram.md``, ``.json`` and a contour figure.

    Args:
        datalist: renogram datalist (``training``, ``validation``, ``test``; see
            :func:`lesionlab.pipelines.renogram.build_renogram_datalist`).
        workdir: output folder (one trained bundle copy per row).
        epochs: maximum epochs per row (early stopping still applies).
        quick: narrower networks (``Row.quick``) for CPU runs; parameter counts stay at the bundle's widths.
        rows: restrict to these row names; the other rows of an earlier run in ``workdir`` are kept in the table.
        extra: config overrides for every row, applied last (e.g. ``{"batch_size": 4}``).
        size: network input size (384 in the paper; 96 or 192 for CPU runs); the Transformer rows keep the 3 x 3
            grid (patch ``size // 3``) or 16-pixel patches.
    """
    datalist, out = os.path.abspath(datalist), os.path.join(os.path.abspath(workdir), "table_renogram")
    if not os.path.isfile(datalist):
        raise LesionlabError(f"{datalist}: datalist not found (build one with `lesionlab synth renogram`)")
    todo = [r for r in TABLE["rows"] if not rows or r.name in rows]
    results: dict[str, dict] = {}
    previous = os.path.join(out, "table_renogram.json")
    if rows and os.path.isfile(previous):  # a partial re-run keeps the other rows of the earlier run
        with open(previous) as f:
            results = {k: v for k, v in json.load(f)["results"].items() if k not in rows}
    for row in todo:
        print(f"[renogram] {row.name}: training up to {epochs} epoch(s) and evaluating ...", flush=True)
        os.makedirs(out, exist_ok=True)
        settings = {"val_interval": 1, **_size_overrides(row, size), **(extra or {})}
        result = _run_row(row, out, datalist, epochs, quick, settings)
        results[row.name] = {**result, "root": os.path.join(out, row.slug)}
    ref = next((r.name for r in TABLE["rows"] if r.reference and r.name in results), None)
    pvals: dict[str, float] = {}
    if ref is not None:
        ref_cases = {c["case"]: c["dsc"] for c in results[ref]["cases"]}
        for name, r in results.items():
            pairs = [(c["dsc"], ref_cases[c["case"]]) for c in r["cases"] if c["case"] in ref_cases]
            if name != ref and pairs:
                pvals[name] = wilcoxon_p([a for a, _ in pairs], [b for _, b in pairs])
    with open(datalist) as f:
        dl = json.load(f)
    base = os.path.dirname(datalist)
    test = [{**it, "image": os.path.join(base, it["image"]), "label": os.path.join(base, it["label"])}
            for it in dl.get("test", [])]
    paths = {"table": os.path.join(out, "table_renogram.md"), "json": os.path.join(out, "table_renogram.json"),
             "contours": os.path.join(out, "table_renogram_contours.png")}
    atomic_write_text(paths["table"], _markdown(results, pvals, epochs, quick, len(dl.get("training", [])), len(test)))
    atomic_write_text(paths["json"], json.dumps({"epochs": epochs, "quick": quick, "results": results,
                                                 "p_values": pvals}, indent=2, default=float))
    if results:
        _contour_figure(results, test, paths["contours"])
    return paths
