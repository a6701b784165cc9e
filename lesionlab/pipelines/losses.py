"""Losses the papers add on top of MONAI's (MONAI's are used wherever they exist).

EML, the "enhanced mixing loss" of D-UNet, used by the stroke thesis (seed 002 §4.1-4.2, Eq. 3.13):

    L_eml = Focal(y, p) / N - log(Dice(y, p)),
    Focal = -(alpha (1-p)^gamma y log p + (1-alpha) p^gamma (1-y) log(1-p))      (summed over the N pixels)
    Dice  = (2 sum(y p) + eps) / (sum(y^2) + sum(p^2) + eps)                       (whole batch, eps = 1)

with alpha = 0.75 on lesion pixels and gamma = 2 (the thesis's values). The focal part is MONAI's ``FocalLoss``
(sigmoid form, mean over all pixels = Focal / N); the Dice coefficient is ``1 - DiceLoss`` of MONAI with squared
denominators, batch-wise, and smoothing 1 in numerator and denominator.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.losses import DiceLoss, FocalLoss

__all__ = ["EMLLoss"]


class EMLLoss(nn.Module):
    """Enhanced mixing loss: mean sigmoid focal loss minus the log of the soft Dice coefficient.

    Args:
        alpha: focal weight of positive pixels (negatives get ``1 - alpha``). Defaults to 0.75.
        gamma: focal exponent. Defaults to 2.
        smooth: ``eps`` added to the Dice numerator and denominator. Defaults to 1 (D-UNet).
        batch: compute the Dice coefficient over the whole batch (D-UNet) rather than per sample. Defaults to True.

    ``forward(input, target)``: ``input`` are logits ``(B, 1, ...)``, ``target`` a binary mask of the same shape.
    """

    def __init__(self, alpha: float = 0.75, gamma: float = 2.0, smooth: float = 1.0, batch: bool = True) -> None:
        super().__init__()
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}.")
        if smooth <= 0:
            raise ValueError(f"smooth must be > 0 (it keeps log(Dice) finite), got {smooth}.")
        self.focal = FocalLoss(gamma=gamma, alpha=alpha, use_softmax=False, reduction="mean")
        self.dice = DiceLoss(sigmoid=True, squared_pred=True, smooth_nr=smooth, smooth_dr=smooth, batch=batch,
                             reduction="mean")

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.shape != target.shape:
            raise ValueError(f"input {tuple(input.shape)} and target {tuple(target.shape)} must have the same shape.")
        if input.shape[1] != 1:
            raise ValueError(f"EMLLoss is binary: expected 1 logit channel, got {input.shape[1]}.")
        target = target.to(input.dtype)
        dice_coefficient = 1.0 - self.dice(input, target)
        return self.focal(input, target) - torch.log(dice_coefficient)
