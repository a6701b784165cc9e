"""Synthetic single-glomerulus crops in four classes, in the label format of seed 004 (Fig. 5b).

Each crop is drawn as stain concentrations (haematoxylin-like nuclei, eosin/PAS-like matrix) and coloured by the
Beer-Lambert model with stain vectors that vary from slide to slide (so stain normalisation has work to do). The
classes differ by morphology only, following the paper's descriptions (§1, §7.2):

- Normal (正常肾小球): round capillary tuft with sparse nuclei inside Bowman's capsule, clear Bowman's space;
- FSG, segmental sclerosis (节段性硬化): a sector of the tuft replaced by homogeneous matrix without nuclei;
- MsPGN, mesangial proliferation (系膜细胞增生): hypercellular tuft (about three times the nuclei, central);
- CGN, crescent (新月体形成): a crescent of cells filling Bowman's space on one side, the tuft pushed aside.

Crops are ``<slide>_<n>.png`` with varying rectangular sizes; ``labels.jsonl`` holds one JSON object per line with the
paper's Chinese one-hot keys plus ``"stain"``; ``targets/HE.png`` and ``targets/PAS.png`` are one normal glomerulus
per stain (the paper's per-stain "standard staining image"). Synthetic: for tests and demos, never for accuracy
claims about real tissue.
"""

from __future__ import annotations

import json
import os

import numpy as np
from scipy import ndimage

from lesionlab.data.glomeruli import CLASS_KEYS, CLASS_NAMES
from lesionlab.data.synthetic.common import prepare_output_folder
from lesionlab.utils import atomic_path, atomic_write_text

__all__ = ["synth_glomeruli_cls", "render_glomerulus", "SYNTHETIC_GLOMERULI_README"]

SYNTHETIC_GLOMERULI_README = """Synthetic glomerulus crops written by `lesionlab synth glomeruli-cls`.

Four classes (Normal, FSG segmental sclerosis, MsPGN mesangial proliferation, CGN crescent) drawn from simple
morphology rules and coloured with per-slide HE or PAS stain vectors. File names are <slide>_<n>.png; labels.jsonl
uses the one-hot Chinese keys of Sun et al. 2022 (Fig. 5b) plus a "stain" field; targets/ holds one reference crop
per stain for stain normalisation.

SYNTHETIC DATA: for software tests and demonstrations only. Not tissue, not for research conclusions or clinical use.
"""

# unit OD vectors (R, G, B) of the two stains of each stain type, before the per-slide jitter
_STAINS = {
    "HE": np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11]]),  # haematoxylin, eosin
    "PAS": np.array([[0.65, 0.70, 0.29], [0.27, 0.92, 0.29]]),  # haematoxylin, PAS magenta
}


def _disk(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, r: float) -> np.ndarray:
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _nuclei(conc: np.ndarray, yy, xx, mask: np.ndarray, n: int, rng: np.random.Generator, radius=(1.3, 2.2)) -> None:
    ys, xs = np.nonzero(mask)
    if len(ys) == 0:
        return
    for i in rng.choice(len(ys), size=min(n, len(ys)), replace=False):
        conc[_disk(yy, xx, ys[i], xs[i], rng.uniform(*radius))] += rng.uniform(0.8, 1.2)


def render_glomerulus(label: int, shape: tuple[int, int], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Haematoxylin and matrix-stain concentration maps ``(H, W)`` of one glomerulus of class ``label`` (0-3)."""
    if label not in range(4):
        raise ValueError(f"label must be 0-3 ({CLASS_NAMES}), got {label}.")
    h, w = shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    cy, cx = h / 2 + rng.uniform(-2, 2), w / 2 + rng.uniform(-2, 2)
    big = 0.42 * min(h, w) * rng.uniform(0.9, 1.05)
    dist = np.hypot(yy - cy, xx - cx)
    angle = np.arctan2(yy - cy, xx - cx)
    hema = np.zeros(shape)
    matrix = 0.25 * ndimage.gaussian_filter(rng.random(shape), 2.0) + 0.12  # surrounding tubulointerstitium
    outside = dist > big + 2
    _nuclei(hema, yy, xx, outside, int(0.004 * h * w), rng)
    matrix[~outside] = 0.03  # Bowman's space: nearly unstained
    matrix[np.abs(dist - big) <= 1.2] = 0.7  # Bowman's capsule
    tuft_r = big * rng.uniform(0.78, 0.86)
    tcy, tcx = cy, cx
    if label == 3:  # crescent: cells fill Bowman's space on one side, the tuft shifts away from it
        side = rng.uniform(-np.pi, np.pi)
        span = rng.uniform(0.55, 0.8) * np.pi
        tuft_r = big * rng.uniform(0.58, 0.66)
        tcy, tcx = cy - np.sin(side) * (big - tuft_r) * 0.7, cx - np.cos(side) * (big - tuft_r) * 0.7
        diff = np.angle(np.exp(1j * (angle - side)))
        crescent = (dist < big - 1) & (np.abs(diff) < span / 2) & ~_disk(yy, xx, tcy, tcx, tuft_r + 1)
        matrix[crescent] = 0.45
        _nuclei(hema, yy, xx, crescent, int(crescent.sum() / 14), rng, radius=(1.2, 1.9))
    tuft = _disk(yy, xx, tcy, tcx, tuft_r)
    lobules = ndimage.gaussian_filter(rng.random(shape), 1.5)
    matrix[tuft] = 0.3 + 0.5 * lobules[tuft]
    nuclear_area = tuft
    n_nuclei = int(tuft.sum() / 45)
    if label == 1:  # segmental sclerosis: a sector of homogeneous matrix without nuclei
        side = rng.uniform(-np.pi, np.pi)
        span = rng.uniform(0.45, 0.7) * np.pi
        diff = np.angle(np.exp(1j * (np.arctan2(yy - tcy, xx - tcx) - side)))
        sclerosis = tuft & (np.abs(diff) < span / 2)
        matrix[sclerosis] = 0.95
        nuclear_area = tuft & ~sclerosis
    elif label == 2:  # mesangial proliferation: about three times the nuclei, towards the centre
        n_nuclei *= 3
        nuclear_area = _disk(yy, xx, tcy, tcx, tuft_r * 0.85)
    _nuclei(hema, yy, xx, nuclear_area, n_nuclei, rng)
    return ndimage.gaussian_filter(hema, 0.6), ndimage.gaussian_filter(matrix, 0.6)


def _slide_stains(stain: str, rng: np.random.Generator) -> tuple[np.ndarray, float]:
    """Per-slide stain vectors (jittered, unit rows) and intensity: the colour variation between slides."""
    w = np.clip(_STAINS[stain] + rng.normal(0, 0.06, (2, 3)), 0.02, None)
    return w / np.linalg.norm(w, axis=1, keepdims=True), rng.uniform(0.8, 1.25)


def _to_rgb(hema: np.ndarray, matrix: np.ndarray, w: np.ndarray, scale: float, rng: np.random.Generator) -> np.ndarray:
    od = scale * (hema[..., None] * w[0] + matrix[..., None] * w[1])
    rgb = 255.0 * np.exp(-od) + rng.normal(0, 3.0, od.shape)
    return np.clip(np.round(rgb), 0, 255).astype(np.uint8)


def _write_png(path: str, rgb: np.ndarray) -> None:
    from PIL import Image

    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(rgb).save(tmp)


def synth_glomeruli_cls(
    out_dir: str | os.PathLike,
    n_slides: int = 20,
    crops_per_slide: int = 10,
    size: int = 96,
    seed: int = 0,
    pas_fraction: float = 0.4,
) -> dict[str, object]:
    """Write a synthetic four-class glomerulus set: crops, ``labels.jsonl``, ``targets/{HE,PAS}.png``, README.

    Classes are balanced within each slide (cycled, then shuffled), so a slide-grouped split keeps every class on
    every side. Crop sides vary between ``0.85 size`` and ``1.15 size`` (rectangular, as manual rectangles are).

    Returns:
        ``{"out_dir", "labels", "n_images", "targets": {stain: path}}``.
    """
    if n_slides < 3 or crops_per_slide < 1 or size < 32:
        raise ValueError(f"need n_slides >= 3, crops_per_slide >= 1, size >= 32; got {n_slides}, "
                         f"{crops_per_slide}, {size}.")
    if not 0.0 <= pas_fraction <= 1.0:
        raise ValueError(f"pas_fraction must be in [0, 1], got {pas_fraction}.")
    out = prepare_output_folder(out_dir, SYNTHETIC_GLOMERULI_README)
    rng = np.random.default_rng(seed)
    lines = []
    for s in range(n_slides):
        slide = f"{s:02d}{rng.integers(16**6):06x}"
        stain = "PAS" if rng.random() < pas_fraction else "HE"
        w, scale = _slide_stains(stain, rng)
        labels = [k % 4 for k in range(crops_per_slide)]
        rng.shuffle(labels)
        for n, label in enumerate(labels, start=1):
            shape = tuple(int(size * rng.uniform(0.85, 1.15)) for _ in range(2))
            rgb = _to_rgb(*render_glomerulus(label, shape, rng), w, scale, rng)
            name = f"{slide}_{n}.png"
            _write_png(os.path.join(out, name), rgb)
            row = {"image_name": name, **{k: int(i == label) for i, k in enumerate(CLASS_KEYS)}, "stain": stain}
            lines.append(json.dumps(row, ensure_ascii=False))
    targets = {}
    for stain in _STAINS:
        path = os.path.join(out, "targets", f"{stain}.png")
        _write_png(path, _to_rgb(*render_glomerulus(0, (size, size), rng), _STAINS[stain], 1.0, rng))
        targets[stain] = path
    labels_path = os.path.join(out, "labels.jsonl")
    atomic_write_text(labels_path, "\n".join(lines) + "\n")
    return {"out_dir": out, "labels": labels_path, "n_images": len(lines), "targets": targets}
