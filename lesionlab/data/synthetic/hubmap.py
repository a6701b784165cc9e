"""Synthetic PAS-like kidney slides in the HuBMAP "Hacking the Kidney" layout (``lesionlab synth hubmap``).

Each slide is rendered procedurally, tile by tile, from a few numbers (tissue outline, tubule grid, glomerulus
circles), so a 30,000 x 40,000 slide is written with bounded memory and every pyramid level is rendered directly at
its own scale. What a slide looks like:

- glass: near-white (230-250) with faint noise;
- tissue: an irregular blob covering most of the slide, pink PAS counterstain with a grid of tubule-like rings
  (lumen, magenta epithelium, dark nuclei dots);
- glomeruli: round tufts (dense purple, many nuclei) surrounded by a pale ring (Bowman's space) and a thin capsule;
  the mask covers the capsule's interior (tuft + Bowman's space), as HuBMAP's annotations do.

Output (same layout as the competition)::

    <out>/train/<id>.tiff    pyramidal tiled TIFF (SubIFD levels), 0.5 um/px; with ``layouts`` also a flat
                             channel-first TIFF, as some competition files are
    <out>/train/<id>.json    glomerulus polygons (GeoJSON FeatureCollection, pixel coordinates)
    <out>/train.csv          id,encoding (column-major RLE)
    <out>/README.txt         what the data are (synthetic; not for clinical use or accuracy claims)
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Sequence

import numpy as np

from lesionlab.data.hubmap import rle_encode_columns
from lesionlab.data.pyramid import write_pyramidal_tiff
from lesionlab.data.synthetic.common import prepare_output_folder
from lesionlab.utils import atomic_path, atomic_write_text

__all__ = ["SyntheticKidneySlide", "synth_hubmap", "SYNTHETIC_HUBMAP_README"]

SYNTHETIC_HUBMAP_README = """Synthetic PAS-like kidney slides written by `lesionlab synth hubmap`.

Layout of the HuBMAP "Hacking the Kidney" competition: train/<id>.tiff, train/<id>.json (glomerulus polygons),
train.csv (id,encoding; column-major run-length encoding with 1-based starts).
The images are procedurally generated (tissue, tubule-like rings, round glomeruli with Bowman's space). They exist
for tests, demos, pipeline checks and benchmarks only: never for clinical use or for reporting accuracy.
"""

_TUBULE = 56  # tubule grid cell in level-0 pixels


def _hash01(a: np.ndarray, b: np.ndarray, seed: int) -> np.ndarray:
    """Deterministic pseudo-random numbers in [0, 1) from two integer coordinate arrays (same value in every tile)."""
    h = (a.astype(np.uint64) * np.uint64(0x9E3779B1) ^ b.astype(np.uint64) * np.uint64(0x85EBCA77)
         ^ np.uint64(seed * 0xC2B2AE3D + 1))
    h ^= h >> np.uint64(15)
    h *= np.uint64(0x2C1B3C6D)
    h ^= h >> np.uint64(12)
    return (h & np.uint64(0xFFFFFF)).astype(np.float32) / np.float32(0x1000000)


class SyntheticKidneySlide:
    """A procedurally rendered PAS-like slide: ``render(level_downsample, y, x, h, w)`` and ``mask(...)``.

    Args:
        shape: (height, width) of level 0.
        seed: random seed (tissue outline, glomerulus positions, textures).
        n_glomeruli: number of glomeruli; default about one per 0.4 megapixel of tissue.
        radius: (min, max) glomerulus radius in level-0 pixels (about 100 um diameter at 0.5 um/px).
    """

    def __init__(self, shape: Sequence[int], seed: int = 0, n_glomeruli: int | None = None,
                 radius: tuple[int, int] = (70, 120)) -> None:
        self.shape = (int(shape[0]), int(shape[1]))
        self.seed = int(seed)
        rng = np.random.default_rng(seed)
        height, width = self.shape
        self.center = np.array([height * rng.uniform(0.45, 0.55), width * rng.uniform(0.45, 0.55)])
        self.axes = np.array([height * rng.uniform(0.36, 0.44), width * rng.uniform(0.36, 0.44)])
        self.wobble = rng.uniform(0.03, 0.08, 4)
        self.phase = rng.uniform(0, 2 * np.pi, 4)
        area = np.pi * self.axes.prod()
        n = int(n_glomeruli) if n_glomeruli is not None else max(2, int(area / 4e5))
        circles: list[tuple[float, float, float]] = []
        for _ in range(n * 50):
            if len(circles) >= n:
                break
            r = float(rng.uniform(*radius))
            cy, cx = rng.uniform(0, height), rng.uniform(0, width)
            if self._tissue_level(np.array([[cy]]), np.array([[cx]]))[0, 0] > 1.0 + 2.5 * r / self.axes.min():
                if all((cy - a) ** 2 + (cx - b) ** 2 > (r + c + 40) ** 2 for a, b, c in circles):
                    circles.append((cy, cx, r))
        self.glomeruli = np.array(circles, dtype=np.float64).reshape(-1, 3)

    def _tissue_level(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        """> 1 inside the tissue blob (normalised radial coordinate compared with a wobbly boundary)."""
        dy, dx = (yy - self.center[0]) / self.axes[0], (xx - self.center[1]) / self.axes[1]
        ang = np.arctan2(dy, dx)
        edge = 1.0 + sum(self.wobble[k] * np.sin((k + 2) * ang + self.phase[k]) for k in range(4))
        return edge / np.maximum(np.sqrt(dy * dy + dx * dx), 1e-6)

    def _grid(self, ds: float, y: int, x: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
        """Level-0 coordinates of the pixel centres of a window of a level with downsample ``ds``."""
        yy = (np.arange(y, y + h, dtype=np.float64) + 0.5) * ds
        xx = (np.arange(x, x + w, dtype=np.float64) + 0.5) * ds
        return yy[:, None], xx[None, :]

    def _nearby(self, yy: np.ndarray, xx: np.ndarray) -> np.ndarray:
        g = self.glomeruli
        if not len(g):
            return g
        y0, y1, x0, x1 = yy.min(), yy.max(), xx.min(), xx.max()
        keep = (g[:, 0] + g[:, 2] + 10 >= y0) & (g[:, 0] - g[:, 2] - 10 <= y1) & \
               (g[:, 1] + g[:, 2] + 10 >= x0) & (g[:, 1] - g[:, 2] - 10 <= x1)
        return g[keep]

    def mask(self, ds: float, y: int, x: int, h: int, w: int) -> np.ndarray:
        """0/1 uint8 glomerulus mask of a window (level-0 coordinates scaled by ``ds``)."""
        yy, xx = self._grid(ds, y, x, h, w)
        out = np.zeros((h, w), np.uint8)
        ys, xs = yy[:, 0], xx[0]
        for cy, cx, r in self._nearby(yy, xx):  # each disc only inside its bounding box (tall RLE strips)
            i0, i1 = np.searchsorted(ys, cy - r), np.searchsorted(ys, cy + r, "right")
            j0, j1 = np.searchsorted(xs, cx - r), np.searchsorted(xs, cx + r, "right")
            out[i0:i1, j0:j1] |= (((yy[i0:i1] - cy) ** 2 + (xx[:, j0:j1] - cx) ** 2) <= r * r).astype(np.uint8)
        return out

    def render(self, ds: float, y: int, x: int, h: int, w: int) -> np.ndarray:
        """(h, w, 3) uint8 RGB of a window of the level with downsample ``ds``."""
        yy, xx = self._grid(ds, y, x, h, w)
        iy, ix = np.floor(yy).astype(np.int64), np.floor(xx).astype(np.int64)
        iy, ix = np.broadcast_to(iy, (h, w)), np.broadcast_to(ix, (h, w))
        noise = _hash01(iy, ix, self.seed) - 0.5
        tissue = self._tissue_level(yy, xx) > 1.0
        # tubules: one ring per grid cell, jittered centre and radius
        cy_, cx_ = np.floor(yy / _TUBULE), np.floor(xx / _TUBULE)
        cyb, cxb = np.broadcast_to(cy_, (h, w)).astype(np.int64), np.broadcast_to(cx_, (h, w)).astype(np.int64)
        jy = (_hash01(cyb, cxb, self.seed + 1) - 0.5) * 14 + (cy_ + 0.5) * _TUBULE
        jx = (_hash01(cyb, cxb, self.seed + 2) - 0.5) * 14 + (cx_ + 0.5) * _TUBULE
        rad = 14 + 8 * _hash01(cyb, cxb, self.seed + 3)
        d = np.sqrt((yy - jy) ** 2 + (xx - jx) ** 2)
        lumen, wall = d < rad * 0.45, (d >= rad * 0.45) & (d < rad)
        nuclei = wall & (_hash01(iy // 5, ix // 5, self.seed + 4) > 0.82)
        rgb = np.empty((h, w, 3), np.float32)
        rgb[...] = (240.0, 238.0, 242.0)  # glass
        stroma = np.array([232.0, 196.0, 216.0])
        rgb[tissue] = stroma
        rgb[tissue & wall] = (205.0, 140.0, 185.0)
        rgb[tissue & lumen] = (246.0, 232.0, 240.0)
        rgb[tissue & nuclei] = (120.0, 80.0, 150.0)
        for cy, cx, r in self._nearby(yy, xx):
            dd = np.sqrt((yy - cy) ** 2 + (xx - cx) ** 2)
            dd = np.broadcast_to(dd, (h, w))
            tuft, space, capsule = dd < 0.8 * r, (dd >= 0.8 * r) & (dd < 0.94 * r), (dd >= 0.94 * r) & (dd <= r)
            rgb[tuft] = (170.0, 95.0, 160.0)
            rgb[tuft & (_hash01(iy // 4, ix // 4, self.seed + 5) > 0.6)] = (95.0, 55.0, 130.0)
            rgb[space] = (244.0, 226.0, 236.0)
            rgb[capsule] = (190.0, 120.0, 175.0)
        rgb += noise[..., None] * np.where(tissue, 24.0, 8.0)[..., None]
        return np.clip(rgb, 0, 255).astype(np.uint8)

    def polygons(self, n_points: int = 48) -> list[list[list[float]]]:
        """Each glomerulus outline as an (x, y) ring (closed), in level-0 pixels."""
        t = np.linspace(0, 2 * np.pi, n_points, endpoint=False)
        rings = []
        for cy, cx, r in self.glomeruli:
            pts = np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], 1).round(1).tolist()
            rings.append(pts + [pts[0]])
        return rings


def _geojson(rings: list[list[list[float]]]) -> str:
    feats = [{"type": "Feature", "id": f"glomerulus-{i}", "properties": {"classification": {"name": "glomerulus"}},
              "geometry": {"type": "Polygon", "coordinates": [ring]}} for i, ring in enumerate(rings)]
    return json.dumps({"type": "FeatureCollection", "features": feats})


def synth_hubmap(
    out_dir: str | os.PathLike,
    n_slides: int = 3,
    shape: Sequence[int] = (3072, 4096),
    seed: int = 0,
    mpp: float = 0.5,
    tile: int = 512,
    n_levels: int | None = None,
    channel_first: bool = False,
    polygons: bool = True,
    progress: bool = False,
    compression: str | None = "zlib",
) -> list[str]:
    """Write ``n_slides`` synthetic PAS-like slides, ``train.csv`` and polygon JSONs in the HuBMAP layout.

    Args:
        out_dir: output folder (created).
        n_slides: number of slides.
        shape: (height, width) of each slide's level 0.
        seed: base seed (slide ``i`` uses ``seed + i``).
        mpp: microns per pixel recorded in the TIFFs.
        tile: TIFF tile side.
        n_levels: pyramid levels (default: halve until the smaller side is below 2,048 px).
        channel_first: write the last slide as a flat channel-first (3, H, W) TIFF, like some
            competition files.
        polygons: also write ``train/<id>.json``.
        progress: show a progress bar.
        compression: TIFF tile compression (``"jpeg"`` needs imagecodecs; much smaller benchmark slides).

    Returns:
        the slide paths.
    """
    from tqdm import tqdm

    out = prepare_output_folder(out_dir, SYNTHETIC_HUBMAP_README)
    folder = os.path.join(out, "train")
    os.makedirs(folder, exist_ok=True)
    height, width = int(shape[0]), int(shape[1])
    if n_levels is None:
        n_levels = 1
        while min(height, width) / 2**n_levels >= 2048:
            n_levels += 1
    rows, paths = [], []
    for i in range(n_slides):
        sid = f"synth{seed + i:05d}"
        slide = SyntheticKidneySlide((height, width), seed=seed + i)
        path = os.path.join(folder, f"{sid}.tiff")
        n_tiles = sum(-(-(height >> k) // tile) * -(-(width >> k) // tile) for k in range(n_levels))
        bar = tqdm(total=n_tiles, desc=f"slide {sid}", disable=not progress, unit="tile")
        if channel_first and i == n_slides - 1:
            import tifffile

            with atomic_path(path, suffix=".tiff") as tmp:
                tifffile.imwrite(tmp, np.moveaxis(slide.render(1.0, 0, 0, height, width), -1, 0), photometric="rgb",
                                 planarconfig="separate", resolution=(1e4 / mpp, 1e4 / mpp),
                                 resolutionunit="CENTIMETER", compression="zlib")
        else:
            write_pyramidal_tiff(path, lambda lv, y, x, h, w, s=slide: s.render(2.0**lv, y, x, h, w), (height, width),
                                 n_levels=n_levels, tile=tile, mpp=mpp, compression=compression,
                                 progress=lambda n, b=bar: b.update(1))
        bar.close()
        rle = rle_encode_columns(lambda x, w, s=slide: s.mask(1.0, 0, x, height, w), (height, width), strip=1024)
        rows.append((sid, rle))
        if polygons:
            atomic_write_text(os.path.join(folder, f"{sid}.json"), _geojson(slide.polygons()))
        paths.append(path)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["id", "encoding"])
    writer.writerows(rows)
    atomic_write_text(os.path.join(out, "train.csv"), buf.getvalue())
    return paths
