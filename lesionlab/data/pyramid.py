"""Tile-by-tile writer of pyramidal (OME-)TIFF files, for slides and whole-slide masks of any size.

:func:`write_pyramidal_tiff` never holds an image in memory: it asks a ``read_tile(level, y, x, h, w)`` callback
for one tile at a time, in the row-major tile order TIFF stores them, for level 0 and then for every reduced level
(stored as SubIFDs of level 0, the layout QuPath, OpenSlide-style readers and tifffile's ``series[0].levels``
understand). The file is written to a temporary name and renamed at the end (a crash never leaves a truncated
slide under the final name).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator

import numpy as np

from lesionlab.data.writers import make_readable
from lesionlab.utils import atomic_path

__all__ = ["write_pyramidal_tiff", "pyramid_shapes"]

TileReader = Callable[[int, int, int, int, int], np.ndarray]


def pyramid_shapes(shape: tuple[int, int], n_levels: int) -> list[tuple[int, int]]:
    """(height, width) of each level when every level halves the previous one (ceil division)."""
    shapes = [(int(shape[0]), int(shape[1]))]
    for _ in range(1, n_levels):
        h, w = shapes[-1]
        shapes.append(((h + 1) // 2, (w + 1) // 2))
    return shapes


def write_pyramidal_tiff(
    path: str | os.PathLike,
    read_tile: TileReader,
    shape: tuple[int, int],
    channels: int = 3,
    n_levels: int = 1,
    tile: int = 512,
    mpp: float | None = None,
    compression: str | None = "zlib",
    ome: bool = True,
    progress: Callable[[int], None] | None = None,
) -> None:
    """Write a tiled, pyramidal 8-bit TIFF whose pixels come from ``read_tile``.

    Args:
        path: output file (``.ome.tif`` for OME-TIFF).
        read_tile: ``read_tile(level, y, x, h, w) -> (h, w, channels)`` or ``(h, w)`` uint8 array; level ``k`` has
            the shape ``pyramid_shapes(shape, n_levels)[k]`` (each level halves the previous one).
        shape: (height, width) of level 0.
        channels: 3 for RGB, 1 for a grey/label mask.
        n_levels: number of levels (1 = no pyramid).
        tile: tile side in pixels (a multiple of 16).
        mpp: microns per pixel of level 0, written as TIFF resolution (and OME PhysicalSize).
        compression: tifffile compression name (``"zlib"``, ``"jpeg"`` needs imagecodecs, ``None``).
        ome: write OME-XML metadata.
        progress: called with the number of tiles written so far (for progress bars).
    """
    import tifffile

    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    if tile % 16:
        raise ValueError(f"tile must be a multiple of 16, got {tile}")
    shapes = pyramid_shapes(shape, n_levels)
    written = [0]

    def tiles(level: int) -> Iterator[np.ndarray]:
        h, w = shapes[level]
        for y in range(0, h, tile):
            for x in range(0, w, tile):
                th, tw = min(tile, h - y), min(tile, w - x)
                arr = np.asarray(read_tile(level, y, x, th, tw), dtype=np.uint8)
                yield arr.reshape(th, tw, channels) if channels == 3 else arr.reshape(th, tw)
                written[0] += 1
                if progress is not None:
                    progress(written[0])

    photometric = "rgb" if channels == 3 else "minisblack"
    axes = "YXS" if channels == 3 else "YX"
    meta: dict = {"axes": axes}
    kw: dict = {}
    if mpp:
        meta.update(PhysicalSizeX=mpp, PhysicalSizeY=mpp, PhysicalSizeXUnit="µm", PhysicalSizeYUnit="µm")
        kw = {"resolution": (1e4 / mpp, 1e4 / mpp), "resolutionunit": "CENTIMETER"}
    final = os.fspath(path)
    with atomic_path(final, suffix=".tif") as tmp:
        with tifffile.TiffWriter(tmp, bigtiff=True, ome=ome) as tw:
            tw.write(tiles(0), shape=shapes[0] + ((channels,) if channels == 3 else ()), dtype=np.uint8,
                     tile=(tile, tile), subifds=n_levels - 1, photometric=photometric, compression=compression,
                     metadata=meta if ome else None, **kw)
            for level in range(1, n_levels):
                res = (kw["resolution"][0] / 2**level,) * 2 if kw else None
                lkw = {"resolution": res, "resolutionunit": "CENTIMETER"} if kw else {}
                tw.write(tiles(level), shape=shapes[level] + ((channels,) if channels == 3 else ()),
                         dtype=np.uint8, tile=(tile, tile), subfiletype=1, photometric=photometric,
                         compression=compression, **lkw)
        make_readable(tmp)
