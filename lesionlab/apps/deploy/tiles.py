"""``lesionlab infer`` on 2D colour tiles (PNG/TIFF/JPEG, e.g. H&E patches): the bundle's own inference workflow
per tile, a PNG class map on the tile's own grid, a JSON report per tile and ``summary.json``.

Used by :func:`lesionlab.apps.deploy.infer.infer_bundle` when the input is a tile or a folder of tiles. The bundle's
inference config must load tiles with ``LoadImaged`` and write PNG with ``SaveImaged`` to ``@output_dir`` (the nuclei
bundle does).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from lesionlab import __version__
from lesionlab.apps.deploy.archive import open_bundle
from lesionlab.apps.deploy.config import load_json
from lesionlab.errors import DataError, LesionlabError
from lesionlab.utils import atomic_path, atomic_write_text

__all__ = ["TILE_SUFFIXES", "is_tile_input", "find_tiles", "infer_tiles"]

logger = logging.getLogger(__name__)

TILE_SUFFIXES = (".png", ".tif", ".tiff", ".jpg", ".jpeg")


def find_tiles(path: str) -> list[str]:
    """The tile files named by ``path`` (a tile, or a folder searched recursively), sorted."""
    if os.path.isfile(path):
        return [path] if path.lower().endswith(TILE_SUFFIXES) else []
    return sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files
                  if f.lower().endswith(TILE_SUFFIXES) and not f.startswith("."))


def is_tile_input(path: str) -> bool:
    """True when ``path`` is a tile or a folder whose only image files are tiles."""
    if not os.path.exists(path):
        return False
    if os.path.isfile(path):
        return path.lower().endswith(TILE_SUFFIXES)
    from lesionlab.data.io import image_kind, is_dicom_file

    tiles = find_tiles(path)
    others = [os.path.join(d, f) for d, _, files in os.walk(path) for f in files
              if not f.lower().endswith(TILE_SUFFIXES) and (image_kind(os.path.join(d, f))
                                                            or is_dicom_file(os.path.join(d, f)))]
    return bool(tiles) and not others


def _report(tile: str, pred: np.ndarray, out: str, names: Mapping[str, str], src, metadata: Mapping) -> dict:
    counts = np.bincount(pred.ravel().astype(np.int64), minlength=len(names) or int(pred.max()) + 1)
    labels = {names.get(str(i), str(i)): {"pixels": int(c), "fraction": float(c / pred.size)}
              for i, c in enumerate(counts)}
    return {"tile": os.path.basename(tile), "input": tile, "shape": list(pred.shape), "labels": labels,
            "foreground_fraction": float((pred > 0).mean()),
            "output": out, "bundle": src.name, "bundle_version": metadata.get("version"),
            "lesionlab_version": __version__}


def infer_tiles(bundle: str, inputs: str, output_dir: str, fmt: str = "nifti", device: str = "cpu",
                overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Segment every tile of ``inputs`` with a 2D bundle: ``<tile>_seg.png`` (class indices) and
    ``<tile>_report.json`` (pixels per class) per tile, and ``summary.json`` (a failed tile is reported, the others
    still run). ``fmt`` must be ``nifti`` (the default, meaning "the bundle's own output") or ``png``."""
    import torch
    from PIL import Image

    from lesionlab.apps.deploy.infer import _check_request
    from lesionlab.apps.deploy.predictor import BundlePredictor, failure_reason
    from lesionlab.pipelines.case_runner import run_cases

    if fmt not in ("nifti", "png"):
        raise LesionlabError(f"--format {fmt}: tiles are segmented to PNG class maps; NRRD/DICOM SEG need volumes")
    _check_request("nifti", device)
    tiles = find_tiles(inputs)
    if not tiles:
        raise DataError(inputs, f"no tiles ({', '.join(TILE_SUFFIXES)}) found")
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    overrides = dict(overrides or {})
    reports: dict[str, dict] = {}
    stems: dict[str, str] = {}
    for t in tiles:  # output names; tiles sharing a name (a.png, a.tif or sub-folders) get a suffix
        base = os.path.splitext(os.path.basename(t))[0]
        stem, k = base, 1
        while stem in stems.values():
            k += 1
            stem = f"{base}_{k}"
        stems[t] = stem
    with open_bundle(bundle) as src, tempfile.TemporaryDirectory(prefix="lesionlab-tiles-") as work:
        if not os.path.exists(os.path.join(src.root, "models", "model.pt")):
            raise LesionlabError(f"{src.archive or src.root}: no models/model.pt; export a trained bundle first")
        metadata = load_json(os.path.join(src.root, "configs", "metadata.json"))
        names = next(iter(metadata["network_data_format"]["outputs"].values())).get("channel_def", {})
        with BundlePredictor(src.root, torch.device(device), overrides, os.path.join(work, ".prediction"),
                             outputs=(".png",)) as predictor:

            def segment(tile: str) -> None:
                try:
                    pred_file = predictor.predict(tile)
                    pred = np.asarray(Image.open(pred_file))
                    with Image.open(tile) as im:
                        if pred.shape != (im.height, im.width):
                            raise LesionlabError(f"prediction {pred.shape} differs from the tile ({im.height}, "
                                                 f"{im.width})")
                    stem = stems[tile]
                    out = os.path.join(output_dir, stem + "_seg.png")
                    with atomic_path(out, suffix=".png") as tmp:
                        shutil.copyfile(pred_file, tmp)
                    reports[tile] = _report(tile, pred, out, names, src, metadata)
                    atomic_write_text(os.path.join(output_dir, stem + "_report.json"),
                                      json.dumps(reports[tile], indent=2))
                except LesionlabError:
                    raise
                except Exception as err:
                    raise LesionlabError(failure_reason(err)) from err

            batch = run_cases(tiles, segment, log=logger, name=os.path.basename)
    reasons = {f.case: f.reason for f in batch.failed}
    summary = {"bundle": src.name, "bundle_version": metadata.get("version"), "format": "png", "device": device,
               "overrides": overrides, "n_cases": len(tiles), "n_ok": len(batch.ok), "n_failed": len(batch.failed),
               "exit_code": batch.exit_code, "seconds": round(batch.seconds, 2),
               "cases": [{"case": os.path.basename(t), "input": t,
                          "status": "failed" if os.path.basename(t) in reasons else "ok",
                          "error": reasons.get(os.path.basename(t)), "output": reports.get(t, {}).get("output"),
                          "foreground_fraction": reports.get(t, {}).get("foreground_fraction")}
                         for t in tiles]}
    atomic_write_text(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=2))
    return summary
