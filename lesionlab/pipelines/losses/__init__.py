"""Losses the papers add on top of MONAI's (MONAI's are used wherever they exist).

The terms are in :mod:`~lesionlab.pipelines.losses.components`, the whole-network losses of AGMR-Net and TSRL-Net in
:mod:`~lesionlab.pipelines.losses.stroke`; both are importable from here (bundle configs name
``lesionlab.pipelines.losses.<Class>``).

EML, the "enhanced mixing loss" of D-UNet, used by the stroke thesis (seed 002 §4.1-4.2, Eq. 3.13):

    L_eml = Focal(y, p) / N - log(Dice(y, p)),
    Focal = -(alpha (1-p)^gamma y log p + (1-alpha) p^gamma (1-y) log(1-p))      (summed over the N pixels)
    Dice  = (2 sum(y p) + eps) / (sum(y^2) + sum(p^2) + eps)                       (whole batch, eps = 1)

with alpha = 0.75 on lesion pixels and gamma = 2 (the thesis's values). The focal part is MONAI's ``FocalLoss``
(sigmoid form, mean over all pixels = Focal / N); the Dice coefficient is ``1 - DiceLoss`` of MONAI with squared
denominators, batch-wise, and smoothing 1 in numerator and denominator.

The other losses of the thesis (Ma Kunpeng, master's thesis, Anhui University 2023; AGMR-Net: Du, Ma, Song,
Comput. Med. Imaging Graph. 101:102120, 2022,
https://doi.org/10.1016/j.compmedimag.2022.102120; TSRL-Net: Li, Ma, Song, Du, Comput. Biol. Med. 159:106840, 2023,
https://doi.org/10.1016/j.compbiomed.2023.106840) are written here because MONAI has no equivalent:

* :class:`SobelEdgeLoss` (Eq. 3.14; the definition of ref. [78], Guo et al., MedIA 2021, whose public code it follows),
* :class:`CPAPriorLoss` (the CPA supervision, §3.2 and Eq. 3.15; the prior location map is
  :func:`lesionlab.networks.blocks.patch_attention.prior_location_map`),
* :func:`target_focus_map` and :class:`TargetAwareLoss` (TAL, Eqs. 4.4-4.7),
* :class:`AGMRLoss` (Eq. 3.16) and :class:`TSRLLoss` (Eq. 4.8), which take a network's training-mode output tensor.

How each ambiguity of the thesis (seed 002 §9, items 29-40) is resolved is stated in the class docstrings.
"""

from __future__ import annotations

from .components import CPAPriorLoss, EMLLoss, SobelEdgeLoss, TargetAwareLoss, target_focus_map
from .stroke import AGMRLoss, TSRLLoss

__all__ = [
    "EMLLoss",
    "SobelEdgeLoss",
    "CPAPriorLoss",
    "target_focus_map",
    "TargetAwareLoss",
    "AGMRLoss",
    "TSRLLoss",
]
