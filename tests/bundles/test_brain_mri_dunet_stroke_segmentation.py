"""Bundle smoke test: both `run` forms, train -> evaluate -> infer on tiny NIfTI data, metadata against the offline
schema, properties, verify_net_in_out and a TorchScript export that loads without lesionlab."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from lesionlab.apps.bundle import bundle_path, copy_bundle, run_bundle
from lesionlab.resources import META_SCHEMA_PATH

BUNDLE = "brain_mri_dunet_stroke_segmentation"
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# tiny geometry: 48x48 slices cropped to 40x40 and resized to 32x32; a narrow network
TINY = {"roi_start": [4, 4], "roi_end": [44, 44], "spatial_size": [32, 32],
        "network_def#features": [8, 16, 16, 32, 32]}
CLI_TINY = [a for k, v in TINY.items() for a in (f"--{k}", json.dumps(v).replace(" ", ""))]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def trained(tiny_atlas, tmp_path_factory):
    """A copy of the bundle trained for one tiny epoch through MONAI's runner (the `run training` form)."""
    root = copy_bundle(BUNDLE, str(tmp_path_factory.mktemp("bundle") / BUNDLE))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", "configs/metadata.json",
           "--config_file", "configs/train.json", "--logging_file", "configs/logging.conf",
           "--dataset_dir", tiny_atlas, "--epochs", "1", "--val_interval", "1", "--slices_per_volume", "4",
           "--progress", "False", *CLI_TINY]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return root


def test_train_outputs(trained):
    for f in ("models/model.pt", "models/model_best.pt", "eval/history.json"):
        assert os.path.exists(os.path.join(trained, f)), f
    assert any(f.startswith("last_checkpoint_epoch=1") for f in os.listdir(os.path.join(trained, "models")))
    assert os.listdir(os.path.join(trained, "eval", "tensorboard"))
    sd = torch.load(os.path.join(trained, "models", "model.pt"), weights_only=True)
    assert "head.weight" in sd
    hist = json.load(open(os.path.join(trained, "eval", "history.json")))["epochs"]
    assert hist[0]["epoch"] == 1 and np.isfinite(hist[0]["loss"]) and "val_mean_dice" in hist[0]


def test_plain_run_form_with_default_meta(tiny_atlas, tmp_path):
    root = copy_bundle(BUNDLE, str(tmp_path / BUNDLE))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
           "--dataset_dir", tiny_atlas, "--epochs", "1", "--val_interval", "5", "--slices_per_volume", "2",
           "--progress", "False", *CLI_TINY]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.exists(os.path.join(root, "models", "model.pt"))


def test_evaluate_writes_per_case_reports_on_original_grid(trained, tiny_atlas):
    run_bundle(trained, "evaluate", dataset_dir=tiny_atlas, progress=False, **TINY)
    ev = os.path.join(trained, "eval")
    summary = json.load(open(os.path.join(ev, "metrics_summary.json")))
    assert summary["summary"]["n_cases"] == 1 and 0.0 <= summary["summary"]["dsc_global"] <= 1.0
    assert open(os.path.join(ev, "metrics_per_case.csv")).readline().startswith("case,tp,fp,fn")
    assert "DSC(G)" in open(os.path.join(ev, "metrics_table.md")).read()
    preds = os.listdir(os.path.join(ev, "predictions"))
    assert len(preds) == 1
    img = nib.load(os.path.join(ev, "predictions", preds[0]))
    assert img.shape == (48, 48, 10)  # original grid, not the 32x32 network grid


def test_inference_nifti_keeps_input_geometry(trained, tiny_atlas, tmp_path):
    src = json.load(open(os.path.join(tiny_atlas, "datalist.json")))["validation"][0]["image"]
    src = os.path.join(tiny_atlas, src)
    out = str(tmp_path / "infer")
    run_bundle(trained, "infer", datalist=[src], output_dir=out, **TINY)
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
    shared = os.path.join(ROOT, "..", "shared", "schemas", "meta_schema_20240725.json")
    if os.path.exists(shared):
        assert json.load(open(shared)) == json.load(open(META_SCHEMA_PATH))


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

    meta = os.path.join(trained, "configs", "metadata.json")
    cfg = os.path.join(trained, "configs", "inference.json")
    # the real (full-size) network against network_data_format: (1, 4, 192, 192) -> (1, 1, 192, 192) float32
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=cfg, device="cpu", bundle_root=trained)
    ts = str(tmp_path / "model.ts")
    ckpt_export("network_def", filepath=ts, ckpt_file=os.path.join(trained, "models", "model.pt"), meta_file=meta,
                config_file=cfg, bundle_root=trained, **{"network_def#features": TINY["network_def#features"]})
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'lesionlab': raise ImportError('lesionlab blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch\n"
        f"m = torch.jit.load({ts!r})\n"
        "y = m(torch.rand(2, 4, 32, 32))\n"
        "assert tuple(y.shape) == (2, 1, 32, 32), y.shape\n"
        "assert 'lesionlab' not in sys.modules\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
