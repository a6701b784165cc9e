"""``lesionlab infer`` on whole-slide images: streaming whole-slide inference with a bundle that supports it.

Used by :func:`lesionlab.apps.deploy.infer.infer_bundle` when the input is a slide or a folder of slides and the
bundle's ``inference.json`` defines ``network_size`` and ``imagenet_mean`` (the glomerulus bundle does). Each slide
goes through :func:`lesionlab.pipelines.wsi.segment_slide` (patches read lazily, bounded memory) and gives, in the
output folder:

- ``<id>_glomeruli.ome.tif``: pyramidal OME-TIFF mask (0 / 255),
- ``<id>_glomeruli.geojson``: one QuPath polygon per object,
- a row of ``submission.csv`` (HuBMAP RLE),
- ``<id>_summary.json``: object count and areas (px, um^2 when the slide records its pixel size), timings,

and ``summary.json`` lists every slide with its status (a failed slide is reported, the others still run).

What is a slide: a vendor file OpenSlide reads (``.svs``, ``.ndpi``, ...), an ``.ome.tif(f)``, or a ``.tif(f)`` that
is pyramidal or larger than :data:`TILE_MAX_SIDE` on a side (smaller TIFFs are tiles, see
:mod:`lesionlab.apps.deploy.tiles`).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from typing import Any

from lesionlab import __version__
from lesionlab.apps.deploy.archive import open_bundle
from lesionlab.apps.deploy.config import load_json
from lesionlab.errors import DataError, LesionlabError
from lesionlab.utils import atomic_write_text

__all__ = ["TILE_MAX_SIDE", "is_slide_file", "find_slides", "supports_whole_slides", "infer_slides"]

logger = logging.getLogger(__name__)

#: a plain single-level TIFF with no side above this is a tile, not a slide
TILE_MAX_SIDE = 4096
_TIFF = (".tif", ".tiff", ".btf")


def is_slide_file(path: str) -> bool:
    """True for a whole-slide image file (see the module docstring); unreadable TIFFs count as slides so that the
    slide reader names the problem."""
    from lesionlab.data.slides import OPENSLIDE_SUFFIXES, open_slide

    lower = path.lower()
    if lower.endswith(OPENSLIDE_SUFFIXES) or lower.endswith((".ome.tif", ".ome.tiff")):
        return True
    if not lower.endswith(_TIFF):
        return False
    try:
        with open_slide(path) as slide:
            return len(slide.levels) > 1 or max(slide.shape) > TILE_MAX_SIDE
    except DataError:
        return True


def find_slides(path: str) -> list[str]:
    """The slide files named by ``path`` (a slide, or a folder searched recursively), sorted."""
    if os.path.isfile(path):
        return [path] if is_slide_file(path) else []
    if not os.path.isdir(path):
        return []
    return sorted(os.path.join(d, f) for d, _, files in os.walk(path) for f in files
                  if not f.startswith(".") and is_slide_file(os.path.join(d, f)))


def supports_whole_slides(bundle_root: str) -> bool:
    """True when the bundle's inference config defines what whole-slide inference needs."""
    path = os.path.join(bundle_root, "configs", "inference.json")
    if not os.path.isfile(path):
        return False
    config = load_json(path)
    return all(k in config for k in ("network_size", "imagenet_mean", "imagenet_std", "network_def"))


def infer_slides(bundle: str, slides: list[str], output_dir: str, fmt: str = "nifti", device: str = "cpu",
                 overrides: Mapping[str, Any] | None = None, trust: bool = False,
                 progress: bool = True) -> dict[str, Any]:
    """Segment every slide with the bundle (archive or folder); returns the summary (also ``summary.json``).

    ``fmt`` must be ``nifti`` (the default, meaning "the bundle's own outputs") or ``ome-tiff``.

    Raises:
        LesionlabError: another format, a bundle without weights or without whole-slide support, a bundle that fails
            the manifest or allow-list checks (unless ``trust``). Failures of single slides are in the summary.
    """
    from lesionlab.apps.deploy.infer import _check_request, check_bundle_before_running
    from lesionlab.apps.glomeruli import load_bundle_network
    from lesionlab.pipelines.case_runner import run_cases
    from lesionlab.pipelines.wsi import segment_slide
    from lesionlab.utils import get_device

    if fmt not in ("nifti", "ome-tiff"):
        raise LesionlabError(f"--format {fmt}: whole slides are segmented to OME-TIFF masks, HuBMAP RLE and GeoJSON")
    _check_request("nifti", device)
    output_dir = os.path.abspath(output_dir)
    os.makedirs(output_dir, exist_ok=True)
    results: dict[str, dict] = {}
    with open_bundle(bundle) as src:
        where = src.archive or src.root
        if not supports_whole_slides(src.root):
            raise LesionlabError(f"{where}: this bundle has no whole-slide inference (its inference.json lacks "
                                 "network_size/imagenet_mean/imagenet_std); give it tiles instead")
        if not os.path.exists(os.path.join(src.root, "models", "model.pt")):
            raise LesionlabError(f"{where}: no models/model.pt; export a trained bundle first")
        check_bundle_before_running(src, trust)
        metadata = load_json(os.path.join(src.root, "configs", "metadata.json"))
        net, cfg = load_bundle_network(src.root, device=device, overrides=dict(overrides or {}))

        def segment(path: str) -> None:
            results[path] = segment_slide(path, net, output_dir, device=get_device(device),
                                          network_size=int(cfg["network_size"]), mean=cfg["imagenet_mean"],
                                          std=cfg["imagenet_std"], progress=progress)

        batch = run_cases(slides, segment, log=logger, name=os.path.basename)
    reasons = {f.case: f.reason for f in batch.failed}
    cases = []
    for path in slides:
        s = results.get(path, {})
        cases.append({"case": os.path.basename(path), "input": path,
                      "status": "failed" if os.path.basename(path) in reasons else "ok",
                      "error": reasons.get(os.path.basename(path)), "output": s.get("files", {}).get("ome_tiff"),
                      "files": s.get("files"), "objects": s.get("glomeruli"), "total_area_px": s.get("total_area_px"),
                      "total_area_um2": s.get("total_area_um2"), "seconds": s.get("timings", {}).get("total_s")})
    summary = {"bundle": src.name, "bundle_version": metadata.get("version"), "lesionlab_version": __version__,
               "format": "ome-tiff+rle+geojson", "device": device, "overrides": dict(overrides or {}),
               "n_cases": len(slides), "n_ok": len(batch.ok), "n_failed": len(batch.failed),
               "exit_code": batch.exit_code, "seconds": round(batch.seconds, 2), "cases": cases}
    atomic_write_text(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=2))
    return summary
