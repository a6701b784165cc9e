"""A bundle loaded once for the web app, and the models the app can offer.

:class:`BundleModel` opens a trained bundle folder or an archive from ``lesionlab export`` (via the deployment
code's ``open_bundle``), builds the bundle's own inference workflow once (network, weights, transforms, inferer,
post-processing of ``configs/inference.json``) and runs it on one file at a time, reading the post-processed
prediction from the evaluator's output instead of re-implementing any pre- or post-processing. The Streamlit page
caches one instance per model and process (``st.cache_resource``); a lock serialises requests from several browser
sessions.

:func:`find_models` lists the project's bundles and the bundle folders and archives in extra folders (the
``--models`` option of ``lesionlab app`` / ``LESIONLAB_APP_MODELS``), each with its :class:`TaskSpec` and whether it
has trained weights.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from lesionlab.apps.webapp.tasks import TaskSpec, task_spec
from lesionlab.errors import DataError, LesionlabError

__all__ = ["BundleModel", "ModelEntry", "Prediction", "find_models", "train_hint"]


@dataclass
class ModelEntry:
    """A model the sidebar can offer: its path, task, and whether it can run (trained weights present)."""

    path: str
    label: str
    spec: TaskSpec | None
    trained: bool
    problem: str | None = None


@dataclass
class Prediction:
    """One result, in the network's array order (MONAI's: x, y[, z]) without the channel axis.

    Attributes:
        label: segmentation label map (int) on the input grid, or None for classification.
        probs: class probabilities (classification), else None.
        image: the preprocessed network input (channel first), for Grad-CAM.
        resampled: the label map came back on another grid and was brought to the input's with nearest neighbour.
    """

    label: np.ndarray | None
    probs: np.ndarray | None
    image: Any
    resampled: bool = False


def train_hint(path: str) -> str:
    """The commands that give a bundle trained weights."""
    name = os.path.basename(os.path.normpath(path))
    return (f"`{name}` has no trained weights (models/model.pt). Train it with "
            f"`lesionlab run train {name} --dataset-dir <data folder>` (or `lesionlab demo` for the stroke demo), "
            f"then pick the trained bundle folder or an archive from `lesionlab export {name} --out {name}.zip`.")


def _read_entry(path: str) -> ModelEntry:
    from lesionlab.apps.deploy.archive import open_bundle
    from lesionlab.apps.deploy.config import load_json

    label = os.path.basename(os.path.normpath(path))
    try:
        with open_bundle(path) as src:
            meta_path = os.path.join(src.root, "configs", "metadata.json")
            spec = task_spec(load_json(meta_path), src.root)
            trained = os.path.exists(os.path.join(src.root, "models", "model.pt"))
            label = src.name + (" (archive)" if src.archive else "")
            return ModelEntry(os.path.abspath(path), label, spec, trained)
    except LesionlabError as err:
        return ModelEntry(os.path.abspath(path), label, None, False, str(err))


def find_models(extra_dirs: list[str] | None = None, include_project: bool = True) -> list[ModelEntry]:
    """Bundle folders (with ``configs/``) and ``.zip`` archives in the project and in ``extra_dirs``.

    A folder in ``extra_dirs`` may itself be a bundle; otherwise its direct children are searched.
    """
    from lesionlab.apps.bundle import BUNDLES_DIR

    roots = ([BUNDLES_DIR] if include_project else []) + [d for d in (extra_dirs or []) if d]
    paths: list[str] = []
    for root in roots:
        if os.path.isdir(os.path.join(root, "configs")):
            paths.append(root)
            continue
        if not os.path.isdir(root):
            continue
        for child in sorted(os.listdir(root)):
            full = os.path.join(root, child)
            if os.path.isdir(os.path.join(full, "configs")) or (os.path.isfile(full) and child.endswith(".zip")):
                paths.append(full)
    seen, out = set(), []
    for p in paths:
        if os.path.realpath(p) not in seen:
            seen.add(os.path.realpath(p))
            out.append(_read_entry(p))
    return out


def _as_numpy(x) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu()
    return np.asarray(x)


def label_map(pred: np.ndarray) -> np.ndarray:
    """Channel-first prediction -> integer label map: arg-max over several channels, else the (thresholded) values."""
    pred = _as_numpy(pred)
    if pred.shape[0] > 1:
        return pred.argmax(0).astype(np.int64)
    p = pred[0]
    if np.issubdtype(p.dtype, np.floating) and not np.allclose(p, np.rint(p)):
        return (p >= 0.5).astype(np.int64)  # probabilities left by a bundle without a threshold
    return np.rint(p).astype(np.int64)


def _to_grid(label: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Nearest-neighbour resampling of a label map onto ``shape`` (both in the same axis order)."""
    idx = np.ix_(*[np.minimum((np.arange(n) + 0.5) * label.shape[i] / n, label.shape[i] - 1).astype(int)
                   for i, n in enumerate(shape)])
    return label[idx]


def probabilities(pred: np.ndarray) -> np.ndarray:
    """Class probabilities from a classification output: kept when already a distribution, else soft-maxed."""
    v = _as_numpy(pred).astype(np.float64).ravel()
    if v.size > 1 and (v >= 0).all() and (v <= 1).all() and abs(v.sum() - 1) < 1e-3:
        return v
    if v.size == 1:  # one sigmoid logit or probability: a binary classifier
        p = v[0] if 0 <= v[0] <= 1 else 1 / (1 + np.exp(-v[0]))
        return np.array([1 - p, p])
    e = np.exp(v - v.max())
    return e / e.sum()


class BundleModel:
    """A bundle's inference workflow (:class:`lesionlab.apps.deploy.predictor.BundlePredictor`), built once, run on one
    input file at a time.

    Args:
        source: trained bundle folder, project bundle name or ``.zip`` archive from ``lesionlab export``.
        device: torch device (``"cpu"``, ``"cuda"``...).
        whole_slide: run ``configs/inference_wsi.json`` instead of ``inference.json``.

    Raises:
        LesionlabError: for a bundle without trained weights (with the commands to train one) or a metadata file the
            app cannot read a task from.
    """

    def __init__(self, source: str, device: str = "cpu", whole_slide: bool = False) -> None:
        import torch

        from lesionlab.apps.deploy.archive import open_bundle
        from lesionlab.apps.deploy.config import load_json
        from lesionlab.apps.deploy.predictor import BundlePredictor

        self._stack = contextlib.ExitStack()
        try:
            self.src = self._stack.enter_context(open_bundle(source))
            self.metadata = load_json(os.path.join(self.src.root, "configs", "metadata.json"))
            self.spec = task_spec(self.metadata, self.src.root)
            if not os.path.exists(os.path.join(self.src.root, "models", "model.pt")):
                raise LesionlabError(train_hint(source))
            scratch = self._stack.enter_context(_scratch_dir())
            self.predictor = self._stack.enter_context(BundlePredictor(
                self.src.root, torch.device(device), {}, scratch, "inference_wsi" if whole_slide else "inference"))
            self._lock = threading.Lock()
        except BaseException:
            self._stack.close()
            raise

    def close(self) -> None:
        self._stack.close()

    @property
    def network(self):
        """The workflow's network (weights loaded)."""
        with self._lock:
            return self.predictor.parsed("network")

    def predict(self, path: str, input_shape: tuple[int, ...] | None = None) -> Prediction:
        """Run the bundle on one file; ``input_shape`` (MONAI order, no channel) is the grid the result must match.

        Raises:
            DataError: naming the file, when the bundle's transforms or network refuse it.
        """
        from lesionlab.apps.deploy.predictor import failure_reason

        with self._lock:
            try:
                item = self.predictor.run(path)
            except LesionlabError:
                raise
            except Exception as err:
                raise DataError(os.path.basename(path), failure_reason(err)) from err
        if "pred" not in item:
            raise LesionlabError(f"{self.src.name}: the inference workflow gave no 'pred' output")
        if self.spec.kind == "classification":
            return Prediction(None, probabilities(item["pred"]), item.get("image"))
        label = label_map(item["pred"])
        resampled = False
        if input_shape is not None and tuple(label.shape) != tuple(input_shape):
            if label.ndim != len(input_shape):
                raise DataError(os.path.basename(path), f"prediction of shape {list(label.shape)} does not match the "
                                                        f"input {list(input_shape)}")
            label, resampled = _to_grid(label, tuple(input_shape)), True
        return Prediction(label, None, item.get("image"), resampled)


@contextlib.contextmanager
def _scratch_dir():
    import tempfile

    with tempfile.TemporaryDirectory(prefix="lesionlab-app-model-") as tmp:
        yield os.path.join(tmp, "out")
