"""AGMR-Net: D-UNet with coarse patch attention, cross-dimensional fusion and multi-scale deconvolution upsampling."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv

from lesionlab.networks.blocks import DoubleConv, DUNetEncoder, MultiScaleDeconvUpsample, UpConv, block_upsample
from lesionlab.networks.blocks.dunet_encoder import FUSIONS, STAGE_ATTENTIONS
from lesionlab.networks.blocks.multiscale import MultiScaleConv
from lesionlab.networks.nets.slice_stack import (
    check_choice,
    check_encoder,
    check_multiscale,
    check_slice_stack,
    check_upsampling,
    split_train_output,
)

__all__ = ["AGMRNet", "split_train_output", "STAGE_ATTENTIONS", "FUSIONS", "MDU_PLACES", "SKIP_MODES"]

#: values of ``mdu``: the MDU upsamples in the decoder (§3.4), same-resolution blocks in the encoder or on the skips
#: (Table 3.8), or no multi-scale block (D-UNet's up-convolution)
MDU_PLACES = ("decoder", "encoder", "skip", "none")
#: values of ``skip_mode`` (see "Parameter counts")
SKIP_MODES = ("attended", "attended+raw")


class _DecoderBlock(nn.Module):
    """Upsampling (MDU or D-UNet's up-convolution), concatenation with the skip, ``DoubleConv`` to ``out_channels``.

    ``mdu="decoder"``: the MDU upsamples (``C' = C_in``, ambiguity 19); ``"skip"``: D-UNet's up-convolution upsamples
    and a same-resolution :class:`~lesionlab.networks.blocks.multiscale.MultiScaleConv` (``self.skip_mdu``) processes
    the skip feature before the concatenation; ``"encoder"`` and ``"none"``: D-UNet's up-convolution only.
    """

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        mdu: str,
        mdu_kernels: Sequence[int],
        mdu_dropout: float,
        up_kernel_size: int,
        act: str | tuple,
        norm: str | tuple,
    ) -> None:
        super().__init__()
        self.skip_mdu: nn.Module = nn.Identity()
        if mdu == "skip":
            self.skip_mdu = MultiScaleConv(2, skip_channels, skip_channels, mdu_kernels, mdu_dropout, act, norm)
        if mdu == "decoder":
            self.up: nn.Module = MultiScaleDeconvUpsample(2, in_channels, in_channels, mdu_kernels, mdu_dropout, act,
                                                          norm)
            up_channels = in_channels
        else:
            self.up = UpConv(2, in_channels, out_channels, kernel_size=up_kernel_size, act=act)
            up_channels = out_channels
        self.conv = DoubleConv(2, up_channels + skip_channels, out_channels, act=act, norm=norm)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        return self.conv(torch.cat([self.up(x), self.skip_mdu(skip)], dim=1))


class AGMRNet(nn.Module):
    """AGMR-Net, the attention-guided multi-scale recovery network for 2.5D stroke-lesion segmentation.

    Du X, Ma K, Song Y. "AGMR-Net: Attention-guided multiscale recovery framework for stroke segmentation."
    Computerized Medical Imaging and Graphics 101 (2022) 102120, https://doi.org/10.1016/j.compmedimag.2022.102120;
    Ma Kunpeng, master's thesis, Anhui University (2023), Chapter 3 (seed 002).

    Mapping to the thesis (Fig. 3.1 itself is not available; seed_002.md §3.1):
        - backbone D-UNet (2D encoder of 5 stages on the slice stack, 3D encoder of 3 stages on the stack as a volume)
          -> ``self.encoder`` (:class:`~lesionlab.networks.blocks.DUNetEncoder`, D-UNet's encoder), ``self.decoder``,
          ``self.head``, as in ``DUNet``;
        - CPA, §3.2 Eqs. 3.1-3.4, at all five 2D encoder stages -> ``self.encoder.attention``
          (:class:`~lesionlab.networks.blocks.CoarsePatchAttention`); its maps are supervised by
          :func:`~lesionlab.networks.blocks.prior_location_map` (Eq. 3.15, in the loss);
        - CFF, §3.3 Eqs. 3.5-3.8, replacing D-UNet's SE-add fusion at stages 2 and 3 -> ``self.encoder.fusion``
          (:class:`~lesionlab.networks.blocks.CrossDimensionFusion`);
        - MDU, §3.4 Fig. 3.5, replacing the decoder's up-convolution -> ``self.decoder[i].up``
          (:class:`~lesionlab.networks.blocks.MultiScaleDeconvUpsample`), then concatenation with the skip and
          D-UNet's BN_block ``DoubleConv(C' + c -> c)``, c = 256, 128, 64, 32; head 1x1 conv -> ``self.head``.

    One switch per module, so the ablations are constructor arguments: ``encoder_attention`` (``"cpa"`` / ``"none"``),
    ``fusion`` (``"cff"`` / ``"se_add"``), ``mdu`` (``"decoder"`` / ``"none"``) give the rows of Table 3.1 (Table
    3.4's "D-UNet + CPA"; Table 4.1's baseline is ``mdu="none"``), ``cff_reduction``
    (Table 3.6, R = 8 / 32) and ``mdu_kernels`` (Table 3.7: ``(3, 5, 7, 9)``, ``(3,)``, ``(5,)``, ``(7,)``, ``(9,)``).
    With all three off (``encoder_attention="none", fusion="se_add", mdu="none"``) the network is ``DUNet`` (same
    modules, same 9,503,779 parameters; a D-UNet state dict loads as it is). The other comparison rows are further
    values of the same three switches (below).

    Other comparison rows (Tables 3.4, 3.5, 3.8; the thesis names them but gives no architecture, so each is the
    simplest reading that changes only the compared module, documented here and in the blocks):
        - Table 3.4 "D-UNet + FA" (fine-grained, pixel-level spatial attention): ``encoder_attention="fine"`` with
          ``fusion="se_add", mdu="none"``. At each of the five encoder stages, in CPA's place,
          :class:`~lesionlab.networks.blocks.patch_attention.FineSpatialAttention`: CBAM's spatial attention (ref.
          [33], the source of Eq. 3.1's channel average): channel mean and max -> 7 x 7 conv ``2 -> 1`` without bias ->
          sigmoid -> ``A * F + F`` (CPA's residual form). It is not supervised (no prior map exists at pixel level
          other than the label itself, and the row is introduced as unsupervised attention), so the train-mode output
          has no attention channels and the loss has no CPA term. 98 parameters per stage: 9,504,269 in all.
        - Table 3.5 (fusions inside AGMR-Net, CPA and MDU kept): ``fusion="add"``
          (:class:`~lesionlab.networks.blocks.dimension_fusion.AddFusion`, dimension transform of the 3D feature plus
          the 2D feature, no attention; 22,999,009 parameters), ``"concat"``
          (:class:`~lesionlab.networks.blocks.dimension_fusion.ConcatFusion`, ``[T(f3d), f2d]`` -> 1 x 1 conv
          ``2C -> C`` with bias, no norm / activation; 23,040,161), ``"cff_concat"``
          (:class:`~lesionlab.networks.blocks.dimension_fusion.CFFConcatFusion`, CFF's two channel weightings Eqs.
          3.5-3.7, then the same concatenation and 1 x 1 conv instead of Eq. 3.8's add; 23,055,953). ``"cff"`` is
          the default and ``"se_add"`` D-UNet's fusion.
        - Table 3.8 (MDU position, CPA and CFF kept): ``mdu="encoder"`` or ``"skip"``. A stride-2 transposed
          convolution cannot keep the resolution, so the MDU becomes its same-resolution form
          :class:`~lesionlab.networks.blocks.multiscale.MultiScaleConv` (the ``mdu_kernels`` branches as stride-1
          convolutions ``C -> C/n``, each with bias, BN, ReLU, dropout ``mdu_dropout``, concatenated), and the
          decoder upsamples with D-UNet's 3 x 3 up-convolution (``up_kernel_size``). "encoder": one block on each
          of the encoder stages 1-4 after CPA and fusion, before the skip and the pooling (``self.encoder.stage_mdu``;
          C = 32, 64, 128, 256, the widths that the four decoder MDUs would serve); "skip": one block on each skip
          feature before the concatenation (``self.decoder[i].skip_mdu``; same widths, the pooled path is left
          alone). Both have 13,091,281 parameters (the four blocks at C = 32..256 have a quarter of the weights of
          the decoder MDUs at C = 64..512). ``features[:4]`` must then be multiples of ``len(mdu_kernels)``.

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
        - 21: D-UNet's 3 x 3 up-convolution (used unless ``mdu="decoder"``) is followed by ReLU.

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
    skip tensor. With ``mdu="none"`` (Table 4.1's baseline, "AGMR-Net without MDU") the count is 9,521,201.

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
        encoder_attention: attention after each encoder stage: ``"cpa"`` (coarse patch attention), ``"fine"``
            (Table 3.4's pixel-level attention) or ``"none"``. Defaults to ``"cpa"``.
        fusion: 2D/3D fusion at stages 2 and 3: ``"cff"``, ``"add"``, ``"concat"``, ``"cff_concat"`` or ``"se_add"``
            (D-UNet's). Defaults to ``"cff"``.
        mdu: where the multi-scale block is: ``"decoder"`` (the MDU upsamples), ``"encoder"`` or ``"skip"`` (same-
            resolution blocks, Table 3.8; the decoder then upsamples with D-UNet's up-convolution) or ``"none"``
            (D-UNet's up-convolution only). Defaults to ``"decoder"``.
        mdu_kernels: kernel sizes of the multi-scale block; the widths it serves (``features[1:]`` in the decoder,
            ``features[:4]`` in the encoder or the skips) must be multiples of its length. Defaults to ``(3, 5, 7, 9)``.
        mdu_dropout: dropout of each MDU branch. Defaults to 0.1.
        cff_reduction: CFF reduction rate ``R``. Defaults to 8.
        cff_mlp_layout: ``"separate"`` or ``"shared"`` CFF MLPs. Defaults to ``"separate"``.
        cpa_grid: CPA patches per axis. Defaults to 6.
        fusion_reduction: SE ratio of D-UNet's fusion (``fusion="se_add"``). Defaults to 16.
        dropout: dropout after encoder stages 4 and 5. Defaults to 0.3.
        up_kernel_size: kernel of D-UNet's up-convolution (unless ``mdu="decoder"``). Defaults to 3.
        skip_mode: ``"attended"`` (the stage output, after CPA and fusion) or ``"attended+raw"`` (that and the E_Block
            output before CPA/fusion, concatenated; the parameter-gap hypothesis above). Defaults to ``"attended"``.
        act: activation. Defaults to ReLU.
        norm: normalisation. Defaults to batch norm.

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
        encoder_attention: str = "cpa",
        fusion: str = "cff",
        mdu: str = "decoder",
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
    ) -> None:
        super().__init__()
        feats = check_slice_stack(spatial_dims, in_channels, out_channels, features)
        check_choice("encoder_attention", encoder_attention, STAGE_ATTENTIONS)
        check_choice("mdu", mdu, MDU_PLACES)
        check_choice("skip_mode", skip_mode, SKIP_MODES)
        check_encoder(feats, fusion, cff_reduction, cff_mlp_layout, fusion_reduction, cpa_grid, dropout)
        mdu_kernels = check_upsampling(mdu, mdu_kernels, mdu_dropout, up_kernel_size, feats)
        if mdu in ("encoder", "skip"):  # same-resolution blocks on the stage outputs 1..4
            mdu_kernels = check_multiscale(mdu_kernels, feats[:4], f"with mdu={mdu!r}, features[:4]")
        self.out_channels = out_channels
        self.encoder_attention = encoder_attention
        self.fusion_kind = fusion
        self.mdu = mdu
        self.use_cpa = encoder_attention == "cpa"
        self.cpa_grid = cpa_grid
        self.num_cpa = 5 if self.use_cpa else 0
        raw = skip_mode == "attended+raw"
        self.encoder = DUNetEncoder(
            in_channels, feats, attention=encoder_attention, fusion=fusion, cpa_grid=cpa_grid,
            cff_reduction=cff_reduction, cff_mlp_layout=cff_mlp_layout, fusion_reduction=fusion_reduction,
            dropout=dropout, raw_skips=raw, stage_mdu_kernels=mdu_kernels if mdu == "encoder" else None,
            stage_mdu_dropout=mdu_dropout, act=act, norm=norm,
        )
        self.decoder = nn.ModuleList(
            [
                _DecoderBlock(feats[i], feats[i - 1] * (2 if raw else 1), feats[i - 1], mdu=mdu,
                              mdu_kernels=mdu_kernels, mdu_dropout=mdu_dropout, up_kernel_size=up_kernel_size, act=act,
                              norm=norm)
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

        ``num_cpa`` is 5 with ``encoder_attention="cpa"`` and 0 otherwise; ``grid`` (e.g. 6) pools the CPA maps back
        to the grid.
        """
        return split_train_output(output, out_channels, 0, num_cpa, grid)
