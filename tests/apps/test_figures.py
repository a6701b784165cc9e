"""Slice choice of the lesion figure (hand-made masks) and a real PNG written from it."""

from __future__ import annotations

import numpy as np

from lesionlab.apps.figures import lesion_overlay_figure, pick_slices


def _mask(depth: int, z0: int, z1: int, peak: int) -> np.ndarray:
    m = np.zeros((20, 20, depth), dtype=np.uint8)
    m[8:12, 8:12, z0:z1 + 1] = 1
    m[4:16, 4:16, peak] = 1  # the largest cross-section
    return m


def test_largest_section_and_spread_over_the_extent():
    picks = pick_slices(_mask(100, 40, 69, 55))  # extent 40-69 (30 slices): at least 10 apart
    assert 55 in picks and len(picks) == 3
    assert min(np.diff(picks)) >= 10 and picks[0] >= 40 and picks[-1] <= 69


def test_short_lesion_gives_distinct_slices():
    assert pick_slices(_mask(50, 20, 21, 20)) == [20, 21]  # two lesion slices: no third to show
    assert pick_slices(_mask(50, 20, 22, 21)) == [20, 21, 22]


def test_no_lesion_gives_middle_slices_and_prediction_is_used_when_label_empty():
    empty = np.zeros((20, 20, 100), dtype=np.uint8)
    assert pick_slices(empty) == [35, 50, 65]
    assert 30 in pick_slices(empty, _mask(100, 25, 35, 30))


def test_figure_is_a_png(tmp_path):
    image = np.random.default_rng(0).random((20, 20, 100)).astype(np.float32)
    label = _mask(100, 40, 69, 55)
    out = lesion_overlay_figure(image, label, label, str(tmp_path / "f.png"), title="t")
    with open(out, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
