"""Losses of the nuclei class-imbalance thesis (seed 001 §3) that MONAI does not provide in the thesis's form.

* :class:`SoftmaxFocalLoss` — Eq. 2.2, ``FL = -alpha_t (1 - p_t)^gamma log p_t`` with ``p_t`` the softmax
  probability of the pixel's true class and ``alpha_t`` the weight of that class (any of the six weight functions
  of :mod:`lesionlab.pipelines.class_weights`), averaged over pixels. MONAI's ``FocalLoss(use_softmax=True)``
  averages over pixels *and* channels and takes per-class alphas only from MONAI 1.5, so it is not used.
* :class:`TopKCrossEntropyLoss` — online bootstrapping (OHEM, Eqs. 2.3-2.4): per image the ``k`` pixels with the
  largest distance ``mean_i |p_i - y_i|`` (= ``2 (1 - p_t) / C`` for a one-hot ``y``, so the same pixels as the
  largest cross-entropy) contribute their cross-entropy, averaged over the selected pixels.
* :class:`CompoundLoss` — the unweighted (or weighted) sum of any of them (Eq. 3.6), with MONAI's ``DiceLoss``
  and ``TverskyLoss`` used as they are (their formulas are the thesis's Eqs. 2.5-2.11).

Binary models have one output channel (sigmoid). :func:`two_class_logits` turns it into the logits ``[0, z]``,
whose softmax is ``[1 - sigmoid(z), sigmoid(z)]``, so every loss sees background and foreground as two classes
(Dice "over all classes including background"; Focal with the two-class weights of Table 3.3).

Targets are class-index maps ``(B, 1, *spatial)`` (MONAI's layout) or ``(B, *spatial)``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DeepSupervisionLoss, DiceLoss, TverskyLoss

from lesionlab.pipelines.class_weights import class_weights

__all__ = [
    "two_class_logits",
    "SoftmaxFocalLoss",
    "TopKCrossEntropyLoss",
    "CompoundLoss",
    "build_imbalance_loss",
    "StackedDeepSupervisionLoss",
]

LOSS_NAMES = ("ce", "focal", "dice", "ob", "tversky")


def two_class_logits(logits: torch.Tensor) -> torch.Tensor:
    """``(B, 1, ...)`` sigmoid logits → ``(B, 2, ...)`` softmax logits ``[0, z]``; other inputs are returned as is."""
    if logits.shape[1] == 1:
        return torch.cat([torch.zeros_like(logits), logits], dim=1)
    return logits


def _index_target(target: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
    """Class-index target ``(B, *spatial)`` (long) from ``(B, 1, *spatial)`` or ``(B, *spatial)``."""
    if target.ndim == logits.ndim:
        if target.shape[1] != 1:
            raise ValueError(f"target must have one channel of class indices, got shape {tuple(target.shape)}")
        target = target[:, 0]
    if target.shape != logits.shape[:1] + logits.shape[2:]:
        raise ValueError(f"target shape {tuple(target.shape)} does not match logits {tuple(logits.shape)}")
    return target.long()


class SoftmaxFocalLoss(nn.Module):
    """Multi-class focal loss of Eq. 2.2 with a per-class alpha, averaged over all pixels of the batch.

    Args:
        alpha: per-class weights (length C, the thesis normalises them to sum 1); ``None`` for all ones.
        gamma: focusing parameter (the thesis does not state it; 2 is the usual default).
        shares: class pixel shares; with ``weight_function`` they give ``alpha`` (then ``alpha`` must be None).
        weight_function: one of ``lesionlab.pipelines.class_weights.WEIGHT_FUNCTIONS`` or its number 1-6.
        background_index: background class index for the weight functions ⑤ and ⑥.

    Example::

        >>> loss = SoftmaxFocalLoss(shares=[0.84, 0.06, 0.1], weight_function="proposed")
        >>> loss(torch.randn(2, 3, 8, 8), torch.randint(0, 3, (2, 1, 8, 8))).shape
        torch.Size([])
    """

    def __init__(
        self,
        alpha: Sequence[float] | None = None,
        gamma: float = 2.0,
        shares: Sequence[float] | None = None,
        weight_function: str | int | None = None,
        background_index: int = 0,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}")
        if (shares is None) != (weight_function is None):
            raise ValueError("shares and weight_function go together (give both or neither)")
        if shares is not None:
            if alpha is not None:
                raise ValueError("give either alpha or shares + weight_function, not both")
            alpha = class_weights(shares, weight_function, background_index).tolist()
        self.gamma = float(gamma)
        self.register_buffer("alpha", torch.as_tensor(alpha, dtype=torch.float32) if alpha is not None else None)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """``input``: logits ``(B, C, *spatial)`` (C = 1 means sigmoid); ``target``: class indices. Returns a scalar."""
        logits = two_class_logits(input)
        t = _index_target(target, logits)
        logp = F.log_softmax(logits.float(), dim=1).gather(1, t.unsqueeze(1)).squeeze(1)
        loss = -((1.0 - logp.exp()) ** self.gamma) * logp
        if self.alpha is not None:
            if self.alpha.numel() != logits.shape[1]:
                raise ValueError(f"alpha has {self.alpha.numel()} classes, the logits have {logits.shape[1]}")
            loss = self.alpha.to(loss.device)[t] * loss
        return loss.mean()


class TopKCrossEntropyLoss(nn.Module):
    """Online bootstrapping cross-entropy (OHEM): mean CE of the ``k`` hardest pixels of every image.

    Args:
        k: hard pixels per image (the thesis: 512 by default, best 4096 on CoNIC, 1024 on MoNuSAC); images with
            fewer pixels use all of them; ``None`` uses every pixel (plain cross-entropy, the thesis's baseline).
    """

    def __init__(self, k: int | None = 512) -> None:
        super().__init__()
        if k is not None and int(k) < 1:
            raise ValueError(f"k must be >= 1 (or None for every pixel), got {k}")
        self.k = None if k is None else int(k)

    def hardest(self, input: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image CE of the selected pixels ``(B, k)`` and their flat pixel indices ``(B, k)``."""
        logits = two_class_logits(input)
        t = _index_target(target, logits)
        ce = F.cross_entropy(logits.float(), t, reduction="none").flatten(1)
        k = ce.shape[1] if self.k is None else min(self.k, ce.shape[1])
        return ce.topk(k, dim=1)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.hardest(input, target)[0].mean()


class CompoundLoss(nn.Module):
    """Weighted sum of losses (Eq. 3.6: the thesis sums with weight 1), each given logits and class indices.

    Binary (one-channel) logits are turned into two-class logits once for all terms; MONAI terms must then be
    built with ``softmax=True, to_onehot_y=True``.

    Args:
        terms: loss modules called as ``term(logits, target)``.
        weights: one weight per term (default all 1).
    """

    def __init__(self, terms: Sequence[nn.Module], weights: Sequence[float] | None = None) -> None:
        super().__init__()
        if not terms:
            raise ValueError("CompoundLoss needs at least one term")
        weights = [1.0] * len(terms) if weights is None else [float(w) for w in weights]
        if len(weights) != len(terms):
            raise ValueError(f"{len(weights)} weights for {len(terms)} loss terms")
        self.terms = nn.ModuleList(terms)
        self.weights = weights

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = two_class_logits(input)
        if target.ndim == logits.ndim - 1:
            target = target.unsqueeze(1)
        total = logits.new_zeros((), dtype=torch.float32)
        for w, term in zip(self.weights, self.terms):
            total = total + w * term(logits, target)
        return total


def build_imbalance_loss(
    names: Sequence[str] = ("dice",),
    shares: Sequence[float] | None = None,
    weight_function: str | int = "balanced",
    gamma: float = 2.0,
    k: int = 512,
    tversky_alpha: float = 0.3,
    tversky_beta: float = 0.7,
    background_index: int = 0,
    weights: Sequence[float] | None = None,
) -> CompoundLoss:
    """The thesis's loss combinations by name (``ce``, ``focal``, ``dice``, ``ob``, ``tversky``), summed.

    Args:
        names: loss terms, e.g. ``("dice", "focal")`` for Dice + Focal.
        shares: class pixel shares (needed by ``focal`` unless ``weight_function`` is ``equal``).
        weight_function: Focal alpha function (② before §4.4 of the thesis, ⑤ from §4.6 on).
        gamma: Focal gamma.
        k: OHEM hard pixels per image.
        tversky_alpha, tversky_beta: Tversky weights of false positives and false negatives (not in the thesis).
        background_index: background class index.
        weights: one weight per name (default 1 each: the thesis's unweighted sum, Eq. 3.6).
    """
    unknown = [n for n in names if n not in LOSS_NAMES]
    if unknown or not names:
        raise ValueError(f"unknown loss names {unknown or list(names)}; choose from {LOSS_NAMES}")
    terms: list[nn.Module] = []
    for n in names:
        if n == "ce":
            terms.append(TopKCrossEntropyLoss(k=None))
        elif n == "focal":
            if shares is None:
                raise ValueError("the focal term needs the class shares (its alpha comes from a weight function)")
            terms.append(SoftmaxFocalLoss(gamma=gamma, shares=shares, weight_function=weight_function,
                                          background_index=background_index))
        elif n == "dice":
            terms.append(DiceLoss(include_background=True, to_onehot_y=True, softmax=True))
        elif n == "ob":
            terms.append(TopKCrossEntropyLoss(k=k))
        else:
            terms.append(TverskyLoss(include_background=True, to_onehot_y=True, softmax=True,
                                     alpha=tversky_alpha, beta=tversky_beta))
    return CompoundLoss(terms, weights)


class StackedDeepSupervisionLoss(nn.Module):
    """Applies ``loss`` to every head of a stacked deep-supervision output ``(B, S, C, *spatial)`` (UNet 3+, U-Net++
    in training mode; full-resolution head first) through MONAI's ``DeepSupervisionLoss``; a plain ``(B, C,
    *spatial)`` output goes to ``loss`` directly, so one config serves networks with and without deep supervision.
    The target must keep its channel axis, ``(B, 1, *spatial)``.

    Args:
        loss: the per-head loss.
        weight_mode: MONAI's head weighting (``"same"``: the UNet 3+ paper sums its side losses equally).
    """

    def __init__(self, loss: nn.Module, weight_mode: str = "same") -> None:
        super().__init__()
        self.loss = loss
        self.ds = DeepSupervisionLoss(loss, weight_mode=weight_mode)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if input.ndim == target.ndim + 1:
            return self.ds(list(torch.unbind(input, dim=1)), target)
        return self.loss(input, target)
