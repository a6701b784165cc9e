"""Nuclei class-imbalance bundle on tiny synthetic CoNIC tiles: both `run` forms, multi-class and binary training,
evaluation in the thesis's columns, two-stage evaluation and inference on PNG tiles (input grid kept), bad tiles,
`lesionlab infer` on tiles, metadata against the offline schema, workflow properties, and an export archive whose
verification runs net-in-out, TorchScript and ONNX without lesionlab (the paper-size network is checked by
shared/tools/bundle_check.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from lesionlab.apps.bundle import bundle_path, copy_bundle, run_bundle
from lesionlab.data.synthetic import synth_conic
from lesionlab.resources import META_SCHEMA_PATH

BUNDLE = "colon_he_nuclei_imbalance_segmentation"
_NET = {"layers": [1, 1, 1, 1], "widths": [4, 8, 8, 8], "stem_channels": 8, "aspp_channels": 8,
        "low_level_channels": 4, "decoder_channels": 8}
TINY = {**{f"network_def#{k}": v for k, v in _NET.items()}, **{f"binary_network_def#{k}": v for k, v in _NET.items()},
        "roi_size": [64, 64]}
TRAIN = {"epochs": 1, "batch_size": 2, "progress": False, "test_fraction": 0.25}

pytestmark = pytest.mark.slow


def _cli(d: dict) -> list[str]:
    return [a for k, v in d.items() for a in (f"--{k}", json.dumps(v).replace(" ", ""))]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return synth_conic(tmp_path_factory.mktemp("conic"), n=8, size=64, seed=1, progress=False)


@pytest.fixture(scope="module")
def trained(data, tmp_path_factory):
    """Multi-class model by `run training` with metadata, binary model by the plain `run` form with binary.json."""
    root = copy_bundle(BUNDLE, str(tmp_path_factory.mktemp("bundle") / BUNDLE))
    base = [sys.executable, "-m", "monai.bundle", "run"]
    for cmd in (base + ["training", "--meta_file", "configs/metadata.json", "--config_file", "configs/train.json",
                        "--logging_file", "configs/logging.conf"],
                base + ["--config_file", "['configs/train.json','configs/binary.json']"]):
        r = subprocess.run(cmd + ["--dataset_dir", data] + _cli({**TRAIN, **TINY}), cwd=root, capture_output=True,
                           text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
    return root


def test_training_outputs(trained):
    for f in ("models/model.pt", "models/model_binary.pt", "models/best_model.pt", "eval/history.json",
              "eval/class_shares.json", "eval/binary/history.json"):
        assert os.path.exists(os.path.join(trained, f)), f
    hist = json.load(open(os.path.join(trained, "eval", "history.json")))["epochs"]
    assert np.isfinite(hist[0]["loss"]) and 0.0 <= hist[0]["val_mIoU"] <= 1.0
    shares = json.load(open(os.path.join(trained, "eval", "class_shares.json")))["shares"]
    assert len(shares) == 7 and abs(sum(shares) - 1) < 1e-9
    sd = torch.load(os.path.join(trained, "models", "model_binary.pt"), weights_only=True)
    assert sd["head.weight"].shape[0] == 1


def test_evaluate_and_two_stage(trained, data):
    over = {"dataset_dir": data, "test_fraction": 0.25, "progress": False, **TINY}
    run_bundle(trained, "evaluate", **over)
    ev = os.path.join(trained, "eval")
    scores = json.load(open(os.path.join(ev, "scores.json")))
    assert set(scores["per_class"]) == {"background", "neutrophil", "epithelial", "lymphocyte", "plasma",
                                        "eosinophil", "connective"}
    assert np.asarray(scores["confusion_matrix"]).sum() == 2 * 64 * 64
    md = open(os.path.join(ev, "scores.md")).read()
    assert "| Dice | mIoU | mAP | Mean recall |" in md and "| eosinophil |" in md
    assert os.path.getsize(os.path.join(ev, "confusion_matrix.png")) > 1000
    from monai.bundle import run

    b = os.path.join(trained, "configs")
    run("evaluating", config_file=[f"{b}/train.json", f"{b}/evaluate.json", f"{b}/evaluate_two_stage.json"],
        bundle_root=trained, logging_file=f"{b}/logging.conf", **over)
    fused = json.load(open(os.path.join(ev, "two_stage", "scores.json")))
    normal, two = np.asarray(scores["confusion_matrix"]), np.asarray(fused["confusion_matrix"])
    # the fusion only turns predicted pixels into background: every non-background column can only shrink
    assert np.all(two[:, 1:] <= normal[:, 1:]) and two[:, 0].sum() >= normal[:, 0].sum()


def _tiles(data, folder):
    os.makedirs(folder, exist_ok=True)
    imgs = np.load(os.path.join(data, "images.npy"))
    Image.fromarray(imgs[0]).save(os.path.join(folder, "a.png"))
    Image.fromarray(np.concatenate([imgs[1], imgs[2]], 1)[:50, :90]).save(os.path.join(folder, "b.png"))
    return folder


def test_inference_png_tiles_keep_their_grid(trained, data, tmp_path):
    from monai.bundle import run

    tiles = _tiles(data, str(tmp_path / "tiles"))
    b = os.path.join(trained, "configs")
    tiny = {k: v for k, v in TINY.items() if not k.startswith("binary")}
    run_bundle(trained, "infer", dataset_dir=tiles, output_dir=str(tmp_path / "one"), **tiny)
    run("evaluating", config_file=[f"{b}/inference.json", f"{b}/inference_two_stage.json"], bundle_root=trained,
        dataset_dir=tiles, output_dir=str(tmp_path / "two"), logging_file=f"{b}/logging.conf", **TINY)
    for out in ("one", "two"):
        a = np.asarray(Image.open(tmp_path / out / "a_classes.png"))
        bb = np.asarray(Image.open(tmp_path / out / "b_classes.png"))
        assert a.shape == (64, 64) and bb.shape == (50, 90) and a.max() <= 6
    one, two = np.asarray(Image.open(tmp_path / "one" / "b_classes.png")), np.asarray(
        Image.open(tmp_path / "two" / "b_classes.png"))
    assert np.all((two == one) | (two == 0))


def test_grey_tile_is_refused_by_name(trained, tmp_path):
    from lesionlab.errors import DataError

    tiles = tmp_path / "grey"
    tiles.mkdir()
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(tiles / "grey.png")
    tiny = {k: v for k, v in TINY.items() if not k.startswith("binary")}
    with pytest.raises(Exception) as err:
        run_bundle(trained, "infer", dataset_dir=str(tiles), output_dir=str(tmp_path / "o"), **tiny)
    chain, e = [], err.value
    while e is not None:
        chain.append(e)
        e = e.__cause__ or e.__context__
    assert any(isinstance(x, DataError) and "grey.png" in str(x) and "channel" in str(x) for x in chain), chain


def test_metadata_against_offline_schema(tmp_path):
    from monai.bundle import verify_metadata

    meta = os.path.join(bundle_path(BUNDLE), "configs", "metadata.json")
    schema = str(tmp_path / "schema.json")
    with open(META_SCHEMA_PATH) as f, open(schema, "w") as g:
        g.write(f.read())
    verify_metadata(meta_file=meta, filepath=schema)
    assert "eval_metrics" not in json.load(open(meta))  # no trained weights ship with the bundle


def test_properties_train_and_infer(data, tmp_path):
    from monai.bundle import create_workflow

    b = copy_bundle(BUNDLE, str(tmp_path / BUNDLE))
    wf = create_workflow(config_file=os.path.join(b, "configs", "inference.json"), workflow_type="infer",
                         meta_file=os.path.join(b, "configs", "metadata.json"), bundle_root=b, dataset_dir=data,
                         load_pretrain=False)
    assert wf.check_properties() == []
    wf = create_workflow(config_file=os.path.join(b, "configs", "train.json"), workflow_type="train",
                         meta_file=os.path.join(b, "configs", "metadata.json"), bundle_root=b, dataset_dir=data,
                         test_fraction=0.25, **TINY)
    assert wf.check_properties() == []


def test_lesionlab_infer_on_tiles_and_export_archive(trained, data, tmp_path):
    from lesionlab.apps.cli import main
    from lesionlab.apps.deploy import export_bundle, verify_bundle

    tiles = _tiles(data, str(tmp_path / "tiles"))
    Image.fromarray(np.full((40, 40), 128, np.uint8)).save(os.path.join(tiles, "grey.png"))
    sets = [a for k, v in _NET.items() for a in ("--set", f"network_def#{k}={json.dumps(v).replace(' ', '')}")]
    out = str(tmp_path / "out")
    assert main(["infer", trained, "--input", tiles, "--output", out, *sets]) == 1  # the grey tile fails alone
    summary = json.load(open(os.path.join(out, "summary.json")))
    status = {c["case"]: c["status"] for c in summary["cases"]}
    assert status == {"a.png": "ok", "b.png": "ok", "grey.png": "failed"}
    assert "grey.png" in next(c["error"] for c in summary["cases"] if c["case"] == "grey.png")
    assert np.asarray(Image.open(os.path.join(out, "b_seg.png"))).shape == (50, 90)
    report = json.load(open(os.path.join(out, "b_report.json")))
    assert sum(v["pixels"] for v in report["labels"].values()) == 50 * 90 and "eosinophil" in report["labels"]
    archive = str(tmp_path / "nuclei.zip")
    export_bundle(trained, archive, overrides={f"network_def#{k}": v for k, v in _NET.items()})
    assert verify_bundle(archive).ok
