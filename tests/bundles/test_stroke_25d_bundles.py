"""Smoke tests shared by the three 2.5D stroke bundles (D-UNet, AGMR-Net, TSRL-Net): both `run` forms, train ->
evaluate -> infer on tiny NIfTI data, the train-mode post-processing of multi-channel outputs, metadata against the
offline schema, workflow properties, verify_net_in_out at the real size and a TorchScript export that loads in a
process where lesionlab cannot be imported."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, field

import nibabel as nib
import numpy as np
import pytest
import torch

from lesionlab.apps.bundle import bundle_path, copy_bundle, run_bundle
from lesionlab.resources import META_SCHEMA_PATH


@dataclass(frozen=True)
class Case:
    """One bundle and the tiny settings that make it run in seconds on 48 x 48 x 10 volumes."""

    bundle: str
    tiny: dict
    net_size: int  # in-plane size the network sees with the tiny settings
    title: str  # words of the evaluation table's title
    reference: str  # a reference the metadata must cite
    train_channels: int  # channels of the train-mode output (logits + side outputs + CPA maps)
    state_keys: tuple = field(default_factory=tuple)  # substrings that must appear in the trained state dict

    @property
    def cli(self) -> list[str]:
        return [a for k, v in self.tiny.items() for a in (f"--{k}", json.dumps(v).replace(" ", ""))]

    def __str__(self) -> str:
        return self.bundle


CASES = [
    # 48x48 slices cropped to 40x40 and resized to 32x32; a narrow network
    Case("brain_mri_dunet_stroke_segmentation",
         {"roi_start": [4, 4], "roi_end": [44, 44], "spatial_size": [32, 32],
          "network_def#features": [8, 16, 16, 32, 32]},
         32, "D-UNet", "10.1109/TCBB.2019.2939522", 1, ("head.weight",)),
    # H, W must be multiples of 96 (6x6 CPA grid at 1/16): uncropped 48x48 resized to 96x96; features[1:] multiples
    # of the 4 MDU kernels and >= R = 8 at the CFF stages
    Case("brain_mri_agmrnet_stroke_segmentation",
         {"roi_start": [0, 0], "roi_end": [48, 48], "spatial_size": [96, 96],
          "network_def#features": [4, 16, 16, 16, 16]},
         96, "AGMR-Net", "10.1016/j.compmedimag.2022.102120", 6, ("head.weight", "encoder.attention.")),
    Case("brain_mri_tsrlnet_stroke_segmentation",
         {"roi_start": [0, 0], "roi_end": [48, 48], "spatial_size": [96, 96],
          "network_def#features": [4, 16, 16, 16, 16]},
         96, "TSRL-Net", "10.1016/j.compbiomed.2023.106840", 10, ("head.weight", "encoder.attention.", ".side_head.")),
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module", params=CASES, ids=str)
def trained(request, tiny_atlas, tmp_path_factory):
    """A copy of the bundle trained for one tiny epoch through MONAI's runner (the `run training` form)."""
    case: Case = request.param
    root = copy_bundle(case.bundle, str(tmp_path_factory.mktemp("bundle") / case.bundle))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", "configs/metadata.json",
           "--config_file", "configs/train.json", "--logging_file", "configs/logging.conf",
           "--dataset_dir", tiny_atlas, "--epochs", "1", "--val_interval", "1", "--slices_per_volume", "2",
           "--progress", "False", *case.cli]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    return case, root, r.stdout + r.stderr


def test_train_outputs_and_train_metric(trained):
    case, root, log = trained
    for f in ("models/model.pt", "models/model_best.pt", "eval/history.json"):
        assert os.path.exists(os.path.join(root, f)), f
    assert any(f.startswith("last_checkpoint_epoch=1") for f in os.listdir(os.path.join(root, "models")))
    assert os.listdir(os.path.join(root, "eval", "tensorboard"))
    sd = torch.load(os.path.join(root, "models", "model.pt"), weights_only=True)
    for key in case.state_keys:
        assert any(key in k for k in sd), key
    hist = json.load(open(os.path.join(root, "eval", "history.json")))["epochs"]
    assert hist[0]["epoch"] == 1 and np.isfinite(hist[0]["loss"]) and "val_mean_dice" in hist[0]
    # the trainer's key metric ran on the logits channel of the train-mode output
    m = re.search(r"train_mean_dice: ([0-9.]+)", log)
    assert m is not None and 0.0 <= float(m.group(1)) <= 1.0, log[-2000:]


@pytest.mark.parametrize("case", CASES, ids=str)
def test_train_postprocessing_keeps_the_logits_channel(case):
    from monai.bundle import ConfigParser
    from monai.data import MetaTensor

    parser = ConfigParser()
    parser.read_config(os.path.join(bundle_path(case.bundle), "configs", "train.json"))
    post = parser.get_parsed_content("train#postprocessing")
    pred = torch.full((case.train_channels, 8, 8), 5.0)  # extra channels all "on"
    pred[0, 4:] = -5.0  # logits: lesion in the top half only
    out = post({"pred": MetaTensor(pred)})["pred"]
    assert tuple(out.shape) == (1, 8, 8)
    assert out[0, :4].eq(1).all() and out[0, 4:].eq(0).all()
    assert tuple(post({"pred": MetaTensor(pred[:1])})["pred"].shape) == (1, 8, 8)  # eval-mode output unchanged


@pytest.mark.parametrize("case", CASES, ids=str)
def test_plain_run_form_with_default_meta(case, tiny_atlas, tmp_path):
    root = copy_bundle(case.bundle, str(tmp_path / case.bundle))
    cmd = [sys.executable, "-m", "monai.bundle", "run", "--config_file", "configs/train.json",
           "--dataset_dir", tiny_atlas, "--epochs", "1", "--val_interval", "5", "--slices_per_volume", "1",
           "--progress", "False", *case.cli]
    r = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    assert os.path.exists(os.path.join(root, "models", "model.pt"))


def test_evaluate_writes_per_case_reports_on_original_grid(trained, tiny_atlas):
    case, root, _ = trained
    run_bundle(root, "evaluate", dataset_dir=tiny_atlas, progress=False, **case.tiny)
    ev = os.path.join(root, "eval")
    summary = json.load(open(os.path.join(ev, "metrics_summary.json")))
    assert summary["summary"]["n_cases"] == 1 and 0.0 <= summary["summary"]["dsc_global"] <= 1.0
    assert open(os.path.join(ev, "metrics_per_case.csv")).readline().startswith("case,tp,fp,fn")
    table = open(os.path.join(ev, "metrics_table.md")).read()
    assert "DSC(G)" in table and case.title in table
    preds = os.listdir(os.path.join(ev, "predictions"))
    assert len(preds) == 1
    # original grid, not the network's grid
    assert nib.load(os.path.join(ev, "predictions", preds[0])).shape == (48, 48, 10)


def test_inference_nifti_keeps_input_geometry(trained, tiny_atlas, tmp_path):
    case, root, _ = trained
    src = json.load(open(os.path.join(tiny_atlas, "datalist.json")))["validation"][0]["image"]
    src = os.path.join(tiny_atlas, src)
    out = str(tmp_path / "infer")
    # the tiny volume is no head scan: its own grid is declared the model grid, so nothing is registered (space "mni")
    grid = {"model_grid_shape": [48, 48, 10], "space": "mni",
            "model_grid_affine": [[1.0, 0, 0, -24.0], [0, 1.0, 0, -30.0], [0, 0, 2.0, 5.0], [0, 0, 0, 1.0]]}
    run_bundle(root, "infer", datalist=[src], output_dir=out, **grid, **case.tiny)
    files = os.listdir(out)
    assert len(files) == 1 and files[0].endswith("_lesion.nii.gz")
    pred, ref = nib.load(os.path.join(out, files[0])), nib.load(src)
    assert pred.shape == ref.shape
    np.testing.assert_allclose(pred.affine, ref.affine)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}


@pytest.mark.parametrize("case", CASES, ids=str)
def test_metadata_against_offline_schema(case, tmp_path):
    from monai.bundle import verify_metadata

    meta = os.path.join(bundle_path(case.bundle), "configs", "metadata.json")
    schema = str(tmp_path / "schema.json")
    with open(META_SCHEMA_PATH) as f, open(schema, "w") as g:
        g.write(f.read())
    verify_metadata(meta_file=meta, filepath=schema)  # the file exists, so nothing is downloaded
    metadata = json.load(open(meta))
    assert case.reference in " ".join(metadata["references"])
    # the schema the metadata names is the copy shipped in lesionlab/resources (nothing outside the repository is read)
    assert os.path.basename(metadata["schema"]) == os.path.basename(META_SCHEMA_PATH)


@pytest.mark.parametrize("case", CASES, ids=str)
def test_properties_train_and_infer(case, tiny_atlas, tmp_path):
    from monai.bundle import create_workflow

    # handlers create eval/ folders: keep them out of the repo
    b = copy_bundle(case.bundle, str(tmp_path / case.bundle))
    wf = create_workflow(config_file=os.path.join(b, "configs", "inference.json"), workflow_type="infer",
                         meta_file=os.path.join(b, "configs", "metadata.json"), bundle_root=b,
                         dataset_dir=tiny_atlas, load_pretrain=False)
    assert wf.check_properties() == []
    wf = create_workflow(config_file=os.path.join(b, "configs", "train.json"), workflow_type="train",
                         meta_file=os.path.join(b, "configs", "metadata.json"), bundle_root=b,
                         dataset_dir=tiny_atlas, cache_rate=0.0, **case.tiny)
    assert wf.check_properties() == []


def test_verify_net_in_out_and_torchscript_without_lesionlab(trained, tmp_path):
    from monai.bundle import ckpt_export, verify_net_in_out

    case, root, _ = trained
    meta = os.path.join(root, "configs", "metadata.json")
    cfg = os.path.join(root, "configs", "inference.json")
    # the real (full-size) network against network_data_format: (1, 4, 192, 192) -> (1, 1, 192, 192) float32
    verify_net_in_out(net_id="network_def", meta_file=meta, config_file=cfg, device="cpu", bundle_root=root)
    ts = str(tmp_path / "model.ts")
    ckpt_export("network_def", filepath=ts, ckpt_file=os.path.join(root, "models", "model.pt"), meta_file=meta,
                config_file=cfg, bundle_root=root, **{"network_def#features": case.tiny["network_def#features"]})
    n = case.net_size
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.split('.')[0] == 'lesionlab': raise ImportError('lesionlab blocked')\n"
        "sys.meta_path.insert(0, Block())\n"
        "import torch\n"
        f"m = torch.jit.load({ts!r})\n"
        f"y = m(torch.rand(2, 4, {n}, {n}))\n"
        f"assert tuple(y.shape) == (2, 1, {n}, {n}), y.shape\n"
        "assert 'lesionlab' not in sys.modules\n"
        "print('ok')\n"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), r.stderr[-2000:]
