"""TSRL-Net: AGMR-Net's encoder with coarse-grained residual learning and side-output deep supervision."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.layers.factories import Conv

from lesionlab.networks.blocks import (
    CoarseResidualLearning,
    DoubleConv,
    DUNetEncoder,
    MultiScaleDeconvUpsample,
    UpConv,
    block_upsample,
)
from lesionlab.networks.nets.slice_stack import (
    check_choice,
    check_encoder,
    check_slice_stack,
    check_upsampling,
    split_train_output,
)

__all__ = ["TSRLNet", "RESIDUAL_ATTENTIONS", "UPSAMPLINGS", "SKIP_MODES"]

#: values of ``residual_attention``: CRL (RA + PA, §4.2), reverse attention only, positive attention only, none
RESIDUAL_ATTENTIONS = ("crl", "ra", "pa", "none")
#: values of ``mdu``: deconvolution upsampling with ``C' = C_in`` (``mdu_kernels``), or D-UNet's up-convolution
UPSAMPLINGS = ("decoder", "none")
#: values of ``skip_mode``: ``[up, O_n]`` or ``[up, C_n, O_n]``
SKIP_MODES = ("replace", "both")


class _TSRLDecoderBlock(nn.Module):
    """Upsampling -> side head ``P_n`` -> CRL on the skip -> concatenation -> ``DoubleConv`` (one TSRL-Net level)."""

    def __init__(
        self,
        in_channels: int,
        skip_channels: int,
        out_channels: int,
        *,
        num_classes: int,
        mdu: str,
        mdu_kernels: Sequence[int],
        mdu_dropout: float,
        up_kernel_size: int,
        with_head: bool,
        attention: str,
        detach_attention: bool,
        keep_plain_skip: bool,
        act: str | tuple,
        norm: str | tuple,
    ) -> None:
        super().__init__()
        if mdu == "decoder":  # C' = C_in, as AGMR-Net's MDU
            self.up: nn.Module = MultiScaleDeconvUpsample(2, in_channels, in_channels, mdu_kernels, mdu_dropout, act,
                                                          norm)
            up_channels = in_channels
        else:
            self.up = UpConv(2, in_channels, out_channels, kernel_size=up_kernel_size, act=act)
            up_channels = out_channels
        self.num_classes = num_classes
        self.with_head = with_head
        self.use_attention = attention != "none"
        self.keep_plain_skip = keep_plain_skip
        # parameter-free placeholders keep forward scriptable when a part is off
        self.side_head: nn.Module = (
            Conv[Conv.CONV, 2](up_channels, num_classes, kernel_size=1) if with_head else nn.Identity()
        )
        # with attention "none" the (parameter-free) CRL module exists only so that forward scripts; it is never called
        self.crl = CoarseResidualLearning(attention if self.use_attention else "crl", detach_attention)
        n_skips = 2 if keep_plain_skip and self.use_attention else 1
        self.conv = DoubleConv(2, up_channels + n_skips * skip_channels, out_channels, act=act, norm=norm)

    def _foreground(self, side: torch.Tensor) -> torch.Tensor:
        """Foreground probability of the side logits: sigmoid (one class) or 1 - softmax background (several)."""
        if self.num_classes == 1:
            return torch.sigmoid(side)
        return 1.0 - torch.softmax(side, dim=1)[:, :1]

    def forward(self, x: torch.Tensor, skip: torch.Tensor, patch_attention: torch.Tensor) -> tuple[torch.Tensor,
                                                                                                     torch.Tensor]:
        """Returns ``(decoder feature, side logits)``; the side logits are empty without a head."""
        up = self.up(x)
        side = up.new_zeros(0)
        if self.with_head:
            side = self.side_head(up)
        parts = [up]
        if self.use_attention:
            if self.keep_plain_skip:
                parts.append(skip)
            prob = self._foreground(side) if self.with_head else side
            parts.append(self.crl(skip, prob, patch_attention))
        else:
            parts.append(skip)
        return self.conv(torch.cat(parts, dim=1)), side


class TSRLNet(nn.Module):
    """TSRL-Net, the target-aware supervised residual learning network for 2.5D stroke-lesion segmentation.

    Li L, Ma K, Song Y, Du X. "TSRL-Net: Target-aware supervision residual learning for stroke segmentation."
    Computers in Biology and Medicine 159 (2023) 106840, https://doi.org/10.1016/j.compbiomed.2023.106840; Ma Kunpeng,
    master's thesis, Anhui University (2023), Chapter 4 (seed 002). The TAL loss (Eqs. 4.4-4.8) is not part of the
    network.

    Mapping to the thesis (Fig. 4.1 itself is not available; seed_002.md §3.2):
        - E_Block / 3D_Block encoders with CPA at every 2D stage and CFF at stages 2, 3 (AGMR-Net's encoder, §4.1)
          -> ``self.encoder`` (:class:`~lesionlab.networks.blocks.DUNetEncoder` with ``attention="cpa"``);
        - "each upsampling also outputs a side-output prediction map": a 1 x 1 conv head on the upsampled feature of
          decoder level n (n = 1 coarsest, 24 x 24 at 192 input, ... n = 4, 192 x 192) -> ``self.decoder[n].side_head``,
          giving the side logits and ``P_n`` = sigmoid (one class) or 1 - softmax background (several);
        - CRL, §4.2 Eqs. 4.1-4.3, ``O_n = C_n * CPA_5 + C_n^2 * (1 - P_n)`` on the skip feature ``C_n`` ->
          ``self.decoder[n].crl`` (:class:`~lesionlab.networks.blocks.CoarseResidualLearning`), with ``CPA_5`` the
          sigmoid of the deepest encoder stage's CPA logits;
        - D_Block n: ``DoubleConv`` on ``[upsampled feature, O_n]`` -> ``self.decoder[n].conv``; head 1 x 1 conv ->
          ``self.head``.

    Decisions on the thesis's gaps (seed_002.md §9; the encoder's decisions 7-16 are those of ``AGMRNet``):
        - 22: what replaces AGMR-Net's MDU is not stated. Default: a single 3 x 3 stride-2 deconvolution with
          ``C' = C_in`` plus BN, ReLU and dropout, i.e. AGMR-Net's "Size = 3" upsampling (``mdu="decoder"``,
          ``mdu_kernels=(3,)``), because the thesis's TSRL-Net count (12,854,496) is AGMR-Net "Size = 3" (12,658,163)
          plus 196,333, whereas D-UNet's up-convolution would put it near 9.5 M. ``mdu="none"`` gives D-UNet's
          up-convolution (Table 4.1's baseline is "AGMR-Net without MDU");
        - 23: side heads are 1 x 1 convolutions ``C' -> out_channels`` (with bias) on the upsampled feature;
        - 24: ``P_n`` is that side output (same resolution as ``C_n``), not the previous decoder output upsampled;
        - 25: ``P_n`` and ``CPA_5`` are not detached (``detach_attention=True`` detaches them);
        - 26: ``O_n`` replaces the plain skip in the concatenation (``skip_mode="replace"``); ``skip_mode="both"``
          concatenates ``[up, C_n, O_n]``;
        - 27: ``C_n^2`` is not normalised (the D_Block starts with Conv -> BN);
        - 28: ``CPA_5``'s grid map is block-upsampled (nearest) to each ``C_n``;
        - 29: side outputs are returned at full resolution (bilinear upsampling of the logits), so TAL's focus windows
          (beta = 4) apply at 192 x 192 as for the final output;
        - 30: four side outputs (one per upsampling, Eq. 4.8); the fifth "side output" of Fig. 4.9 is the final output.

    Ablations as arguments: ``residual_attention`` = ``"crl"`` (RA + PA), ``"ra"`` (Table 4.7 "+ Reverse Attention"),
    ``"pa"`` or ``"none"`` (Table 4.1's baseline; with ``deep_supervision=False`` and ``mdu="none"`` it is
    ``AGMRNet(mdu="none")``, 9,521,201 parameters).

    Parameter count: 11,874,645 with the defaults against the thesis's 12,854,496 (Table 4.3); the gap is 979,851 =
    784,482 (AGMR-Net's constant gap, see ``AGMRNet``) + 195,369 (the thesis's TSRL-minus-AGMR(Size = 3) difference,
    196,333, minus this implementation's side heads, 964 = sum of (C_in + 1) over C_in = 512, 256, 128, 64). With
    ``skip_mode="both"`` (one more c-channel input per decoder block, like AGMR-Net's ``"attended+raw"``) the count is
    12,658,005 and the gap 196,491. Neither the side heads nor anything else in the text accounts for ~196 k parameters.
    MACs (thop legacy convention, see ``AGMRNet``) at 1 x 4 x 192 x 192: 22,181,787,024 (``"both"``: 23,540,741,520)
    against the thesis's 23,916,119,454.

    Tensor layout: as ``AGMRNet`` / ``DUNet``, input (B, S, H, W) slice stack ``[i-2, i-1, i, i+1]``, output logits of
    the centre slice.

    Outputs (house rule 5; no sigmoid inside):
        - eval mode: one tensor (B, out_channels, H, W);
        - train mode: one tensor (B, out_channels * (1 + 4) + 5, H, W) with ``deep_supervision=True`` (else
          (B, out_channels + 5, H, W)): channels ``[0, out_channels)`` the logits; then the 4 side outputs,
          ``out_channels`` channels each, coarsest level first, logits bilinearly upsampled to H x W; then the 5 CPA
          logit maps of stages 1..5, block-upsampled (nearest) to H x W. :meth:`split_train_output` takes it apart.

    Input size: H and W multiples of ``16 * cpa_grid`` (96 for the 6 x 6 grid; the paper uses 192 x 192);
    ``in_channels`` a multiple of 4.

    Args:
        spatial_dims: must be 2. Defaults to 2.
        in_channels: number of stacked slices. Defaults to 4.
        out_channels: output channels (1 for the paper). Defaults to 1.
        features: channels of the five encoder stages. Defaults to ``(32, 64, 128, 256, 512)``.
        residual_attention: ``"crl"``, ``"ra"``, ``"pa"`` or ``"none"``. Defaults to ``"crl"``.
        deep_supervision: return the four side outputs in train mode. Defaults to True.
        detach_attention: detach ``P_n`` and ``CPA_5`` inside CRL. Defaults to False.
        skip_mode: ``"replace"`` (``[up, O_n]``) or ``"both"`` (``[up, C_n, O_n]``). Defaults to ``"replace"``.
        fusion: 2D/3D fusion at stages 2 and 3, as ``AGMRNet``'s (``"cff"``, ``"se_add"``, ...). Defaults to ``"cff"``.
        mdu: ``"decoder"`` (deconvolution upsampling with ``C' = C_in`` and ``mdu_kernels``) or ``"none"`` (D-UNet's
            up-convolution). Defaults to ``"decoder"``.
        mdu_kernels: kernel sizes of the upsampling deconvolutions. Defaults to ``(3,)``.
        mdu_dropout: dropout after each deconvolution branch. Defaults to 0.1.
        cff_reduction: CFF reduction rate. Defaults to 8.
        cff_mlp_layout: ``"separate"`` or ``"shared"``. Defaults to ``"separate"``.
        cpa_grid: CPA patches per axis. Defaults to 6.
        fusion_reduction: SE ratio when ``fusion="se_add"``. Defaults to 16.
        dropout: dropout after encoder stages 4 and 5. Defaults to 0.3.
        up_kernel_size: kernel of D-UNet's up-convolution when ``mdu="none"``. Defaults to 3.
        act: activation. Defaults to ReLU.
        norm: normalisation. Defaults to batch norm.

    Example::

        >>> net = TSRLNet()
        >>> net.eval()(torch.zeros(1, 4, 192, 192)).shape
        torch.Size([1, 1, 192, 192])
        >>> out = net.train()(torch.zeros(2, 4, 192, 192))
        >>> logits, sides, cpa_maps = TSRLNet.split_train_output(out, out_channels=1)
        >>> out.shape, len(sides), len(cpa_maps)
        (torch.Size([2, 10, 192, 192]), 4, 5)
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 4,
        out_channels: int = 1,
        features: Sequence[int] = (32, 64, 128, 256, 512),
        residual_attention: str = "crl",
        deep_supervision: bool = True,
        detach_attention: bool = False,
        skip_mode: str = "replace",
        fusion: str = "cff",
        mdu: str = "decoder",
        mdu_kernels: Sequence[int] = (3,),
        mdu_dropout: float = 0.1,
        cff_reduction: int = 8,
        cff_mlp_layout: str = "separate",
        cpa_grid: int = 6,
        fusion_reduction: int = 16,
        dropout: float = 0.3,
        up_kernel_size: int = 3,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        feats = check_slice_stack(spatial_dims, in_channels, out_channels, features)
        check_choice("residual_attention", residual_attention, RESIDUAL_ATTENTIONS)
        check_choice("skip_mode", skip_mode, SKIP_MODES)
        check_choice("mdu", mdu, UPSAMPLINGS)
        if skip_mode == "both" and residual_attention == "none":
            raise ValueError("skip_mode='both' needs residual attention (no O_n with residual_attention='none').")
        check_encoder(feats, fusion, cff_reduction, cff_mlp_layout, fusion_reduction, cpa_grid, dropout)
        mdu_kernels = check_upsampling(mdu, mdu_kernels, mdu_dropout, up_kernel_size, feats)
        self.out_channels = out_channels
        self.deep_supervision = deep_supervision
        self.num_side = 4 if deep_supervision else 0
        self.num_cpa = 5
        # the side heads exist when they are returned or when reverse attention needs P_n
        with_head = deep_supervision or residual_attention in ("crl", "ra")
        self.encoder = DUNetEncoder(
            in_channels, feats, attention="cpa", fusion=fusion, cpa_grid=cpa_grid, cff_reduction=cff_reduction,
            cff_mlp_layout=cff_mlp_layout, fusion_reduction=fusion_reduction, dropout=dropout, act=act, norm=norm,
        )
        self.decoder = nn.ModuleList(
            [
                _TSRLDecoderBlock(
                    feats[i], feats[i - 1], feats[i - 1], num_classes=out_channels, mdu=mdu, mdu_kernels=mdu_kernels,
                    mdu_dropout=mdu_dropout, up_kernel_size=up_kernel_size, with_head=with_head,
                    attention=residual_attention, detach_attention=detach_attention,
                    keep_plain_skip=skip_mode == "both", act=act, norm=norm,
                )
                for i in (4, 3, 2, 1)
            ]
        )
        self.head = Conv[Conv.CONV, 2](feats[0], out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, S, H, W) slice stack.

        Returns:
            eval mode: logits (B, out_channels, H, W); train mode: logits, side outputs and CPA maps concatenated along
            the channels (see the class docstring and :meth:`split_train_output`).
        """
        skips, f, cpa_logits = self.encoder(x)
        cpa5 = torch.sigmoid(cpa_logits[4])
        sides: list[torch.Tensor] = []
        for i, block in enumerate(self.decoder):
            f, side = block(f, skips[3 - i], cpa5)
            sides.append(side)
        logits = self.head(f)
        if not self.training:
            return logits
        size = [x.shape[2], x.shape[3]]
        parts = [logits]
        if self.deep_supervision:
            for side in sides:
                parts.append(F.interpolate(side, size=size, mode="bilinear", align_corners=False))
        for a in cpa_logits:
            parts.append(block_upsample(a, size))
        return torch.cat(parts, dim=1)

    @staticmethod
    def split_train_output(
        output: torch.Tensor, out_channels: int = 1, num_side: int = 4, num_cpa: int = 5, grid: int | None = None
    ) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
        """``(logits, side_outputs, cpa_maps)`` from a TSRL-Net output; see :func:`split_train_output`.

        ``num_side`` is 4 with ``deep_supervision=True`` and 0 without; ``grid`` (e.g. 6) pools the CPA maps back.
        """
        return split_train_output(output, out_channels, num_side, num_cpa, grid)
