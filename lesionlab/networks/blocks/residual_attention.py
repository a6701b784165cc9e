"""Coarse-grained residual learning (CRL) of TSRL-Net: reverse attention plus coarse positive attention."""

from __future__ import annotations

import torch
import torch.nn as nn

from .patch_attention import block_upsample

__all__ = ["CoarseResidualLearning"]


class CoarseResidualLearning(nn.Module):
    """CRL module of TSRL-Net (thesis §4.2, Eqs. 4.1-4.3): ``O_n = C_n * CPA_5 + C_n^2 * (1 - P_n)``.

    Li L, Ma K, Song Y, Du X. "TSRL-Net: Target-aware supervision residual learning for stroke segmentation."
    Computers in Biology and Medicine 159 (2023) 106840, https://doi.org/10.1016/j.compbiomed.2023.106840; Ma Kunpeng's
    thesis (2023) §4.2, Fig. 4.2.

    Mapping to the thesis:
        - Eq. 4.1, reverse attention (RA) unit: ``RF_n = C_n (x) C_n (x) (1 - P_n)``: already-predicted target regions
          are suppressed, the residual (not yet found) target is kept;
        - Eq. 4.2, positive attention (PA) unit: ``CAF_n = C_n (x) CPA_5``, the deepest encoder stage's coarse patch
          attention block-upsampled to ``C_n``'s size (ambiguity 28), which keeps the target and a little nearby
          background and suppresses most background patches;
        - Eq. 4.3: ``O_n = CAF_n + RF_n``.

    Decisions (thesis silent):
        - ambiguity 24: ``P_n`` is the side output of the n-th upsampling, i.e. a head on the upsampled decoder feature
          at ``C_n``'s resolution (the caller computes it, see ``TSRLNet``); it is passed here as a probability;
        - ambiguity 25: neither ``P_n`` nor ``CPA_5`` is detached by default (gradients of the segmentation loss reach
          the side heads and CPA5 through CRL); ``detach=True`` stops them;
        - ambiguity 27: ``C_n^2`` is not normalised. ``C_n`` is a non-negative ReLU feature (A * F + F with A in
          (0, 1)), and the decoder block that consumes ``O_n`` starts with Conv -> BatchNorm, which absorbs the scale.

    ``mode`` selects the ablations of Table 4.7: ``"crl"`` (RA + PA), ``"ra"`` (reverse attention only, the "+ Reverse
    Attention" row) or ``"pa"`` (positive attention only, Fig. 4.2 (c)). The module has no parameters.

    Args:
        mode: ``"crl"``, ``"ra"`` or ``"pa"``. Defaults to ``"crl"``.
        detach: detach ``P_n`` and the patch attention map before using them. Defaults to False.

    Example::

        >>> crl = CoarseResidualLearning()
        >>> skip, prob, cpa5 = torch.rand(2, 32, 192, 192), torch.rand(2, 1, 192, 192), torch.rand(2, 1, 6, 6)
        >>> crl(skip, prob, cpa5).shape
        torch.Size([2, 32, 192, 192])
    """

    def __init__(self, mode: str = "crl", detach: bool = False) -> None:
        super().__init__()
        if mode not in ("crl", "ra", "pa"):
            raise ValueError(f"mode must be 'crl', 'ra' or 'pa', got {mode!r}.")
        self.mode = mode
        self.use_ra = mode in ("crl", "ra")
        self.use_pa = mode in ("crl", "pa")
        self.detach = detach

    def forward(self, skip: torch.Tensor, prob: torch.Tensor, patch_attention: torch.Tensor) -> torch.Tensor:
        """Residual-learning skip feature.

        Args:
            skip: encoder feature ``C_n``, (B, C, *S).
            prob: foreground probability ``P_n`` of the side output at the same resolution, (B, 1, *S) (or (B, C, *S));
                ignored when ``mode == "pa"``.
            patch_attention: coarse patch attention probabilities ``sigmoid(CPA_5 logits)``, (B, 1, g, ..., g), with
                every size of ``S`` a multiple of ``g``; ignored when ``mode == "ra"``.

        Returns:
            ``O_n``, same shape as ``skip``.
        """
        out = torch.zeros_like(skip)
        if self.use_ra:
            p = prob.detach() if self.detach else prob
            out = out + skip * skip * (1.0 - p)  # Eq. 4.1
        if self.use_pa:
            a = patch_attention.detach() if self.detach else patch_attention
            spatial: list[int] = []
            for d in range(2, skip.ndim):
                spatial.append(skip.shape[d])
            out = out + skip * block_upsample(a, spatial)  # Eq. 4.2
        return out  # Eq. 4.3

    def extra_repr(self) -> str:
        return f"mode={self.mode!r}, detach={self.detach}"
