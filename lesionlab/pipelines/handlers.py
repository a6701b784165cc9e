"""Ignite handlers used by the bundles (``attach(engine)`` pattern, as MONAI's handlers)."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.utils import min_version, optional_import

from lesionlab.pipelines.metrics import case_metrics, format_table, summarize, write_reports
from lesionlab.utils import atomic_write_text

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["CaseMetricsHandler", "HistoryHandler", "ModelSelectionHandler", "ProgressBarHandler"]

logger = logging.getLogger(__name__)


def _spacing_of(x: Any) -> list[float] | None:
    affine = getattr(x, "affine", None)
    if affine is None:
        return None
    a = np.asarray(affine.detach().cpu() if isinstance(affine, torch.Tensor) else affine, dtype=float)
    if a.ndim == 3:
        a = a[0]
    return [float(v) for v in np.sqrt((a[:3, :3] ** 2).sum(axis=0))]


def _name_of(x: Any, fallback: str) -> str:
    meta = getattr(x, "meta", None) or {}
    name = meta.get("filename_or_obj", fallback)
    if isinstance(name, (list, tuple)):
        name = name[0]
    return str(name)


class CaseMetricsHandler:
    """Compute per-case 3D metrics (DSC, precision, recall, Jaccard, ASD, HD95 in mm) during an evaluator run.

    At every iteration each decollated item of ``engine.state.output`` gives one case: ``pred`` and ``label`` on
    the same grid (normally the original image grid, after ``Invertd``), spacing read from the label's affine. At
    completion ``metrics_per_case.csv``, ``metrics_summary.json`` and ``metrics_table.md`` are written to
    ``output_dir`` (see :func:`lesionlab.pipelines.metrics.write_reports`) and ``dsc``, ``dsc_global`` etc. are put
    into ``engine.state.metrics``.

    Args:
        output_dir: folder of the reports.
        pred_key: key of the binary prediction. Defaults to ``"pred"``.
        label_key: key of the ground truth. Defaults to ``"label"``.
        title: title of the markdown table.
    """

    def __init__(self, output_dir: str, pred_key: str = "pred", label_key: str = "label",
                 title: str = "Evaluation") -> None:
        self.output_dir, self.pred_key, self.label_key, self.title = output_dir, pred_key, label_key, title
        self.cases: list[dict] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _reset(self, engine: Engine) -> None:
        self.cases = []

    def _iteration(self, engine: Engine) -> None:
        out = engine.state.output
        items = out if isinstance(out, list) else [out]
        for item in items:
            pred, label = item[self.pred_key], item[self.label_key]
            name = _name_of(label, f"case_{len(self.cases)}")
            m = case_metrics(pred, label, spacing=_spacing_of(label))
            self.cases.append({"case": os.path.basename(name), **m})

    def _completed(self, engine: Engine) -> None:
        paths = write_reports(self.cases, self.output_dir, self.title)
        summary = summarize(self.cases)
        engine.state.metrics["dsc_global"] = summary["dsc_global"]
        for name in ("dsc", "precision", "recall", "jaccard", "asd_mm", "hd95_mm"):
            engine.state.metrics[f"case_{name}"] = summary[name]["mean"]
        logger.info("per-case metrics written to %s\n%s", paths["csv"], format_table(summary, self.title))


class HistoryHandler:
    """Record the mean training loss and the validation metrics of every epoch in a JSON file (for plots).

    Attach it to the trainer after the ``ValidationHandler`` so that the validator has run when the epoch ends.

    Args:
        path: JSON file, rewritten atomically after every epoch.
        validator: the evaluator whose ``state.metrics`` are recorded (optional).
        loss_transform: extracts the loss from ``engine.state.output``. Defaults to MONAI's
            ``from_engine(["loss"], first=True)`` convention.
    """

    def __init__(self, path: str, validator: Engine | None = None,
                 loss_transform: Callable[[Any], Any] | None = None) -> None:
        self.path, self.validator = path, validator
        self.loss_transform = loss_transform or _first_loss
        self.history: list[dict] = []
        self._losses: list[float] = []

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self._epoch_started)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._iteration)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._epoch_completed)
        if os.path.exists(self.path):  # a resumed run continues the same history
            try:
                with open(self.path) as f:
                    self.history = json.load(f).get("epochs", [])
            except (OSError, ValueError):
                self.history = []

    def _epoch_started(self, engine: Engine) -> None:
        # a run resumed mid-epoch keeps the losses of the iterations before the checkpoint (load_state_dict)
        if engine.state.iteration == (engine.state.epoch - 1) * engine.state.epoch_length:
            self._losses = []

    def state_dict(self) -> dict:
        """History and the current epoch's losses, so a resumed run writes the same curves (checkpointable)."""
        return {"history": list(self.history), "losses": list(self._losses)}

    def load_state_dict(self, state: dict) -> None:
        self.history = list(state.get("history", []))
        self._losses = list(state.get("losses", []))

    def _iteration(self, engine: Engine) -> None:
        loss = self.loss_transform(engine.state.output)
        self._losses.append(float(loss.item() if isinstance(loss, torch.Tensor) else loss))

    def _epoch_completed(self, engine: Engine) -> None:
        entry: dict[str, Any] = {"epoch": engine.state.epoch,
                                 "loss": float(np.mean(self._losses)) if self._losses else math.nan}
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None:
            entry["lr"] = float(optimizer.param_groups[0]["lr"])
        if self.validator is not None and self.validator.state.epoch == engine.state.epoch:
            for k, v in self.validator.state.metrics.items():
                if isinstance(v, (int, float)):
                    entry[k] = float(v)
        self.history = [h for h in self.history if h["epoch"] < entry["epoch"]] + [entry]
        atomic_write_text(self.path, json.dumps({"epochs": self.history}, indent=2))


def _first_loss(output: Any) -> Any:
    if isinstance(output, Sequence) and not isinstance(output, (str, bytes)) and len(output):
        output = output[0]
    return output["loss"] if isinstance(output, dict) else output


class ProgressBarHandler:
    """A tqdm progress bar over the iterations of every epoch, showing the current loss (ignite's ``ProgressBar``).

    Args:
        enabled: attach nothing when False (e.g. in CI logs). Defaults to True.
        desc: bar description. Defaults to ``"train"``.
    """

    def __init__(self, enabled: bool = True, desc: str = "train") -> None:
        self.enabled, self.desc = enabled, desc

    def attach(self, engine: Engine) -> None:
        if not self.enabled:
            return
        try:
            from ignite.handlers import ProgressBar
        except ImportError:  # ignite < 0.5 keeps it in contrib
            from ignite.contrib.handlers import ProgressBar
        ProgressBar(desc=self.desc, persist=True).attach(
            engine, output_transform=lambda out: {"loss": _first_loss(out)}
        )


class ModelSelectionHandler:
    """Choose the weights a training run ships as ``models/model.pt``: the final epoch's or the best validated one's.

    ``selection="final"`` (the thesis: no validation set, last epoch) leaves ``model.pt`` as the trainer saved it.
    ``selection="best"`` replaces it, when training completes, by ``model_best.pt`` -- the epoch with the highest
    validation key metric (mean Dice; MONAI's key-metric checkpoint). A collapsed epoch (prediction flooding the
    volume, or empty) has a low validation Dice and is never chosen while any validated epoch did better. As a
    sanity check the choice is refused (``model.pt`` stays the final epoch's, with a warning) when the best
    validation metric is below ``min_metric``, i.e. no validated epoch learned anything. Either way
    ``models/selection.json`` records the rule, the chosen epoch and every validated epoch's metric. Attach it
    after the final-model ``CheckpointSaver`` (handlers run in order at ``COMPLETED``).

    Args:
        ckpt_dir: folder of ``model.pt`` and ``model_best.pt``.
        selection: ``"final"`` or ``"best"``.
        validator: the evaluator whose key metric is tracked (needed for ``"best"``).
        min_metric: smallest best validation metric accepted for ``"best"``. Defaults to 0.05.
        best_name, final_name: file names. Defaults to ``model_best.pt`` and ``model.pt``.
    """

    def __init__(self, ckpt_dir: str, selection: str = "final", validator: Engine | None = None,
                 min_metric: float = 0.05, best_name: str = "model_best.pt", final_name: str = "model.pt") -> None:
        if selection not in ("final", "best"):
            raise ValueError(f"model_selection must be 'final' or 'best', got {selection!r}.")
        if selection == "best" and validator is None:
            raise ValueError("model_selection 'best' needs the validator whose key metric chooses the epoch.")
        self.ckpt_dir, self.selection, self.validator, self.min_metric = ckpt_dir, selection, validator, min_metric
        self.best_name, self.final_name = best_name, final_name
        self.scores: list[tuple[int, float]] = []

    def attach(self, engine: Engine) -> None:
        if self.validator is not None:
            self.validator.add_event_handler(Events.COMPLETED, self._validated)
        engine.add_event_handler(Events.COMPLETED, self._completed)

    def _validated(self, validator: Engine) -> None:
        name = getattr(validator.state, "key_metric_name", None)
        value = validator.state.metrics.get(name) if name else None
        if isinstance(value, (int, float)):
            self.scores.append((int(validator.state.epoch), float(value)))

    def state_dict(self) -> dict:
        return {"scores": [list(s) for s in self.scores]}

    def load_state_dict(self, state: dict) -> None:
        self.scores = [(int(e), float(v)) for e, v in state.get("scores", [])]

    def _completed(self, engine: Engine) -> None:
        import shutil

        from lesionlab.utils import atomic_path

        record: dict[str, Any] = {"selection": self.selection, "final_epoch": int(engine.state.epoch),
                                  "validated": [{"epoch": e, "metric": v} for e, v in self.scores]}
        chosen = int(engine.state.epoch)
        best_path = os.path.join(self.ckpt_dir, self.best_name)
        if self.selection == "best":
            best = max(self.scores, key=lambda s: s[1], default=None)
            if best is None or not os.path.exists(best_path):
                logger.warning("model_selection 'best': no validated epoch; %s keeps the final epoch's weights.",
                               self.final_name)
            elif best[1] < self.min_metric:
                logger.warning("model_selection 'best': the best validation metric %.4f (epoch %d) is below the "
                               "sanity floor %.3f -- training did not learn; %s keeps the final epoch's weights.",
                               best[1], best[0], self.min_metric, self.final_name)
            else:
                with atomic_path(os.path.join(self.ckpt_dir, self.final_name)) as tmp:
                    shutil.copyfile(best_path, tmp)
                chosen = best[0]
                record["metric"] = best[1]
                logger.info("model_selection 'best': %s = epoch %d (validation metric %.4f)", self.final_name,
                            chosen, best[1])
        record["chosen_epoch"] = chosen
        atomic_write_text(os.path.join(self.ckpt_dir, "selection.json"), json.dumps(record, indent=2))
