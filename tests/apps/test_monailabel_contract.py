"""MONAI Label contract of every bundle under ``bundles/``: what 3D Slicer's MONAI Label module relies on.

For each bundle, a temporary copy gets random weights in ``models/model.pt`` and ``monailabel_emulation.py`` runs
MONAI Label 0.8.5's ``BundleInferTask`` steps on a small NIfTI volume in a fresh process (bundle_conventions.md
§11.4): once with the project's MONAI (1.6.1) and once in ``.venv-monai14`` (MONAI 1.4.0, the MONAI of MONAI Label
0.8.5 servers; made by ``tools/make_monai14_env.sh`` / ``make monai14-env``), which is skipped with the reason when
that environment does not exist. The metadata checks need no process at all.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
import torch

from lesionlab.apps.bundle import BUNDLES_DIR, copy_bundle

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
EMULATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "monailabel_emulation.py")
MONAI14_PYTHON = os.path.join(ROOT, ".venv-monai14", "bin", "python")
MONAI14_READY = os.path.join(ROOT, ".venv-monai14", ".monai14-ready")
BUNDLES = sorted(b for b in os.listdir(BUNDLES_DIR) if os.path.isdir(os.path.join(BUNDLES_DIR, b, "configs")))
#: label map MONAI Label must derive from each bundle's metadata (default: one "lesion" label)
EXPECTED_LABELS: dict[str, dict[str, int]] = {
    "colon_he_nuclei_imbalance_segmentation": {"neutrophil": 1, "epithelial": 2, "lymphocyte": 3, "plasma": 4,
                                               "eosinophil": 5, "connective": 6},
    "kidney_nm_renogram_parenchyma_segmentation": {"parenchyma": 1},
    "kidney_pas_pspnet_cbam_glomeruli_segmentation": {"glomerulus": 1},
    "kidney_pathology_seresnet_glomerulus_classification": {"normal": 0, "fsg": 1, "mspgn": 2, "cgn": 3},
}
#: bundles MONAI Label cannot serve, with the reason (their metadata contract is still checked)
NOT_SERVED: dict[str, str] = {
    "kidney_nm_renogram_parenchyma_segmentation": "input is a dynamic DICOM NM study with frame timing (drop the "
    "first minute by time, fuse frames), not the single image MONAI Label hands to a bundle; use `lesionlab infer`",
    "kidney_pathology_seresnet_glomerulus_classification": "a classifier of glomerulus crops returns class "
    "probabilities, not the label image MONAI Label's bundle app sends back to 3D Slicer; use `lesionlab infer` (CSV) "
    "or the web app",
}
#: test image shape per bundle when the default rule below does not fit its preprocessing
IMAGE_SHAPES: dict[str, tuple[int, int, int]] = {}

pytestmark = pytest.mark.slow


def _is_tile_bundle(bundle: str) -> bool:
    """2D bundles with a 3-channel input take RGB tiles (PNG), not volumes."""
    meta = json.load(open(os.path.join(BUNDLES_DIR, bundle, "configs", "metadata.json")))
    spec = next(iter(meta["network_data_format"]["inputs"].values()))
    return len(spec["spatial_shape"]) == 2 and spec["num_channels"] == 3


def _image_shape(bundle: str) -> tuple[int, ...]:
    """A small volume the bundle's unmodified inference config accepts.

    2D-metadata (2.5D) bundles with an in-plane crop window (``roi_end``) need the window plus a margin in-plane and
    a few slices; 3D bundles get a volume smaller than their patch (the sliding-window inferer pads it).
    """
    if bundle in IMAGE_SHAPES:
        return IMAGE_SHAPES[bundle]
    if _is_tile_bundle(bundle):
        return (80, 64)  # MONAI's (x, y) order of an 80 x 64 PNG
    cfg = json.load(open(os.path.join(BUNDLES_DIR, bundle, "configs", "inference.json")))
    meta = json.load(open(os.path.join(BUNDLES_DIR, bundle, "configs", "metadata.json")))
    spatial = next(iter(meta["network_data_format"]["inputs"].values()))["spatial_shape"]
    if isinstance(cfg.get("roi_end"), list):
        return (int(cfg["roi_end"][0]) + 8, int(cfg["roi_end"][1]) + 8, 3)
    if len(spatial) == 2:
        return (int(spatial[0]), int(spatial[1]), 3)
    return (40, 48, 24)


@pytest.fixture(scope="module", params=BUNDLES)
def bundle_copy(request, tmp_path_factory):
    """A copy of the bundle with random weights in models/model.pt and a small NIfTI test image."""
    from monai.bundle import ConfigParser

    name = request.param
    if name in NOT_SERVED:
        pytest.skip(NOT_SERVED[name])
    root = copy_bundle(name, str(tmp_path_factory.mktemp("ml") / name))
    parser = ConfigParser()
    parser.read_config(os.path.join(root, "configs", "inference.json"))
    parser["bundle_root"] = root
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def", instantiate=True)
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    torch.save(net.state_dict(), os.path.join(root, "models", "model.pt"))
    shape = _image_shape(name)
    rng = np.random.default_rng(0)
    affine = np.diag([1.0, 1.2, 2.0, 1.0])
    affine[:3, 3] = [-90.0, -120.0, -40.0]
    if _is_tile_bundle(name):
        from PIL import Image

        image = os.path.join(root, "..", f"{name}_tile.png")
        Image.fromarray((rng.random((shape[1], shape[0], 3)) * 255).astype(np.uint8)).save(image)
        return name, root, os.path.abspath(image), shape
    if "model_grid_shape" in parser.config:  # noise is no head scan: declare its grid the model grid (no registration)
        cfg_path = os.path.join(root, "configs", "inference.json")
        cfg = json.load(open(cfg_path))
        cfg["model_grid_shape"], cfg["model_grid_affine"] = list(shape), affine.tolist()
        with open(cfg_path, "w") as f:
            json.dump(cfg, f, indent=4)
    image = os.path.join(root, "..", f"{name}_image.nii.gz")
    nib.save(nib.Nifti1Image(rng.random(shape, dtype=np.float32) * 100, affine), image)
    return name, root, os.path.abspath(image), shape


def _emulate(python: str, root: str, image: str) -> dict:
    env = dict(os.environ)  # PYTHONPATH kept: a worktree checks its own lesionlab in the MONAI 1.4.0 venv too
    r = subprocess.run([python, EMULATION, root, image], capture_output=True, text=True, timeout=900, env=env,
                       cwd=os.path.dirname(root))
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert r.returncode == 0 and line, f"MONAI Label emulation failed ({python}):\n{r.stderr[-4000:]}"
    return json.loads(line[len("RESULT "):])


def _check_result(res: dict, name: str, shape: tuple[int, int, int]) -> None:
    assert res["key_image"] == "image" and res["key_pred"] == "pred"
    assert res["labels"] == EXPECTED_LABELS.get(name, {"lesion": 1})
    assert res["infer_type"] == "segmentation"
    assert res["checkpoint_key_mismatch"] == []
    assert res["image_spatial_shape"] == list(shape)
    # the bundle's postprocessing leaves a channel-first label map on the input grid...
    assert res["postprocessed_shape"] == [1, *shape], res
    labels = EXPECTED_LABELS.get(name, {"lesion": 1})
    assert set(res["values"]) <= {float(v) for v in range(max(labels.values()) + 1)}
    # ...and MONAI Label's Restored keeps that grid (dropping the single channel of volumes, as MONAI Label does)
    assert res["restored_shape"] in (list(shape), [1, *shape]) if len(shape) == 2 else res["restored_shape"] == list(
        shape), res
    assert res["post_transforms"][-1] == "Restored" and "SaveImaged" not in res["post_transforms"]


@pytest.mark.parametrize("bundle", BUNDLES)
def test_metadata_contract(bundle):
    """What BundleInferTask reads from metadata.json and the folder name."""
    meta = json.load(open(os.path.join(BUNDLES_DIR, bundle, "configs", "metadata.json")))
    fmt = meta["network_data_format"]
    assert next(iter(fmt["inputs"])) == "image"
    assert next(iter(fmt["outputs"])) == "pred"
    channel_def = fmt["outputs"]["pred"].get("channel_def", {})
    labels = {v.lower(): int(k) for k, v in channel_def.items() if v.lower() != "background"}
    assert labels == EXPECTED_LABELS.get(bundle, {"lesion": 1})
    assert len(fmt["inputs"]["image"]["spatial_shape"]) in (2, 3)  # MONAI Label's "dimension"
    if bundle not in NOT_SERVED:
        assert "segmentation" in bundle  # MONAI Label infers the task type from the folder name
    assert os.path.exists(os.path.join(BUNDLES_DIR, bundle, "configs", "inference.json"))
    cfg_text = open(os.path.join(BUNDLES_DIR, bundle, "configs", "inference.json")).read()
    assert "@_meta_" not in cfg_text  # MONAI Label parses inference.json without the metadata


def test_contract_monai_current(bundle_copy):
    name, root, image, shape = bundle_copy
    res = _emulate(sys.executable, root, image)
    _check_result(res, name, shape)


def test_contract_monai_1_4(bundle_copy):
    if not (os.path.exists(MONAI14_PYTHON) and os.path.exists(MONAI14_READY)):
        pytest.skip("no .venv-monai14 (MONAI 1.4.0 environment); create it with `make monai14-env` or "
                    "`bash tools/make_monai14_env.sh`")
    name, root, image, shape = bundle_copy
    res = _emulate(MONAI14_PYTHON, root, image)
    assert res["monai_version"] == "1.4.0"
    _check_result(res, name, shape)


_WORKFLOW = """
import glob, json, sys
from monai.bundle import ConfigWorkflow
bundle, image, out = sys.argv[1:4]
wf = ConfigWorkflow(config_file=bundle + "/configs/inference.json", meta_file=bundle + "/configs/metadata.json",
                    logging_file=False, workflow_type="infer", bundle_root=bundle, output_dir=out, device="cpu",
                    **{"dataset#data": [{"image": image}]})
wf.initialize()
wf.run()
wf.finalize()
import monai
written = sorted(glob.glob(out + "/*.nii*") + glob.glob(out + "/*.png"))
print("RESULT " + json.dumps({"monai": monai.__version__, "written": written}))
"""


def test_bundle_inference_workflow_monai_1_4(bundle_copy, tmp_path):
    """The bundle's own inference workflow (with SaveImaged and its writer) also runs on MONAI 1.4.0."""
    if not (os.path.exists(MONAI14_PYTHON) and os.path.exists(MONAI14_READY)):
        pytest.skip("no .venv-monai14 (MONAI 1.4.0 environment); create it with `make monai14-env`")
    name, root, image, shape = bundle_copy
    env = dict(os.environ)  # PYTHONPATH kept: a worktree checks its own lesionlab in the MONAI 1.4.0 venv too
    r = subprocess.run([MONAI14_PYTHON, "-c", _WORKFLOW, root, image, str(tmp_path / "out")], capture_output=True,
                       text=True, timeout=900, env=env, cwd=str(tmp_path))
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    assert r.returncode == 0 and line, r.stderr[-4000:]
    res = json.loads(line[len("RESULT "):])
    assert res["monai"] == "1.4.0" and len(res["written"]) == 1
    if res["written"][0].endswith(".png"):  # tile bundles write PNG class maps on the tile's (y, x) grid
        from PIL import Image

        assert np.asarray(Image.open(res["written"][0])).shape == tuple(shape[::-1])
        return
    pred = nib.load(res["written"][0])
    assert pred.shape == shape
    np.testing.assert_allclose(pred.affine, nib.load(image).affine, atol=1e-5)


def test_full_install_keeps_monai_torch_numpy():
    """pip's dry run of ``pip install lesionlab`` (with dependencies) in the MONAI 1.4.0 environment changes none of
    the packages a MONAI Label server depends on (recorded by tools/make_monai14_env.sh)."""
    report = os.path.join(ROOT, ".venv-monai14", "lesionlab-install-report.json")
    if not (os.path.exists(MONAI14_READY) and os.path.exists(report)):
        pytest.skip("no .venv-monai14 install report; create it with `make monai14-env`")
    installs = {i["metadata"]["name"].lower(): i["metadata"]["version"] for i in json.load(open(report))["install"]}
    assert "lesionlab" in installs
    assert not {"monai", "torch", "numpy", "pytorch-ignite", "nibabel"} & set(installs), installs
