"""The web app's parts without Streamlit: task adapter, pairing and scores, uploads, rendering, launcher."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from lesionlab.apps.bundle import BUNDLES_DIR
from lesionlab.apps.webapp.evaluation import EvaluationRun, pair_files, pair_key, scores_csv, scores_table
from lesionlab.apps.webapp.model import label_map, probabilities
from lesionlab.apps.webapp.render import class_areas, count_objects, display_order, overlay
from lesionlab.apps.webapp.tasks import task_spec
from lesionlab.apps.webapp.uploads import Workspace, prepare_image, read_mask, save_upload
from lesionlab.errors import DataError, LesionlabError
from tests.apps.webapp.toy_bundles import disk_image, png

PROJECT_BUNDLES = sorted(b for b in os.listdir(BUNDLES_DIR) if os.path.isdir(os.path.join(BUNDLES_DIR, b, "configs")))


def _meta(root: str) -> dict:
    with open(os.path.join(root, "configs", "metadata.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("name", PROJECT_BUNDLES)
def test_every_project_bundle_has_a_task_the_app_can_show(name):
    root = os.path.join(BUNDLES_DIR, name)
    spec = task_spec(_meta(root), root)
    assert spec.kind in ("segmentation-2d", "segmentation-3d", "classification")
    assert spec.class_names and spec.name
    if name.startswith("brain_mri_"):  # 2.5D and 3D stroke bundles read whole volumes
        assert spec.kind == "segmentation-3d" and spec.foreground == {1: "lesion"}


def test_task_rules_from_metadata():
    seg = {"network_data_format": {
        "inputs": {"image": {"num_channels": 3, "spatial_shape": [256, 256]}},
        "outputs": {"pred": {"format": "segmentation", "num_channels": 7, "spatial_shape": [256, 256],
                             "channel_def": {str(i): f"c{i}" for i in range(7)}}}}}
    s = task_spec(seg)
    assert (s.kind, s.in_channels, s.num_classes, len(s.foreground)) == ("segmentation-2d", 3, 7, 6)
    assert not s.whole_slide and "png" in s.upload_types and "zip" not in s.upload_types
    seg["whole_slide"] = True
    s = task_spec(seg)
    assert s.whole_slide and "svs" in s.upload_types
    cls = {"network_data_format": {"inputs": {"image": {"num_channels": 3, "spatial_shape": [224, 224]}},
                                   "outputs": {"pred": {"format": "classification", "num_channels": 4,
                                                        "spatial_shape": []}}}}
    c = task_spec(cls)
    assert c.kind == "classification" and c.class_names == {i: f"class {i}" for i in range(4)}
    cls["network_data_format"]["outputs"]["pred"].update(format="classes", spatial_shape=[1])  # as a 1-vector
    assert task_spec(cls).kind == "classification"
    dcm = json.loads(json.dumps(seg))
    dcm.update(data_type="dicom", whole_slide=False)
    d = task_spec(dcm)
    assert d.kind == "segmentation-2d" and d.dicom_input and d.upload_types == ("dcm", "dicom", "ima")
    vol = {"data_type": "nibabel", "network_data_format": {
        "inputs": {"image": {"num_channels": 4, "spatial_shape": [192, 192]}},
        "outputs": {"pred": {"format": "segmentation", "num_channels": 1, "spatial_shape": [192, 192]}}}}
    v = task_spec(vol)
    assert v.kind == "segmentation-3d" and v.class_names == {0: "background", 1: "class 1"}
    with pytest.raises(LesionlabError, match="no network_data_format"):
        task_spec({"name": "x"})
    with pytest.raises(LesionlabError, match="neither a segmentation"):
        task_spec({"network_data_format": {"inputs": {"image": {"num_channels": 1}}, "outputs": {"pred": {
            "format": "regression", "spatial_shape": [4]}}}})


def test_pairing_by_name():
    p = pair_files(["a.png", "B.PNG", "c.png", "dup.png", "sub/dup.png"],
                   ["a_mask.png", "b-label.png", "d_mask.png", "dup.png"])
    assert p.pairs == [("a.png", "a_mask.png"), ("B.PNG", "b-label.png"), ("dup.png", "dup.png")]
    assert p.unpaired_images == ["c.png"] and p.unpaired_masks == ["d_mask.png"] and p.duplicates == ["sub/dup.png"]
    assert pair_key("case_01_seg.nii.gz") == "case_01" == pair_key("case_01.nii.gz")


def test_scores_table_by_hand():
    # truth 0 0 1 1 1 / prediction 0 1 1 1 0 -> cm [[1, 1], [1, 2]]
    run = EvaluationRun({0: "background", 1: "glomerulus"})
    row = run.add("x", np.array([0, 1, 1, 1, 0]), np.array([0, 0, 1, 1, 1]))
    np.testing.assert_array_equal(run.cm, [[1, 1], [1, 2]])
    assert row["Dice glomerulus"] == pytest.approx(2 * 2 / (2 * 2 + 1 + 1))
    table = {r["class"]: r for r in scores_table(run.cm, run.names)}
    g = table["glomerulus"]
    assert g["IoU"] == pytest.approx(100 * 2 / 4) and g["Dice"] == pytest.approx(100 * 4 / 6, abs=0.01)
    assert g["Precision"] == pytest.approx(100 * 2 / 3, abs=0.01)
    assert g["Recall"] == pytest.approx(100 * 2 / 3, abs=0.01)
    assert g["Accuracy"] == pytest.approx(100 * 3 / 5)  # eq. 4-1: (TP + TN) / (P + N) = (2 + 1) / 5
    b = table["background"]
    assert b["IoU"] == pytest.approx(100 / 3, abs=0.01) and b["Recall"] == 50.0
    assert table["mean"]["IoU"] == pytest.approx((50 + 100 / 3) / 2, abs=0.01)
    csv = scores_csv(scores_table(run.cm, run.names), {"aAcc_%": 60.0})
    assert csv.splitlines()[0] == "class,IoU,Dice,Precision,Recall,Accuracy" and csv.endswith("# aAcc_%,60.0\n")
    with pytest.raises(ValueError, match="differ in size"):
        run.add("y", np.zeros(3), np.zeros(4))


def test_uploads_checks_and_conversions(tmp_path):
    with Workspace() as ws:
        folder = ws.path
        with pytest.raises(DataError, match="the file is empty"):
            save_upload(ws, "a.png", b"", 1)
        with pytest.raises(DataError, match=r"\.exe' is not accepted"):
            save_upload(ws, "a.exe", b"MZ", 1, allowed=("png",))
        with pytest.raises(DataError, match="the limit is 0.001 MB"):
            save_upload(ws, "a.png", b"x" * 2000, 0.001)
        path = save_upload(ws, "../../etc/evil name.png", png(disk_image(40, 50)[0]), 1)
        assert os.path.dirname(path) == os.path.join(folder, "uploads") and path.endswith("evil_name.png")
        grey = prepare_image(ws, path, 1)
        assert grey.notes == ["converted from RGB to grey (the model reads 1 channel)"]
        assert grey.display.shape == (40, 50, 3)
        with pytest.raises(DataError, match="reads 2 channels"):
            prepare_image(ws, path, 2)
        gif = os.path.join(folder, "anim.gif")
        from PIL import Image

        frames = [Image.fromarray(np.full((8, 8), v, np.uint8)) for v in (0, 255)]
        frames[0].save(gif, save_all=True, append_images=frames[1:])
        with pytest.raises(DataError, match="2 frames"):
            prepare_image(ws, gif, 3)
    assert not os.path.exists(folder)


def test_dicom_uploads_are_checked(tmp_path):
    from lesionlab.apps.webapp.uploads import prepare_dicom
    from lesionlab.data.synthetic.dicom_series import synth_dicom_series

    series = synth_dicom_series(str(tmp_path / "s"), n_slices=16, size=16)
    assert prepare_dicom(series.files[0]).path == series.files[0]
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\x00" * 300)
    with pytest.raises(DataError, match="not a DICOM file"):
        prepare_dicom(str(fake))


def test_masks_0_255_indices_and_colour(tmp_path):
    m = np.zeros((6, 7), np.uint8)
    m[2:4, 3:6] = 255
    p = tmp_path / "m.png"
    p.write_bytes(png(m))
    np.testing.assert_array_equal(read_mask(str(p), "segmentation-2d", 2), m // 255)
    with pytest.raises(DataError, match="outside the task's classes 0..2"):
        read_mask(str(p), "segmentation-2d", 3)
    rgb = np.zeros((6, 7, 3), np.uint8)
    rgb[..., 0] = 1
    p.write_bytes(png(rgb))
    with pytest.raises(DataError, match="a colour mask"):
        read_mask(str(p), "segmentation-2d", 2)


def test_label_maps_and_probabilities():
    logits = np.array([[[0.1, 2.0]], [[1.0, -1.0]]])  # 2 channels, 1 x 2 pixels
    np.testing.assert_array_equal(label_map(logits), [[1, 0]])
    np.testing.assert_array_equal(label_map(np.array([[[0.2, 0.7]]])), [[0, 1]])
    np.testing.assert_array_equal(label_map(np.array([[[0.0, 2.0]]])), [[0, 2]])
    np.testing.assert_allclose(probabilities(np.array([0.2, 0.8])), [0.2, 0.8])
    np.testing.assert_allclose(probabilities(np.array([0.0, np.log(3.0)])), [0.25, 0.75])
    np.testing.assert_allclose(probabilities(np.array([0.25])), [0.75, 0.25])  # one sigmoid probability
    np.testing.assert_allclose(probabilities(np.array([np.log(3.0)])), [0.25, 0.75])  # one logit


def test_rendering_by_hand():
    rgb = np.zeros((5, 5, 3), np.uint8)
    label = np.zeros((5, 5), int)
    label[1:4, 1:4] = 1
    out = overlay(rgb, label, {1: (200, 0, 0)}, alpha=0.5)
    assert tuple(out[2, 2]) == (100, 0, 0)  # interior blended
    assert tuple(out[1, 1]) == (200, 0, 0)  # outline opaque
    assert tuple(out[0, 0]) == (0, 0, 0)
    rows = class_areas(label, {0: "bg", 1: "g"}, 0.5, "mm2")
    assert rows[1] == {"class": "g", "pixels": 9, "share_%": 36.0, "mm2": 4.5}
    big = np.pad(label, ((0, 1), (0, 1)))
    big[5, 5] = 1  # a single pixel, not touching the square even diagonally
    assert count_objects(big, {1: "g"}) == {"g": 2}
    assert count_objects(big, {1: "g"}, min_pixels=2) == {"g": 1}
    assert display_order(np.arange(6).reshape(2, 3)).shape == (3, 2)


def test_launcher_command_and_errors(monkeypatch):
    from lesionlab.apps.cli import main
    from lesionlab.apps.webapp import APP_FILE
    from lesionlab.apps.webapp.launch import app_environment, streamlit_command

    cmd = streamlit_command("0.0.0.0", 9000, 20)
    assert cmd[1:5] == ["-m", "streamlit", "run", APP_FILE]
    for flag, value in (("--server.address", "0.0.0.0"), ("--server.port", "9000"), ("--server.maxUploadSize", "20"),
                        ("--browser.gatherUsageStats", "false"), ("--client.showErrorDetails", "none")):
        assert cmd[cmd.index(flag) + 1] == value
    env = app_environment(["m"], 20, "cpu", project_bundles=False, base={})
    assert env["LESIONLAB_APP_MODELS"] == os.path.abspath("m") and env["LESIONLAB_APP_PROJECT_BUNDLES"] == "0"
    assert main(["app", "--models", "/no/such/folder"]) == 2
    assert main(["app", "--port", "0"]) == 2
    with pytest.raises(SystemExit):
        main(["app", "--help"])

