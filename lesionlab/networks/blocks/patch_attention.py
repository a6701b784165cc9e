"""Coarse-grained patch attention (CPA) of AGMR-Net and its prior location map.

Ma Kunpeng, "Research on Segmentation Method of Stroke Lesion Based on Coarse-Grained Attention", master's thesis,
Anhui University, 2023, §3.2; Du X, Ma K, Song Y, "AGMR-Net: Attention-guided multiscale recovery framework for stroke
segmentation", Computerized Medical Imaging and Graphics 101 (2022) 102120,
https://doi.org/10.1016/j.compmedimag.2022.102120.

The feature map is cut into ``grid x grid`` equal patches (6 x 6 in the paper). Each patch gets one weight, the
probability that it contains lesion; the weight map is supervised by :func:`prior_location_map` of the label.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Conv, Pool

__all__ = ["CoarsePatchAttention", "FineSpatialAttention", "prior_location_map", "block_upsample"]


def block_upsample(x: torch.Tensor, size: list[int]) -> torch.Tensor:
    """Replicate every element of ``x`` over a block so that the spatial size becomes ``size`` (thesis Eq. 3.4).

    This is nearest-neighbour upsampling by an integer factor per axis: element ``(x, y)`` of a ``g x g`` map fills the
    block ``[(x-1)H/g + 1, xH/g] x [(y-1)W/g + 1, yW/g]``. Unlike ``F.interpolate(mode="nearest")`` it refuses sizes
    that are not whole multiples, so a patch never straddles two blocks.

    Args:
        x: (B, C, *spatial) tensor.
        size: target spatial size, one whole multiple of ``x``'s size per spatial axis.

    Returns:
        (B, C, *size) tensor.

    Raises:
        ValueError: when ``size`` has the wrong length or is not a whole multiple of ``x``'s spatial size.
    """
    if len(size) != x.ndim - 2:
        raise ValueError(f"size must have {x.ndim - 2} entries, got {len(size)}.")
    for d in range(len(size)):
        n = x.shape[d + 2]
        if size[d] % n != 0:
            raise ValueError(f"target size {size[d]} on spatial axis {d} is not a multiple of {n}.")
        factor = size[d] // n
        if factor > 1:
            x = x.repeat_interleave(factor, dim=d + 2)
    return x


def prior_location_map(label: torch.Tensor, grid: int = 6, spatial_dims: int | None = None) -> torch.Tensor:
    """Prior location map of a label: 1 for every patch of a ``grid``-per-axis partition that contains foreground.

    The thesis (§3.2, "explicit supervision") max-pools the 192 x 192 ground truth with 32 x 32 windows, stride 32, to
    a 6 x 6 binary matrix that supervises the coarse attention map of every encoder stage with BCE. Here the window is
    ``size // grid`` per axis (adaptive max pooling, which is that same max pooling when the size is a multiple of
    ``grid``; otherwise the patches are PyTorch's adaptive bins).

    Args:
        label: binary (or probabilistic) label, batched ``(B, C, *spatial)``, or unbatched ``(C, *spatial)`` when
            ``spatial_dims`` is given with ``label.ndim == spatial_dims + 1`` (the layout of MONAI array transforms).
        grid: number of patches per spatial axis. Defaults to 6.
        spatial_dims: number of spatial axes; defaults to ``label.ndim - 2`` (batched input).

    Returns:
        ``(B, C, grid, ..., grid)`` (or ``(C, grid, ..., grid)`` for unbatched input), floating point, same dtype as
        ``label`` when it is floating point, else ``float32``.

    Example::

        >>> y = torch.zeros(1, 1, 192, 192); y[0, 0, 40, 100] = 1
        >>> prior_location_map(y).nonzero().tolist()
        [[0, 0, 1, 3]]
    """
    if grid < 1:
        raise ValueError(f"grid must be >= 1, got {grid}.")
    dims = label.ndim - 2 if spatial_dims is None else int(spatial_dims)
    if dims not in (1, 2, 3):
        raise ValueError(f"spatial_dims must be 1, 2 or 3, got {dims} (label shape {tuple(label.shape)}).")
    unbatched = label.ndim == dims + 1
    if not unbatched and label.ndim != dims + 2:
        raise ValueError(f"label must have {dims + 1} or {dims + 2} dimensions, got shape {tuple(label.shape)}.")
    x = label.unsqueeze(0) if unbatched else label
    if any(s < grid for s in x.shape[2:]):
        raise ValueError(f"every spatial size must be >= grid={grid}, got {tuple(x.shape[2:])}.")
    x = x if x.is_floating_point() else x.float()
    out = Pool[Pool.ADAPTIVEMAX, dims](grid)(x)
    return out.squeeze(0) if unbatched else out


class CoarsePatchAttention(nn.Module):
    """Coarse-grained patch attention (CPA), thesis §3.2, Eqs. 3.1-3.4 and the residual output.

    For an encoder feature ``F`` of shape (B, C, *spatial):

    - Eq. 3.1, channel average: ``F' = mean_c F``, (B, 1, *spatial);
    - Eq. 3.2, patch descriptor: average pooling of ``F'`` with a ``size / grid`` window, (B, 1, grid, ..., grid);
    - Eq. 3.3, ``omega = sigmoid(f2(ReLU(f1(flatten(F_g)))))`` with ``f1: grid^d -> hidden`` and
      ``f2: hidden -> grid^d`` fully connected layers (36 -> 18 -> 36 in 2D with ``grid = 6``; the activation
      between them is not stated in the thesis, ReLU is assumed, ambiguity 7);
    - Eq. 3.4, ``A``: ``omega`` reshaped to the grid and block-upsampled (nearest neighbour, every pixel of a patch
      gets the patch weight; the text says "linear interpolation" but the formula and Fig. 3.3 are block replication,
      ambiguity 9) to the input size;
    - output ``A * F + F`` ("to improve fault tolerance").

    ``forward`` returns ``(A * F + F, logits)`` where ``logits`` is the pre-sigmoid map ``f2(ReLU(f1(.)))`` of shape
    (B, 1, grid, ..., grid), i.e. ``omega' = sigmoid(logits)``. Returning logits keeps the network's outputs logits
    (house rule 5); the BCE against :func:`prior_location_map` is then ``BCEWithLogits`` (ambiguity 11: mean BCE on the
    grid map equals mean BCE on its block-upsampled version).

    Dimension-generic: 2D in the paper; in 3D the grid is ``grid^3`` patches. Every spatial size must be a multiple of
    ``grid`` (patches of equal size, as in the thesis: 192, 96, 48, 24, 12 with 32, 16, 8, 4, 2 pixel patches).

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3). Defaults to 2.
        grid: patches per spatial axis. Defaults to 6.
        hidden: neurons of the hidden FC layer; defaults to ``grid**spatial_dims // 2`` (18 for the paper).
        bias: whether the FC layers have biases (not stated in the thesis; PyTorch's default). Defaults to True.

    Example::

        >>> cpa = CoarsePatchAttention(spatial_dims=2, grid=6)
        >>> out, logits = cpa(torch.randn(2, 32, 192, 192))
        >>> out.shape, logits.shape
        (torch.Size([2, 32, 192, 192]), torch.Size([2, 1, 6, 6]))
    """

    def __init__(self, spatial_dims: int = 2, grid: int = 6, hidden: int | None = None, bias: bool = True) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if grid < 1:
            raise ValueError(f"grid must be >= 1, got {grid}.")
        patches = grid**spatial_dims
        hidden = max(patches // 2, 1) if hidden is None else int(hidden)
        if hidden < 1:
            raise ValueError(f"hidden must be >= 1, got {hidden}.")
        self.spatial_dims = spatial_dims
        self.grid = grid
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](grid)
        self.fc1 = nn.Linear(patches, hidden, bias=bias)
        self.act = nn.ReLU()
        self.fc2 = nn.Linear(hidden, patches, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (B, C, *spatial), every spatial size a multiple of ``grid``.

        Returns:
            ``(A * x + x, logits)``: the attended feature, same shape as ``x``, and the pre-sigmoid patch attention
            map (B, 1, grid, ..., grid).
        """
        spatial: list[int] = []
        for d in range(2, x.ndim):
            s = x.shape[d]
            if s % self.grid != 0:
                raise ValueError(
                    f"CPA needs every spatial size to be a multiple of grid={self.grid}, got {list(x.shape[2:])}."
                )
            spatial.append(s)
        # Eq. 3.1 then Eq. 3.2 (both are averages, so pooling the channel mean equals the mean of the pooled channels)
        desc = self.pool(x.mean(dim=1, keepdim=True))
        logits = self.fc2(self.act(self.fc1(desc.flatten(1)))).view(desc.shape)  # Eq. 3.3 before the sigmoid
        attention = block_upsample(torch.sigmoid(logits), spatial)  # Eq. 3.4
        return x * attention + x, logits

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, grid={self.grid}"



class FineSpatialAttention(nn.Module):
    """Fine-grained (pixel-level) spatial attention, the "FA" of thesis Table 3.4 ("D-UNet + FA"), CBAM-style.

    The thesis (§3.6.3, Table 3.4) compares its coarse patch attention with "fine-grained, pixel-level" spatial
    attention without describing the latter; the simplest faithful reading is CBAM's spatial attention (Woo et al.,
    "CBAM: Convolutional Block Attention Module", ECCV 2018, the reference [33] the thesis cites for Eq. 3.1), used in
    the same residual form as CPA and without supervision:

    - channel mean and channel max of ``F``, concatenated: (B, 2, *spatial);
    - a ``k x k`` convolution ``2 -> 1`` (``k = 7`` as in CBAM, padding ``(k - 1) / 2``, no bias as in CBAM) gives the
      logits; ``A = sigmoid(logits)``, one weight per pixel;
    - output ``A * F + F`` (the residual form of CPA, thesis §3.2).

    ``forward`` returns ``(A * F + F, logits)`` like :class:`CoarsePatchAttention`, the logits map having the input's
    spatial size (B, 1, *spatial); AGMR-Net does not supervise it. Any spatial size is accepted.

    Args:
        spatial_dims: number of spatial dimensions (1, 2 or 3). Defaults to 2.
        kernel_size: odd kernel size of the convolution. Defaults to 7.
        bias: whether the convolution has a bias. Defaults to False (CBAM).

    Example::

        >>> fa = FineSpatialAttention(spatial_dims=2)
        >>> out, logits = fa(torch.randn(2, 32, 48, 40))
        >>> out.shape, logits.shape
        (torch.Size([2, 32, 48, 40]), torch.Size([2, 1, 48, 40]))
    """

    def __init__(self, spatial_dims: int = 2, kernel_size: int = 7, bias: bool = False) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}.")
        if kernel_size < 1 or kernel_size % 2 == 0:
            raise ValueError(f"kernel_size must be a positive odd integer, got {kernel_size}.")
        self.spatial_dims = spatial_dims
        self.kernel_size = kernel_size
        self.conv = Conv[Conv.CONV, spatial_dims](2, 1, kernel_size=kernel_size, padding=kernel_size // 2, bias=bias)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``x``: (B, C, *spatial).

        Returns:
            ``(A * x + x, logits)``: the attended feature, same shape as ``x``, and the pre-sigmoid pixel attention map
            (B, 1, *spatial).
        """
        desc = torch.cat([x.mean(dim=1, keepdim=True), x.amax(dim=1, keepdim=True)], dim=1)
        logits = self.conv(desc)
        return x * torch.sigmoid(logits) + x, logits

    def extra_repr(self) -> str:
        return f"spatial_dims={self.spatial_dims}, kernel_size={self.kernel_size}"
