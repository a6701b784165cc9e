"""The whole-network losses of AGMR-Net (Eq. 3.16) and TSRL-Net (Eq. 4.8), which take the network's training-mode
output tensor (logits, side outputs and CPA maps in one tensor) and combine the terms of
:mod:`lesionlab.pipelines.losses.components`."""

from __future__ import annotations

import torch
import torch.nn as nn

from lesionlab.networks.nets.slice_stack import split_train_output
from lesionlab.pipelines.losses.components import CPAPriorLoss, EMLLoss, SobelEdgeLoss, TargetAwareLoss

__all__ = ["AGMRLoss", "TSRLLoss"]


class _StrokeNetLoss(nn.Module):
    """Shared channel-layout handling of :class:`AGMRLoss` and :class:`TSRLLoss`.

    The layout is the one of :class:`~lesionlab.networks.nets.AGMRNet` and :class:`~lesionlab.networks.nets.TSRLNet`
    (split by :func:`lesionlab.networks.nets.agmr_net.split_train_output`, with one output channel): a training-mode
    output is ``(B, 1 + n_side + n_cpa, H, W)``, channel 0 the main logits, channels ``1..n_side`` the side-output
    logits (upsampled to H x W by the network), then ``n_cpa`` CPA maps (logits in those networks) block-upsampled to
    H x W. An eval-mode output is ``(B, 1, H, W)`` (main logits only).
    """

    def __init__(self, n_side: int, n_cpa: int, cpa_logits: bool, cpa_weight: float, grid: int) -> None:
        super().__init__()
        for name, value in (("n_side", n_side), ("n_cpa", n_cpa)):
            if isinstance(value, bool) or int(value) != value or value < 0:
                raise ValueError(f"{name} must be an integer >= 0, got {value}.")
        self.n_side = int(n_side)
        self.n_cpa = int(n_cpa)
        self.cpa = CPAPriorLoss(weight=cpa_weight, grid=grid, logits=cpa_logits)

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """Split a network output into ``(main (B,1,H,W), [side (B,1,H,W)], [cpa (B,1,H,W)])`` (lists may be empty).

        Raises:
            ValueError: for a tensor that is not 4D or whose channel count is neither 1 nor ``1 + n_side + n_cpa``.
        """
        if output.ndim != 4:
            raise ValueError(f"{type(self).__name__}: expected a (B, C, H, W) output, got {tuple(output.shape)}.")
        try:
            return split_train_output(output, 1, self.n_side, self.n_cpa)
        except ValueError as exc:
            raise ValueError(f"{type(self).__name__}: {exc}") from None

    def _check_label(self, output: torch.Tensor, label: torch.Tensor) -> None:
        if label.shape != (output.shape[0], 1, *output.shape[2:]):
            raise ValueError(
                f"{type(self).__name__}: label must be (B, 1, H, W) matching output {tuple(output.shape)}, "
                f"got {tuple(label.shape)}."
            )


class AGMRLoss(_StrokeNetLoss):
    """Total AGMR-Net loss (thesis §3.5.3, Eq. 3.16): ``L = EML(main) + Sobel(main) + 0.15 sum_i BCE(cpa_i, prior)``.

    * ``L1`` (Eq. 3.13) is :class:`EMLLoss` (``alpha = 0.75`` on lesion pixels, ambiguity 38; "1/N Focal" is the mean
      over pixels, ambiguity 40; "Dice_loss" inside ``-log`` is the Dice coefficient, ambiguity 37);
    * ``L2`` (Eq. 3.14) is :class:`SobelEdgeLoss` with weight 1 (ambiguity 39);
    * the CPA term (Eq. 3.15) is :class:`CPAPriorLoss`, 0.15 times the sum over the ``n_cpa`` stages (ambiguity 12).

    The input is the network's whole output: ``(B, 1 + n_side + n_cpa, H, W)`` in training mode (channel 0 the main
    logits, then ``n_side`` side-output channels, which Eq. 3.16 does not use and which are skipped, then the CPA
    maps block-upsampled to ``H x W``), or ``(B, 1, H, W)`` in eval mode, where only ``L1 + L2`` apply. The defaults
    match :class:`~lesionlab.networks.nets.AGMRNet` (``n_side=0``, ``n_cpa=5``, CPA logits); use ``n_cpa=0`` with
    ``encoder_attention`` other than ``"cpa"``.

    Args:
        n_side: side-output channels after the main one (AGMR-Net has none). Defaults to 0.
        n_cpa: CPA channels at the end (0: no CPA term). Defaults to 5 (one per encoder stage).
        cpa_logits: the CPA channels hold logits (as ``AGMRNet`` outputs them) rather than sigmoid probabilities.
            Defaults to True.
        cpa_weight: factor on the CPA sum. Defaults to 0.15.
        alpha: focal weight of lesion pixels in EML. Defaults to 0.75.
        gamma: focal exponent in EML. Defaults to 2.
        smooth: Dice smoothing of EML. Defaults to 1.
        sobel_weight: factor on the Sobel loss. Defaults to 1 (the thesis).
        grid: CPA patches per side. Defaults to 6.

    Example::

        net = AGMRNet().train()
        loss = AGMRLoss()(net(x), mask)  # train-mode output (B, 6, H, W), mask (B, 1, H, W)
    """

    def __init__(
        self,
        n_side: int = 0,
        n_cpa: int = 5,
        cpa_logits: bool = True,
        cpa_weight: float = 0.15,
        alpha: float = 0.75,
        gamma: float = 2.0,
        smooth: float = 1.0,
        sobel_weight: float = 1.0,
        grid: int = 6,
    ) -> None:
        super().__init__(n_side, n_cpa, cpa_logits, cpa_weight, grid)
        if sobel_weight < 0:
            raise ValueError(f"sobel_weight must be >= 0, got {sobel_weight}.")
        self.eml = EMLLoss(alpha=alpha, gamma=gamma, smooth=smooth)
        self.sobel = SobelEdgeLoss(sigmoid=True)
        self.sobel_weight = float(sobel_weight)

    def forward(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Args: ``output`` the network output (see the class docstring); ``label`` ``(B, 1, H, W)``.

        Returns: the scalar total loss.
        """
        main, _sides, cpa = self.split(output)
        self._check_label(output, label)
        label = label.to(main.dtype)
        loss = self.eml(main, label) + self.sobel_weight * self.sobel(main, label)
        if cpa:
            loss = loss + self.cpa(cpa, label)
        return loss


class TSRLLoss(_StrokeNetLoss):
    """Total TSRL-Net loss (thesis §4.4.3, Eq. 4.8): ``TAL(main) + sum_i TAL(side_i) + 0.15 sum_j BCE(cpa_j, prior)``.

    Every prediction, the main one and the ``n_side`` side outputs (4 in Eq. 4.8, ambiguity 30), gets the same
    :class:`TargetAwareLoss` at full resolution: the side outputs arrive upsampled to ``H x W`` by the network, so
    ``beta`` keeps its meaning (ambiguity 29). The ``n_cpa`` CPA maps get :class:`CPAPriorLoss` (0.15 times the sum).

    The input is ``(B, 1 + n_side + n_cpa, H, W)`` in training mode (main logits, side logits, CPA maps
    block-upsampled to ``H x W``) or ``(B, 1, H, W)`` in eval mode, where only ``TAL(main)`` applies. The defaults
    match :class:`~lesionlab.networks.nets.TSRLNet` (``n_side=4``, ``n_cpa=5``, CPA logits); use ``n_side=0`` with
    ``deep_supervision=False``.

    Args:
        n_side: side-output channels. Defaults to 4.
        n_cpa: CPA channels (0: no CPA term). Defaults to 5.
        cpa_logits: the CPA channels hold logits (as ``TSRLNet`` outputs them) rather than probabilities.
            Defaults to True.
        cpa_weight: factor on the CPA sum. Defaults to 0.15.
        gamma: TAL focal exponent. Defaults to 2.
        alpha: TAL weight of focused samples. Defaults to 0.75.
        beta: TAL focus factor. Defaults to 4.
        dice: TAL Dice form, ``"one_minus"`` or ``"neg_log"``. Defaults to ``"one_minus"``.
        smooth: TAL Dice ``eps``. Defaults to 1.
        grid: CPA patches per side. Defaults to 6.

    Example::

        net = TSRLNet().train()
        loss = TSRLLoss()(net(x), mask)  # train-mode output (B, 10, H, W), mask (B, 1, H, W)
    """

    def __init__(
        self,
        n_side: int = 4,
        n_cpa: int = 5,
        cpa_logits: bool = True,
        cpa_weight: float = 0.15,
        gamma: float = 2.0,
        alpha: float = 0.75,
        beta: int = 4,
        dice: str = "one_minus",
        smooth: float = 1.0,
        grid: int = 6,
    ) -> None:
        super().__init__(n_side, n_cpa, cpa_logits, cpa_weight, grid)
        self.tal = TargetAwareLoss(gamma=gamma, alpha=alpha, beta=beta, dice=dice, smooth=smooth)

    def forward(self, output: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        """Args: ``output`` the network output (see the class docstring); ``label`` ``(B, 1, H, W)``.

        Returns: the scalar total loss.
        """
        main, sides, cpa = self.split(output)
        self._check_label(output, label)
        label = label.to(main.dtype)
        loss = self.tal(main, label)
        for side in sides:
            loss = loss + self.tal(side, label)
        if cpa:
            loss = loss + self.cpa(cpa, label)
        return loss
