"""D-UNet's encoder (a 2D and a 3D encoder on the same slice stack, fused at stages 2 and 3), shared by D-UNet,
AGMR-Net and TSRL-Net; AGMR-Net's options choose the attention after each 2D stage and the kind of fusion."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Pool

from .conv_blocks import DoubleConv
from .dimension_fusion import AddFusion, CFFConcatFusion, ConcatFusion, CrossDimensionFusion, SEAddFusion
from .multiscale import MultiScaleConv
from .patch_attention import CoarsePatchAttention, FineSpatialAttention

__all__ = ["DUNetEncoder", "STAGE_ATTENTIONS", "FUSIONS", "make_stage_attention", "make_fusion"]

#: attention after each 2D encoder stage: CPA (AGMR-Net, thesis §3.2), CBAM-style pixel attention (Table 3.4 "FA"),
#: none (D-UNet)
STAGE_ATTENTIONS = ("cpa", "fine", "none")
#: 2D/3D fusion at stages 2 and 3: CFF (§3.3), Table 3.5's "Add", "Concatenate", "CFF-Concatenate", D-UNet's SE-add
FUSIONS = ("cff", "add", "concat", "cff_concat", "se_add")


class _NoAttention(nn.Module):
    """The attention slot of a stage without attention: identity, and an empty attention map."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.new_zeros(0)


def make_stage_attention(kind: str, grid: int = 6) -> nn.Module:
    """The 2D attention module of one encoder stage; ``kind`` is one of :data:`STAGE_ATTENTIONS`.

    Every kind returns ``(attended feature, attention logits)`` (empty logits for ``"none"``).
    """
    if kind == "cpa":
        return CoarsePatchAttention(2, grid)
    if kind == "fine":
        return FineSpatialAttention(2, kernel_size=7)
    if kind == "none":
        return _NoAttention()
    raise ValueError(f"attention must be one of {STAGE_ATTENTIONS}, got {kind!r}.")


def make_fusion(kind: str, channels: int, depth: int, cff_reduction: int = 8, cff_mlp_layout: str = "separate",
                fusion_reduction: int = 16, act: str | tuple = "relu") -> nn.Module:
    """The 2D/3D fusion module of one encoder stage; ``kind`` is one of :data:`FUSIONS`.

    ``cff_reduction`` and ``cff_mlp_layout`` apply to ``"cff"`` and ``"cff_concat"``, ``fusion_reduction`` to
    ``"se_add"``; the blocks validate them.
    """
    if kind == "cff":
        return CrossDimensionFusion(channels, depth, cff_reduction, cff_mlp_layout, act=act)
    if kind == "cff_concat":
        return CFFConcatFusion(channels, depth, cff_reduction, cff_mlp_layout, act=act)
    if kind == "add":
        return AddFusion(channels, depth, act=act)
    if kind == "concat":
        return ConcatFusion(channels, depth, act=act)
    if kind == "se_add":
        return SEAddFusion(channels, depth, fusion_reduction, act=act)
    raise ValueError(f"fusion must be one of {FUSIONS}, got {kind!r}.")


class DUNetEncoder(nn.Module):
    """D-UNet's encoder, with AGMR-Net's choice of stage attention and fusion.

    Zhou Y et al., "D-UNet: a dimension-fusion U shape network for chronic stroke lesion segmentation", IEEE/ACM TCBB
    18(3), 2021; Ma Kunpeng's thesis (2023) §3.1 and §4.1 (AGMR-Net and TSRL-Net keep this encoder).

    Stage ``i`` of the 2D encoder: E_Block (``DoubleConv``; dropout after stages 4 and 5; 2 x 2 max-pool before stages
    2-5) -> attention (``self.attention[i]``, ``A * F + F``) -> at stages 2 and 3, fusion with the 3D encoder's
    feature (``self.fusion``) -> optional same-resolution multi-scale block at stages 1-4 (``self.stage_mdu``, Table
    3.8's "MDU in encoder stage"). The 3D encoder (``self.enc3d``, three ``DoubleConv`` stages with 2 x 2 x 2
    max-pooling) sees the stack as a one-channel volume ``(B, 1, S, H, W)``. The stage output goes both to the skip
    connection and, pooled, to the next stage (thesis ambiguity 10: attention before fusion).

    With ``attention="none"`` and ``fusion="se_add"`` this is exactly D-UNet's encoder. The parameter-free modules
    of a switched-off part (``_NoAttention``, ``nn.Identity``) keep ``forward`` scriptable and add nothing to the
    state dict. Checkpoints written when the attention modules were named ``cpa`` load (keys renamed on load).

    Args:
        in_channels: number of stacked slices ``S`` (a positive multiple of 4: the 3D encoder pools it twice).
        features: channels of the five stages.
        attention: one of :data:`STAGE_ATTENTIONS`.
        fusion: one of :data:`FUSIONS`.
        cpa_grid: CPA patches per axis (``attention="cpa"``).
        cff_reduction: CFF reduction rate ``R`` (``fusion`` ``"cff"`` or ``"cff_concat"``).
        cff_mlp_layout: CFF MLP layout, ``"separate"`` or ``"shared"``.
        fusion_reduction: SE ratio of D-UNet's fusion (``fusion="se_add"``).
        dropout: dropout after stages 4 and 5.
        raw_skips: concatenate the E_Block output (before attention and fusion) to each skip.
        stage_mdu_kernels: kernels of a :class:`~lesionlab.networks.blocks.MultiScaleConv` (``C -> C``) after stages
            1-4; ``None`` for none.
        stage_mdu_dropout: dropout of each branch of those blocks.
        act: activation.
        norm: normalisation.
    """

    def __init__(
        self,
        in_channels: int = 4,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        *,
        attention: str = "none",
        fusion: str = "se_add",
        cpa_grid: int = 6,
        cff_reduction: int = 8,
        cff_mlp_layout: str = "separate",
        fusion_reduction: int = 16,
        dropout: float = 0.3,
        raw_skips: bool = False,
        stage_mdu_kernels: Sequence[int] | None = None,
        stage_mdu_dropout: float = 0.1,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        if in_channels < 4 or in_channels % 4:
            raise ValueError(f"in_channels (number of stacked slices) must be a positive multiple of 4, got "
                             f"{in_channels}.")
        if len(features) != 5 or min(features) < 1:
            raise ValueError(f"features must be 5 positive channel counts, got {features}.")
        self.attention_kind = attention
        self.fusion_kind = fusion
        self.use_cpa = attention == "cpa"
        self.raw_skips = raw_skips
        self.pool2d = Pool[Pool.MAX, 2](kernel_size=2)
        self.pool3d = Pool[Pool.MAX, 3](kernel_size=2)
        chans = (in_channels,) + features
        self.enc2d = nn.ModuleList(
            [DoubleConv(2, chans[i], chans[i + 1], act=act, norm=norm, dropout=dropout if i >= 3 else 0.0)
             for i in range(5)]
        )
        chans3d = (1,) + features[:3]
        self.enc3d = nn.ModuleList([DoubleConv(3, chans3d[i], chans3d[i + 1], act=act, norm=norm) for i in range(3)])
        # slice depth of the 3D feature at stages 2 and 3: S/2 and S/4
        self.fusion = nn.ModuleList(
            [make_fusion(fusion, features[i], in_channels // 2**i, cff_reduction, cff_mlp_layout, fusion_reduction,
                         act) for i in (1, 2)]
        )
        self.attention = nn.ModuleList([make_stage_attention(attention, cpa_grid) for _ in range(5)])
        self.stage_mdu = nn.ModuleList(
            [nn.Identity() if stage_mdu_kernels is None else
             MultiScaleConv(2, features[i], features[i], stage_mdu_kernels, stage_mdu_dropout, act, norm)
             for i in range(4)]
        )
        self._register_load_state_dict_pre_hook(self._rename_old_keys)

    @staticmethod
    def _rename_old_keys(state_dict, prefix, *args) -> None:
        """``<prefix>cpa.*`` (checkpoints before the attention modules were renamed) -> ``<prefix>attention.*``."""
        old = prefix + "cpa."
        for key in [k for k in state_dict if k.startswith(old)]:
            state_dict[prefix + "attention." + key[len(old):]] = state_dict.pop(key)

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """``x``: (B, S, H, W) slice stack.

        Returns:
            ``(skips, bottom, cpa_logits)``: the stage 1-4 outputs (shallowest first; with ``raw_skips`` each is the
            concatenation ``[stage output, E_Block output]``), the stage-5 output, and the five CPA logit maps
            (B, 1, grid, grid), stage 1 first (empty unless ``attention="cpa"``).
        """
        t1 = self.enc3d[0](x.unsqueeze(1))
        t2 = self.enc3d[1](self.pool3d(t1))
        t3 = self.enc3d[2](self.pool3d(t2))
        logits: list[torch.Tensor] = []

        r1 = self.enc2d[0](x)
        e1, a1 = self.attention[0](r1)
        e1 = self.stage_mdu[0](e1)
        r2 = self.enc2d[1](self.pool2d(e1))
        e2, a2 = self.attention[1](r2)
        e2 = self.stage_mdu[1](self.fusion[0](t2, e2))
        r3 = self.enc2d[2](self.pool2d(e2))
        e3, a3 = self.attention[2](r3)
        e3 = self.stage_mdu[2](self.fusion[1](t3, e3))
        r4 = self.enc2d[3](self.pool2d(e3))
        e4, a4 = self.attention[3](r4)
        e4 = self.stage_mdu[3](e4)
        r5 = self.enc2d[4](self.pool2d(e4))
        e5, a5 = self.attention[4](r5)

        skips = [e1, e2, e3, e4]
        if self.raw_skips:
            skips = [torch.cat([s, r], dim=1) for s, r in zip(skips, [r1, r2, r3, r4])]
        if self.use_cpa:
            logits = [a1, a2, a3, a4, a5]
        return skips, e5, logits
