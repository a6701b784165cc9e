"""Streaming whole-slide glomerulus segmentation with bounded memory (``lesionlab wsi``).

:func:`segment_slide` runs a tile-trained network over a whole slide without ever holding the slide or a full
resolution mask in memory:

1. **Patches** of ``patch`` x ``patch`` level-0 pixels (1024, the training tile) on a grid with ``overlap`` are read
   lazily (:func:`lesionlab.data.slides.open_slide`), row by row, by a background reader thread, so reading
   overlaps with the network. Patches with less than ``min_tissue`` tissue
   (:func:`lesionlab.data.tiles.tissue_fraction`) skip the network and count as background.
2. Each patch is area-resized to ``network_size`` (256: the training scale), normalised, segmented; the glomerulus
   probability is **blended** at that prediction scale (MONAI's Gaussian importance map) into an accumulator covering
   one row of patches. Rows that no later patch touches are final and go to an on-disk probability map (uint8,
   ``prob_scale = network_size / patch`` of level 0, i.e. 1/16 of the slide's pixels as bytes).
3. **Outputs** are produced from the probability map tile by tile, the level-0 mask being bilinearly interpolated
   from it and thresholded on the fly:

   - ``<id>_glomeruli.ome.tif``: pyramidal tiled OME-TIFF mask (0 / 255, opens in QuPath and any OME viewer),
   - ``<id>_glomeruli.geojson``: one polygon per glomerulus (QuPath ``FeatureCollection``, classification
     "Glomerulus", area in um^2 as a measurement),
   - a row ``id,predicted`` (HuBMAP submission RLE, column-major) appended to ``submission.csv``,
   - ``<id>_summary.json``: glomerulus count, areas (px and um^2), patch counts and timings: ``read_s`` (reader
     thread), ``network_s`` (network + blending), ``wait_s`` (network idle waiting for the reader: reading is the
     bottleneck when it is large), ``patches_s`` (the patch loop), ``total_s`` (with the outputs).

Peak memory is a few patches, one accumulator row (``network_size`` x slide width / 4 floats) and the object
labelling at 1/8 of the slide (4 bytes per 64 level-0 pixels); `bench/bench_wsi.py` measures it.
"""

from __future__ import annotations

import concurrent.futures
import csv
import json
import os
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from lesionlab.data.hubmap import allow_long_csv_fields, iter_windows, rle_encode_columns
from lesionlab.data.pyramid import write_pyramidal_tiff
from lesionlab.data.slides import open_slide
from lesionlab.data.tiles import tissue_fraction
from lesionlab.utils import atomic_path, atomic_write_text

__all__ = ["segment_slide", "ProbabilityMap", "IMAGENET_MEAN", "IMAGENET_STD"]

IMAGENET_MEAN = (123.675, 116.28, 103.53)
IMAGENET_STD = (58.395, 57.12, 57.375)


class ProbabilityMap:
    """Glomerulus probability (uint8, 0-255) of a slide at ``scale`` x level 0, stored in an on-disk memory map.

    :meth:`mask_region` returns any level-0 (or downsampled) window of the thresholded mask by bilinear
    interpolation of the stored probabilities (pixel centres aligned, ``align_corners=False`` convention).
    """

    def __init__(self, path: str, slide_shape: tuple[int, int], scale: float) -> None:
        self.path, self.slide_shape, self.scale = path, slide_shape, scale
        self.shape = (int(np.ceil(slide_shape[0] * scale)), int(np.ceil(slide_shape[1] * scale)))
        self.data = np.lib.format.open_memmap(path, mode="w+", dtype=np.uint8, shape=self.shape)

    def mask_region(self, ds: float, y: int, x: int, h: int, w: int, threshold: float = 0.5) -> np.ndarray:
        """0/1 mask of the window (``y``, ``x``, ``h``, ``w``) of the level with downsample ``ds``."""
        from scipy.ndimage import map_coordinates

        f = ds * self.scale  # prediction pixels per output pixel
        uy = (np.arange(y, y + h) + 0.5) * f - 0.5
        ux = (np.arange(x, x + w) + 0.5) * f - 0.5
        y0, x0 = max(int(np.floor(uy[0])) - 1, 0), max(int(np.floor(ux[0])) - 1, 0)
        y1, x1 = min(int(np.ceil(uy[-1])) + 2, self.shape[0]), min(int(np.ceil(ux[-1])) + 2, self.shape[1])
        if y1 <= y0 or x1 <= x0:
            return np.zeros((h, w), np.uint8)
        crop = np.asarray(self.data[y0:y1, x0:x1], dtype=np.float32)
        gy, gx = np.meshgrid(np.clip(uy, 0, self.shape[0] - 1) - y0, np.clip(ux, 0, self.shape[1] - 1) - x0,
                             indexing="ij")
        prob = map_coordinates(crop, [gy, gx], order=1, mode="nearest")
        return (prob >= threshold * 255.0).astype(np.uint8)

    def close(self, delete: bool = True) -> None:
        self.data.flush()
        del self.data
        if delete and os.path.exists(self.path):
            os.unlink(self.path)


def _importance(size: int, device: torch.device) -> torch.Tensor:
    from monai.data.utils import compute_importance_map

    return compute_importance_map((size, size), mode="gaussian", sigma_scale=0.125, device=device).float()


def _objects(prob: ProbabilityMap, threshold: float, mpp: float | None) -> list[dict[str, Any]]:
    """Connected glomeruli: labelled at half the prediction scale, outlined at the prediction scale."""
    from scipy import ndimage
    from skimage.measure import find_contours

    small = np.zeros(((prob.shape[0] + 1) // 2, (prob.shape[1] + 1) // 2), bool)
    step = 1024
    for r in range(0, prob.shape[0], step):  # threshold in row blocks: never the whole map as float
        small[r // 2:(r + step) // 2] = prob.data[r:r + step:2, ::2] >= threshold * 255
    labels, n = ndimage.label(small, output=np.int32)
    inv = 1.0 / prob.scale
    out = []
    for i, sl in enumerate(ndimage.find_objects(labels)):
        if sl is None:
            continue
        ys = slice(max(sl[0].start * 2 - 2, 0), sl[0].stop * 2 + 2)
        xs = slice(max(sl[1].start * 2 - 2, 0), sl[1].stop * 2 + 2)
        crop = np.asarray(prob.data[ys, xs], dtype=np.float32)
        own = np.repeat(np.repeat(labels[ys.start // 2:(ys.stop + 1) // 2, xs.start // 2:(xs.stop + 1) // 2] == i + 1,
                                  2, 0), 2, 1)[:crop.shape[0], :crop.shape[1]]
        crop = np.where(own, crop, 0.0)
        area_px = float((crop >= threshold * 255).sum()) * inv * inv
        contours = find_contours(np.pad(crop, 1), threshold * 255)
        if not contours:
            continue
        ring = max(contours, key=len) - 1.0
        coords = np.stack([(ring[:, 1] + xs.start + 0.5) * inv, (ring[:, 0] + ys.start + 0.5) * inv], 1)
        coords = np.round(coords, 1).tolist()
        if coords[0] != coords[-1]:
            coords.append(coords[0])
        if len(coords) >= 4:
            out.append({"coordinates": coords, "area_px": area_px,
                        "area_um2": area_px * mpp * mpp if mpp else None})
    return out


def _geojson(objects: Sequence[dict[str, Any]]) -> str:
    feats = []
    for i, o in enumerate(objects):
        meas = {"Area px^2": round(o["area_px"], 1)}
        if o["area_um2"] is not None:
            meas["Area um^2"] = round(o["area_um2"], 1)
        feats.append({"type": "Feature", "id": f"glomerulus-{i + 1}",
                      "geometry": {"type": "Polygon", "coordinates": [o["coordinates"]]},
                      "properties": {"objectType": "annotation", "isLocked": False,
                                     "classification": {"name": "Glomerulus", "color": [151, 189, 8]},
                                     "measurements": meas}})
    return json.dumps({"type": "FeatureCollection", "features": feats})


def _append_submission(path: str, slide_id: str, rle: str) -> None:
    """Add or replace the row of ``slide_id`` in a HuBMAP submission csv (atomic rewrite)."""
    rows: list[list[str]] = []
    allow_long_csv_fields()
    if os.path.exists(path):
        with open(path, newline="", encoding="utf-8") as f:
            rows = list(csv.reader(f))[1:]
    rows = [r for r in rows if r and r[0] != slide_id] + [[slide_id, rle]]
    with atomic_path(path, suffix=".csv") as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f, lineterminator="\n")
            w.writerow(["id", "predicted"])
            w.writerows(rows)


@torch.no_grad()
def segment_slide(
    slide_path: str | os.PathLike,
    network: torch.nn.Module | Callable[[torch.Tensor], torch.Tensor],
    out_dir: str | os.PathLike,
    slide_id: str | None = None,
    patch: int = 1024,
    overlap: float = 0.25,
    network_size: int = 256,
    batch_size: int = 4,
    min_tissue: float = 0.02,
    threshold: float = 0.5,
    device: str | torch.device = "cpu",
    mean: Sequence[float] = IMAGENET_MEAN,
    std: Sequence[float] = IMAGENET_STD,
    outputs: Sequence[str] = ("ome_tiff", "rle", "geojson"),
    pyramid_levels: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Segment the glomeruli of one whole slide; returns the summary (also written as ``<id>_summary.json``).

    Args:
        slide_path: slide file (TIFF/OME-TIFF/SVS/...; see :mod:`lesionlab.data.slides`).
        network: eval-mode network (or TorchScript module) mapping ``(B, 3, n, n)`` to 2-class logits.
        out_dir: output folder (created).
        slide_id: name of the outputs and of the RLE row (default: file name without extension).
        patch: patch side in level-0 pixels (the training tile size).
        overlap: fraction of the patch shared by neighbouring patches (blended).
        network_size: network input side (patches are area-resized to it).
        batch_size: patches per network call.
        min_tissue: patches with a lower tissue fraction skip the network.
        threshold: probability threshold of the mask.
        device: network device.
        mean, std: input normalisation (the training one: ImageNet statistics on 0-255 values).
        outputs: any of ``"ome_tiff"``, ``"rle"``, ``"geojson"``.
        pyramid_levels: OME-TIFF levels (default: halve until below 2,048 pixels).
        progress: show a progress bar.
    """
    from tqdm import tqdm

    if not 0.0 <= overlap < 1.0:
        raise ValueError(f"overlap must be in [0, 1), got {overlap}")
    if patch % network_size:
        raise ValueError(f"patch ({patch}) must be a multiple of network_size ({network_size})")
    bad = set(outputs) - {"ome_tiff", "rle", "geojson"}
    if bad:
        raise ValueError(f"unknown outputs {sorted(bad)}; choose from ome_tiff, rle, geojson")
    device = torch.device(device)
    slide_path = os.fspath(slide_path)
    slide_id = slide_id or os.path.basename(slide_path).split(".")[0]
    out = os.path.abspath(os.fspath(out_dir))
    os.makedirs(out, exist_ok=True)
    stride = max(int(round(patch * (1.0 - overlap))) // (patch // network_size) * (patch // network_size),
                 patch // network_size)
    f = patch // network_size  # level-0 pixels per prediction pixel
    weight = _importance(network_size, device)
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    t_start = time.perf_counter()
    timings = {"read_s": 0.0, "network_s": 0.0, "wait_s": 0.0}
    with open_slide(slide_path) as slide:
        height, width = slide.shape
        mpp = slide.mpp
        prob = ProbabilityMap(os.path.join(out, f".{slide_id}_prob.npy"), (height, width), 1.0 / f)
        windows = list(iter_windows((height, width), patch, stride))
        rows: dict[int, list[int]] = {}
        for y, x in windows:
            rows.setdefault(y, []).append(x)
        row_ys = sorted(rows)
        wp = prob.shape[1] + network_size  # accumulator width in prediction pixels (last patch may overhang)
        n_tissue = 0

        def read_row(y: int) -> list[tuple[int, np.ndarray | None]]:
            t0 = time.perf_counter()
            got = []
            for x in rows[y]:
                rgb = slide.read_region(0, y, x, patch, patch)
                got.append((x, rgb if tissue_fraction(rgb, step=8) >= min_tissue else None))
            timings["read_s"] += time.perf_counter() - t0
            return got

        bar = tqdm(total=len(windows), desc=f"segmenting {slide_id}", unit="patch", disable=not progress)
        acc = torch.zeros(2, network_size, wp, device=device)  # [weighted probability, weight] for one row
        acc_top = 0  # prediction row of acc[.., 0, :]
        with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
            pending = pool.submit(read_row, row_ys[0])
            for k, y in enumerate(row_ys):
                t_wait = time.perf_counter()
                got = pending.result()
                timings["wait_s"] += time.perf_counter() - t_wait  # network idle, waiting for the reader
                if k + 1 < len(row_ys):
                    pending = pool.submit(read_row, row_ys[k + 1])
                py = y // f
                if py > acc_top:  # rows above py are final: flush them and shift the accumulator
                    shift = py - acc_top
                    _flush(prob, acc, acc_top, min(shift, network_size))
                    acc = torch.roll(acc, -shift, dims=1)
                    acc[:, max(network_size - shift, 0):] = 0
                    acc_top = py
                t0 = time.perf_counter()
                tissue = [(x, rgb) for x, rgb in got if rgb is not None]
                n_tissue += len(tissue)
                for b in range(0, len(tissue), batch_size):
                    chunk = tissue[b:b + batch_size]
                    batch = torch.from_numpy(np.stack([rgb for _, rgb in chunk])).to(device)
                    batch = batch.permute(0, 3, 1, 2).float()
                    batch = F.interpolate(batch, size=(network_size, network_size), mode="area")
                    logits = network((batch - mean_t) / std_t)
                    p = torch.softmax(logits.float(), 1)[:, 1]
                    for (x, _), pi in zip(chunk, p):
                        px = x // f
                        acc[0, :, px:px + network_size] += pi * weight
                for x, _ in got:  # every patch, tissue or not, adds weight (non-tissue = background)
                    px = x // f
                    acc[1, :, px:px + network_size] += weight
                timings["network_s"] += time.perf_counter() - t0
                bar.update(len(got))
            _flush(prob, acc, acc_top, network_size)
        bar.close()
        prob.data.flush()
    summary: dict[str, Any] = {"id": slide_id, "slide": slide_path, "shape": [height, width], "mpp": mpp,
                               "patches": len(windows), "tissue_patches": n_tissue, "patch": patch,
                               "overlap": overlap, "network_size": network_size, "threshold": threshold}
    timings["patches_s"] = time.perf_counter() - t_start
    try:
        objects = _objects(prob, threshold, mpp)
        summary["glomeruli"] = len(objects)
        summary["glomerulus_area_px"] = [round(o["area_px"], 1) for o in objects]
        summary["total_area_px"] = round(float(sum(o["area_px"] for o in objects)), 1)
        summary["total_area_um2"] = round(summary["total_area_px"] * mpp * mpp, 1) if mpp else None
        files: dict[str, str] = {}
        if "geojson" in outputs:
            files["geojson"] = os.path.join(out, f"{slide_id}_glomeruli.geojson")
            atomic_write_text(files["geojson"], _geojson(objects))
        if "rle" in outputs:
            files["rle"] = os.path.join(out, "submission.csv")
            rle = rle_encode_columns(lambda x, w: prob.mask_region(1.0, 0, x, height, w, threshold), (height, width),
                                     strip=256)
            _append_submission(files["rle"], slide_id, rle)
        if "ome_tiff" in outputs:
            levels = pyramid_levels or 1
            while pyramid_levels is None and min(height, width) / 2**levels >= 2048:
                levels += 1
            files["ome_tiff"] = os.path.join(out, f"{slide_id}_glomeruli.ome.tif")
            write_pyramidal_tiff(files["ome_tiff"], lambda lv, yy, xx, hh, ww: prob.mask_region(
                2.0**lv, yy, xx, hh, ww, threshold) * 255, (height, width), channels=1, n_levels=levels, tile=512,
                mpp=mpp)
        summary["files"] = files
    finally:
        prob.close()
    timings["total_s"] = time.perf_counter() - t_start
    summary["timings"] = {k: round(v, 3) for k, v in timings.items()}
    atomic_write_text(os.path.join(out, f"{slide_id}_summary.json"), json.dumps(summary, indent=2))
    return summary


def _flush(prob: ProbabilityMap, acc: torch.Tensor, top: int, n: int) -> None:
    """Write the first ``n`` accumulator rows (prediction rows ``top..top+n``) to the probability map."""
    n = min(n, prob.shape[0] - top)
    if n <= 0:
        return
    w = prob.shape[1]
    p = acc[0, :n, :w] / acc[1, :n, :w].clamp_min(1e-6)
    prob.data[top:top + n] = (p.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
