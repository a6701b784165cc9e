"""The web app's pages and error paths with Streamlit's ``AppTest`` (in-process, no browser).

The tile bundle's hand-set 1x1 convolution makes the expected mask of the synthetic tile exact, so the area shown
must equal the true disk area; the classifier's probabilities are compared with its network run directly; the volume
bundle is the project's 3D U-Net bundle (narrow, seeded random weights).
"""

from __future__ import annotations

import glob
import io
import os
import zipfile

import nibabel as nib
import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from lesionlab.apps.webapp import APP_FILE
from tests.apps.webapp.toy_bundles import CROP_CLASSES, disk_image, png

TIMEOUT = 120


def _app() -> AppTest:
    at = AppTest.from_file(APP_FILE, default_timeout=TIMEOUT)
    at.run()
    assert not at.exception, at.exception
    return at


def _select(at: AppTest, task: str, model: str | None = None) -> None:
    at.sidebar.selectbox(key="task").select(task).run()
    if model is not None:
        box = at.sidebar.selectbox(key="model")
        box.set_value(next(o for o in box.options if o.startswith(model))).run()


def _analyse(at: AppTest, name: str, data: bytes, mime: str = "application/octet-stream") -> AppTest:
    at.file_uploader[0].set_value((name, data, mime)).run()
    at.button(key="start").click().run()
    assert not at.exception, at.exception
    return at


def _metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def _errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def test_sidebar_lists_tasks_from_metadata_and_untrained_models(app_env):
    at = _app()
    assert at.sidebar.radio(key="function").options == ["Single analysis", "Test-set evaluation"]
    assert at.sidebar.selectbox(key="task").options == [
        "Image segmentation (2D tiles)", "Volume segmentation (NIfTI / DICOM)", "Image classification"]
    labels = at.sidebar.selectbox(key="model").options
    assert labels == ["toy_tile", "toy_untrained (not trained)", "toy_wsi"]
    _select(at, "Image segmentation (2D tiles)", "toy_untrained")
    warning = " ".join(w.value for w in at.warning)
    assert "no trained weights" in warning and "lesionlab run train toy_untrained" in warning
    assert "lesionlab export toy_untrained" in warning


def test_no_models_gives_a_clear_message(app_env, monkeypatch, tmp_path):
    monkeypatch.setenv("LESIONLAB_APP_MODELS", str(tmp_path / "empty"))
    at = _app()
    assert any("No bundle found" in e for e in [e.value for e in at.sidebar.error])


def test_tile_segmentation_area_overlay_downloads_and_cleanup(app_env):
    img, mask = disk_image(96, 128, seed=1)
    at = _app()
    _select(at, "Image segmentation (2D tiles)", "toy_tile")
    _analyse(at, "tile_01.png", png(img), "image/png")
    assert not _errors(at)
    assert _metrics(at)["glomerulus area (pixels)"] == str(int(mask.sum()))
    assert [c for i in at.get("image") for c in i.captions] == ["Input", "Prediction overlay"]
    labels = [b.proto.label for b in at.get("download_button")]
    assert labels == ["Mask (PNG)", "Mask (NIfTI)", "Overlay (PNG)"]
    table = at.dataframe[0].value
    assert list(table["class"]) == ["background", "glomerulus"]
    assert list(table["pixels"]) == [mask.size - int(mask.sum()), int(mask.sum())]
    assert glob.glob(os.path.join(app_env, "lesionlab-upload-*")) == []  # the upload folder is gone


def test_model_is_built_once_per_process(app_env, monkeypatch):
    import streamlit as st

    from lesionlab.apps.deploy.predictor import BundlePredictor

    builds = []
    original = BundlePredictor._build

    def counting(self):
        builds.append(os.path.basename(self.root))
        return original(self)

    monkeypatch.setattr(BundlePredictor, "_build", counting)
    st.cache_resource.clear()
    img, _ = disk_image(64, 64, seed=7)
    at = _app()
    _analyse(at, "a.png", png(img), "image/png")
    _analyse(at, "b.png", png(img[::-1]), "image/png")
    second = _app()  # another browser session of the same server process
    _analyse(second, "c.png", png(img), "image/png")
    assert len(at.metric) == 1 and len(second.metric) == 1
    assert builds == ["toy_tile"]


@pytest.mark.parametrize("name,data,expected", [
    ("notes.txt", b"hello", "file type '.txt' is not accepted"),
    ("broken.png", b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20, "not a readable image"),
])
def test_wrong_type_and_corrupt_uploads_get_messages(app_env, name, data, expected):
    at = _app()
    _select(at, "Image segmentation (2D tiles)", "toy_tile")
    _analyse(at, name, data)
    errors = " ".join(_errors(at))
    assert expected in errors and "Traceback" not in errors
    assert not at.metric


def test_oversized_upload_is_refused(app_env, monkeypatch):
    monkeypatch.setenv("LESIONLAB_APP_MAX_UPLOAD_MB", "0.01")
    img, _ = disk_image(96, 128)
    at = _app()
    _analyse(at, "tile.png", png(np.tile(img, (4, 4, 1))))
    assert "the limit is 0.01 MB" in " ".join(_errors(at))


def test_grey_and_rgba_uploads_are_converted_with_a_note(app_env):
    from PIL import Image

    img, mask = disk_image(64, 80, seed=2)
    buf = io.BytesIO()
    Image.fromarray(img).convert("RGBA").save(buf, format="PNG")
    at = _app()
    _analyse(at, "tile.png", buf.getvalue())
    assert any("converted from RGBA to RGB" in i.value for i in at.info)
    assert _metrics(at)["glomerulus area (pixels)"] == str(int(mask.sum()))


def test_whole_slide_thumbnail_and_object_count(app_env):
    from scipy import ndimage

    img, mask = disk_image(400, 2100, seed=8, n=12)
    buf = io.BytesIO()
    from PIL import Image

    Image.fromarray(img).save(buf, format="TIFF")
    at = _app()
    _select(at, "Image segmentation (2D tiles)", "toy_wsi")
    _analyse(at, "slide.tif", buf.getvalue(), "image/tiff")
    assert not _errors(at)
    n_true = ndimage.label(mask, structure=np.ones((3, 3)))[1]
    assert _metrics(at)["Objects detected"] == str(n_true)
    assert _metrics(at)["glomerulus area (pixels)"] == str(int(mask.sum()))
    assert "Prediction overlay (thumbnail, 1:2)" in [c for i in at.get("image") for c in i.captions]


def _nifti_bytes(vol: np.ndarray, zooms=(1.5, 1.5, 2.0)) -> bytes:
    return nib.Nifti1Image(vol, np.diag([*zooms, 1.0])).to_bytes()


def test_volume_slider_and_lesion_volume_in_ml(app_env, models_dir):
    from lesionlab.apps.webapp.model import BundleModel

    vol = np.random.default_rng(0).random((40, 36, 24)).astype(np.float32)
    at = _app()
    _select(at, "Volume segmentation (NIfTI / DICOM)")
    _analyse(at, "case.nii", _nifti_bytes(vol))
    assert not _errors(at)
    slider = at.slider(key="slice")
    assert (slider.min, slider.max) == (0, 23)
    # the same bundle run directly: the app's mL must be its voxel count x 1.5 x 1.5 x 2 mm^3
    path = os.path.join(app_env, "case.nii")
    nib.save(nib.Nifti1Image(vol, np.diag([1.5, 1.5, 2.0, 1.0])), path)
    label = BundleModel(os.path.join(models_dir, "toy_volume")).predict(path, vol.shape).label
    assert _metrics(at)["lesion volume (mL)"] == f"{np.count_nonzero(label == 1) * 4.5 / 1000:.2f}"
    slider.set_value(3).run()
    assert not at.exception and at.slider(key="slice").value == 3


def test_dicom_series_zip_and_a_bad_zip(app_env, tmp_path):
    from lesionlab.data.synthetic.dicom_series import synth_dicom_series

    series = synth_dicom_series(str(tmp_path / "series"), n_slices=16, size=32)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in series.files:
            zf.write(f, os.path.join("study", os.path.basename(f)))
    at = _app()
    _select(at, "Volume segmentation (NIfTI / DICOM)")
    _analyse(at, "study.zip", buf.getvalue(), "application/zip")
    assert not _errors(at)
    assert any("DICOM series of 16 slices" in i.value for i in at.info)
    assert at.slider(key="slice").max == 15
    _analyse(at, "notdicom.zip", b"PK\x05\x06" + b"\x00" * 18, "application/zip")
    assert "zip archive is empty" in " ".join(_errors(at))


def test_classification_probabilities_bar_chart_and_grad_cam(app_env, models_dir):
    from lesionlab.apps.webapp.model import BundleModel

    img, _ = disk_image(80, 80, seed=3)
    at = _app()
    _select(at, "Image classification")
    _analyse(at, "crop.png", png(img), "image/png")
    assert not _errors(at)
    frame = at.dataframe[0].value
    assert list(frame["class"]) == list(CROP_CLASSES.values())
    # the bundle's network on its own preprocessing, soft-maxed by hand
    model = BundleModel(os.path.join(models_dir, "toy_crop"))
    path = os.path.join(app_env, "crop.png")
    with open(path, "wb") as f:
        f.write(png(img))
    image = model.predict(path).image
    with torch.no_grad():
        logits = model.network(torch.as_tensor(image)[None].float())[0]
    np.testing.assert_allclose(frame["probability"].to_numpy(), torch.softmax(logits, 0).numpy(), atol=1e-5)
    top = CROP_CLASSES[str(int(logits.argmax()))]
    assert _metrics(at)["Predicted class"] == top
    assert len(at.get("vega_lite_chart")) == 1
    assert [c for i in at.get("image") for c in i.captions] == ["Input", f"Grad-CAM for '{top}'"]


def test_evaluation_pairs_progress_metrics_and_csv(app_env):
    imgs = [disk_image(64, 96, seed=s) for s in (4, 5)]
    at = _app()
    at.sidebar.radio(key="function").set_value("Test-set evaluation").run()
    at.file_uploader(key="eval_images").set_value(
        [(f"tile_{i}.png", png(im), "image/png") for i, (im, _) in enumerate(imgs)]
        + [("lonely.png", png(imgs[0][0]), "image/png")]).run()
    at.file_uploader(key="eval_masks").set_value(
        [(f"tile_{i}_mask.png", png(m * 255), "image/png") for i, (_, m) in enumerate(imgs)]).run()
    assert "lonely.png" in " ".join(w.value for w in at.warning)
    at.button(key="start_eval").click().run()
    assert not at.exception and not _errors(at)
    assert _metrics(at) == {"aAcc (%)": "100.00", "mIoU (%)": "100.00", "mDice (%)": "100.00"}
    table = at.dataframe[0].value
    assert list(table["class"]) == ["background", "glomerulus", "mean"]
    assert (table["IoU"] == 100.0).all() and (table["Accuracy"] == 100.0).all()
    assert "Metrics (CSV)" in [b.proto.label for b in at.get("download_button")]
    assert at.get("image")[0].captions[0].startswith("Confusion matrix")


def test_evaluation_is_for_segmentation_tasks(app_env):
    at = _app()
    at.sidebar.radio(key="function").set_value("Test-set evaluation").run()
    _select(at, "Image classification")
    assert "offered for segmentation models" in " ".join(i.value for i in at.info)
    assert not at.get("file_uploader")


def test_evaluation_reports_a_mask_of_the_wrong_size(app_env):
    img, mask = disk_image(64, 96, seed=6)
    at = _app()
    at.sidebar.radio(key="function").set_value("Test-set evaluation").run()
    at.file_uploader(key="eval_images").set_value([("a.png", png(img), "image/png"),
                                                   ("b.png", png(img), "image/png")]).run()
    at.file_uploader(key="eval_masks").set_value([("a_mask.png", png(mask[:32]), "image/png"),
                                                  ("b_mask.png", png(mask), "image/png")]).run()
    at.button(key="start_eval").click().run()
    assert not at.exception
    failures = at.dataframe[0].value
    assert list(failures["image"]) == ["a.png"] and "differs from the image" in failures["problem"][0]
    assert _metrics(at)["mIoU (%)"] == "100.00"  # b.png still scored


def test_password_from_the_environment(app_env, monkeypatch):
    monkeypatch.setenv("LESIONLAB_APP_PASSWORD", "s3cret")
    at = _app()
    assert not at.sidebar.selectbox
    at.text_input(key="password").input("wrong")
    at.button[0].click().run()
    assert "Wrong password." in _errors(at)
    at.text_input(key="password").input("s3cret")
    at.button[0].click().run()
    assert at.sidebar.selectbox(key="task")
