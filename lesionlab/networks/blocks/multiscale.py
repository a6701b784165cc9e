"""Multi-scale deconvolution upsampling (MDU) of AGMR-Net, and its same-resolution form for Table 3.8."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
from monai.networks.blocks import Convolution

__all__ = ["MultiScaleDeconvUpsample", "MultiScaleConv"]


def _check_args(
    in_channels: int, out_channels: int | None, kernel_sizes: Sequence[int], dropout: float
) -> tuple[tuple[int, ...], int]:
    """Argument checks shared by the multi-scale blocks; returns ``(kernel_sizes, out_channels)`` resolved."""
    kernel_sizes = tuple(int(k) for k in kernel_sizes)
    out_channels = in_channels if out_channels is None else int(out_channels)
    if in_channels < 1:
        raise ValueError(f"in_channels must be >= 1, got {in_channels}.")
    if not kernel_sizes or any(k < 1 or k % 2 == 0 for k in kernel_sizes):
        raise ValueError(f"kernel_sizes must be a non-empty sequence of positive odd integers, got {kernel_sizes}.")
    if out_channels < len(kernel_sizes) or out_channels % len(kernel_sizes):
        raise ValueError(
            f"out_channels ({out_channels}) must be a positive multiple of len(kernel_sizes) ({len(kernel_sizes)})."
        )
    if not 0.0 <= dropout < 1.0:
        raise ValueError(f"dropout must be in [0, 1), got {dropout}.")
    return kernel_sizes, out_channels


def _make_branches(
    spatial_dims: int, in_channels: int, out_channels: int, kernel_sizes: tuple[int, ...], dropout: float,
    act: str | tuple, norm: str | tuple, transposed: bool,
) -> nn.ModuleList:
    """One Conv (transposed, stride 2, when ``transposed``; else stride 1) -> Norm -> Act -> Dropout per kernel size,
    each with ``out_channels / len(kernel_sizes)`` channels."""
    branch = out_channels // len(kernel_sizes)
    # transposed: padding (k-1)/2 and output_padding stride-1 = 1 give 2x the size; ADN order N -> A -> D
    return nn.ModuleList(
        [
            Convolution(spatial_dims, in_channels, branch, strides=2 if transposed else 1, kernel_size=k, act=act,
                        norm=norm, dropout=dropout if dropout > 0 else None, is_transposed=transposed,
                        adn_ordering="NAD")
            for k in kernel_sizes
        ]
    )


class MultiScaleConv(nn.Module):
    """Same-resolution form of the MDU: parallel stride-1 convolutions with different kernel sizes, concatenated.

    Thesis Table 3.8 ("MDU in encoder stage", "MDU in skip-connection stage"; Ma Kunpeng's thesis (2023) §3.6.3) moves
    the MDU of §3.4 away from the upsampling path without saying how a stride-2 transposed convolution is used where
    the resolution must not change. The simplest faithful reading keeps everything of :class:`MultiScaleDeconvUpsample`
    but the upsampling: each branch ``k`` is a (non-transposed) convolution ``C_in -> C'/n``, stride 1, padding
    ``(k - 1) / 2``, with bias, then normalisation, activation and dropout; the branches are concatenated in the order
    of ``kernel_sizes`` to (B, C', *S). Parameters: ``sum_k k^d * C_in * C'/n + C'`` (bias) ``+ 2 C'`` (BN), the same
    as the MDU of the same widths.

    Args:
        spatial_dims: number of spatial dimensions. Defaults to 2.
        in_channels: input channels ``C_in``.
        out_channels: output channels ``C'``, a multiple of ``len(kernel_sizes)``; defaults to ``in_channels``.
        kernel_sizes: odd kernel sizes of the parallel branches. Defaults to ``(3, 5, 7, 9)``.
        dropout: dropout rate after each branch's activation. Defaults to 0.1.
        act: activation. Defaults to ReLU.
        norm: normalisation. Defaults to batch norm.

    Example::

        >>> msc = MultiScaleConv(2, 64)
        >>> msc(torch.randn(2, 64, 24, 20)).shape
        torch.Size([2, 64, 24, 20])
    """

    #: stride-2 transposed convolutions (``MultiScaleDeconvUpsample``) or stride-1 convolutions
    transposed = False

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 64,
        out_channels: int | None = None,
        kernel_sizes: Sequence[int] = (3, 5, 7, 9),
        dropout: float = 0.1,
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        kernel_sizes, out_channels = _check_args(in_channels, out_channels, kernel_sizes, dropout)
        self.kernel_sizes = kernel_sizes
        self.out_channels = out_channels
        self.branches = _make_branches(spatial_dims, in_channels, out_channels, kernel_sizes, dropout, act, norm,
                                       transposed=self.transposed)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C_in, *S); returns (B, C', *S) (``*2S`` when transposed), the branches concatenated in the order
        of ``kernel_sizes``."""
        return torch.cat([branch(x) for branch in self.branches], dim=1)


class MultiScaleDeconvUpsample(MultiScaleConv):
    """Parallel stride-2 transposed convolutions with different kernel sizes, concatenated (MDU, thesis §3.4).

    Du X, Ma K, Song Y. "AGMR-Net: Attention-guided multiscale recovery framework for stroke segmentation." CMIG 101
    (2022) 102120, https://doi.org/10.1016/j.compmedimag.2022.102120; Ma Kunpeng's thesis (2023) §3.4, Fig. 3.5.

    For an input (B, C_in, *S) every branch ``k`` in ``kernel_sizes`` is a transposed convolution ``C_in -> C'/n``
    (``n = len(kernel_sizes)``), stride 2, padding ``(k - 1) / 2``, output padding 1 (ambiguity 18: exactly doubles
    every size for odd ``k``), with bias, followed by normalisation, activation and dropout ("each deconvolution is
    followed by BatchNorm, ReLU and Dropout"); the branch outputs are concatenated in the order of ``kernel_sizes`` to
    (B, C', *2S).

    ``C' = C_in`` by default (ambiguity 19): the parameter differences between the thesis's single-kernel variants
    (Table 3.7) are ``delta(k^2) * sum(C_in * C')`` with ``sum(C_in * C') = 348,160 = 512^2 + 256^2 + 128^2 + 64^2``,
    i.e. ``C' = C_in`` at every decoder level. Parameters: ``sum_k k^d * C_in * C'/n + C'`` (bias) ``+ 2 C'`` (BN).

    The dropout rate is not given in the thesis (ambiguity 17); the default 0.1 is a mild rate that keeps the
    regularisation the thesis asks for without starving the decoder (the encoder's dropout is 0.3).

    Arguments as :class:`MultiScaleConv`; ``kernel_sizes`` ``(k,)`` or ``(k,) * 4`` give the single-size variants of
    Table 3.7 (same parameter count either way).

    Example::

        >>> mdu = MultiScaleDeconvUpsample(2, 512)
        >>> mdu(torch.randn(2, 512, 12, 12)).shape
        torch.Size([2, 512, 24, 24])
    """

    transposed = True
