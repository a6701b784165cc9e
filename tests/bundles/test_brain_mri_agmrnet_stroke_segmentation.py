"""AGMR-Net bundle smoke test: both `run` forms, train -> evaluate -> infer on tiny NIfTI data, the train-mode
post-processing of the multi-channel output, metadata against the offline schema, properties, verify_net_in_out at
the real size and a TorchScript export that loads without lesionlab."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from lesionlab.apps.bundle import bundle_path, copy_bundle, run_bundle
from lesionlab.resources import META_SCHEMA_PATH

BUNDLE = "brain_mri_agmrnet_stroke_segmentation"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tiny geometry: the 48x48 slices, uncropped, resized to 96x96 (H, W must be multiples of 96: 6x6 CPA grid at 1/16);
# a narrow network (features[1:] multiples of the 4 MDU kernels, >= R = 8 at the CFF stages)
TINY = {"roi_start": [0, 0], "roi_end": [48, 48], "spatial_size": [96, 96],
        "network_def#features": [4, 16, 16, 16, 16]}
CLI_TINY = [a for k, v in TINY.items() for a in (f"--{k}", json.dumps(v).replace(" ", ""))]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_atlas, tmp_path_factory):
    """A copy of the bundle trained for one tiny epoch through MONAI's runner (the `run training` form)."""
    root = copy_bundle(BUNDLE, str(tmp_path_factory.mktemp("bundle") / BUNDLE))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", "configs/metadata.json",
           "--config_file", "configs/train.json", "--logging_file", "configs/logging.conf",
           "--dataset_dir", tiny_atlas, "--epochs", "1", "--val_interval", "1", "--slices_per_volume", "2",
           "--progress", "False", *CLI_TINY]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return root, r.stdout + r.stderr


def test_train_outputs_and_train_metric_on_logits(trained):
    root, log = trained
    for f in ("models/model.pt", "models/model_best.pt", "eval/history.json"):
        assert os.path.exists(os.path.join(root, f)), f
    assert any(f.startswith("last_checkpoint_epoch=1") for f in os.listdir(os.path.join(root, "models")))
    sd = torch.load(os.path.join(root, "models", "model.pt"), weights_only=True)
    assert "head.weight" in sd and any(k.startswith("encoder.cpa.") for k in sd)
    hist = json.load(open(os.path.join(root, "eval", "history.json")))["epochs"]
    assert hist[0]["epoch"] == 1 and np.isfinite(hist[0]["loss"]) and "val_mean_dice" in hist[0]
    # the trainer's key metric ran on the logits channel of the 6-channel train-mode output
    m = re.search(r"train_mean_dice: ([0-9.]+)", log)
    assert m is not None and 0.0 <= float(m.group(1)) <= 1.0, log[-2000:]


def test_train_postprocessing_keeps_the_logits_channel():
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_path(BUNDLE), "configs", "train.json"))
    post = parser.get_parsed_content("train#postprocessing")
    pred = torch.full((6, 8, 8), -5.0)
    pred[0, :4] = 5.0  # logits: lesion in the top half; CPA channels all "off"
    out = post({"pred": MetaTensor(pred)})["pred"]
    assert tuple(out.shape) == (1, 8, 8)
    assert out[0, :4].eq(1).all() and out[0, 4:].eq(0).all()
    assert tuple(post({"pred": MetaTensor(pred[:1])})["pred"].shape) == (1, 8, 8)  # eval-mode output unchanged


def test_plain_run_form_with_default_meta(tiny_atlas, tmp_path):
    root = copy_bundle(BUNDLE, str(tmp_path / BUNDLE))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
           "--dataset_dir", tiny_atlas, "--epochs", "1", "--val_interval", "5", "--slices_per_volume", "1",
           "--progress", "False", *CLI_TINY]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.exists(os.path.join(root, "models", "model.pt"))


def test_evaluate_writes_per_case_reports_on_original_grid(trained, tiny_atlas):
    root, _ = trained
    run_bundle(root, "evaluate", dataset_dir=tiny_atlas, progress=False, **TINY)
    ev = os.path.join(root, "eval")
    summary = json.load(open(os.path.join(ev, "metrics_summary.json")))
    assert summary["summary"]["n_cases"] == 1 and 0.0 <= summary["summary"]["dsc_global"] <= 1.0
    assert open(os.path.join(ev, "metrics_per_case.csv")).readline().startswith("case,tp,fp,fn")
    table = open(os.path.join(ev, "metrics_table.md")).read()
    assert "DSC(G)" in table and "AGMR-Net" in table
    preds = os.listdir(os.path.join(ev, "predictions"))
    assert len(preds) == 1
    assert nib.load(os.path.join(ev, "predictions", preds[0])).shape == (48, 48, 10)  # original grid, not 96x96


def test_inference_nifti_keeps_input_geometry(trained, tiny_atlas, tmp_path):
    root, _ = trained
    src = json.load(open(os.path.join(tiny_atlas, "datalist.json")))["validation"][0]["image"]
    src = os.path.join(tiny_atlas, src)
    out = str(tmp_path / "infer")
    run_bundle(root, "infer", datalist=[src], output_dir=out, **TINY)
    files = os.listdir(out)
    assert len(files) == 1 and files[0].endswith("_lesion.nii.gz")
    pred, ref = nib.load(os.path.join(out, files[0])), nib.load(src)
    assert pred.shape == ref.shape
    np.testing.assert_allclose(pred.affine, ref.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}


def test_metadata_against_offline_schema(tmp_path):
    from monai.bundle import verify_metadata

    meta = os.path.join(bundle_path(BUNDLE), "configs", "metadata.json")
    schema = str(tmp_path / "schema.json")
    with open(META_SCHEMA_PATH) as f, open(schema, "w") as g:
        g.write(f.read())
    verify_metadata(meta_file=meta, filepath=schema)  # the file exists, so nothing is downloaded
    refs = " ".join(json.load(open(meta))["references"])
    assert "10.1016/j.compmedimag.2022.102120" in refs and "thesis" in refs


def test_properties_train_and_infer(tiny_atlas, tmp_path):
    from monai.bundle import create_workflow

    b = copy_bundle(BUNDLE, str(tmp_path / BUNDLE))  # handlers create eval/ folders: keep them out of the repo
    wf = create_workflow(config_file=os.path.join(b, "configs", "inference.json"), workflow_type="infer",
                         meta_file=os.path.join(b, "configs", "metadata.json"), bundle_root=b,
                         dataset_dir=tiny_atlas, load_pretrain=False)
    assert wf.check_properties() == []
    wf = create_workflow(config_file=os.path.join(b, "configs", "train.json"), workflow_type="train",
                         meta_file=os.path.join(b, "configs", "metadata.json"), bundle_root=b,
                         dataset_dir=tiny_atlas, cache_rate=0.0, **TINY)
    assert wf.check_properties() == []


def test_verify_net_in_out_and_torchscript_without_lesionlab(trained, tmp_path):
    from monai.bundle import ckpt_export, verify_net_in_out

    root, _ = trained
    meta = os.path.join(root, "configs", "metadata.json")
    cfg = os.path.join(root, "configs", "inference.json")
    # the real (full-size) network against network_data_format: (1, 4, 192, 192) -> (1, 1, 192, 192) float32
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=cfg, device="cpu", bundle_root=root)
    ts = str(tmp_path / "model.ts")
    ckpt_export("network_def", filepath=ts, ckpt_file=os.path.join(root, "models", "model.pt"), meta_file=meta,
                config_file=cfg, bundle_root=root, **{"network_def#features": TINY["network_def#features"]})
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'lesionlab': raise ImportError('lesionlab blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch\n"
        f"m = torch.jit.load({ts!r})\n"
        "y = m(torch.rand(2, 4, 96, 96))\n"
        "assert tuple(y.shape) == (2, 1, 96, 96), y.shape\n"
        "assert 'lesionlab' not in sys.modules\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
