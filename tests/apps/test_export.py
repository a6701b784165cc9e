"""Deployment commands: ``lesionlab export`` / ``verify`` / ``infer`` (lesionlab.apps.deploy) end to end.

A copy of the D-UNet bundle with the tiny geometry written into its configs is trained for one epoch on the tiny
ATLAS fixture, exported, verified, and used to segment a synthetic DICOM series (DICOM SEG, NIfTI, .seg.nrrd
outputs read back and compared with the source geometry). Every bundle under ``bundles/`` is also exported with
random weights (shrunk networks) and verified.
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch

from lesionlab.apps.bundle import BUNDLES_DIR, copy_bundle, run_bundle, set_config_values
from lesionlab.apps.cli import main
from lesionlab.apps.deploy import TOLERANCES, export_bundle, scan_bundle, verify_bundle
from lesionlab.data.synthetic.dicom_series import synth_dicom_series
from lesionlab.errors import LesionlabError

DUNET = "brain_mri_dunet_stroke_segmentation"
#: the tiny geometry: the model grid is the tiny ATLAS fixture's grid (inputs on it are not resampled; the DICOM
#: series is resampled onto it with space "mni", i.e. without registration: toy images are no head scans)
TINY_AFFINE = [[1.0, 0.0, 0.0, -24.0], [0.0, 1.0, 0.0, -30.0], [0.0, 0.0, 2.0, 5.0], [0.0, 0.0, 0.0, 1.0]]
TINY = {"roi_start": [4, 4], "roi_end": [44, 44], "spatial_size": [32, 32],
        "network_def#features": [8, 16, 16, 32, 32], "model_grid_shape": [48, 48, 10],
        "model_grid_affine": TINY_AFFINE, "space": "mni"}
BUNDLES = sorted(b for b in os.listdir(BUNDLES_DIR) if os.path.isdir(os.path.join(BUNDLES_DIR, b, "configs")))
#: config overrides that shrink each bundle's network for the random-weights export test (unknown bundles: none)
SMALL: dict[str, dict] = {
    DUNET: {"network_def#features": [8, 16, 16, 32, 32]},
    "brain_mri_unet3d_stroke_segmentation": {"network_def#channels": [4, 8, 8, 16, 16]},
    "brain_mri_agmrnet_stroke_segmentation": {"network_def#features": [8, 16, 16, 32, 32]},
    "brain_mri_tsrlnet_stroke_segmentation": {"network_def#features": [8, 16, 16, 32, 32]},
    "kidney_pas_pspnet_cbam_glomeruli_segmentation": {"network_def#layers": [1, 1, 1, 1], "network_def#width": 8,
                                                      "network_def#ppm_channels": 8, "network_def#head_channels": 16},
    "kidney_nm_renogram_parenchyma_segmentation": {"network_def#hidden_size": 32, "network_def#mlp_dim": 64,
                                                   "network_def#num_layers": 2, "network_def#num_heads": 4,
                                                   "network_def#decoder_channels": [16, 16, 8, 8]},
}

pytestmark = pytest.mark.slow


def _ras_affine(files: list[str]) -> np.ndarray:
    first, second = pydicom.dcmread(files[0]), pydicom.dcmread(files[1])
    iop = np.asarray(first.ImageOrientationPatient, float)
    row_sp, col_sp = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0], lps[:3, 1] = iop[:3] * col_sp, iop[3:] * row_sp
    lps[:3, 2] = np.asarray(second.ImagePositionPatient, float) - np.asarray(first.ImagePositionPatient, float)
    lps[:3, 3] = np.asarray(first.ImagePositionPatient, float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.fixture(scope="module")
def tiny_bundle(tiny_atlas, tmp_path_factory):
    """The D-UNet bundle with the tiny geometry in its configs, trained for one epoch."""
    root = copy_bundle(DUNET, str(tmp_path_factory.mktemp("tiny") / DUNET))
    set_config_values(root, TINY)
    run_bundle(root, "train", dataset_dir=tiny_atlas, epochs=1, val_interval=1, slices_per_volume=4, progress=False)
    assert os.path.exists(os.path.join(root, "models", "model.pt"))
    return root


@pytest.fixture(scope="module")
def tiny_zip(tiny_bundle, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("archive") / "tiny.zip")
    assert main(["export", tiny_bundle, "--out", out]) == 0
    return out


@pytest.fixture(scope="module")
def dicom_series(tmp_path_factory):
    return synth_dicom_series(str(tmp_path_factory.mktemp("dicom") / "series"), n_slices=16, size=48, seed=5,
                              pixel_spacing=(0.9, 1.2), slice_spacing=2.0, origin=(-20.0, -30.0, 15.0))


def test_archive_is_self_contained(tiny_zip, tmp_path):
    with zipfile.ZipFile(tiny_zip) as zf:
        names = set(zf.namelist())
        zf.extractall(tmp_path)
    root = tmp_path / DUNET
    for rel in ("configs/metadata.json", "configs/inference.json", "docs/README.md", "LICENSE", "models/model.pt",
                "models/model.ts", "models/model.onnx", "manifest.json"):
        assert f"{DUNET}/{rel}" in names, rel
    assert not [n for n in names if n.endswith(".onnx.data") or "/eval/" in n or "__pycache__" in n]
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["random_weights"] is False and manifest["bundle_name"] == DUNET
    assert manifest["lesionlab_version"] and manifest["packages"]["torch"] and manifest["packages"]["onnxruntime"]
    assert manifest["onnx"]["exporter"] in ("dynamo", "torchscript-legacy") and manifest["torchscript"]["method"]
    assert set(manifest["files"]) == {n[len(DUNET) + 1:] for n in names} - {"manifest.json"}
    state = torch.load(root / "models" / "model.pt", weights_only=True)  # a plain state dict
    assert all(isinstance(v, torch.Tensor) for v in state.values()) and "head.weight" in state


def test_verify_trained_archive(tiny_zip, tmp_path, capsys):
    report_file = tmp_path / "verify.json"
    assert main(["verify", tiny_zip, "--report", str(report_file)]) == 0
    out = capsys.readouterr().out
    for name in ("files", "manifest", "metadata-schema", "monailabel-metadata", "code", "net-in-out", "weights",
                 "torchscript", "onnx"):
        assert any(line.startswith("PASS") and f" {name} " in line for line in out.splitlines()), (name, out)
    report = json.loads(report_file.read_text())
    checks = {c["name"]: c for c in report["checks"]}
    assert report["ok"] and not report["failures"]
    assert checks["torchscript"]["values"]["max_abs_diff"] <= TOLERANCES["torchscript"][0]
    assert checks["onnx"]["values"]["max_abs_diff"] <= TOLERANCES["onnx"][0]
    assert checks["onnx"]["values"]["shape"][0] == 2  # batch 2 ran: the batch axis is dynamic
    print(f"\n{DUNET} (tiny, trained): TS max abs diff {checks['torchscript']['values']['max_abs_diff']:.3g}, "
          f"ONNX max abs diff {checks['onnx']['values']['max_abs_diff']:.3g}")


@pytest.mark.parametrize("bundle", BUNDLES)
def test_export_and_verify_every_bundle_with_random_weights(bundle, tmp_path):
    out = str(tmp_path / f"{bundle}.zip")
    manifest = export_bundle(bundle, out, random_weights=True, overrides=SMALL.get(bundle, {}))
    assert manifest["random_weights"] is True and manifest["weights_source"]["file"] is None
    report = verify_bundle(out)
    assert report.ok, report.format()
    values = {c.name: c.values for c in report.checks}
    print(f"\n{bundle} (random weights): TS max abs diff {values['torchscript']['max_abs_diff']:.3g}, "
          f"ONNX max abs diff {values['onnx']['max_abs_diff']:.3g}")


def test_export_without_weights_is_refused(tmp_path, capsys):
    root = copy_bundle(DUNET, str(tmp_path / DUNET))  # configs only, no models/
    out = tmp_path / "x.zip"
    assert main(["export", root, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "no trained weights" in err and "--random-weights" in err
    assert not out.exists()


def test_export_refuses_weights_of_another_network(tiny_bundle, tmp_path):
    with pytest.raises(LesionlabError, match="do not match network_def"):
        export_bundle(DUNET, str(tmp_path / "x.zip"), ckpt=os.path.join(tiny_bundle, "models", "model.pt"))


def test_verify_detects_a_modified_file(tiny_zip, tmp_path, capsys):
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tiny_zip) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("configs/inference.json"):
                data = data.replace(b'"sw_batch_size": 16', b'"sw_batch_size": 8')
            dst.writestr(item, data)
    assert main(["verify", str(tampered)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  manifest" in out and "configs/inference.json" in out and "failed (manifest)" in out


def test_verify_strict_refuses_untrusted_code_without_running_it(tiny_bundle, tmp_path, capsys):
    root = tmp_path / "outside_bundle_segmentation"
    shutil.copytree(tiny_bundle, root, ignore=shutil.ignore_patterns("eval"))
    marker = tmp_path / "PWNED"
    cfg = json.loads((root / "configs" / "inference.json").read_text())
    cfg["network_def"]["_requires_"] = f"$__import__('os').system('touch {marker}')"
    cfg["extra"] = {"_target_": "subprocess.run", "args": ["true"]}
    (root / "configs" / "inference.json").write_text(json.dumps(cfg))
    findings = scan_bundle(str(root))
    assert {f.id for f in findings} == {"network_def#_requires_", "extra"}
    assert main(["verify", str(root), "--strict"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  code" in out and "outside this project" in out and "SKIP  execution" in out
    assert not marker.exists()
    assert scan_bundle(os.path.join(BUNDLES_DIR, DUNET)) == []


def test_infer_dicom_series_to_dicom_seg(tiny_zip, dicom_series, tmp_path):
    import highdicom as hd

    out = tmp_path / "out"
    assert main(["infer", tiny_zip, "--input", dicom_series.folder, "--output", str(out), "--format", "dicom-seg",
                 "--set", "roi_start=[4,4]", "--device", "cpu"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["exit_code"] == 0 and summary["n_ok"] == 1 and summary["format"] == "dicom-seg"
    seg = hd.seg.segread(summary["cases"][0]["output"])
    assert seg.number_of_frames == 16 and seg.FrameOfReferenceUID == dicom_series.frame_of_reference_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == dicom_series.series_instance_uid
    assert seg.get_segment_description(1).SegmentLabel == "lesion"
    sources = {pydicom.dcmread(f).SOPInstanceUID: pydicom.dcmread(f) for f in dicom_series.files}
    for fg in seg.PerFrameFunctionalGroupsSequence:
        src = sources[fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_allclose([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in src.ImagePositionPatient], atol=1e-4)
    assert seg.pixel_array.shape == (16, 48, 48)
    report = json.loads((out / f"{summary['cases'][0]['case']}_report.json").read_text())
    voxel_ml = 0.9 * 1.2 * 2.0 / 1000
    assert report["lesion_voxels"] == int(seg.pixel_array.sum())
    assert report["lesion_volume_ml"] == pytest.approx(report["lesion_voxels"] * voxel_ml)
    assert report["dicom"]["series_instance_uid"] == dicom_series.series_instance_uid


def test_infer_nifti_output_keeps_dicom_geometry(tiny_zip, dicom_series, tmp_path):
    out = tmp_path / "out"
    assert main(["infer", tiny_zip, "--input", dicom_series.folder, "--output", str(out)]) == 0
    (case,) = json.loads((out / "summary.json").read_text())["cases"]
    pred = nib.load(case["output"])
    assert case["output"].endswith("_seg.nii.gz") and pred.shape == (48, 48, 16)
    np.testing.assert_allclose(pred.affine, _ras_affine(dicom_series.files), atol=1e-4)
    assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}


def test_infer_folder_to_seg_nrrd_reports_failed_cases(tiny_zip, tiny_atlas, dicom_series, tmp_path):
    import nrrd

    inputs = tmp_path / "inputs"
    inputs.mkdir()
    item = json.load(open(os.path.join(tiny_atlas, "datalist.json")))["validation"][0]["image"]
    src = os.path.join(tiny_atlas, item)
    shutil.copy(src, inputs / "subject.nii.gz")
    shutil.copytree(dicom_series.folder, inputs / "dicom_case")
    (inputs / "broken.nii.gz").write_bytes(b"not a nifti file")
    out = tmp_path / "out"
    assert main(["infer", tiny_zip, "--input", str(inputs), "--output", str(out), "--format", "nrrd"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    status = {c["case"]: c for c in summary["cases"]}
    assert summary["n_ok"] == 2 and summary["n_failed"] == 1 and summary["exit_code"] == 1
    assert status["broken"]["status"] == "failed" and "not a gzip-compressed NIfTI" in status["broken"]["error"]
    assert status["subject"]["status"] == status["dicom_case"]["status"] == "ok"
    data, header = nrrd.read(status["subject"]["output"])
    ref = nib.load(src)
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ ref.affine
    assert data.shape == ref.shape
    np.testing.assert_allclose(header["space origin"], lps[:3, 3], atol=1e-4)
    np.testing.assert_allclose(np.asarray(header["space directions"]), lps[:3, :3].T, atol=1e-4)
    assert header["Segment0_Name"] == "lesion" and header["Segment0_LabelValue"] == "1"
    report = json.loads((out / "subject_report.json").read_text())
    assert report["lesion_volume_ml"] == pytest.approx(int((data == 1).sum()) * 2.0 / 1000)


def test_infer_builds_the_workflow_once_per_run(tiny_zip, tiny_atlas, tmp_path, monkeypatch):
    """Four cases, one broken (NaN voxels, found inside the workflow): the workflow (network, weights) is built once,
    and once more only after the broken case failed inside it; the case after the failure is still segmented,
    identically to the ones before it."""
    from lesionlab.apps.deploy.predictor import BundlePredictor

    builds = []
    build = BundlePredictor._build
    monkeypatch.setattr(BundlePredictor, "_build", lambda self: builds.append(1) or build(self))
    item = json.load(open(os.path.join(tiny_atlas, "datalist.json")))["validation"][0]["image"]
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for name in ("a_case", "b_case", "d_case"):
        shutil.copy(os.path.join(tiny_atlas, item), inputs / f"{name}.nii.gz")
    good = nib.load(os.path.join(tiny_atlas, item))
    nan = np.asarray(good.dataobj, dtype=np.float32).copy()
    nan[10:12, 10:12, 3] = np.nan  # a sound header: it fails inside the workflow (ValidateVolumed), not before
    nib.save(nib.Nifti1Image(nan, good.affine), inputs / "c_broken.nii.gz")
    out = tmp_path / "out"
    assert main(["infer", tiny_zip, "--input", str(inputs), "--output", str(out)]) == 1
    status = {c["case"]: c for c in json.loads((out / "summary.json").read_text())["cases"]}
    assert [status[n]["status"] for n in ("a_case", "b_case", "c_broken", "d_case")] == ["ok", "ok", "failed", "ok"]
    assert len(builds) == 2
    first = np.asarray(nib.load(status["a_case"]["output"]).dataobj)
    for name in ("b_case", "d_case"):
        np.testing.assert_array_equal(np.asarray(nib.load(status[name]["output"]).dataobj), first)


def test_infer_dicom_seg_needs_dicom_input(tiny_zip, tiny_atlas, tmp_path, capsys):
    item = json.load(open(os.path.join(tiny_atlas, "datalist.json")))["validation"][0]["image"]
    assert main(["infer", tiny_zip, "--input", os.path.join(tiny_atlas, item), "--output", str(tmp_path / "o"),
                 "--format", "dicom-seg"]) == 2
    assert "DICOM SEG output needs DICOM input" in capsys.readouterr().err


@pytest.mark.parametrize(
    "expr, flagged",
    [
        ("$list(sorted(glob.glob(@dataset_dir + '/**/*.nii.gz', recursive=True)))", False),
        ("$[{'image': i} for i in @datalist]", False),
        ("$torch.device('cuda:0' if torch.cuda.is_available() else 'cpu')", False),
        ("$@network_def.to(@device)", False),
        ("$os.path.join(@bundle_root, 'models')", False),
        ("$import subprocess", True),
        ("$from os import system", True),
        ("$os.system('ls')", True),
        ("$__import__('os')", True),
        ("$@network.__class__", True),
        ("$open('/etc/passwd').read()", True),
        ("$torch.hub.load('a', 'b')", True),
        ("$getattr(torch, 'load')('x')", True),
    ],
)
def test_code_scanner(tmp_path, expr, flagged):
    (tmp_path / "configs").mkdir()
    cfg = {"imports": ["$import glob", "$import os"], "x": expr}
    (tmp_path / "configs" / "inference.json").write_text(json.dumps(cfg))
    assert bool(scan_bundle(str(tmp_path))) is flagged


def test_verify_sha256_of_the_published_archive(tiny_zip, capsys):
    from lesionlab.apps.deploy.archive import sha256

    good = sha256(tiny_zip)
    assert main(["verify", tiny_zip, "--sha256", good]) == 0
    assert "PASS  sha256" in capsys.readouterr().out
    assert main(["verify", tiny_zip, "--sha256", "0" * 64]) == 1
    out = capsys.readouterr().out
    assert "FAIL  sha256" in out and "SKIP  execution" in out and "nothing from the bundle was executed" in out


def test_tampered_archive_is_never_executed(tiny_zip, tiny_atlas, tmp_path, capsys):
    """inference.json swapped after export (a payload added): verify and infer both refuse before running anything,
    even with --trust (the manifest comes first)."""
    marker = tmp_path / "PWNED"
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(tiny_zip) as src, zipfile.ZipFile(tampered, "w") as dst:
        for item in src.infolist():
            data = src.read(item)
            if item.filename.endswith("configs/inference.json"):
                cfg = json.loads(data)
                cfg["initialize"].append(f"$__import__('os').system('touch {marker}')")
                data = json.dumps(cfg).encode()
            dst.writestr(item, data)
    assert main(["verify", str(tampered), "--trust"]) == 1
    assert "SKIP  execution" in capsys.readouterr().out
    item = json.load(open(os.path.join(tiny_atlas, "datalist.json")))["validation"][0]["image"]
    assert main(["infer", str(tampered), "--input", os.path.join(tiny_atlas, item), "--output", str(tmp_path / "o"),
                 "--trust"]) == 2
    assert "manifest check failed, nothing was run" in capsys.readouterr().err
    assert not marker.exists()


def test_infer_refuses_unlisted_code_unless_trusted(tiny_bundle, tiny_atlas, tmp_path, capsys):
    root = tmp_path / "outside_bundle_segmentation"
    shutil.copytree(tiny_bundle, root, ignore=shutil.ignore_patterns("eval"))
    marker = tmp_path / "RAN"
    cfg = json.loads((root / "configs" / "inference.json").read_text())
    cfg["initialize"].append(f"$open('{marker}', 'w').close()")
    (root / "configs" / "inference.json").write_text(json.dumps(cfg))
    item = json.load(open(os.path.join(tiny_atlas, "datalist.json")))["validation"][0]["image"]
    item = os.path.join(tiny_atlas, item)
    assert main(["infer", str(root), "--input", item, "--output", str(tmp_path / "a")]) == 2
    assert "outside the allow-list, nothing was run" in capsys.readouterr().err and not marker.exists()
    assert main(["infer", str(root), "--input", item, "--output", str(tmp_path / "b"), "--trust"]) == 0
    assert marker.exists()  # --trust runs it, as it says


def test_infer_rerun_skips_complete_cases_and_cleans_up(tiny_zip, tiny_atlas, tmp_path, capsys):
    """One line per failed case (traceback in infer.log); outputs get normal permissions; a rerun skips complete
    cases (--overwrite redoes them) and removes temporary files a killed run left."""
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    item = json.load(open(os.path.join(tiny_atlas, "datalist.json")))["validation"][0]["image"]
    shutil.copy(os.path.join(tiny_atlas, item), inputs / "a_case.nii.gz")
    (inputs / "b_broken.nii.gz").write_bytes(b"\x1f\x8b" + b"\0" * 50)
    out = tmp_path / "out"
    old = os.umask(0o022)
    try:
        assert main(["infer", tiny_zip, "--input", str(inputs), "--output", str(out)]) == 1
    finally:
        os.umask(old)
    err = capsys.readouterr().err
    failed = [ln for ln in err.splitlines() if "b_broken" in ln]
    assert len(failed) == 1 and failed[0].startswith("FAILED  b_broken") and "infer.log" in failed[0]
    assert "Traceback" not in err and "Traceback" in (out / "infer.log").read_text()
    seg = out / "a_case_seg.nii.gz"
    assert oct(os.stat(seg).st_mode & 0o777) == oct(0o644)
    stale = out / ".tmp-a_case_seg.nii.gz-killed.nii.gz"
    stale.write_bytes(b"partial")
    (out / ".work-999999999").mkdir()
    mtime = os.path.getmtime(seg)
    assert main(["infer", tiny_zip, "--input", str(inputs), "--output", str(out)]) == 1
    summary = json.loads((out / "summary.json").read_text())
    status = {c["case"]: c["status"] for c in summary["cases"]}
    assert status == {"a_case": "skipped", "b_broken": "failed"} and summary["n_skipped_complete"] == 1
    assert os.path.getmtime(seg) == mtime and not stale.exists() and not (out / ".work-999999999").exists()
    assert main(["infer", tiny_zip, "--input", str(inputs), "--output", str(out), "--overwrite"]) == 1
    assert json.loads((out / "summary.json").read_text())["cases"][0]["status"] == "ok"
