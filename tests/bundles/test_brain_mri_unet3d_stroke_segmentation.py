"""3D U-Net bundle: train on 3D patches, evaluate and infer whole volumes with the sliding-window inferer."""

from __future__ import annotations

import json
import os

import nibabel as nib
import numpy as np
import pytest

from lesionlab.apps.bundle import copy_bundle, run_bundle

BUNDLE = "brain_mri_unet3d_stroke_segmentation"
TINY = {"patch_size": [16, 16, 16], "network_def#channels": [4, 8, 16, 16, 16], "progress": False}

pytestmark = pytest.mark.slow


def test_train_evaluate_infer(tiny_atlas, tmp_path):
    root = copy_bundle(BUNDLE, str(tmp_path / BUNDLE))
    run_bundle(root, "train", dataset_dir=tiny_atlas, epochs=1, val_interval=1, **TINY)
    assert os.path.exists(os.path.join(root, "models", "model.pt"))
    run_bundle(root, "evaluate", dataset_dir=tiny_atlas, sw_overlap=0.5, **TINY)
    s = json.load(open(os.path.join(root, "eval", "metrics_summary.json")))["summary"]
    assert s["n_cases"] == 1
    src = os.path.join(tiny_atlas, json.load(open(os.path.join(tiny_atlas, "datalist.json")))["validation"][0]["image"])
    out = str(tmp_path / "infer")
    # the tiny volume is no head scan: its own grid is declared the model grid, so nothing is registered (space "mni")
    grid = {"model_grid_shape": [48, 48, 10], "space": "mni",
            "model_grid_affine": [[1.0, 0, 0, -24.0], [0, 1.0, 0, -30.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1.0]]}
    run_bundle(root, "infer", datalist=[src], output_dir=out, **grid,
               **{k: v for k, v in TINY.items() if k != "progress"})
    (name,) = os.listdir(out)
    pred, ref = nib.load(os.path.join(out, name)), nib.load(src)
    assert pred.shape == ref.shape  # 48 x 48 x 10: smaller than a patch along z, padded and cropped back
    np.testing.assert_allclose(pred.affine, ref.affine)
