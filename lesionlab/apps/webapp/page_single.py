"""Single analysis: one upload (or camera photo) -> the model's result, drawn for the task the bundle declares.

:func:`analyse` does the work without Streamlit (upload -> temporary folder -> bundle -> result dictionary, the
folder removed afterwards); :func:`single_page` draws the page and keeps the last result in the session so that a
slice slider or a download does not run the model again.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import streamlit as st

from lesionlab.apps.webapp import render
from lesionlab.apps.webapp.model import BundleModel
from lesionlab.apps.webapp.uploads import (
    Workspace,
    prepare_dicom,
    prepare_image,
    prepare_slide,
    prepare_volume,
    save_upload,
    suffix_of,
)
from lesionlab.errors import LesionlabError

__all__ = ["analyse", "prepare_input", "single_page"]

_SLIDE_ONLY = (".svs", ".ndpi", ".scn")  # formats Pillow cannot decode; TIFF slides Pillow reads are images too


def prepare_input(ws: Workspace, path: str, spec) -> tuple:
    """The prepared upload for ``spec``'s task and the grid (MONAI order) the prediction must come back on (None:
    the bundle's own reader decides, as for slides and DICOM files)."""
    if spec.kind == "segmentation-3d":
        prepared = prepare_volume(ws, path)
        return prepared, prepared.display.shape[::-1]  # MONAI order x, y, z
    if spec.whole_slide and suffix_of(path) in _SLIDE_ONLY:
        return prepare_slide(path), None  # the bundle's whole-slide config reads the slide itself
    if spec.dicom_input:
        return prepare_dicom(path), None  # the bundle's own reader; shown: its preprocessed input
    prepared = prepare_image(ws, path, spec.in_channels)
    return prepared, prepared.display.shape[:2][::-1]


def analyse(model: BundleModel, name: str, data: bytes, max_mb: float) -> dict[str, Any]:
    """Run ``model`` on one uploaded file; return what the page shows (arrays in display order, numbers).

    Raises:
        LesionlabError: (DataError) wrong type, corrupt or oversized file, or an input the bundle refuses.
    """
    spec = model.spec
    t0 = time.perf_counter()
    with Workspace() as ws:
        path = save_upload(ws, name, data, max_mb, allowed=spec.upload_types)
        prepared, shape = prepare_input(ws, path, spec)
        pred = model.predict(prepared.path, shape)
        affine = _affine(prepared.path) if spec.kind == "segmentation-3d" else None
    result: dict[str, Any] = {"name": name, "kind": spec.kind, "notes": prepared.notes, "display": prepared.display,
                              "spacing": prepared.spacing, "affine": affine, "resampled": pred.resampled}
    if spec.kind == "classification":
        result["probs"] = pred.probs
        top = int(np.argmax(pred.probs))
        try:
            cam = render.grad_cam(model.network, pred.image, top)
            result["cam"] = _resize(render.display_order(cam), prepared.display.shape[:2])
        except (ValueError, RuntimeError) as err:
            result["cam_error"] = str(err).splitlines()[0]
    else:
        result["label"] = render.display_order(pred.label)
        if spec.dicom_input and pred.image is not None:
            result["display"] = render.input_rgb(render.display_order_channels(pred.image))
        if result["label"].ndim == 2 and result["display"].shape[:2] != result["label"].shape:  # slide thumbnail
            result["display"] = _fit(result["display"], result["label"].shape)
    result["seconds"] = time.perf_counter() - t0
    return result


def _affine(nifti: str) -> np.ndarray:
    import nibabel as nib

    return np.asarray(nib.load(nifti).affine)


def _fit(rgb: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """An RGB thumbnail resized to a label map's shape (grey when there is none)."""
    if rgb.size == 0:
        return np.full((*shape, 3), 200, np.uint8)
    from PIL import Image

    return np.asarray(Image.fromarray(rgb).resize((shape[1], shape[0]), Image.BILINEAR))


def _resize(a: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if a.shape == tuple(shape):
        return a
    from PIL import Image

    return np.asarray(Image.fromarray(a.astype(np.float32), mode="F").resize((shape[1], shape[0]), Image.BILINEAR))


def _upload_widget(model: BundleModel):
    spec = model.spec
    kinds = ", ".join("." + t for t in spec.upload_types)
    label = {"segmentation-3d": "Upload a volume (NIfTI, NRRD, MHA, or a DICOM series as .zip)",
             "classification": "Upload an image to classify"}.get(spec.kind, "Upload an image")
    # no type= filter: a wrong file gets the app's own message instead of Streamlit's exception
    up = st.file_uploader(f"{label} ({kinds})", key=f"single_upload_{spec.kind}")  # one per task: no stale file
    if spec.kind != "segmentation-3d" and st.toggle("Use the camera (phone or tablet)", key="use_camera"):
        shot = st.camera_input("Take a photo of the slide", key="camera")
        if shot is not None:
            return shot
    return up


def single_page(model: BundleModel, max_mb: float) -> None:
    """Draw the single-analysis page for ``model``."""
    spec = model.spec
    st.header(f"Single analysis: {spec.title}")
    upload = _upload_widget(model)
    if upload is None:
        st.session_state.pop("result", None)
        st.info("Upload a file, then press **Start analysis**.")
        return
    ident = (getattr(upload, "file_id", None) or upload.name, model.src.root)
    if st.session_state.get("result_for") != ident:
        st.session_state.pop("result", None)
    if st.button("Start analysis", type="primary", key="start"):
        with st.spinner("Analysing..."):
            try:
                st.session_state["result"] = analyse(model, upload.name or "camera.jpg", upload.getvalue(), max_mb)
                st.session_state["result_for"] = ident
            except LesionlabError as err:
                st.session_state.pop("result", None)
                st.error(f"Cannot analyse this file. {err}")
                return
    result = st.session_state.get("result")
    if result is None:
        return
    for note in result["notes"]:
        st.info(note)
    if result["resampled"]:
        st.info("The model's output grid differed from the image's; the mask was brought back onto the image's grid "
                "(nearest neighbour).")
    {"segmentation-2d": _show_2d, "segmentation-3d": _show_volume, "classification": _show_class}[result["kind"]](
        model, result)
    st.caption(f"Upload to result: {result['seconds']:.2f} s")


def _legend(model: BundleModel) -> dict[int, tuple[int, int, int]]:
    colors = render.class_colors(model.metadata, model.spec.class_names)
    st.markdown(render.legend_html(colors, model.spec.class_names), unsafe_allow_html=True)
    return colors


def _show_2d(model: BundleModel, result: dict) -> None:
    spec, rgb, label = model.spec, result["display"], result["label"]
    colors = render.class_colors(model.metadata, spec.class_names)
    over = render.overlay(rgb, label, colors)
    big = max(rgb.shape[:2]) > 2048
    shown, step = render.thumbnail(over, 2048) if big else (over, 1)
    left, right = st.columns(2)
    left.image(render.thumbnail(rgb, 2048)[0] if big else rgb, caption="Input", width="stretch")
    right.image(shown, caption="Prediction overlay" + (f" (thumbnail, 1:{step})" if big else ""),
                width="stretch")
    _legend(model)
    counts = render.count_objects(label, spec.foreground)
    cols = st.columns(max(len(spec.foreground), 1))
    for col, (k, name) in zip(cols, spec.foreground.items()):
        n = int(np.count_nonzero(label == k))
        col.metric(f"{name} area (pixels)", f"{n}", help=f"{100 * n / label.size:.2f} % of the image; "
                                                          f"{counts[name]} connected object(s)")
    if spec.whole_slide or big:
        st.metric("Objects detected", sum(counts.values()))
    st.dataframe(render.class_areas(label, spec.class_names), hide_index=True)
    _downloads(result, label, over)


def _downloads(result: dict, label: np.ndarray, over: np.ndarray) -> None:
    stem = result["name"].split(".", 1)[0]
    a, b, c = st.columns(3)
    if label.ndim == 2:
        a.download_button("Mask (PNG)", render.png_bytes(label), f"{stem}_mask.png", "image/png")
    b.download_button("Mask (NIfTI)", render.nifti_bytes(label, result["spacing"], result.get("affine")),
                      f"{stem}_mask.nii.gz", "application/gzip")
    c.download_button("Overlay (PNG)" if label.ndim == 2 else "Overlay of this slice (PNG)", render.png_bytes(over),
                      f"{stem}_overlay.png", "image/png")


def _show_volume(model: BundleModel, result: dict) -> None:
    spec, vol, label = model.spec, result["display"], result["label"]
    colors = render.class_colors(model.metadata, spec.class_names)
    areas = [int(np.count_nonzero(label[z] > 0)) for z in range(vol.shape[0])]
    default = int(np.argmax(areas)) if max(areas) else vol.shape[0] // 2
    z = st.slider("Slice", 0, vol.shape[0] - 1, default, key="slice")
    lo, hi = (float(v) for v in np.percentile(vol, (0.5, 99.5)))
    over = render.overlay(render.volume_rgb(vol, z, lo, hi), label[z], colors)
    st.image(np.flipud(over), caption=f"Slice {z} of {vol.shape[0]}", width=min(720, 3 * vol.shape[2]))
    _legend(model)
    voxel = float(np.prod(result["spacing"])) if result["spacing"] else None
    cols = st.columns(max(len(spec.foreground), 1))
    for col, (k, name) in zip(cols, spec.foreground.items()):
        n = int(np.count_nonzero(label == k))
        col.metric(f"{name} volume (mL)", f"{n * voxel / 1000:.2f}" if voxel else "n/a", help=f"{n} voxels")
    st.dataframe(render.class_areas(label, spec.class_names, voxel, "mL"), hide_index=True)
    _downloads(result, label, np.flipud(over))


def _show_class(model: BundleModel, result: dict) -> None:
    import pandas as pd

    names = model.spec.class_names
    probs = result["probs"]
    top = int(np.argmax(probs))
    st.metric("Predicted class", names.get(top, str(top)), f"{100 * probs[top]:.1f} % probability", delta_color="off")
    frame = pd.DataFrame({"class": [names.get(i, str(i)) for i in range(len(probs))], "probability": probs})
    st.bar_chart(frame, x="class", y="probability", horizontal=True)
    left, right = st.columns(2)
    left.image(result["display"], caption="Input", width="stretch")
    if "cam" in result:
        right.image(render.cam_overlay(result["display"], result["cam"]),
                    caption=f"Grad-CAM for '{names.get(top, top)}'", width="stretch")
    else:
        right.info(f"No Grad-CAM: {result.get('cam_error')}")
    st.dataframe(frame, hide_index=True)
