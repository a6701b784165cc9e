"""Renogram bundle on synthetic DICOM NM studies: train (both run forms), evaluate on the study grid with the split
function against the synthetic truth, infer from a DICOM study to label images, TorchScript export, and a short
run that learns. About 4 minutes on a loaded 2-core CPU (marked slow): one 2-epoch training shared by
the workflow tests and the 20-epoch learns test."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pydicom
import pytest
import torch
from PIL import Image

from lesionlab.apps.bundle import copy_bundle, export_torchscript, run_bundle, set_config_values
from lesionlab.data.synthetic.renogram import synth_renograms
from lesionlab.pipelines.renogram import build_renogram_datalist

BUNDLE = "kidney_nm_renogram_parenchyma_segmentation"
SIZE = 48
# preset A's shape at a small size: 3 x 3 tokens of 16 pixels
TINY_NET = {"spatial_size": [SIZE, SIZE], "network_def#img_size": [SIZE, SIZE], "network_def#patch_size": 16,
            "network_def#hidden_size": 32, "network_def#mlp_dim": 64, "network_def#num_layers": 4,
            "network_def#num_heads": 4, "network_def#decoder_channels": [32, 16, 16, 8]}

pytestmark = pytest.mark.slow


def _data(tmp_path_factory, name: str, n: int, seed: int) -> str:
    root = str(tmp_path_factory.mktemp(name))
    synth_renograms(root, n=n, size=SIZE, seed=seed, progress=False)
    build_renogram_datalist(root, os.path.join(root, "datalist.json"), seed=seed)
    return root


@pytest.fixture(scope="module")
def studies(tmp_path_factory):
    return _data(tmp_path_factory, "renograms", 6, 0)


@pytest.fixture(scope="module")
def trained(studies, tmp_path_factory):
    """Trained with the second run form (no meta file, no run id); the first is the learns test's ``run_bundle``."""
    root = copy_bundle(BUNDLE, str(tmp_path_factory.mktemp("bundle") / BUNDLE))
    set_config_values(root, TINY_NET)
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json", "--dataset_dir", studies,
           "--epochs", "2", "--progress", "False"]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def test_train_outputs(trained):
    for f in ("models/model.pt", "models/model_final.pt", "eval/history.json"):
        assert os.path.exists(os.path.join(trained, f)), f
    history = json.load(open(os.path.join(trained, "eval", "history.json")))["epochs"]
    assert [h["epoch"] for h in history] == [1, 2] and all("val_mean_dice" in h for h in history)


def test_evaluate_on_study_grid_with_split_function(trained, studies):
    run_bundle(trained, "evaluate", dataset_dir=studies, progress=False)
    ev = os.path.join(trained, "eval")
    s = json.load(open(os.path.join(ev, "metrics_renogram.json")))
    test_items = json.load(open(os.path.join(studies, "datalist.json")))["test"]
    assert s["n_images"] == len(test_items) == 2  # one held-out study, its two labelled fused frames
    for k in ("dsc", "precision", "recall", "accuracy", "jaccard"):
        assert 0.0 <= s[f"{k}_mean"] <= 1.0 and 0.0 <= s[f"{k}_pooled"] <= 1.0
    pngs = sorted(f for f in os.listdir(os.path.join(ev, "predictions")) if f.endswith("fused1.png"))
    assert np.asarray(Image.open(os.path.join(ev, "predictions", pngs[0]))).shape == (SIZE, SIZE)
    errors = json.load(open(os.path.join(ev, "predictions", "split_function_errors.json")))
    assert errors["n"] == 2 and all(0 < c["truth_left_percent"] < 100 for c in errors["cases"])
    assert errors["n_undefined"] == 2 or errors["mae_percent_points"] >= 0  # 2 epochs may predict no parenchyma


def test_infer_from_dicom_study_and_export(trained, studies, tmp_path):
    study = os.path.join(studies, "study_000")
    out = str(tmp_path / "infer")
    run_bundle(trained, "infer", dataset_dir=study, output_dir=out, frames=[1])
    label = np.asarray(Image.open(os.path.join(out, "study_000_renogram_fused1.png")))
    assert label.shape == (SIZE, SIZE) and set(np.unique(label)) <= {0, 255}
    import SimpleITK as sitk

    nii = sitk.ReadImage(os.path.join(out, "study_000_renogram_fused1.nii.gz"))
    assert nii.GetSize() == (SIZE, SIZE)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(nii) * 255, label)
    readout = json.load(open(os.path.join(out, "study_000_renogram_fused1.json")))
    assert os.path.exists(readout["tac_png"]) and len(readout["tac_counts_per_s"]["left"]) == 137
    ts = export_torchscript(trained)
    net = torch.jit.load(ts)
    x = torch.rand(1, 3, SIZE, SIZE)
    assert net(x).shape == (1, 1, SIZE, SIZE)


def test_lesionlab_infer_dicom_seg_from_a_zip_archive(trained, studies, tmp_path):
    """``lesionlab infer <archive.zip> --format dicom-seg``: PNG + NIfTI + a DICOM SEG on the NM study's plane whose
    frame references the 7 source frames fused into fused frame 1 (60 x 1 s dropped, then frames 61-67 | 68-74)."""
    import shutil

    from lesionlab.apps.cli import main
    from lesionlab.apps.deploy.archive import write_zip

    archive = str(tmp_path / f"{BUNDLE}.zip")
    write_zip(trained, archive, BUNDLE)
    out = tmp_path / "out"
    assert main(["infer", archive, "--input", os.path.join(studies, "study_000"), "--output", str(out),
                 "--format", "dicom-seg", "--set", "frames=[1]"]) == 0
    base = out / "study_000_renogram_fused1"
    label = np.asarray(Image.open(f"{base}.png")) > 0
    assert os.path.exists(f"{base}.nii.gz")
    seg, src = pydicom.dcmread(f"{base}.seg.dcm"), pydicom.dcmread(os.path.join(studies, "study_000", "renogram.dcm"))
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID and seg.SegmentSequence[0].SegmentAlgorithmName == BUNDLE
    refs = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0].SourceImageSequence
    assert [int(r.ReferencedFrameNumber) for r in refs] == list(range(68, 75))
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), label)
    if shutil.which("dciodvfy"):
        r = subprocess.run(["dciodvfy", f"{base}.seg.dcm"], capture_output=True, text=True, timeout=120)
        assert not [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]


# Measured (2-core CPU shared with other jobs, OMP_NUM_THREADS=1, about 2.3 min per run): best validation Dice after
# 20 epochs on 10 synthetic studies of 48 x 48: seed 0 -> 0.821, seed 1 -> 0.852 (after 12 epochs: 0.697 and 0.419;
# the first ~6 epochs predict background only). Re-measured 2026-12-02 (OMP_NUM_THREADS=1, 26-31 s per run on a
# lightly loaded machine): seed 0 -> 0.821, seed 1 -> 0.852 again. The floor is set well below the 20-epoch figures.
LEARN_FLOOR = 0.5
LEARN_EPOCHS = 20


@pytest.mark.parametrize("seed", [0])
def test_training_learns(tmp_path_factory, seed):
    data = _data(tmp_path_factory, f"learn{seed}", 10, seed)
    root = copy_bundle(BUNDLE, str(tmp_path_factory.mktemp(f"learn_bundle{seed}") / BUNDLE))
    set_config_values(root, TINY_NET)
    run_bundle(root, "train", dataset_dir=data, epochs=LEARN_EPOCHS, seed=seed, progress=False)
    history = json.load(open(os.path.join(root, "eval", "history.json")))["epochs"]
    best = max(h["val_mean_dice"] for h in history)
    assert best > LEARN_FLOOR, f"best validation Dice {best:.3f} after {LEARN_EPOCHS} epochs"


def test_lesionlab_infer_reports_a_non_renogram_and_segments_the_rest(trained, studies, tmp_path):
    import shutil

    from pydicom.data import get_testdata_file

    from lesionlab.apps.cli import main

    inputs = tmp_path / "inputs"
    shutil.copytree(os.path.join(studies, "study_001"), inputs / "study_001")
    (inputs / "bone_scan").mkdir()
    shutil.copy(get_testdata_file("JPEG2000.dcm"), inputs / "bone_scan" / "wb.dcm")  # a whole-body bone scan
    out = tmp_path / "out"
    assert main(["infer", trained, "--input", str(inputs), "--output", str(out), "--format", "png",
                 "--set", "frames=[1]"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["n_studies"] == 2 and summary["n_ok"] == 1
    failed = next(c for c in summary["cases"] if c["status"] == "failed")
    assert "WHOLE BODY" in failed["error"] and "wb.dcm" in failed["error"]
    assert (out / "study_001_renogram_fused1.png").exists() and (out / "study_001_renogram_fused1_tac.png").exists()
