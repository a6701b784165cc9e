"""Training and evaluation pieces of the CBAM-PSPNet glomerulus bundle (spec seed 000 §3.5, §4, §5, §6).

- :class:`PSPNetLoss`: ``CE(main) + lambda * Dice(main) + 0.4 * CE(aux)`` (eq. 3-12 and 2-32), lambda fixed or
  ramped (:class:`DiceWeightHandler`).
- :class:`WarmupPolyLR`: SGD schedule of Table 4.4 -- linear warm-up, then poly decay (power 0.9) to a floor, per
  iteration (a torch scheduler, stepped by MONAI's ``LrScheduleHandler(epoch_level=False)``).
- :class:`ResizeInferer`: runs the network at the training scale (1024 tiles -> 256) and returns logits at the
  input size, so scores are computed against full-resolution masks as MMSeg does.
- :class:`ConfusionScore`: one score of the accumulated confusion matrix as a scalar Ignite metric (a key metric for
  best-checkpoint selection), next to the full :class:`~lesionlab.pipelines.confusion.ConfusionMatrixScores`.
- :class:`ConfusionReportHandler`: writes the scores (JSON, markdown) and the confusion-matrix PNG after an evaluation.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.inferers import Inferer
from monai.losses import DiceLoss

from lesionlab.pipelines.confusion import ConfusionMatrixScores, segmentation_scores
from lesionlab.utils import atomic_write_text

__all__ = ["PSPNetLoss", "DiceWeightHandler", "WarmupPolyLR", "ResizeInferer", "ConfusionScore",
           "ConfusionReportHandler", "scores_markdown"]


class PSPNetLoss(nn.Module):
    """``L = CE(main) + lambda * Dice(main) + aux_weight * CE(aux)`` for :class:`~lesionlab.networks.nets.PSPNetCBAM`.

    - CE: softmax cross-entropy, mean over pixels (``torch.nn.CrossEntropyLoss``; eq. 3-8 written per class is read
      as the standard softmax CE that MMSeg's ``CrossEntropyLoss`` computes).
    - Dice: MONAI ``DiceLoss(softmax=True, to_onehot_y=True, include_background=True, batch=True)``: soft Dice per
      class over the whole batch, averaged over the two classes, smoothing 1e-5. Eq. 3-10 taken literally (one
      Dice over all classes and pixels, softmax probabilities) collapses to ``1 - mean true-class probability``,
      because ``sum(p) = sum(y) = N`` -- no longer imbalance-aware, which is the reason the thesis gives for Dice;
      so the per-class mean is used (spec ambiguity 14).
    - aux: CE on the stage-3 FCN head, weight 0.4 (PSPNet/MMSeg; ambiguity 2); no Dice on the auxiliary head.
    - lambda: ``lambda_dice`` from the first iteration by default. The thesis calls lambda "dynamic" but gives no
      schedule; its logged losses argue for a fixed weight: the first logged CE+Dice loss (0.165) is about twice the
      CE-only one (0.084), which a ramp from 0 could not give. ``ramp_iterations > 0`` ramps lambda linearly from 0
      (CE early, Dice later, as §3.3 describes); :class:`DiceWeightHandler` feeds it the iteration.

    Args:
        lambda_dice: Dice weight (0 gives the CE-only rows of the ablation).
        aux_weight: auxiliary-head weight.
        ramp_iterations: iterations of the linear lambda ramp (0: fixed).

    ``forward(input, target)``: ``input`` is the network's training output ``(B, 2, C, *S)`` (main, aux) or plain
    logits ``(B, C, *S)``; ``target`` holds class indices ``(B, 1, *S)``.
    """

    def __init__(self, lambda_dice: float = 1.0, aux_weight: float = 0.4, ramp_iterations: int = 0) -> None:
        super().__init__()
        if lambda_dice < 0 or aux_weight < 0 or ramp_iterations < 0:
            raise ValueError(f"weights and ramp must be >= 0, got lambda_dice={lambda_dice}, "
                             f"aux_weight={aux_weight}, ramp_iterations={ramp_iterations}")
        self.lambda_dice, self.aux_weight = float(lambda_dice), float(aux_weight)
        self.ramp_iterations = int(ramp_iterations)
        self.iteration = 0
        self.ce = nn.CrossEntropyLoss()
        self.dice = DiceLoss(include_background=True, to_onehot_y=True, softmax=True, batch=True)

    def current_lambda(self) -> float:
        """The Dice weight at :attr:`iteration`."""
        if self.ramp_iterations <= 0:
            return self.lambda_dice
        return self.lambda_dice * min(1.0, self.iteration / self.ramp_iterations)

    def _main(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.ce(logits, target[:, 0])
        lam = self.current_lambda()
        if lam > 0:
            loss = loss + lam * self.dice(logits, target)
        return loss

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        target = target.long()
        if target.ndim < 3 or target.shape[1] != 1:
            raise ValueError(f"target must hold class indices (B, 1, *S), got shape {tuple(target.shape)}")
        if input.ndim == target.ndim + 1:  # stacked (B, 2, C, *S): main and auxiliary logits
            loss = self._main(input[:, 0], target)
            if self.aux_weight > 0 and input.shape[1] > 1:
                loss = loss + self.aux_weight * self.ce(input[:, 1], target[:, 0])
            return loss
        if input.ndim != target.ndim:
            raise ValueError(f"logits {tuple(input.shape)} do not match target {tuple(target.shape)}")
        return self._main(input, target)


class DiceWeightHandler:
    """Sets ``loss.iteration`` from the trainer at every iteration (drives :class:`PSPNetLoss`'s lambda ramp).

    Follows the trainer's iteration counter, so a resumed run continues the ramp where it stopped.
    """

    def __init__(self, loss: PSPNetLoss) -> None:
        self.loss = loss

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        self.loss.iteration = int(engine.state.iteration) - 1


class WarmupPolyLR(torch.optim.lr_scheduler.LRScheduler):
    """Linear warm-up then poly decay with a floor, per iteration (thesis Table 4.4 / §5; MMSeg ``PolyLR``).

    With ``t`` the iteration (scheduler steps so far), base rate ``b``, floor ``m``:

    - ``t < warmup``: ``b * (s + (1 - s) * t / warmup)`` with start factor ``s``;
    - else: ``(b - m) * (1 - (t - warmup) / (total - warmup)) ** power + m`` (``m`` after ``total``).

    Args:
        optimizer: wrapped optimizer.
        total_iterations: schedule length (24,000 in the thesis).
        warmup_iterations: linear warm-up length (500).
        warmup_start_factor: warm-up start factor (not stated in the thesis; MMSeg's configs use 1e-6).
        power: poly exponent (0.9).
        min_lr: floor (1e-4).
    """

    def __init__(self, optimizer: torch.optim.Optimizer, total_iterations: int, warmup_iterations: int = 500,
                 warmup_start_factor: float = 1e-6, power: float = 0.9, min_lr: float = 1e-4,
                 last_epoch: int = -1) -> None:
        if total_iterations <= 0 or not 0 <= warmup_iterations < total_iterations:
            raise ValueError(f"need 0 <= warmup_iterations < total_iterations, got {warmup_iterations}, "
                             f"{total_iterations}")
        self.total, self.warmup = int(total_iterations), int(warmup_iterations)
        self.start_factor, self.power, self.min_lr = float(warmup_start_factor), float(power), float(min_lr)
        super().__init__(optimizer, last_epoch)

    def _rate(self, base: float, t: int) -> float:
        if t < self.warmup:
            return base * (self.start_factor + (1.0 - self.start_factor) * t / self.warmup)
        frac = min(1.0, (t - self.warmup) / max(self.total - self.warmup, 1))
        return (base - self.min_lr) * (1.0 - frac) ** self.power + self.min_lr

    def get_lr(self) -> list[float]:  # type: ignore[override]
        return [self._rate(b, self.last_epoch) for b in self.base_lrs]


class ResizeInferer(Inferer):
    """Resize the input to ``spatial_size``, run the network, resize the logits back to the input size.

    The network is trained on 256 x 256 crops of tiles rescaled from 1024 (spec §2.2); evaluation tiles go through the
    same scale change, and the logits come back at the tile's resolution so that metrics use the original masks.

    Args:
        spatial_size: network input size (int for all axes or a sequence).
        mode: input resampling (``"area"`` for downscaling).
    """

    def __init__(self, spatial_size: int | Sequence[int] = 256, mode: str = "area") -> None:
        super().__init__()
        self.spatial_size, self.mode = spatial_size, mode

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        size = list(inputs.shape[2:])
        target = [self.spatial_size] * len(size) if isinstance(self.spatial_size, int) else list(self.spatial_size)
        x = inputs if size == target else F.interpolate(inputs, size=target, mode=self.mode)
        out = network(x, *args, **kwargs)
        if list(out.shape[2:]) != size:
            out = F.interpolate(out, size=size, mode="bilinear" if len(size) == 2 else "trilinear", align_corners=False)
        return out


class ConfusionScore(ConfusionMatrixScores):
    """One score (default ``Dice_glomerulus``) of the accumulated confusion matrix as a float Ignite metric.

    Same arguments as :class:`ConfusionMatrixScores` plus ``score``: a key of its flattened output (``mIoU``,
    ``mDice``, ``IoU_<class>``, ...). Usable as ``key_val_metric`` (best-checkpoint selection needs a scalar).
    """

    def __init__(self, num_classes: int, score: str = "Dice_glomerulus", **kwargs: Any) -> None:
        self.score = score
        super().__init__(num_classes, **kwargs)

    def compute(self) -> float:  # type: ignore[override]
        scores = super().compute()
        if self.score not in scores:
            known = sorted(k for k in scores if k != "confusion_matrix")
            raise KeyError(f"unknown score {self.score!r}; available: {known}")
        return float(scores[self.score])


def scores_markdown(scores: dict, title: str = "Evaluation") -> str:
    """Markdown table of :func:`segmentation_scores` output in percent (means, then one row per class)."""
    keys = ("aAcc", "mIoU", "mDice", "mFscore", "mPrecision", "mRecall")
    lines = [f"### {title}", "", "| " + " | ".join(keys) + " |", "|" + "---|" * len(keys),
             "| " + " | ".join(f"{100 * scores[k]:.2f}" for k in keys) + " |", "",
             "| class | IoU | Dice | Precision | Recall | Fscore |", "|---|---|---|---|---|---|"]
    for name, row in scores["per_class"].items():
        lines.append(f"| {name} | " + " | ".join(f"{100 * row[k]:.2f}" for k in ("IoU", "Dice", "Precision", "Recall",
                                                                              "Fscore")) + " |")
    return "\n".join(lines) + "\n"


def _nan_to_none(v: Any) -> Any:
    return None if isinstance(v, float) and math.isnan(v) else v


class ConfusionReportHandler:
    """After an evaluation, write ``scores.json``, ``scores.md`` and ``confusion_matrix.png`` to ``output_dir``.

    Reads the confusion matrix that a :class:`ConfusionMatrixScores` metric named ``metric_name`` left in
    ``engine.state.metrics``. ``plot`` draws the PNG (``lesionlab.apps.figures.plot_confusion_matrix``, injected by
    the bundle config because pipelines do not import apps).
    """

    def __init__(self, output_dir: str, class_names: Sequence[str] = ("background", "glomerulus"),
                 metric_name: str = "confusion_matrix", plot: Callable[..., Any] | None = None,
                 title: str = "CBAM-PSPNet evaluation") -> None:
        self.output_dir, self.class_names, self.metric_name = output_dir, list(class_names), metric_name
        self.plot, self.title = plot, title

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        cm = np.asarray(engine.state.metrics[self.metric_name], dtype=np.int64)
        scores = segmentation_scores(cm, self.class_names)
        scores["confusion_matrix"] = cm.tolist()
        os.makedirs(self.output_dir, exist_ok=True)
        atomic_write_text(os.path.join(self.output_dir, "scores.json"),
                          json.dumps(scores, indent=2, default=_nan_to_none))
        atomic_write_text(os.path.join(self.output_dir, "scores.md"), scores_markdown(scores, self.title))
        if self.plot is not None:
            self.plot(cm, self.class_names, os.path.join(self.output_dir, "confusion_matrix.png"), title=self.title)
