"""Renogram preparation transforms on hand-built frame stacks (array and dictionary versions)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from lesionlab.errors import DataError
from lesionlab.transforms import (
    DropEarlyFrames,
    DropEarlyFramesd,
    FuseFrames,
    FuseFramesd,
    PseudoColour,
    PseudoColourd,
    SelectFrames,
    SelectFramesd,
)


def _stack(durations, size=2):
    durations = np.asarray(durations, float)
    n = len(durations)
    data = torch.arange(1, n + 1, dtype=torch.float32)[:, None, None].repeat(1, size, size)
    start = np.concatenate([[0.0], np.cumsum(durations)[:-1]])
    return MetaTensor(data, meta={"frame_start_s": start.tolist(), "frame_duration_s": durations.tolist(),
                                  "filename_or_obj": "/data/s1/renogram.dcm"})


def test_drop_first_minute_by_time_not_count():
    x = _stack([10] * 6 + [30] * 4)  # 6 frames make the first minute; 60 one-second frames would be another count
    out = DropEarlyFrames(60)(x)
    assert out.shape[0] == 4 and out.meta["frame_start_s"] == [60, 90, 120, 150]
    assert out[0, 0, 0] == 7
    with pytest.raises(DataError, match="no frame starts"):
        DropEarlyFrames(1000)(x)


@pytest.mark.parametrize("mode,first,second", [("sum", 1 + 2 + 3, 4 + 5 + 6), ("mean", 2, 5), ("max", 3, 6)])
def test_fuse_frames(mode, first, second):
    x = _stack([5] * 7)
    out = FuseFrames(3, mode)(x)  # 7 frames: two full groups, the 7th is dropped
    assert out.shape[0] == 2
    assert float(out[0, 0, 0]) == first and float(out[1, 1, 1]) == second
    assert out.meta["frame_start_s"] == [0, 15] and out.meta["frame_duration_s"] == [15, 15]
    kept = FuseFrames(3, mode, drop_incomplete=False)(x)
    assert kept.shape[0] == 3 and kept.meta["frame_duration_s"][-1] == 5


def test_paper_counts_77_frames_give_11_fused():
    x = _stack([1] * 60 + [15] * 77)
    fused = FuseFrames(7)(DropEarlyFrames(60)(x))
    assert fused.shape[0] == 11
    assert float(fused[0, 0, 0]) == sum(range(61, 68))


def test_select_frames_names_outputs():
    x = FuseFrames(2)(_stack([1] * 8))
    out = SelectFrames([1])(x)
    assert out.shape[0] == 1 and float(out[0, 0, 0]) == 3 + 4
    assert out.meta["filename_or_obj"] == "/data/s1/renogram_fused1.dcm"
    assert out.meta["source_file"] == "/data/s1/renogram.dcm"
    with pytest.raises(DataError, match="fused frame"):
        SelectFrames(9)(x)
    d = SelectFramesd("image", index_key="frame")({"image": x, "frame": 2})
    assert float(d["image"][0, 0, 0]) == 5 + 6


def test_pseudo_colour_jet_values():
    x = torch.tensor([[[0.0, 2.0, 4.0]]])  # v = 0, 0.5, 1 after scaling by the maximum
    rgb = PseudoColour("jet")(x)
    expected = np.array([[0, 0.5, 0.5], [0, 1, 0], [0.5, 0.5, 0]])  # rows R, G, B; columns v = 0, 0.5, 1
    np.testing.assert_allclose(rgb[:, 0].numpy(), expected)
    gray = PseudoColour("gray")(x)
    np.testing.assert_allclose(gray[:, 0].numpy(), [[0, 0.5, 1]] * 3)
    d = PseudoColourd("image")({"image": x})
    np.testing.assert_allclose(d["image"], rgb)
    with pytest.raises(ValueError, match="one channel"):
        PseudoColour()(torch.rand(2, 3, 3))


def test_dictionary_twins_match_arrays():
    x = _stack([10] * 6 + [30] * 14)
    a = FuseFrames(7, "max")(DropEarlyFrames(60)(x))
    d = FuseFramesd("image", 7, "max")(DropEarlyFramesd("image", 60)({"image": x}))
    np.testing.assert_array_equal(a, d["image"])
    assert a.meta["frame_start_s"] == d["image"].meta["frame_start_s"]


def test_invalid_arguments():
    for make in (lambda: FuseFrames(0), lambda: FuseFrames(7, "median"), lambda: PseudoColour("viridis"),
                 lambda: PseudoColour(percentile=0), lambda: DropEarlyFrames(-1), lambda: SelectFrames([])):
        with pytest.raises(ValueError):
            make()
    with pytest.raises(ValueError, match="frame_start_s"):
        DropEarlyFrames()(torch.zeros(3, 2, 2))
