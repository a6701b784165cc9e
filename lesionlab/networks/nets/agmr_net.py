"""AGMR-Net: D-UNet with coarse patch attention, cross-dimensional fusion and multi-scale deconvolution upsampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv, Pool

from lesionlab.networks.blocks import (
    CoarsePatchAttention,
    CrossDimensionFusion,
    DoubleConv,
    MultiScaleDeconvUpsample,
    SEAddFusion,
    UpConv,
    block_upsample,
)
from lesionlab.networks.blocks.dimension_fusion import AddFusion, CFFConcatFusion, ConcatFusion
from lesionlab.networks.blocks.multiscale import MultiScaleConv
from lesionlab.networks.blocks.patch_attention import FineSpatialAttention

__all__ = ["AGMRNet", "AGMREncoder", "split_train_output"]

#: values of ``encoder_attention``: CPA (thesis §3.2), CBAM-style pixel attention (Table 3.4 "FA"), none
ENCODER_ATTENTIONS = ("cpa", "fine", "none")
#: values of ``fusion``: CFF (§3.3), Table 3.5's "Add", "Concatenate", "CFF-Concatenate", D-UNet's SE-add
FUSIONS = ("cff", "add", "concat", "cff_concat", "se_add")
#: values of ``mdu_position`` (Table 3.8)
MDU_POSITIONS = ("decoder", "encoder", "skip")


def _resolve_switch(name: str, value: str | None, flag_name: str, flag: bool, on: str, off: str,
                    choices: tuple[str, ...]) -> str:
    """Resolve a string option that refines an older boolean switch.

    ``value=None`` follows the boolean (``on`` if ``flag`` else ``off``); an explicit value wins, except ``on`` with
    ``flag=False``, which is contradictory and raises.
    """
    if value is None:
        return on if flag else off
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}.")
    if not flag and value == on:
        raise ValueError(f"{flag_name}=False contradicts {name}={value!r}; leave {name} unset or choose another value.")
    return value


def split_train_output(
    output: torch.Tensor, out_channels: int = 1, num_side: int = 0, num_cpa: int = 5, grid: int | None = None
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Split the one-tensor training output of ``AGMRNet`` / ``TSRLNet`` into its parts.

    Channel layout of the training output (B, K, H, W), ``K = out_channels * (1 + num_side) + num_cpa``:

    - ``[0, out_channels)``: main segmentation logits;
    - then ``num_side`` blocks of ``out_channels`` channels: side-output logits (TSRL-Net), bilinearly upsampled to
      H x W, coarsest decoder level first;
    - then ``num_cpa`` single channels: coarse patch attention *logits* of encoder stages 1..5, block-upsampled
      (nearest) to H x W, so ``sigmoid`` of each is the thesis's map ``omega'`` replicated over its patches.

    An eval-mode output (exactly ``out_channels`` channels) is accepted too and gives empty lists.

    Args:
        output: the network output.
        out_channels: the network's ``out_channels``.
        num_side: number of side outputs (0 for AGMR-Net, 4 for TSRL-Net with deep supervision).
        num_cpa: number of CPA maps (5 with CPA, 0 without).
        grid: when given, each CPA map is average-pooled back to ``grid x grid`` (exact, the maps are constant over
            each patch), ready for BCE against :func:`~lesionlab.networks.blocks.prior_location_map`. Mean BCE on the
            grid map equals mean BCE on the full-size map when H and W are multiples of ``grid``.

    Returns:
        ``(logits, side_outputs, cpa_maps)``: (B, out_channels, H, W), a list of (B, out_channels, H, W) and a list of
        (B, 1, H, W) (or (B, 1, grid, grid)).

    Raises:
        ValueError: when the channel count matches neither layout.
    """
    channels = output.shape[1]
    expected = out_channels * (1 + num_side) + num_cpa
    if channels == expected:
        side = [output[:, out_channels * (1 + i):out_channels * (2 + i)] for i in range(num_side)]
        start = out_channels * (1 + num_side)
        cpa = [output[:, start + i:start + i + 1] for i in range(num_cpa)]
        if grid is not None:
            cpa = [F.adaptive_avg_pool2d(m, grid) for m in cpa]
        return output[:, :out_channels], side, cpa
    if channels == out_channels:
        return output, [], []
    raise ValueError(
        f"output has {channels} channels; expected {expected} (training layout: out_channels={out_channels}, "
        f"num_side={num_side}, num_cpa={num_cpa}) or {out_channels} (evaluation)."
    )


class _NoAttention(nn.Module):
    """Stand-in for :class:`CoarsePatchAttention` when CPA is off: identity, and an empty attention map."""

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x.new_zeros(0)


def _make_attention(kind: str, grid: int) -> nn.Module:
    """One encoder-stage attention module of kind ``kind`` (see ``ENCODER_ATTENTIONS``)."""
    if kind == "cpa":
        return CoarsePatchAttention(2, grid)
    if kind == "fine":
        return FineSpatialAttention(2, kernel_size=7)
    return _NoAttention()


def _make_fusion(kind: str, channels: int, depth: int, cff_reduction: int, cff_mlp_layout: str,
                 fusion_reduction: int, act: str | tuple) -> nn.Module:
    """One 2D/3D fusion module of kind ``kind`` (see ``FUSIONS``)."""
    if kind == "cff":
        return CrossDimensionFusion(channels, depth, cff_reduction, cff_mlp_layout, act=act)
    if kind == "cff_concat":
        return CFFConcatFusion(channels, depth, cff_reduction, cff_mlp_layout, act=act)
    if kind == "add":
        return AddFusion(channels, depth, act=act)
    if kind == "concat":
        return ConcatFusion(channels, depth, act=act)
    return SEAddFusion(channels, depth, fusion_reduction, act=act)


class AGMREncoder(nn.Module):
    """The encoder of AGMR-Net and TSRL-Net: D-UNet's 2D and 3D encoders with CPA at every 2D stage and CFF fusion.

    Stage order (thesis §3.1 and §4.1, ambiguity 10): E_Block (``DoubleConv``, dropout after stages 4 and 5) ->
    CPA (``A * F + F``) -> fusion with the 3D_Block feature at stages 2 and 3 (CFF, or D-UNet's SE-add when
    ``use_cff=False``). The stage output goes both to the skip connection and, max-pooled, to the next stage, so the
    decoder receives the CPA-attended features (§3.6.3 (2)).

    Attribute names follow :class:`~lesionlab.networks.nets.DUNet` (``enc2d``, ``enc3d``, ``fusion``), so with CPA and
    CFF off a D-UNet state dict loads after prefixing those keys with ``encoder.``.

    Args:
        in_channels: number of stacked slices (a positive multiple of 4).
        features: channels of the five encoder stages.
        use_cpa: coarse patch attention at all five 2D stages.
        use_cff: CFF (True) or D-UNet's SE-add (False) at stages 2 and 3.
        cpa_grid: CPA patches per axis.
        cff_reduction: CFF reduction rate ``R``.
        cff_mlp_layout: CFF MLP layout, ``"separate"`` or ``"shared"``.
        fusion_reduction: SE ratio of the SE-add fusion (only with ``use_cff=False``).
        dropout: dropout after encoder stages 4 and 5.
        raw_skips: also return the E_Block output before CPA/fusion, concatenated to each skip (see ``AGMRNet``'s
            ``skip_mode``).
        act: activation.
        norm: normalisation.
        encoder_attention: ``"cpa"``, ``"fine"`` (:class:`~lesionlab.networks.blocks.patch_attention.
            FineSpatialAttention`, unsupervised) or ``"none"``; ``None`` follows ``use_cpa``. The modules are in
            ``self.cpa`` whatever their kind.
        fusion: ``"cff"``, ``"add"``, ``"concat"``, ``"cff_concat"`` or ``"se_add"``; ``None`` follows ``use_cff``.
        stage_mdu_kernels: when given, a :class:`~lesionlab.networks.blocks.multiscale.MultiScaleConv` with these
            kernels (``C -> C``, same resolution) is applied to the output of stages 1-4 after CPA and fusion, before
            the skip and the pooling (``self.stage_mdu``; Table 3.8's "MDU in encoder stage").
        stage_mdu_dropout: dropout of each branch of those blocks.
    """

    def __init__(
        self,
        in_channels: int = 4,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        use_cpa: bool = True,
        use_cff: bool = True,
        cpa_grid: int = 6,
        cff_reduction: int = 8,
        cff_mlp_layout: str = "separate",
        fusion_reduction: int = 16,
        dropout: float = 0.3,
        raw_skips: bool = False,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        encoder_attention: str | None = None,
        fusion: str | None = None,
        stage_mdu_kernels: Sequence[int] | None = None,
        stage_mdu_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        features = tuple(int(f) for f in features)
        attention = _resolve_switch("encoder_attention", encoder_attention, "use_cpa", use_cpa, "cpa", "none",
                                    ENCODER_ATTENTIONS)
        fusion = _resolve_switch("fusion", fusion, "use_cff", use_cff, "cff", "se_add", FUSIONS)
        self.encoder_attention = attention
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
            [_make_fusion(fusion, features[i], in_channels // 2**i, cff_reduction, cff_mlp_layout, fusion_reduction,
                          act) for i in (1, 2)]
        )
        # parameter-free stand-ins keep forward scriptable (constant ModuleList indices) and the state dict unchanged
        self.cpa = nn.ModuleList([_make_attention(attention, cpa_grid) for _ in range(5)])
        self.stage_mdu = nn.ModuleList(
            [nn.Identity() if stage_mdu_kernels is None else
             MultiScaleConv(2, features[i], features[i], stage_mdu_kernels, stage_mdu_dropout, act, norm)
             for i in range(4)]
        )

    def forward(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor, list[torch.Tensor]]:
        """``x``: (B, S, H, W) slice stack.

        Returns:
            ``(skips, bottom, cpa_logits)``: the stage 1-4 outputs (shallowest first; with ``raw_skips`` each is the
            concatenation ``[stage output, E_Block output]``), the stage-5 output, and the five CPA logit maps
            (B, 1, grid, grid), stage 1 first (empty without CPA).
        """
        # 3D branch: the same stack as a one-channel volume (B, 1, S, H, W)
        t1 = self.enc3d[0](x.unsqueeze(1))
        t2 = self.enc3d[1](self.pool3d(t1))
        t3 = self.enc3d[2](self.pool3d(t2))
        raw: list[torch.Tensor] = []
        logits: list[torch.Tensor] = []

        r1 = self.enc2d[0](x)
        e1, a1 = self.cpa[0](r1)
        e1 = self.stage_mdu[0](e1)
        r2 = self.enc2d[1](self.pool2d(e1))
        e2, a2 = self.cpa[1](r2)
        e2 = self.stage_mdu[1](self.fusion[0](t2, e2))
        r3 = self.enc2d[2](self.pool2d(e2))
        e3, a3 = self.cpa[2](r3)
        e3 = self.stage_mdu[2](self.fusion[1](t3, e3))
        r4 = self.enc2d[3](self.pool2d(e3))
        e4, a4 = self.cpa[3](r4)
        e4 = self.stage_mdu[3](e4)
        r5 = self.enc2d[4](self.pool2d(e4))
        e5, a5 = self.cpa[4](r5)

        skips = [e1, e2, e3, e4]
        if self.raw_skips:
            raw = [r1, r2, r3, r4]
            skips = [torch.cat([s, r], dim=1) for s, r in zip(skips, raw)]
        if self.use_cpa:
            logits = [a1, a2, a3, a4, a5]
        return skips, e5, logits


class _DecoderBlock(nn.Module):
    """Upsampling (MDU or D-UNet's up-convolution), concatenation with the skip, ``DoubleConv`` to ``out_channels``.

    ``mdu_position="decoder"``: the MDU upsamples; ``"skip"``: D-UNet's up-convolution upsamples and a same-resolution
    :class:`~lesionlab.networks.blocks.multiscale.MultiScaleConv` (``self.skip_mdu``) processes the skip feature
    before the concatenation; ``"encoder"``: D-UNet's up-convolution only (the multi-scale blocks are in the encoder).
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        use_mdu: bool,
        mdu_kernels: Sequence[int],
        mdu_dropout: float,
        up_kernel_size: int,
        act: str | tuple,
        norm: str | tuple,
        mdu_position: str = "decoder",
    ) -> None:
        super().__init__()
        self.skip_mdu: nn.Module = nn.Identity()
        if use_mdu and mdu_position == "skip":
            self.skip_mdu = MultiScaleConv(2, skip_channels, skip_channels, mdu_kernels, mdu_dropout, act, norm)
        if use_mdu and mdu_position == "decoder":  # C' = C_in (ambiguity 19)
            self.up: nn.Module = MultiScaleDeconvUpsample(2, in_channels, in_channels, mdu_kernels, mdu_dropout, act,
                                                          norm)
            up_channels = in_channels
        else:
            self.up = UpConv(2, in_channels, out_channels, kernel_size=up_kernel_size, act=act)
            up_channels = out_channels
        self.conv = DoubleConv(2, up_channels + skip_channels, out_channels, act=act, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), self.skip_mdu(skip)], dim=1))


def _check_common_args(
    spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int], cpa_grid: int, dropout: float,
    mdu_dropout: float, mdu_kernels: Sequence[int], use_mdu: bool, skip_mode: str, skip_modes: tuple[str, ...],
    mdu_position: str = "decoder",
) -> tuple[int, ...]:
    """Argument checks shared by ``AGMRNet`` and ``TSRLNet``; returns ``features`` as a tuple of ints."""
    if spatial_dims != 2:
        raise ValueError(f"the network segments 2D slices of a stack: spatial_dims must be 2, got {spatial_dims}.")
    if in_channels < 4 or in_channels % 4:
        raise ValueError(f"in_channels (number of stacked slices) must be a positive multiple of 4, got {in_channels}.")
    if out_channels < 1:
        raise ValueError(f"out_channels must be >= 1, got {out_channels}.")
    feats = tuple(int(f) for f in features)
    if len(feats) != 5 or min(feats) < 1:
        raise ValueError(f"features must be 5 positive channel counts, got {feats}.")
    if cpa_grid < 1:
        raise ValueError(f"cpa_grid must be >= 1, got {cpa_grid}.")
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
    if not 0.0 <= mdu_dropout < 1.0:
        raise ValueError(f"mdu_dropout must be in [0, 1), got {mdu_dropout}.")
    kernels = tuple(int(k) for k in mdu_kernels)
    if mdu_position not in MDU_POSITIONS:
        raise ValueError(f"mdu_position must be one of {MDU_POSITIONS}, got {mdu_position!r}.")
    if not use_mdu and mdu_position != "decoder":
        raise ValueError(f"use_mdu=False contradicts mdu_position={mdu_position!r}.")
    if use_mdu:
        if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
            raise ValueError(f"mdu_kernels must be a non-empty sequence of positive odd integers, got {kernels}.")
        # the MDU's width: decoder inputs (stages 5..2) in the decoder, stage outputs 1..4 in the encoder / skips
        which, widths = ("features[1:]", feats[1:]) if mdu_position == "decoder" else ("features[:4]", feats[:4])
        if [f for f in widths if f % len(kernels)]:
            raise ValueError(f"with use_mdu and mdu_position={mdu_position!r}, {which} must be multiples of "
                             f"len(mdu_kernels)={len(kernels)}, got {widths}.")
    if skip_mode not in skip_modes:
        raise ValueError(f"skip_mode must be one of {skip_modes}, got {skip_mode!r}.")
    return feats


def _check_fusion_args(features: tuple[int, ...], use_cff: bool, cff_reduction: int, cff_mlp_layout: str,
                       fusion_reduction: int, fusion: str | None = None) -> None:
    """Checks of the fusion arguments, naming the network's argument rather than the block's."""
    kind = _resolve_switch("fusion", fusion, "use_cff", use_cff, "cff", "se_add", FUSIONS)
    if kind in ("add", "concat"):
        return
    if kind in ("cff", "cff_concat"):
        if cff_mlp_layout not in ("separate", "shared"):
            raise ValueError(f"cff_mlp_layout must be 'separate' or 'shared', got {cff_mlp_layout!r}.")
        width = 1 if cff_mlp_layout == "separate" else 2
        for f in features[1:3]:
            if cff_reduction < 1 or width * f // cff_reduction < 1:
                raise ValueError(f"cff_reduction={cff_reduction} is invalid for a fusion stage of {f} channels.")
    else:
        for f in features[1:3]:
            if fusion_reduction < 1 or f // fusion_reduction < 1:
                raise ValueError(f"fusion_reduction={fusion_reduction} is too large for a fusion stage of {f} "
                                 "channels.")


class AGMRNet(nn.Module):
    """AGMR-Net, the attention-guided multi-scale recovery network for 2.5D stroke-lesion segmentation.

    Du X, Ma K, Song Y. "AGMR-Net: Attention-guided multiscale recovery framework for stroke segmentation."
    Computerized Medical Imaging and Graphics 101 (2022) 102120, https://doi.org/10.1016/j.compmedimag.2022.102120;
    Ma Kunpeng, master's thesis, Anhui University (2023), Chapter 3 (seed 002).

    Mapping to the thesis (Fig. 3.1 itself is not available; seed_002.md §3.1):
        - backbone D-UNet (2D encoder of 5 stages on the slice stack, 3D encoder of 3 stages on the stack as a volume)
          -> ``self.encoder`` (:class:`AGMREncoder`), ``self.decoder``, ``self.head``, as in ``DUNet``;
        - CPA, §3.2 Eqs. 3.1-3.4, at all five 2D encoder stages -> ``self.encoder.cpa``
          (:class:`~lesionlab.networks.blocks.CoarsePatchAttention`); its maps are supervised by
          :func:`~lesionlab.networks.blocks.prior_location_map` (Eq. 3.15, in the loss);
        - CFF, §3.3 Eqs. 3.5-3.8, replacing D-UNet's SE-add fusion at stages 2 and 3 -> ``self.encoder.fusion``
          (:class:`~lesionlab.networks.blocks.CrossDimensionFusion`);
        - MDU, §3.4 Fig. 3.5, replacing the decoder's up-convolution -> ``self.decoder[i].up``
          (:class:`~lesionlab.networks.blocks.MultiScaleDeconvUpsample`), then concatenation with the skip and
          D-UNet's BN_block ``DoubleConv(C' + c -> c)``, c = 256, 128, 64, 32; head 1x1 conv -> ``self.head``.

    Each module is switchable, so the ablations are constructor arguments: ``use_cpa``, ``use_cff``, ``use_mdu`` (the
    rows of Table 3.1; Table 3.4's "D-UNet + CPA"; Table 4.1's baseline is ``use_mdu=False``), ``cff_reduction``
    (Table 3.6, R = 8 / 32) and ``mdu_kernels`` (Table 3.7: ``(3, 5, 7, 9)``, ``(3,)``, ``(5,)``, ``(7,)``, ``(9,)``).
    With all three off the network is ``DUNet`` (same modules, same 9,503,779 parameters; a D-UNet state dict loads
    after prefixing ``enc2d.``, ``enc3d.``, ``fusion.`` with ``encoder.``). The other comparison rows are the string
    options ``encoder_attention``, ``fusion`` and ``mdu_position`` (below).

    Other comparison rows (Tables 3.4, 3.5, 3.8; the thesis names them but gives no architecture, so each is the
    simplest reading that changes only the compared module, documented here and in the blocks):
        - Table 3.4 "D-UNet + FA" (fine-grained, pixel-level spatial attention): ``encoder_attention="fine"`` with
          ``use_cff=False, use_mdu=False``. At each of the five encoder stages, in CPA's place,
          :class:`~lesionlab.networks.blocks.patch_attention.FineSpatialAttention`: CBAM's spatial attention (ref.
          [33], the source of Eq. 3.1's channel average): channel mean and max -> 7 x 7 conv ``2 -> 1`` without bias ->
          sigmoid -> ``A * F + F`` (CPA's residual form). It is not supervised (no prior map exists at pixel level
          other than the label itself, and the row is introduced as unsupervised attention), so the train-mode output
          has no attention channels and the loss has no CPA term. 98 parameters per stage: 9,504,269 in all.
          ``use_cpa`` still works: ``encoder_attention=None`` (default) means ``"cpa"`` if ``use_cpa`` else ``"none"``;
          an explicit value wins, and ``use_cpa=False`` with ``encoder_attention="cpa"`` is rejected.
        - Table 3.5 (fusions inside AGMR-Net, CPA and MDU kept): ``fusion="add"``
          (:class:`~lesionlab.networks.blocks.dimension_fusion.AddFusion`, dimension transform of the 3D feature plus
          the 2D feature, no attention; 22,999,009 parameters), ``"concat"``
          (:class:`~lesionlab.networks.blocks.dimension_fusion.ConcatFusion`, ``[T(f3d), f2d]`` -> 1 x 1 conv
          ``2C -> C`` with bias, no norm / activation; 23,040,161), ``"cff_concat"``
          (:class:`~lesionlab.networks.blocks.dimension_fusion.CFFConcatFusion`, CFF's two channel weightings Eqs.
          3.5-3.7, then the same concatenation and 1 x 1 conv instead of Eq. 3.8's add; 23,055,953). ``"cff"`` is
          the default and ``"se_add"`` D-UNet's fusion; ``fusion=None`` (default) follows ``use_cff`` (``"cff"`` /
          ``"se_add"``), an explicit value wins, and ``use_cff=False`` with ``fusion="cff"`` is rejected.
        - Table 3.8 (MDU position, CPA and CFF kept): ``mdu_position="encoder"`` or ``"skip"``. A stride-2 transposed
          convolution cannot keep the resolution, so the MDU becomes its same-resolution form
          :class:`~lesionlab.networks.blocks.multiscale.MultiScaleConv` (the ``mdu_kernels`` branches as stride-1
          convolutions ``C -> C/n``, each with bias, BN, ReLU, dropout ``mdu_dropout``, concatenated), and the
          decoder upsamples with D-UNet's 3 x 3 up-convolution (``up_kernel_size``). "encoder": one block on each
          of the encoder stages 1-4 after CPA and fusion, before the skip and the pooling (``self.encoder.stage_mdu``;
          C = 32, 64, 128, 256, the widths that the four decoder MDUs would serve); "skip": one block on each skip
          feature before the concatenation (``self.decoder[i].skip_mdu``; same widths, the pooled path is left
          alone). Both have 13,091,281 parameters (the four blocks at C = 32..256 have a quarter of the weights of
          the decoder MDUs at C = 64..512). ``features[:4]`` must then be multiples of ``len(mdu_kernels)``;
          ``use_mdu=False`` with a position other than ``"decoder"`` is rejected.

    Decisions on the thesis's gaps (seed_002.md §9):
        - 7: ReLU between CPA's FC layers (36 -> 18 -> 36 with biases);
        - 8: each stage has its own CPA weights (5 modules);
        - 9: nearest / block upsampling of the 6 x 6 map (Eq. 3.4), not bilinear;
        - 10: CPA before the 2D/3D fusion; the fused, attended feature feeds the skip and the next stage;
        - 11, 12: the network outputs the 5 CPA logit maps (see below); BCE, its reduction and the 0.15 weight belong
          to the loss;
        - 13: CFF MLPs ``2C -> C/R -> C`` twice, with biases (``cff_mlp_layout="separate"``); ``"shared"`` gives the
          §3.6.4 formula's layout; see :class:`~lesionlab.networks.blocks.CrossDimensionFusion` for the arithmetic;
        - 14, 15: ReLU inside the CFF MLPs, biases on; ReLU after the 3 x 3 ``D -> C`` conv of the dimension transform;
        - 16: CFF at stages 2 and 3 only (C = 64, 128), where D-UNet fuses;
        - 17: MDU dropout 0.1 (``mdu_dropout``), after BN and ReLU of each branch;
        - 18: MDU padding ``(k - 1) / 2``, output padding 1;
        - 19: ``C' = C_in`` (512, 256, 128, 64), each of the 4 branches ``C_in / 4`` channels;
        - 20: see "Parameter counts" (``skip_mode``);
        - 21: D-UNet's 3 x 3 up-convolution (used when ``use_mdu=False``) is followed by ReLU.

    Parameter counts (BN = 2 per channel, buffers not counted, as Table 4.3). The thesis's totals are 23,799,283
    (``mdu_kernels=(3, 5, 7, 9)``) and 12,658,163 / 18,228,723 / 26,584,563 / 37,725,683 (single size 3 / 5 / 7 / 9).
    This implementation gives 23,014,801 and 11,873,681 / 17,444,241 / 25,800,081 / 36,941,201: every difference between
    the Table 3.7 variants is reproduced exactly (``delta(k^2) * 348,160``), and every total is short by the same
    784,482. No reading of the text closes that gap exactly. 783,360 of it is ``sum 9c^2`` (c = 256, 128, 64, 32), the
    weights of one more c-channel input to each decoder block's first 3 x 3 convolution; the thesis's FLOPs agree (thop
    legacy MACs of convolutions, BN and linear layers, the convention that reproduces D-UNet's 18,089,374,976:
    41,504,667,216 here against 42,872,026,884, a gap of 1,367,359,668 of which 9c^2 at each decoder resolution is
    1,358,954,496). None of the combinations tried of the other open choices (biases of CPA / CFF / MDU, CFF layout,
    an extra conv + BN instead of the extra input, pooling and upsampling modules counted by thop) closes both
    remainders exactly. ``skip_mode="attended+raw"``
    implements that hypothesis (the E_Block output before CPA/fusion is concatenated to each skip: decoder input
    ``C' + 2c``) and leaves 1,122 parameters (23,798,161; single-size 12,657,041 / 18,227,601 / 26,583,441 /
    37,724,561) and 8,405,172 MACs unexplained. It is not the default because the thesis says nothing of a second
    skip tensor. With ``use_mdu=False`` (Table 4.1's baseline, "AGMR-Net without MDU") the count is 9,521,201.

    Tensor layout (2.5D contract, as ``DUNet``): input (B, S, H, W), the S = ``in_channels`` neighbouring slices as
    channels, ordered ``[i-2, i-1, i, i+1]``; the 3D branch sees (B, 1, S, H, W). Output: logits of the centre slice.

    Outputs (house rule 5; no sigmoid inside):
        - eval mode: one tensor (B, out_channels, H, W), the segmentation logits;
        - train mode with CPA: one tensor (B, out_channels + 5, H, W): channels ``[0, out_channels)`` the logits, then
          the CPA *logits* of stages 1..5, one channel each, block-upsampled (nearest) from 6 x 6 to H x W. Use
          :meth:`split_train_output` (or the module-level :func:`split_train_output`) to take it apart. Without CPA the
          train-mode output is the logits alone.

    Input size: H and W multiples of ``16 * cpa_grid`` with CPA (96 for the default 6 x 6 grid, because the stage-5
    map, H/16, must split into 6 equal patches; the paper uses 192 x 192), of 16 without CPA. ``in_channels`` a multiple
    of 4 (the 3D branch pools the slice axis twice).

    Args:
        spatial_dims: must be 2. Defaults to 2.
        in_channels: number of stacked slices ``S``. Defaults to 4.
        out_channels: output channels (1 for the paper's binary output). Defaults to 1.
        features: channels of the five encoder stages. Defaults to ``(32, 64, 128, 256, 512)``.
        use_cpa: coarse patch attention at the five encoder stages. Defaults to True.
        use_cff: cross-dimensional fusion instead of D-UNet's SE-add at stages 2 and 3. Defaults to True.
        use_mdu: multi-scale deconvolution upsampling instead of D-UNet's up-convolution. Defaults to True.
        mdu_kernels: MDU kernel sizes; ``features[1:]`` must be multiples of its length. Defaults to ``(3, 5, 7, 9)``.
        mdu_dropout: dropout of each MDU branch. Defaults to 0.1.
        cff_reduction: CFF reduction rate ``R``. Defaults to 8.
        cff_mlp_layout: ``"separate"`` or ``"shared"`` CFF MLPs. Defaults to ``"separate"``.
        cpa_grid: CPA patches per axis. Defaults to 6.
        fusion_reduction: SE ratio of D-UNet's fusion, used when ``use_cff=False``. Defaults to 16.
        dropout: dropout after encoder stages 4 and 5. Defaults to 0.3.
        up_kernel_size: kernel of D-UNet's up-convolution, used when ``use_mdu=False``. Defaults to 3.
        skip_mode: ``"attended"`` (the stage output, after CPA and fusion) or ``"attended+raw"`` (that and the E_Block
            output before CPA/fusion, concatenated; the parameter-gap hypothesis above). Defaults to ``"attended"``.
        act: activation. Defaults to ReLU.
        norm: normalisation. Defaults to batch norm.
        encoder_attention: ``"cpa"``, ``"fine"`` or ``"none"`` (see "Other comparison rows"); ``None`` follows
            ``use_cpa``. Defaults to None.
        fusion: ``"cff"``, ``"add"``, ``"concat"``, ``"cff_concat"`` or ``"se_add"``; ``None`` follows ``use_cff``.
            Defaults to None.
        mdu_position: ``"decoder"``, ``"encoder"`` or ``"skip"`` (only with ``use_mdu``). Defaults to ``"decoder"``.

    Example::

        >>> net = AGMRNet()
        >>> net.eval()(torch.zeros(2, 4, 192, 192)).shape
        torch.Size([2, 1, 192, 192])
        >>> out = net.train()(torch.zeros(2, 4, 192, 192))
        >>> logits, _, cpa_maps = AGMRNet.split_train_output(out, out_channels=1, grid=6)
        >>> out.shape, logits.shape, len(cpa_maps), cpa_maps[0].shape
        (torch.Size([2, 6, 192, 192]), torch.Size([2, 1, 192, 192]), 5, torch.Size([2, 1, 6, 6]))
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 4,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        use_cpa: bool = True,
        use_cff: bool = True,
        use_mdu: bool = True,
        mdu_kernels: Sequence[int] = (3, 5, 7, 9),
        mdu_dropout: float = 0.1,
        cff_reduction: int = 8,
        cff_mlp_layout: str = "separate",
        cpa_grid: int = 6,
        fusion_reduction: int = 16,
        dropout: float = 0.3,
        up_kernel_size: int = 3,
        skip_mode: str = "attended",
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
        encoder_attention: str | None = None,
        fusion: str | None = None,
        mdu_position: str = "decoder",
    ) -> None:
        super().__init__()
        feats = _check_common_args(spatial_dims, in_channels, out_channels, features, cpa_grid, dropout, mdu_dropout,
                                   mdu_kernels, use_mdu, skip_mode, ("attended", "attended+raw"), mdu_position)
        attention = _resolve_switch("encoder_attention", encoder_attention, "use_cpa", use_cpa, "cpa", "none",
                                    ENCODER_ATTENTIONS)
        fusion = _resolve_switch("fusion", fusion, "use_cff", use_cff, "cff", "se_add", FUSIONS)
        _check_fusion_args(feats, use_cff, cff_reduction, cff_mlp_layout, fusion_reduction, fusion)
        up_conv = not use_mdu or mdu_position != "decoder"
        if up_conv and (up_kernel_size < 1 or up_kernel_size % 2 == 0):
            raise ValueError(f"up_kernel_size must be a positive odd integer, got {up_kernel_size}.")
        self.out_channels = out_channels
        self.encoder_attention = attention
        self.fusion_kind = fusion
        self.mdu_position = mdu_position if use_mdu else "none"
        self.use_cpa = attention == "cpa"
        self.cpa_grid = cpa_grid
        self.num_cpa = 5 if self.use_cpa else 0
        raw = skip_mode == "attended+raw"
        stage_mdu = mdu_kernels if use_mdu and mdu_position == "encoder" else None
        self.encoder = AGMREncoder(in_channels, feats, use_cpa, use_cff, cpa_grid, cff_reduction, cff_mlp_layout,
                                   fusion_reduction, dropout, raw, act, norm, attention, fusion, stage_mdu,
                                   mdu_dropout)
        self.decoder = nn.ModuleList(
            [
                _DecoderBlock(feats[i], feats[i - 1] * (2 if raw else 1), feats[i - 1], use_mdu, mdu_kernels,
                              mdu_dropout, up_kernel_size, act, norm, mdu_position)
                for i in (4, 3, 2, 1)
            ]
        )
        self.head = Conv[Conv.CONV, 2](feats[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, S, H, W) slice stack.

        Returns:
            eval mode: logits (B, out_channels, H, W); train mode with CPA (not with fine attention):
            (B, out_channels + 5, H, W), the logits and the five block-upsampled CPA logit maps (see the class docstring
            and :meth:`split_train_output`).
        """
        skips, f, cpa_logits = self.encoder(x)
        for i, block in enumerate(self.decoder):
            f = block(f, skips[3 - i])
        logits = self.head(f)
        if self.training and self.use_cpa:
            size = [x.shape[2], x.shape[3]]
            return torch.cat([logits] + [block_upsample(a, size) for a in cpa_logits], dim=1)
        return logits

    @staticmethod
    def split_train_output(
        output: torch.Tensor, out_channels: int = 1, num_cpa: int = 5, grid: int | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """``(logits, [], cpa_maps)`` from an AGMR-Net output; :func:`split_train_output` with ``num_side=0``.

        ``num_cpa`` is 5 with ``use_cpa=True`` and 0 without; ``grid`` (e.g. 6) pools the CPA maps back to the grid.
        """
        return split_train_output(output, out_channels, 0, num_cpa, grid)
