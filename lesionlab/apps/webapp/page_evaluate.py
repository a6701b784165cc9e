"""Test-set evaluation page: images and masks uploaded together, paired by name, scored over all pixels.

:func:`evaluate_pairs` does the work without Streamlit; :func:`evaluation_page` draws the uploaders, the pairing, a
progress bar, the confusion-matrix heat map, the per-class metrics table with its CSV download and a per-image table.
A file that cannot be read is listed with the reason and the others are still scored.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import streamlit as st

from lesionlab.apps.webapp.evaluation import EvaluationRun, pair_files, scores_csv, scores_table
from lesionlab.apps.webapp.model import BundleModel
from lesionlab.apps.webapp.page_single import prepare_input
from lesionlab.apps.webapp.render import display_order
from lesionlab.apps.webapp.uploads import Workspace, read_mask, save_upload
from lesionlab.errors import LesionlabError

__all__ = ["evaluate_pairs", "evaluation_page"]

_MASK_TYPES = {"segmentation-2d": ("png", "tif", "tiff", "bmp"), "segmentation-3d": ("nii", "gz", "nrrd", "mha")}


def _one(model: BundleModel, run: EvaluationRun, img: tuple[str, bytes], msk: tuple[str, bytes], max_mb: float) -> None:
    spec = model.spec
    with Workspace() as ws:
        path = save_upload(ws, img[0], img[1], max_mb, allowed=spec.upload_types)
        mask_path = save_upload(ws, msk[0], msk[1], max_mb, allowed=_MASK_TYPES[spec.kind])
        prepared, shape = prepare_input(ws, path, spec)
        mask = read_mask(mask_path, spec.kind, run.num_classes)
        pred = display_order(model.predict(prepared.path, shape).label)
        if pred.shape != mask.shape:
            raise LesionlabError(f"{msk[0]}: mask size {list(mask.shape)} differs from the image's "
                                 f"{list(pred.shape)}")
        run.add(img[0], pred, mask)


def evaluate_pairs(model: BundleModel, images: Sequence[tuple[str, bytes]], masks: Sequence[tuple[str, bytes]],
                   max_mb: float, progress: Callable[[int, int, str], None] | None = None) -> dict[str, Any]:
    """Pair, predict and score; return the run, the pairing and the per-file failures (name, reason)."""
    pairing = pair_files([n for n, _ in images], [n for n, _ in masks])
    by_name_i, by_name_m = dict(images), dict(masks)
    run = EvaluationRun(model.spec.class_names)
    failures: list[dict[str, str]] = []
    for i, (iname, mname) in enumerate(pairing.pairs):
        if progress:
            progress(i, len(pairing.pairs), iname)
        try:
            _one(model, run, (iname, by_name_i[iname]), (mname, by_name_m[mname]), max_mb)
        except LesionlabError as err:
            failures.append({"image": iname, "mask": mname, "problem": str(err)})
    if progress:
        progress(len(pairing.pairs), len(pairing.pairs), "")
    return {"run": run, "pairing": pairing, "failures": failures}


def _heatmap_png(run: EvaluationRun) -> bytes:
    from lesionlab.apps.figures import plot_confusion_matrix

    with tempfile.TemporaryDirectory(prefix="lesionlab-app-cm-") as tmp:
        out = plot_confusion_matrix(run.cm, run.names, os.path.join(tmp, "cm.png"),
                                    title=f"{len(run.rows)} image(s), {int(run.cm.sum())} pixels")
        with open(out, "rb") as f:
            return f.read()


def evaluation_page(model: BundleModel, max_mb: float) -> None:
    """Draw the test-set evaluation page for ``model``."""
    import pandas as pd

    spec = model.spec
    st.header(f"Test-set evaluation: {spec.title}")
    if spec.kind not in _MASK_TYPES:
        st.info("Test-set evaluation compares predicted and true masks, so it is offered for segmentation models. "
                "Pick a segmentation task in the sidebar.")
        return
    st.write("Upload the images and their masks; they are paired by file name (`tile_01.png` with "
             "`tile_01_mask.png` or `tile_01.png`). Masks hold class indices (a binary mask may use 0/255).")
    left, right = st.columns(2)
    images = left.file_uploader("Images (" + ", ".join("." + t for t in spec.upload_types) + ")",
                                accept_multiple_files=True, key="eval_images")
    masks = right.file_uploader("Masks (" + ", ".join("." + t for t in _MASK_TYPES[spec.kind]) + ")",
                                accept_multiple_files=True, key="eval_masks")
    if not images or not masks:
        st.info("Upload at least one image and its mask, then press **Start evaluation**.")
        return
    pairing = pair_files([f.name for f in images], [f.name for f in masks])
    st.write(f"**{len(pairing.pairs)}** image/mask pair(s).")
    if pairing.unpaired_images or pairing.unpaired_masks or pairing.duplicates:
        st.warning("Not paired (left out): " + ", ".join(pairing.unpaired_images + pairing.unpaired_masks)
                   + (f". Same name uploaded twice: {', '.join(pairing.duplicates)}" if pairing.duplicates else ""))
    if not pairing.pairs:
        st.error("No image has a mask of the same name.")
        return
    if st.button("Start evaluation", type="primary", key="start_eval"):
        bar = st.progress(0.0, text="Evaluating...")

        def progress(i: int, n: int, name: str) -> None:
            bar.progress(i / max(n, 1), text=f"{i}/{n} {name}")

        st.session_state["evaluation"] = evaluate_pairs(
            model, [(f.name, f.getvalue()) for f in images], [(f.name, f.getvalue()) for f in masks], max_mb,
            progress)
        bar.empty()
    result = st.session_state.get("evaluation")
    if result is None:
        return
    run = result["run"]
    if result["failures"]:
        st.error(f"{len(result['failures'])} pair(s) could not be scored:")
        st.dataframe(pd.DataFrame(result["failures"]), hide_index=True)
    if not run.rows:
        return
    scores = run.scores
    table = scores_table(run.cm, run.names)
    a, b, c = st.columns(3)
    a.metric("aAcc (%)", f"{100 * scores['aAcc']:.2f}")
    b.metric("mIoU (%)", f"{100 * scores['mIoU']:.2f}")
    c.metric("mDice (%)", f"{100 * scores['mDice']:.2f}")
    left, right = st.columns([2, 3])
    left.image(_heatmap_png(run), caption="Confusion matrix (rows: true class, columns: predicted)")
    right.dataframe(pd.DataFrame(table), hide_index=True)
    right.download_button("Metrics (CSV)", scores_csv(table, {"aAcc_%": round(100 * scores["aAcc"], 2),
                                                              "pairs": len(run.rows)}),
                          "evaluation_metrics.csv", "text/csv")
    with st.expander("Per image"):
        st.dataframe(pd.DataFrame(run.rows).round(4), hide_index=True)
    if np.isnan(scores["mIoU"]):
        st.warning("Some scores are undefined (a class absent from both the masks and the predictions).")
