"""``lesionlab export``: write a self-contained deployment archive of a bundle.

The zip holds the bundle's ``configs/``, ``docs/``, ``LICENSE`` (and ``scripts/`` when the bundle has custom code),
``models/model.pt`` (plain state dict), ``models/model.ts`` (TorchScript via MONAI's ``ckpt_export``),
``models/model.onnx`` (input ``image``, output ``pred``, dynamic batch axis) and ``manifest.json`` (sha256 of every
file, package versions). Everything sits under one top-level folder named after the bundle, so unzipping into MONAI
Label's ``apps/monaibundle/model/`` gives a servable bundle.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import time
from collections.abc import Mapping
from typing import Any

from lesionlab import __version__
from lesionlab.apps.bundle import export_torchscript
from lesionlab.apps.deploy.archive import (
    ARCHIVE_FORMAT,
    file_hashes,
    open_bundle,
    package_versions,
    sha256,
    write_zip,
)
from lesionlab.apps.deploy.config import (
    build_network,
    bundle_on_path,
    config_file,
    input_shape,
    load_json,
    load_state_dict,
    load_weights,
    quiet_monai,
    set_config_ids,
)
from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_path, atomic_write_text

__all__ = ["export_bundle", "export_onnx", "export_ts"]

logger = logging.getLogger(__name__)

_BUNDLE_ITEMS = ("configs", "docs", "resources", "scripts", "LICENSE")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")


def _first_line(err: BaseException) -> str:
    return f"{type(err).__name__}: {str(err).splitlines()[0][:300]}" if str(err) else type(err).__name__


def _onnx_export_once(net, example, path: str, dynamo: bool) -> None:
    """One ``torch.onnx.export`` call (dynamo or legacy exporter) writing a single-file graph with a batch axis."""
    import torch

    if dynamo:
        batch = torch.export.Dim("batch", min=1, max=4096)
        torch.onnx.export(net, (example,), path, input_names=["image"], output_names=["pred"],
                          dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)
    else:
        torch.onnx.export(net, (example,), path, input_names=["image"], output_names=["pred"],
                          dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}}, dynamo=False)


def export_onnx(net, shape: tuple[int, ...], out: str) -> dict[str, Any]:
    """ONNX export with a dynamic batch axis: the dynamo exporter first, the legacy one if that fails.

    The graph is written as one file (weights inside, ``external_data=False``) so that the archive has no
    ``.onnx.data`` companion whose name could go stale. The example input has batch 2 so that the exporter does not
    specialise the batch axis to 1.
    """
    import onnx
    import torch

    example = torch.rand(2, *shape[1:])
    errors = []
    for dynamo in (True, False):
        try:
            with atomic_path(out, suffix=".onnx") as tmp, contextlib.redirect_stdout(sys.stderr):
                _onnx_export_once(net, example, tmp, dynamo)
                model = onnx.load(tmp)
                onnx.checker.check_model(model)
            opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
            return {"exporter": "dynamo" if dynamo else "torchscript-legacy", "opset": opset,
                    "input_names": ["image"], "output_names": ["pred"], "dynamic_axes": {"image": [0], "pred": [0]},
                    "fallback_reason": errors[0] if errors else None}
        except Exception as err:  # noqa: BLE001 - try the next exporter, report both if both fail
            errors.append(f"{'dynamo' if dynamo else 'legacy'}: {_first_line(err)}")
            logger.warning("ONNX export (%s) failed: %s", "dynamo" if dynamo else "legacy", errors[-1])
    raise LesionlabError("ONNX export failed with both exporters: " + " | ".join(errors))


def export_ts(root: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """``ckpt_export`` (script); trace with the metadata input shape when the network cannot be scripted."""
    from monai.bundle import ckpt_export

    try:
        with bundle_on_path(root), quiet_monai():
            export_torchscript(root)
        return {"method": "script"}
    except Exception as err:  # noqa: BLE001 - fall back to tracing, as model-zoo documents for such networks
        reason = _first_line(err)
        logger.warning("torch.jit.script failed (%s); tracing instead", reason)
    with bundle_on_path(root), quiet_monai():
        ckpt_export("network_def", filepath=os.path.join(root, "models", "model.ts"),
                    ckpt_file=os.path.join(root, "models", "model.pt"),
                    meta_file=os.path.join(root, "configs", "metadata.json"),
                    config_file=config_file(root, "inference"), bundle_root=root, use_trace=True,
                    input_shape=list(shape))
    return {"method": "trace", "script_error": reason}


def _copy_bundle_items(src_root: str, root: str) -> None:
    """Copy configs, docs, scripts and LICENSE of ``src_root`` into the archive folder ``root``."""
    if not os.path.exists(os.path.join(src_root, "configs", "metadata.json")):
        raise LesionlabError(f"{src_root}: bundle has no configs/metadata.json")
    if config_file(src_root, "inference") is None:
        raise LesionlabError(f"{src_root}: bundle has no configs/inference.json (MONAI Label and infer need it)")
    os.makedirs(os.path.join(root, "models"))
    for item in _BUNDLE_ITEMS:
        s = os.path.join(src_root, item)
        if os.path.isdir(s):
            shutil.copytree(s, os.path.join(root, item), ignore=_IGNORED)
        elif os.path.isfile(s):
            shutil.copy2(s, os.path.join(root, item))
    if not os.path.exists(os.path.join(root, "LICENSE")):
        logger.warning("%s has no LICENSE file; model-zoo and hospitals expect one", src_root)


def _copy_model_assets(models_dir: str, dst: str) -> None:
    """Copy the sub-folders next to the checkpoint (assets trained with the model, e.g. ``stain_targets/``)."""
    if os.path.isdir(models_dir):
        for name in sorted(os.listdir(models_dir)):
            if os.path.isdir(os.path.join(models_dir, name)) and not name.startswith("."):
                shutil.copytree(os.path.join(models_dir, name), os.path.join(dst, name), ignore=_IGNORED)


def _weights_into(net, ckpt_path: str, random_weights: bool, seed: int, bundle_name: str) -> dict[str, Any]:
    """Load the trained weights into ``net`` (or keep its random ones when allowed); the manifest's source entry."""
    if os.path.exists(ckpt_path):
        load_weights(net, load_state_dict(ckpt_path), ckpt_path)
        return {"file": os.path.basename(ckpt_path), "sha256": sha256(ckpt_path)}
    if random_weights:
        logger.warning("exporting RANDOM weights (testing only): the archive's model predicts nothing useful")
        return {"file": None, "random_seed": seed}
    raise LesionlabError(
        f"{ckpt_path}: no trained weights. Train the bundle first (lesionlab run train {bundle_name} ...), "
        "give a checkpoint with --ckpt, or pass --random-weights to export an untrained model for testing"
    )


def eval_metrics_for(evaluation: str | None, ckpt_path: str, source: Mapping[str, Any]) -> dict[str, Any] | None:
    """The ``eval_metrics`` of the archived metadata: figures of the evaluation run of the weights shipped, or None.

    ``evaluation`` is the ``metrics_summary.json`` written by the bundle's evaluate config
    (:class:`lesionlab.pipelines.handlers.CaseMetricsHandler`) or the ``scores.json`` of a dataset-level evaluation
    (:class:`lesionlab.pipelines.glomeruli.ConfusionReportHandler`). It counts only when it was written after the
    weights file (an older evaluation belongs to other weights) and the weights are trained (random weights have no
    figure).
    """
    if source.get("file") is None or not evaluation or not os.path.isfile(evaluation):
        return None
    if os.path.getmtime(evaluation) < os.path.getmtime(ckpt_path):
        logger.warning("%s is older than %s: not the evaluation of these weights, no eval_metrics written",
                       evaluation, ckpt_path)
        return None
    data = load_json(evaluation)
    written = datetime.datetime.fromtimestamp(os.path.getmtime(evaluation), datetime.timezone.utc)
    if isinstance(data, Mapping) and "mIoU" in data and isinstance(data.get("per_class"), Mapping):
        return _dataset_scores(data, evaluation, written, source)
    summary = data.get("summary", {})
    dsc = summary.get("dsc", {})
    if not isinstance(dsc, Mapping) or dsc.get("mean") is None:
        return None
    return {
        "mean_dice": round(float(dsc["mean"]), 4),
        "std_dice": None if dsc.get("std") is None else round(float(dsc["std"]), 4),
        "global_dice": None if summary.get("dsc_global") is None else round(float(summary["dsc_global"]), 4),
        "n_cases": summary.get("n_cases"),
        "evaluation": os.path.basename(evaluation),
        "date": written.isoformat(timespec="seconds"),
        "weights_sha256": source.get("sha256"),
        "dataset": "the data set of the bundle's evaluate run (configs/evaluate.json, dataset_dir)",
    }


def _dataset_scores(data: Mapping[str, Any], evaluation: str, written: datetime.datetime,
                    source: Mapping[str, Any]) -> dict[str, Any] | None:
    """``eval_metrics`` from a dataset-level confusion-matrix evaluation (``scores.json`` of
    :class:`lesionlab.pipelines.glomeruli.ConfusionReportHandler`): MMSeg's aAcc, mIoU, mDice, mFscore, mPrecision,
    mRecall over all classes, and IoU/Dice of each foreground class."""
    if data.get("mIoU") is None:
        return None
    out: dict[str, Any] = {k: None if data.get(k) is None else round(float(data[k]), 4)
                           for k in ("aAcc", "mIoU", "mDice", "mFscore", "mPrecision", "mRecall")}
    for name, per in list(data["per_class"].items())[1:]:  # class 0 is the background
        for k in ("IoU", "Dice"):
            out[f"{name}_{k}"] = None if per.get(k) is None else round(float(per[k]), 4)
    cm = data.get("confusion_matrix")
    out.update({"n_pixels": int(sum(map(sum, cm))) if cm else None, "aggregation": "dataset-level confusion matrix",
                "evaluation": os.path.basename(evaluation), "date": written.isoformat(timespec="seconds"),
                "weights_sha256": source.get("sha256"),
                "dataset": "the data set of the bundle's evaluate run (configs/evaluate.json, dataset_dir)"})
    return out


def _write_eval_metrics(root: str, metrics: dict[str, Any] | None, dataset: str | None) -> None:
    """Put ``metrics`` (or nothing: no placeholder) into the archived ``configs/metadata.json``."""
    path = os.path.join(root, "configs", "metadata.json")
    metadata = load_json(path)
    metadata.pop("eval_metrics", None)
    if metrics is not None:
        if dataset:
            metrics["dataset"] = dataset
        metadata["eval_metrics"] = metrics
    atomic_write_text(path, json.dumps(metadata, indent=4) + "\n")


def export_bundle(
    bundle: str,
    out: str,
    ckpt: str | None = None,
    random_weights: bool = False,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    evaluation: str | None = None,
    dataset: str | None = None,
) -> dict[str, Any]:
    """Write a self-contained deployment archive of ``bundle`` to ``out`` (a ``.zip``, written atomically).

    Args:
        bundle: bundle folder or project bundle name (or an archive, to re-export it).
        out: archive to write.
        ckpt: trained weights (default: the bundle's ``models/model.pt``); a state dict or a checkpoint with a
            ``model`` entry.
        random_weights: without trained weights, export a randomly initialised network (for tests only; recorded in
            the manifest as ``"random_weights": true``).
        overrides: config ids written into the archived JSON configs (e.g. ``{"network_def#features": [...]}`` when
            the model was trained with that override); recorded in the manifest.
        seed: seed of the random weights.
        evaluation: ``metrics_summary.json`` (per-case Dice) or ``scores.json`` (dataset-level confusion-matrix
            scores) of the evaluation of these weights (default: the bundle's ``eval/metrics_summary.json``, else
            ``eval/scores.json``, when it exists); its figures become ``eval_metrics`` in the archived metadata (see
            :func:`eval_metrics_for`). Without one, the archive has no ``eval_metrics``.
        dataset: name of the evaluation data set, recorded with the figures.

    Returns:
        the manifest written into the archive.

    Raises:
        LesionlabError: no trained weights (and no ``random_weights``), weights that do not match ``network_def``,
            missing configs, or a failed export.
    """
    import torch

    overrides = dict(overrides or {})
    with open_bundle(bundle) as src, tempfile.TemporaryDirectory(prefix="lesionlab-export-") as tmp:
        root = os.path.join(tmp, src.name)
        _copy_bundle_items(src.root, root)
        changed = set_config_ids(root, overrides) if overrides else []
        metadata = load_json(os.path.join(root, "configs", "metadata.json"))
        shape = input_shape(metadata)
        ckpt_path = ckpt or os.path.join(src.root, "models", "model.pt")
        torch.manual_seed(seed)  # only matters for random weights
        net = build_network(root)
        source = _weights_into(net, ckpt_path, random_weights, seed, src.name)
        if evaluation is None:  # per-case Dice summary, else dataset-level scores (glomerulus bundle)
            evaluation = next((p for p in (os.path.join(src.root, "eval", n) for n in ("metrics_summary.json",
                                                                                      "scores.json"))
                               if os.path.isfile(p)), None)
        _write_eval_metrics(root, eval_metrics_for(evaluation, ckpt_path, source), dataset)
        _copy_model_assets(os.path.dirname(os.path.abspath(ckpt_path)), os.path.join(root, "models"))
        torch.save(net.state_dict(), os.path.join(root, "models", "model.pt"))
        t0 = time.time()
        ts_info = export_ts(root, shape)
        onnx_info = export_onnx(net, shape, os.path.join(root, "models", "model.onnx"))
        logger.info("TorchScript and ONNX exports took %.1f s", time.time() - t0)
        manifest = {
            "format": ARCHIVE_FORMAT,
            "bundle_name": src.name,
            "bundle_version": metadata.get("version"),
            "lesionlab_version": __version__,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "random_weights": source["file"] is None,
            "weights_source": source,
            "eval_metrics": load_json(os.path.join(root, "configs", "metadata.json")).get("eval_metrics"),
            "config_overrides": overrides,
            "configs_changed_by_overrides": changed,
            "input_shape_example": list(shape),
            "torchscript": ts_info,
            "onnx": onnx_info,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": package_versions(),
            "files": file_hashes(root),
        }
        atomic_write_text(os.path.join(root, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
        write_zip(root, out, src.name)
    return manifest
