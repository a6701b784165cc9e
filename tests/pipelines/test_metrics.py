"""Per-case metrics against hand counts; DSC(G); report files."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest

from lesionlab.pipelines.metrics import case_metrics, format_table, global_dice, summarize, write_reports


def _cubes():
    p = np.zeros((10, 10, 10))
    g = np.zeros((10, 10, 10))
    p[2:6, 2:6, 2:6] = 1  # 64 voxels
    g[3:7, 2:6, 2:6] = 1  # 64 voxels, overlap 3*4*4 = 48
    return p, g


def test_counts_and_ratios_by_hand():
    p, g = _cubes()
    m = case_metrics(p, g, spacing=(2.0, 1.0, 1.0))
    assert (m["tp"], m["fp"], m["fn"]) == (48, 16, 16)
    assert m["dsc"] == pytest.approx(96 / 128)
    assert m["precision"] == pytest.approx(48 / 64) and m["recall"] == pytest.approx(48 / 64)
    assert m["jaccard"] == pytest.approx(48 / 80)
    assert m["pred_ml"] == pytest.approx(64 * 2 / 1000)
    # the two cubes are shifted by one voxel of 2 mm along x: the surfaces differ by at most 2 mm
    assert m["hd95_mm"] == pytest.approx(2.0)
    assert 0 < m["asd_mm"] < 2.0


def test_identical_and_empty_cases():
    p, g = _cubes()
    same = case_metrics(g, g)
    assert same["dsc"] == 1.0 and same["asd_mm"] == 0.0 and same["hd95_mm"] == 0.0
    empty_pred = case_metrics(np.zeros_like(g), g)
    assert empty_pred["dsc"] == 0.0 and empty_pred["precision"] == 0.0 and empty_pred["recall"] == 0.0
    assert math.isnan(empty_pred["asd_mm"]) and math.isnan(empty_pred["hd95_mm"])
    with pytest.raises(ValueError):
        case_metrics(p, g[:5])


def test_global_dice_pools_counts_and_summary(tmp_path):
    p, g = _cubes()
    a = case_metrics(p, g)  # tp 48 fp 16 fn 16
    b = case_metrics(np.zeros_like(g), g)  # tp 0 fp 0 fn 64
    assert global_dice([a, b]) == pytest.approx(2 * 48 / (2 * 48 + 16 + 80))
    s = summarize([a, b])
    assert s["dsc"]["mean"] == pytest.approx(0.375) and s["dsc"]["std"] == pytest.approx(np.std([0.75, 0], ddof=1))
    assert s["hd95_mm"]["n"] == 1
    paths = write_reports([{"case": "a,1", **a}, {"case": "b", **b}], str(tmp_path), title="t")
    lines = open(paths["csv"]).read().splitlines()
    assert lines[0].startswith("case,tp,fp,fn") and lines[1].startswith('"a,1",48,16,16')
    assert json.load(open(paths["json"]))["summary"]["n_cases"] == 2
    assert "| 2 | 0.375 ± 0.530 | 0.500 |" in format_table(s)
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]
