"""ValidateRGBTile(d): RGB(A) H&E tiles pass (alpha dropped), anything else is a DataError naming the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from lesionlab.errors import DataError
from lesionlab.transforms import ValidateRGBTile, ValidateRGBTiled


def _tile(c, w=32, h=24, name="t.png"):
    return MetaTensor(torch.rand(c, w, h), meta={"filename_or_obj": name})


def test_rgb_and_rgba():
    assert ValidateRGBTile()(_tile(3)).shape == (3, 32, 24)
    out = ValidateRGBTiled("image")({"image": _tile(4)})["image"]
    assert out.shape == (3, 32, 24)
    assert ValidateRGBTile()(np.zeros((3, 20, 20), np.float32)).shape == (3, 20, 20)


@pytest.mark.parametrize("img,match", [
    (_tile(1, name="grey.png"), r"grey\.png: expected an RGB\(A\) H&E tile, got 1 channel"),
    (_tile(3, 8, 40), "smaller than 16 pixels"),
    (MetaTensor(torch.rand(3, 4, 4, 4), meta={"filename_or_obj": "v.tif"}), r"v\.tif: expected a 2D colour tile"),
    (MetaTensor(torch.full((3, 20, 20), float("nan")), meta={"filename_or_obj": "n.png"}), "NaN"),
])
def test_refused(img, match):
    with pytest.raises(DataError, match=match):
        ValidateRGBTile()(img)
