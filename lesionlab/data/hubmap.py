"""HuBMAP "Hacking the Kidney" data: run-length masks, polygon annotations and the competition folder layout.

The competition (and the thesis, spec seed 000 §2) ships::

    <root>/train/<id>.tiff      PAS whole-slide images (multi-GB; pyramidal, flat, multi-page or channel-first)
    <root>/train/<id>.json      optional glomerulus polygons (GeoJSON features, pixel coordinates x, y)
    <root>/train.csv            columns ``id,encoding``: the glomerulus mask of each slide, run-length encoded

Run-length encoding (competition convention): the mask is flattened **column-major** (pixels numbered top to
bottom, then left to right), and the string lists ``start length`` pairs with 1-based starts. The submission csv
(``id,predicted``) uses the same encoding.

Nothing here loads a whole slide or mask: :func:`rle_decode_region` rasterises only a window from the runs, and
:func:`rle_encode_columns` encodes a mask delivered in column strips (so a 40,000-pixel-wide prediction is encoded
strip by strip).
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from lesionlab.errors import DataError

__all__ = [
    "rle_encode",
    "rle_decode",
    "rle_runs",
    "rle_decode_region",
    "rle_encode_columns",
    "runs_to_string",
    "read_train_csv",
    "allow_long_csv_fields",
    "read_polygons",
    "rasterize_polygons",
    "HubmapSlide",
    "find_hubmap_slides",
    "iter_windows",
]


def _runs_of_flat(flat: np.ndarray, offset: int = 0) -> np.ndarray:
    """(n, 2) array of 0-based (start, length) runs of non-zero values in a flat array."""
    padded = np.concatenate([[0], (np.asarray(flat) > 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    starts, ends = edges[::2], edges[1::2]
    return np.stack([starts + offset, ends - starts], axis=1).astype(np.int64)


def runs_to_string(runs: np.ndarray) -> str:
    """0-based (start, length) runs -> the competition's ``"start length ..."`` string with 1-based starts."""
    runs = np.asarray(runs, dtype=np.int64).reshape(-1, 2)
    out = runs.copy()
    out[:, 0] += 1
    return " ".join(map(str, out.ravel().tolist()))


def rle_encode(mask: np.ndarray) -> str:
    """Encode a 2D mask (non-zero = glomerulus) in the competition's column-major, 1-based run-length format."""
    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"rle_encode expects a 2D mask, got shape {mask.shape}")
    return runs_to_string(_runs_of_flat(mask.ravel(order="F")))


def rle_runs(rle: str, shape: tuple[int, int], path: str | None = None) -> np.ndarray:
    """Parse an RLE string into sorted 0-based (start, length) runs, checking them against ``shape``.

    Raises:
        DataError: odd number of values, non-integers, non-positive lengths, runs outside the image or overlapping.
    """
    text = "" if rle is None else str(rle).strip()
    if not text or text.lower() == "nan":
        return np.zeros((0, 2), np.int64)
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError as e:
        raise DataError(path, f"run-length encoding has a non-integer value ({e})") from e
    if values.size % 2:
        raise DataError(path, f"run-length encoding has an odd number of values ({values.size})")
    runs = values.reshape(-1, 2).copy()
    runs[:, 0] -= 1
    n = int(shape[0]) * int(shape[1])
    if (runs[:, 1] <= 0).any() or (runs[:, 0] < 0).any() or (runs.sum(1) > n).any():
        raise DataError(path, f"run-length encoding has runs outside a {shape[0]} x {shape[1]} image or empty runs")
    runs = runs[np.argsort(runs[:, 0], kind="stable")]
    if (runs[1:, 0] < runs[:-1].sum(1)).any():
        raise DataError(path, "run-length encoding has overlapping runs")
    return runs


def rle_decode(rle: str, shape: tuple[int, int], path: str | None = None) -> np.ndarray:
    """Decode a competition RLE string into a ``shape`` (height, width) uint8 mask of 0/1."""
    return rle_decode_region(rle_runs(rle, shape, path), shape, 0, 0, int(shape[0]), int(shape[1]))


def rle_decode_region(runs: np.ndarray, shape: tuple[int, int], y: int, x: int, h: int, w: int) -> np.ndarray:
    """Rasterise the window (``y``, ``x``, ``h``, ``w``) of the mask given by 0-based column-major ``runs``.

    Only runs that touch the window's columns are visited; outside the image the window is 0.
    """
    height, width = int(shape[0]), int(shape[1])
    out = np.zeros((w, h), dtype=np.uint8)  # column-major window: out[col, row]
    x0, x1 = max(x, 0), min(x + w, width)
    if x1 <= x0 or len(runs) == 0:
        return np.ascontiguousarray(out.T)
    starts, ends = runs[:, 0], runs[:, 0] + runs[:, 1]
    first = np.searchsorted(ends, x0 * height, side="right")
    last = np.searchsorted(starts, x1 * height, side="left")
    for s, e in zip(starts[first:last], ends[first:last]):
        # a run may span several columns: split it at column boundaries
        for col in range(max(int(s) // height, x0), min((int(e) - 1) // height, x1 - 1) + 1):
            r0 = max(int(s) - col * height, 0)
            r1 = min(int(e) - col * height, height)
            a, b = max(r0, y), min(r1, y + h)
            if b > a:
                out[col - x, a - y:b - y] = 1
    return np.ascontiguousarray(out.T)


def rle_encode_columns(read_columns: Callable[[int, int], np.ndarray], shape: tuple[int, int], strip: int = 256) -> str:
    """Encode a mask delivered in column strips: ``read_columns(x, w) -> (height, w)`` mask, ``x`` stepping by
    ``strip``.

    Runs that continue across a strip boundary are merged, so the result equals :func:`rle_encode` of the whole
    mask while only one strip is in memory.
    """
    height, width = int(shape[0]), int(shape[1])
    chunks: list[np.ndarray] = []
    last_end = -1  # end (exclusive) of the last run so far
    for x in range(0, width, strip):
        w = min(strip, width - x)
        cols = np.asarray(read_columns(x, w))
        if cols.shape != (height, w):
            raise ValueError(f"read_columns({x}, {w}) returned shape {cols.shape}, expected {(height, w)}")
        runs = _runs_of_flat(cols.ravel(order="F"), offset=x * height)
        if len(runs) and runs[0, 0] == last_end:  # a run continuing from the previous strip
            prev = next(c for c in reversed(chunks) if len(c))
            prev[-1, 1] += runs[0, 1]
            runs = runs[1:]
            last_end = int(prev[-1].sum())
        if len(runs):
            chunks.append(runs)
            last_end = int(runs[-1].sum())
    return runs_to_string(np.concatenate(chunks) if chunks else np.zeros((0, 2), np.int64))


def allow_long_csv_fields() -> None:
    """Let the csv module read RLE fields of any length (a whole-slide RLE runs to megabytes; the default cap is
    128 kB)."""
    csv.field_size_limit(2**31 - 1)


def read_train_csv(path: str | os.PathLike) -> dict[str, str]:
    """``{slide id: rle}`` from a competition ``train.csv`` (``id,encoding``) or a submission (``id,predicted``)."""
    path = os.fspath(path)
    allow_long_csv_fields()
    if not os.path.isfile(path):
        raise DataError(path, "mask csv not found")
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            fields = reader.fieldnames or []
            col = next((c for c in ("encoding", "predicted") if c in fields), None)
            if "id" not in fields or col is None:
                raise DataError(path, f"expected columns 'id' and 'encoding' (or 'predicted'), found {fields}")
            return {row["id"]: row[col] or "" for row in reader}
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(path, f"cannot read the csv ({e})") from e


def read_polygons(path: str | os.PathLike) -> list[np.ndarray]:
    """Glomerulus outlines from a HuBMAP ``<id>.json``: a list of (n, 2) float arrays of (x, y) pixel coordinates.

    Accepts a GeoJSON ``FeatureCollection``, a bare list of features (the competition's files) or a list of
    geometries; ``Polygon`` exteriors and every ``MultiPolygon`` part are returned (holes ignored).
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(path, f"cannot read the polygon JSON ({e})") from e
    feats = data.get("features", []) if isinstance(data, dict) else data
    out = []
    for feat in feats if isinstance(feats, list) else []:
        geom = feat.get("geometry", feat) if isinstance(feat, dict) else None
        if not isinstance(geom, dict):
            continue
        if geom.get("type") == "Polygon":
            parts = [geom["coordinates"]]
        elif geom.get("type") == "MultiPolygon":
            parts = geom["coordinates"]
        else:
            continue
        for poly in parts:
            ring = np.asarray(poly[0], dtype=np.float64).reshape(-1, 2)
            if len(ring) >= 3:
                out.append(ring)
    return out


def rasterize_polygons(polygons: list[np.ndarray], y: int, x: int, h: int, w: int) -> np.ndarray:
    """Fill the polygons ((x, y) rings in slide pixels) into the window (``y``, ``x``, ``h``, ``w``) as 0/1 uint8."""
    from skimage.draw import polygon as fill_polygon

    out = np.zeros((h, w), np.uint8)
    for ring in polygons:
        if ring[:, 0].max() < x or ring[:, 0].min() >= x + w or ring[:, 1].max() < y or ring[:, 1].min() >= y + h:
            continue
        rr, cc = fill_polygon(ring[:, 1] - y, ring[:, 0] - x, shape=(h, w))
        out[rr, cc] = 1
    return out


@dataclass
class HubmapSlide:
    """One annotated slide of a HuBMAP-layout folder: image path, RLE (may be empty) and optional polygon file."""

    id: str
    image: str
    rle: str | None
    polygons: str | None = None


def find_hubmap_slides(root: str | os.PathLike, split: str = "train", require_masks: bool = True) -> list[HubmapSlide]:
    """The slides of a HuBMAP-layout folder (``<root>/<split>/*.tiff`` + ``<root>/<split>.csv``), sorted by id.

    Raises:
        DataError: the folder or csv is missing, or (``require_masks``) a slide has no row in the csv.
    """
    root = os.fspath(root)
    folder = os.path.join(root, split)
    if not os.path.isdir(folder):
        raise DataError(folder, "HuBMAP image folder not found (expected <root>/train/*.tiff)")
    csv_path = os.path.join(root, f"{split}.csv")
    masks = read_train_csv(csv_path) if os.path.isfile(csv_path) else {}
    if require_masks and not masks:
        raise DataError(csv_path, "mask csv not found (expected <root>/train.csv with columns id,encoding)")
    slides = []
    for name in sorted(os.listdir(folder)):
        stem, ext = os.path.splitext(name)
        if ext.lower() not in (".tif", ".tiff") or name.startswith("."):
            continue
        if require_masks and stem not in masks:
            raise DataError(os.path.join(folder, name), f"slide has no row in {csv_path}")
        poly = os.path.join(folder, stem + ".json")
        poly_path = poly if os.path.isfile(poly) else None
        slides.append(HubmapSlide(stem, os.path.join(folder, name), masks.get(stem), poly_path))
    if not slides:
        raise DataError(folder, "no .tiff slides found")
    return slides


def iter_windows(shape: tuple[int, int], size: int, stride: int) -> Iterator[tuple[int, int]]:
    """Top-left corners (y, x), row by row, of ``size`` windows every ``stride`` pixels covering ``shape``.

    The last row/column may reach past the image (readers pad it: white image, empty mask); nothing is cropped.
    """
    def starts(n: int) -> list[int]:
        out = list(range(0, max(n - size, 0) + 1, stride))
        while out[-1] + size < n:
            out.append(out[-1] + stride)
        return out

    for y in starts(int(shape[0])):
        for x in starts(int(shape[1])):
            yield y, x
