"""Argument checks and the training-output layout shared by the 2.5D stroke networks (D-UNet, AGMR-Net, TSRL-Net).

Every check raises ``ValueError`` naming the network's argument, so a wrong bundle config fails when the network is
built, with the option and its allowed values in the message.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from lesionlab.networks.blocks.dunet_encoder import FUSIONS

__all__ = [
    "check_choice",
    "check_slice_stack",
    "check_fraction",
    "check_odd_kernel",
    "check_fusion",
    "check_multiscale",
    "check_encoder",
    "check_upsampling",
    "split_train_output",
]


def check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    """``value`` when it is one of ``choices``; else a ``ValueError`` listing them."""
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}.")
    return value


def check_slice_stack(
    spatial_dims: int, in_channels: int, out_channels: int, features: Sequence[int]
) -> tuple[int, ...]:
    """Checks of the 2.5D contract (2D output, a stack of a multiple of 4 slices, five stages); returns ``features``."""
    if spatial_dims != 2:
        raise ValueError(f"the network segments 2D slices of a stack: spatial_dims must be 2, got {spatial_dims}.")
    if in_channels < 4 or in_channels % 4:
        raise ValueError(f"in_channels (number of stacked slices) must be a positive multiple of 4, got {in_channels}.")
    if out_channels < 1:
        raise ValueError(f"out_channels must be >= 1, got {out_channels}.")
    feats = tuple(int(f) for f in features)
    if len(feats) != 5 or min(feats) < 1:
        raise ValueError(f"features must be 5 positive channel counts, got {feats}.")
    return feats


def check_fraction(name: str, value: float) -> None:
    """A dropout rate: ``0 <= value < 1``."""
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}.")


def check_odd_kernel(name: str, value: int) -> None:
    """A kernel size that keeps 'same' padding: a positive odd integer."""
    if value < 1 or value % 2 == 0:
        raise ValueError(f"{name} must be a positive odd integer, got {value}.")


def check_fusion(fusion: str, features: tuple[int, ...], cff_reduction: int, cff_mlp_layout: str,
                 fusion_reduction: int) -> None:
    """``fusion`` and the arguments of that fusion at the two fusion stages (``features[1:3]``)."""
    check_choice("fusion", fusion, FUSIONS)
    if fusion in ("cff", "cff_concat"):
        check_choice("cff_mlp_layout", cff_mlp_layout, ("separate", "shared"))
        width = 1 if cff_mlp_layout == "separate" else 2
        for f in features[1:3]:
            if cff_reduction < 1 or width * f // cff_reduction < 1:
                raise ValueError(f"cff_reduction={cff_reduction} is invalid for a fusion stage of {f} channels.")
    elif fusion == "se_add":
        for f in features[1:3]:
            if fusion_reduction < 1 or f // fusion_reduction < 1:
                raise ValueError(f"fusion_reduction={fusion_reduction} is too large for a fusion stage of {f} "
                                 "channels.")


def check_multiscale(kernels: Sequence[int], widths: Sequence[int], which: str) -> tuple[int, ...]:
    """Kernels of a multi-scale block (positive odd) that split each of ``widths`` evenly; returns the kernels."""
    kernels = tuple(int(k) for k in kernels)
    if not kernels or any(k < 1 or k % 2 == 0 for k in kernels):
        raise ValueError(f"mdu_kernels must be a non-empty sequence of positive odd integers, got {kernels}.")
    if [w for w in widths if w % len(kernels)]:
        raise ValueError(f"{which} must be multiples of len(mdu_kernels)={len(kernels)}, got {tuple(widths)}.")
    return kernels


def check_encoder(features: tuple[int, ...], fusion: str, cff_reduction: int, cff_mlp_layout: str,
                  fusion_reduction: int, cpa_grid: int, dropout: float) -> None:
    """The arguments of :class:`~lesionlab.networks.blocks.DUNetEncoder` as AGMR-Net and TSRL-Net expose them."""
    check_fusion(fusion, features, cff_reduction, cff_mlp_layout, fusion_reduction)
    if cpa_grid < 1:
        raise ValueError(f"cpa_grid must be >= 1, got {cpa_grid}.")
    check_fraction("dropout", dropout)


def check_upsampling(mdu: str, mdu_kernels: Sequence[int], mdu_dropout: float, up_kernel_size: int,
                     features: tuple[int, ...]) -> tuple[int, ...]:
    """Decoder upsampling: the MDU (``mdu="decoder"``, widths ``features[1:]``) or D-UNet's up-convolution (any other
    ``mdu``); returns the kernels as a tuple."""
    check_fraction("mdu_dropout", mdu_dropout)
    if mdu == "decoder":
        return check_multiscale(mdu_kernels, features[1:], "with mdu='decoder', features[1:]")
    check_odd_kernel("up_kernel_size", up_kernel_size)
    return tuple(int(k) for k in mdu_kernels)


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
