"""The loss terms of the stroke papers that MONAI has no equivalent for (EML, Sobel edge, CPA prior, TAL); see
:mod:`lesionlab.pipelines.losses` for the formulas and references."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss

from lesionlab.networks.blocks.patch_attention import prior_location_map

__all__ = ["EMLLoss", "SobelEdgeLoss", "CPAPriorLoss", "target_focus_map", "TargetAwareLoss"]


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


def _check_same_shape(input: torch.Tensor, target: torch.Tensor, name: str) -> None:
    if input.shape != target.shape:
        raise ValueError(
            f"{name}: input {tuple(input.shape)} and target {tuple(target.shape)} must have the same shape."
        )


def _spatial_dims(x: torch.Tensor, name: str) -> int:
    """Number of spatial dimensions of a ``(B, C, *spatial)`` tensor (1, 2 or 3)."""
    if not 3 <= x.ndim <= 5:
        raise ValueError(f"{name}: expected a (B, C, *spatial) tensor with 1-3 spatial dims, got {tuple(x.shape)}.")
    return x.ndim - 2


class SobelEdgeLoss(nn.Module):
    """Sobel boundary loss of AGMR-Net (thesis Eq. 3.14, ``L2 = Sobel_loss(p, g)``).

    The thesis takes the loss from ref. [78] (Guo et al., MedIA 2021) and prints no formula, so the definition of
    [78]'s public code is used (seed 002 §4.2, ambiguity 39). Prediction probabilities ``p`` and ground truth ``g`` are
    each

    1. smoothed with a 3x3 average pool (stride 1, zero padding 1, padding counted in the mean, PyTorch's default),
    2. filtered with ``Kx = [[1, 0, -1], [2, 0, -2], [1, 0, -1]] / 4`` and ``Ky = Kx^T`` (cross-correlation, zero
       padding 1),
    3. turned into an edge magnitude ``M = sqrt(gx^2 + gy^2 + eps)`` with ``eps = 1e-4``,

    and the loss is the mean absolute difference ``mean |M(p) - M(g)|`` over all pixels, channels and images. The
    thesis weights it by 1 in Eq. 3.16 ([78] used 0.1); the weight lives in :class:`AGMRLoss`.

    The filter is inherently 2D (slices); every channel is filtered on its own.

    Args:
        sigmoid: apply a sigmoid to ``input`` (logits); False when ``input`` already holds probabilities.
            Defaults to True.
        eps: constant under the square root, keeps the gradient finite on flat regions. Defaults to 1e-4 ([78]).

    Example::

        loss = SobelEdgeLoss()(logits, mask)  # logits, mask: (B, 1, H, W)
    """

    def __init__(self, sigmoid: bool = True, eps: float = 1e-4) -> None:
        super().__init__()
        if eps <= 0:
            raise ValueError(f"eps must be > 0 (it keeps sqrt differentiable), got {eps}.")
        self.sigmoid = bool(sigmoid)
        self.eps = float(eps)
        kx = torch.tensor([[1.0, 0.0, -1.0], [2.0, 0.0, -2.0], [1.0, 0.0, -1.0]]) / 4.0
        self.register_buffer("kernel", torch.stack([kx, kx.t()]).unsqueeze(1), persistent=False)  # (2, 1, 3, 3)

    def edge_magnitude(self, x: torch.Tensor) -> torch.Tensor:
        """Smoothed Sobel edge magnitude of a ``(B, C, H, W)`` map, same shape."""
        b, c, h, w = x.shape
        x = F.avg_pool2d(x.reshape(b * c, 1, h, w), kernel_size=3, stride=1, padding=1)
        g = F.conv2d(x, self.kernel.to(dtype=x.dtype, device=x.device), padding=1)  # (B*C, 2, H, W): gx, gy
        return torch.sqrt((g * g).sum(dim=1) + self.eps).reshape(b, c, h, w)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Args: ``input`` logits (or probabilities) ``(B, C, H, W)``; ``target`` mask of the same shape.

        Returns: the scalar loss.
        """
        _check_same_shape(input, target, "SobelEdgeLoss")
        if input.ndim != 4:
            raise ValueError(f"SobelEdgeLoss is 2D: expected (B, C, H, W), got {tuple(input.shape)}.")
        p = torch.sigmoid(input) if self.sigmoid else input
        return (self.edge_magnitude(p) - self.edge_magnitude(target.to(p.dtype))).abs().mean()


def _patch_average(x: torch.Tensor, grid: int) -> torch.Tensor:
    """Average each ``(H/grid) x (W/grid)`` block: inverts CPA's nearest (block) upsampling of a grid map exactly."""
    nd = _spatial_dims(x, "CPA map")
    if tuple(x.shape[2:]) == (grid,) * nd:
        return x
    pool = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[nd - 1]
    return pool(x, grid)


class CPAPriorLoss(nn.Module):
    """Supervision of the coarse patch attention (CPA) maps by the prior location map (thesis Eq. 3.15, Eq. 4.8).

    ``L = weight * sum_i mean BCE(cpa_i, prior)``, where ``prior`` is the label max-pooled to ``grid x grid``
    (a patch is 1 if it holds any lesion) and ``cpa_i`` is the ``grid x grid`` attention map of encoder stage ``i``.
    The weight multiplies the *sum* over stages (ambiguity 12): ``0.15 * (L_1 + ... + L_5)``. The mean BCE over the
    6x6 map equals the mean BCE over its nearest (block) upsampling, so maps given at full resolution are first
    averaged back over their ``(H/grid) x (W/grid)`` blocks (exact for block upsampling, ambiguity 11).

    Args:
        weight: factor on the sum over stages. Defaults to 0.15 (Eqs. 3.16 and 4.8).
        grid: patches per side. Defaults to 6.
        logits: the CPA maps are logits (BCE with logits) rather than sigmoid probabilities. Defaults to False
            (CPA ends with a sigmoid, Eq. 3.3).

    ``forward(cpa, label)``: ``cpa`` is a ``(B, S, h, w)`` tensor with one stage per channel, or a sequence of
    ``(B, 1, h, w)`` tensors; ``h, w`` is ``grid`` or any multiple of it. ``label`` is the ``(B, 1, H, W)`` mask.

    Example::

        loss = CPAPriorLoss()([a1, a2, a3, a4, a5], mask)  # a_i: (B, 1, 6, 6) probabilities; mask: (B, 1, 192, 192)
    """

    def __init__(self, weight: float = 0.15, grid: int = 6, logits: bool = False) -> None:
        super().__init__()
        if weight < 0:
            raise ValueError(f"weight must be >= 0, got {weight}.")
        if int(grid) != grid or grid < 1:
            raise ValueError(f"grid must be a positive integer, got {grid}.")
        self.weight = float(weight)
        self.grid = int(grid)
        self.logits = bool(logits)

    def forward(self, cpa: torch.Tensor | Sequence[torch.Tensor], label: torch.Tensor) -> torch.Tensor:
        """Returns: the scalar weighted sum of the per-stage mean BCEs."""
        maps = list(torch.unbind(cpa, dim=1)) if isinstance(cpa, torch.Tensor) else [m.squeeze(1) for m in cpa]
        if not maps:
            raise ValueError("CPAPriorLoss: no CPA map given.")
        if label.ndim < 3 or label.shape[1] != 1:
            raise ValueError(f"CPAPriorLoss: label must be (B, 1, *spatial), got {tuple(label.shape)}.")
        prior = prior_location_map(label, self.grid)
        total = label.new_zeros((), dtype=prior.dtype)
        for i, m in enumerate(maps):
            m = m.unsqueeze(1)
            if m.shape[0] != label.shape[0] or m.ndim != label.ndim:
                raise ValueError(
                    f"CPAPriorLoss: CPA map {i} {tuple(m.shape)} does not match label {tuple(label.shape)}."
                )
            m = _patch_average(m, self.grid)
            target = prior.to(m.dtype)
            if self.logits:
                total = total + F.binary_cross_entropy_with_logits(m, target)
            else:
                total = total + F.binary_cross_entropy(m, target)
        return self.weight * total


def target_focus_map(target: torch.Tensor, beta: int = 4) -> torch.Tensor:
    """Focus map ``A`` of TAL (thesis Eq. 4.4): ``A = nearest-upsample(maxpool_{beta, stride beta}(g))``.

    A ``beta x beta`` window slides over the ground truth with stride ``beta`` (non-overlapping windows: Eq. 4.4's
    sum limits ``0..beta`` would overlap by one pixel, but the text and Fig. 4.4 describe stride-``beta`` windows,
    ambiguity 33). Every pixel of a window holding any positive is a "focused" sample (``A = 1``), all others are
    "dispersed" (``A = 0``). When a side is not divisible by ``beta`` the last window is partial (ceil-mode pooling)
    and the upsampled map is cropped back. With ``beta = 1``, ``A = g``.

    Args:
        target: binary mask ``(B, C, *spatial)`` with 1-3 spatial dims.
        beta: focus factor (window side), >= 1. Defaults to 4 (the thesis's value).

    Returns:
        ``A``, shaped and typed like ``target`` (float).
    """
    if isinstance(beta, bool) or int(beta) != beta or beta < 1:
        raise ValueError(f"beta must be an integer >= 1, got {beta}.")
    beta = int(beta)
    nd = _spatial_dims(target, "target_focus_map")
    g = target if target.is_floating_point() else target.float()
    if beta == 1:
        return (g > 0).to(g.dtype)
    pool = (F.max_pool1d, F.max_pool2d, F.max_pool3d)[nd - 1]
    coarse = (pool(g, kernel_size=beta, stride=beta, ceil_mode=True) > 0).to(g.dtype)
    for axis in range(2, 2 + nd):
        coarse = coarse.repeat_interleave(beta, dim=axis)
    return coarse[(..., *[slice(0, s) for s in g.shape[2:]])].contiguous()


_DICE_FORMS = ("one_minus", "neg_log")


class TargetAwareLoss(nn.Module):
    """Target-aware loss (TAL) of TSRL-Net (thesis §4.3, Eqs. 4.4-4.7).

    With ``p = sigmoid(logit)``, binary ground truth ``g`` and the focus map ``A`` of :func:`target_focus_map`:

    * ``p_t = p g + (1 - p)(1 - g)`` (Eq. 4.5);
    * ``w = alpha`` on focused pixels (``A = 1``) and ``1 - alpha`` on dispersed ones (``A = 0``): Eq. 4.6 prints
      ``A alpha + |1 - A| alpha``, a typo for ``(1 - alpha)`` per the text (ambiguity 31);
    * focal part ``loss_fp = sum_i -w_i (1 - p_t,i)^gamma log p_t,i / N`` (Eq. 4.6) with ``N`` the number of pixels of
      *one* ground-truth image, i.e. a per-image mean, then averaged over the batch (ambiguity 34). All images of a
      batch have the same ``N``, so this equals the mean over every pixel of the batch;
    * Dice part (Eq. 4.7, printed without the factor 2 and without ``1 -``, ambiguities 32 and 35):
      ``dice="one_minus"``: ``1 - (2 sum g p + eps) / (sum p^2 + sum g^2 + eps)`` (default), or ``dice="neg_log"``:
      ``-log`` of the same coefficient (the EML form); ``eps = 1`` (D-UNet's value, the thesis gives none). The sums
      run over one image and the result is averaged over the batch (``batch=False``, the per-image reading of N), or
      over the whole batch (``batch=True``, D-UNet's EML);
    * ``TAL = loss_fp + Dice part``.

    ``log p_t`` and ``1 - p_t`` are computed from logits as ``logsigmoid(z)`` and ``exp(logsigmoid(-z))`` with
    ``z = logit (2 g - 1)``, which is exact for binary ``g`` and stays finite for any logit (gradients included, also
    for ``gamma < 1``). With ``beta = 1`` (``A = g``) the focal part is the alpha-balanced focal loss.

    Args:
        gamma: focal exponent, >= 0. Defaults to 2.
        alpha: weight of focused samples, in [0, 1] (dispersed ones get ``1 - alpha``). Defaults to 0.75.
        beta: focus factor, integer >= 1. Defaults to 4.
        dice: ``"one_minus"`` or ``"neg_log"``. Defaults to ``"one_minus"``.
        smooth: ``eps`` of the Dice coefficient, > 0. Defaults to 1.
        batch: pool the Dice sums over the batch. Defaults to False.

    ``forward(input, target)``: ``input`` logits ``(B, 1, *spatial)``, ``target`` a binary mask of the same shape.

    Example::

        loss = TargetAwareLoss(gamma=2.0, alpha=0.75, beta=4)(logits, mask)
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: float = 0.75,
        beta: int = 4,
        dice: str = "one_minus",
        smooth: float = 1.0,
        batch: bool = False,
    ) -> None:
        super().__init__()
        if gamma < 0:
            raise ValueError(f"gamma must be >= 0, got {gamma}.")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}.")
        if isinstance(beta, bool) or int(beta) != beta or beta < 1:
            raise ValueError(f"beta must be an integer >= 1, got {beta}.")
        if dice not in _DICE_FORMS:
            raise ValueError(f"dice must be one of {_DICE_FORMS}, got {dice!r}.")
        if smooth <= 0:
            raise ValueError(f"smooth must be > 0, got {smooth}.")
        self.gamma = float(gamma)
        self.alpha = float(alpha)
        self.beta = int(beta)
        self.dice = dice
        self.smooth = float(smooth)
        self.batch = bool(batch)

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Returns: the scalar TAL (focal part + Dice part)."""
        _check_same_shape(input, target, "TargetAwareLoss")
        _spatial_dims(input, "TargetAwareLoss")
        if input.shape[1] != 1:
            raise ValueError(f"TargetAwareLoss is binary: expected 1 logit channel, got {input.shape[1]}.")
        g = target.to(input.dtype)
        focus = target_focus_map(g, self.beta)
        z = input * (2.0 * g - 1.0)  # p_t = sigmoid(z) for binary g
        log_pt = F.logsigmoid(z)
        modulating = torch.exp(self.gamma * F.logsigmoid(-z))  # (1 - p_t)^gamma
        weight = self.alpha * focus + (1.0 - self.alpha) * (1.0 - focus)
        reduce_dims = tuple(range(1, input.ndim))
        focal = (-weight * modulating * log_pt).mean(dim=reduce_dims).mean()  # per-image /N, then batch mean

        p = torch.sigmoid(input)
        dims = tuple(range(input.ndim)) if self.batch else reduce_dims
        inter = (g * p).sum(dim=dims)
        denom = (p * p).sum(dim=dims) + (g * g).sum(dim=dims)
        coefficient = (2.0 * inter + self.smooth) / (denom + self.smooth)
        dice = 1.0 - coefficient if self.dice == "one_minus" else -torch.log(coefficient)
        return focal + dice.mean()
