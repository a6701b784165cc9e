"""Fusion of 3D-branch features into the 2D branch of 2.5D networks (D-UNet, AGMR-Net, TSRL-Net).

A 2.5D network of the D-UNet family keeps a 2D encoder on the slice stack ``(B, S, H, W)`` and a 3D encoder on the
same stack seen as a volume ``(B, 1, S, H, W)``. At a fusion stage the 3D feature ``(B, C, D, H, W)`` is turned into a
2D feature ``(B, C, H, W)`` (:class:`DimensionTransform`) and merged with the 2D feature of the same stage, either by
D-UNet's :class:`SEAddFusion` or by AGMR-Net's :class:`CrossDimensionFusion`. The "common fusion" rows of the
thesis's Table 3.5 are :class:`AddFusion`, :class:`ConcatFusion` and :class:`CFFConcatFusion`.
"""

from __future__ import annotations

import torch
import torch.nn as nn
from monai.networks.layers.factories import Act, Conv, Pool, split_args

__all__ = [
    "DimensionTransform", "SqueezeExcitation", "SEAddFusion", "CrossDimensionFusion", "AddFusion", "ConcatFusion",
    "CFFConcatFusion",
]


class DimensionTransform(nn.Module):
    """3D feature ``(B, C, D, H, W)`` -> 2D feature ``(B, C_out, H, W)``.

    Conv3d ``C -> 1`` (kernel 1) gives ``(B, 1, D, H, W)``; the channel axis is squeezed so the ``D`` slices become
    channels, ``(B, D, H, W)``; a 3x3 2D convolution ``D -> C_out`` with an activation follows (D-UNet's fusion
    front end, and the "dimension transform" of AGMR-Net's CFF, thesis §3.3).

    Args:
        in_channels: channels ``C`` of the 3D feature.
        depth: depth ``D`` of the 3D feature (fixed by the network input, e.g. 2 at stage 2 of a 4-slice stack).
        out_channels: channels of the 2D result.
        act: activation after the 2D convolution. Defaults to ReLU.
    """

    def __init__(self, in_channels: int, depth: int, out_channels: int, act: str | tuple = "relu") -> None:
        super().__init__()
        if min(in_channels, depth, out_channels) < 1:
            raise ValueError(
                f"in_channels, depth and out_channels must be >= 1, got {in_channels}, {depth}, {out_channels}."
            )
        self.depth = depth
        self.reduce = Conv[Conv.CONV, 3](in_channels, 1, kernel_size=1)
        self.conv = Conv[Conv.CONV, 2](depth, out_channels, kernel_size=3, padding=1)
        act_name, act_args = split_args(act)
        self.act = Act[act_name](**act_args)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, D, H, W) with ``D == depth``; returns (B, out_channels, H, W)."""
        if x.shape[2] != self.depth:
            raise ValueError(f"expected a 3D feature of depth {self.depth}, got depth {x.shape[2]}.")
        return self.act(self.conv(self.reduce(x).squeeze(1)))


class SqueezeExcitation(nn.Module):
    """Channel squeeze-and-excitation (Hu et al. 2018) with optional bias, for any ``spatial_dims``.

    MONAI's ``ChannelSELayer`` always has biases; D-UNet's fusion has none, and its published parameter count
    depends on that, hence this small block.

    Args:
        spatial_dims: number of spatial dimensions.
        channels: number of channels.
        reduction: hidden size is ``channels // reduction``. Defaults to 16.
        bias: whether the two fully connected layers have biases. Defaults to False.
    """

    def __init__(self, spatial_dims: int, channels: int, reduction: int = 16, bias: bool = False) -> None:
        super().__init__()
        if reduction < 1 or channels // reduction < 1:
            raise ValueError(f"reduction must be in [1, channels={channels}], got {reduction}.")
        self.pool = Pool[Pool.ADAPTIVEAVG, spatial_dims](1)
        hidden = channels // reduction
        self.fc = nn.Sequential(
            nn.Linear(channels, hidden, bias=bias), nn.ReLU(inplace=True), nn.Linear(hidden, channels, bias=bias),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: (B, C, *spatial); returns ``x`` re-weighted per channel, same shape."""
        w = self.fc(self.pool(x).flatten(1))
        # reshape to (B, C, 1, ..., 1) in a TorchScript-friendly way (no starred list of unknown length)
        for _ in range(x.ndim - 2):
            w = w.unsqueeze(-1)
        return x * w


class SEAddFusion(nn.Module):
    """D-UNet's 2D/3D fusion ("D_SE_Add"): ``SE(T(f3d)) + SE(f2d)``.

    ``T`` is :class:`DimensionTransform`; each branch has its own bias-free :class:`SqueezeExcitation`.

    Args:
        channels: channels ``C`` of both the 2D and the 3D feature.
        depth: depth of the 3D feature.
        reduction: SE reduction ratio. Defaults to 16.
        act: activation of the dimension transform. Defaults to ReLU.
    """

    def __init__(self, channels: int, depth: int, reduction: int = 16, act: str | tuple = "relu") -> None:
        super().__init__()
        self.transform = DimensionTransform(channels, depth, channels, act=act)
        self.se3d = SqueezeExcitation(2, channels, reduction)
        self.se2d = SqueezeExcitation(2, channels, reduction)

    def forward(self, f3d: torch.Tensor, f2d: torch.Tensor) -> torch.Tensor:
        """``f3d``: (B, C, D, H, W), ``f2d``: (B, C, H, W); returns (B, C, H, W)."""
        return self.se3d(self.transform(f3d)) + self.se2d(f2d)


class CrossDimensionFusion(nn.Module):
    """Cross-dimensional feature fusion (CFF) of AGMR-Net: global channel attention over both branches, then add.

    Du X, Ma K, Song Y. "AGMR-Net: Attention-guided multiscale recovery framework for stroke segmentation." CMIG 101
    (2022) 102120, https://doi.org/10.1016/j.compmedimag.2022.102120; Ma Kunpeng's thesis (2023) §3.3.

    Mapping to the thesis:
        - dimension transform (1x1x1 Conv3d to one channel, squeeze, slices as channels, 3x3 Conv2d ``D -> C`` + ReLU,
          ambiguity 15: the ReLU of D-UNet is kept) -> ``self.transform`` (:class:`DimensionTransform`), giving
          ``3D_tfm``;
        - Eq. 3.5 ``g = [GAP(3D_tfm), GAP(2D_fm)]`` (concatenation, 3D first) -> ``forward``;
        - Eqs. 3.6/3.7 ``omega_2 = sigmoid(f^2_2(f^2_1(g)))``, ``omega_3 = sigmoid(f^3_2(f^3_1(g)))`` ->
          ``self.fc1_2d``, ``self.fc2_2d``, ``self.fc1_3d``, ``self.fc2_3d`` (ReLU between the layers, ambiguity 14);
        - Eq. 3.8 ``3D_tfm * omega_3 + 2D_fm * omega_2`` -> ``forward``.

    MLP layout (ambiguity 13). The text gives each MLP "an intermediate layer of C/R neurons and a last layer of C";
    the parameter formula of §3.6.4, ``2C * 2C/R + 2 * (2C/R * C)`` (= C^2/4 for R = 32, "the same as D-UNet's
    fusion"), instead describes one shared first layer ``2C -> 2C/R`` and two heads ``2C/R -> C``. Both are available:

    - ``mlp_layout="separate"`` (default): two MLPs ``2C -> C/R -> C``; weights ``6C^2/R``, plus ``2C/R + 2C`` biases;
    - ``mlp_layout="shared"``: ``2C -> 2C/R`` shared, heads ``2C/R -> C``; weights ``8C^2/R`` (C^2/4 at R = 32, the
      §3.6.4 formula), plus ``2C/R + 2C`` biases.

    "separate" is the default because it reproduces the thesis's AGMR-Net totals better. With R = 8 at the two fusion
    stages (C = 64, 128) the MLPs have 3,216 + 12,576 = 15,792 parameters ("separate", with biases) against
    4,240 + 16,672 = 20,912 ("shared"): 5,120 more. AGMR-Net's totals (Table 3.7) exceed a rebuild with "separate" by
    784,482 = 783,360 + 1,122, where 783,360 = sum of 9c^2 over the decoder widths c = 256, 128, 64, 32 (see
    ``AGMRNet``, ``skip_mode``); the 1,122 left over becomes -3,998 with "shared", and 1,554 ("separate") or -3,566
    ("shared") without biases, so "separate" with biases is the closest reading.

    Args:
        channels: channels ``C`` of the 2D feature and of the 3D feature.
        depth: depth ``D`` of the 3D feature.
        reduction: reduction rate ``R``; hidden size ``C // R`` ("separate") or ``2C // R`` ("shared"). Defaults to 8.
        mlp_layout: ``"separate"`` or ``"shared"`` (see above). Defaults to ``"separate"``.
        bias: biases in the fully connected layers (not stated; PyTorch's default). Defaults to True.
        act: activation of the dimension transform. Defaults to ReLU.

    Example::

        >>> cff = CrossDimensionFusion(channels=64, depth=2)
        >>> cff(torch.randn(2, 64, 2, 96, 96), torch.randn(2, 64, 96, 96)).shape
        torch.Size([2, 64, 96, 96])
    """

    def __init__(
        self,
        channels: int,
        depth: int,
        reduction: int = 8,
        mlp_layout: str = "separate",
        bias: bool = True,
        act: str | tuple = "relu",
    ) -> None:
        super().__init__()
        if channels < 1:
            raise ValueError(f"channels must be >= 1, got {channels}.")
        if mlp_layout not in ("separate", "shared"):
            raise ValueError(f"mlp_layout must be 'separate' or 'shared', got {mlp_layout!r}.")
        width = channels if mlp_layout == "separate" else 2 * channels  # the hidden size is width // R
        hidden = width // reduction if reduction >= 1 else 0
        if hidden < 1:
            raise ValueError(
                f"reduction must be in [1, {width}] for channels={channels}, mlp_layout={mlp_layout!r}: {reduction}."
            )
        self.mlp_layout = mlp_layout
        self.shared = mlp_layout == "shared"
        self.transform = DimensionTransform(channels, depth, channels, act=act)
        self.pool = Pool[Pool.ADAPTIVEAVG, 2](1)
        self.act = nn.ReLU()
        self.fc1_2d = nn.Linear(2 * channels, hidden, bias=bias)
        # with the shared layout fc1_3d is an identity and fc1_2d is the shared first layer
        self.fc1_3d = nn.Identity() if self.shared else nn.Linear(2 * channels, hidden, bias=bias)
        self.fc2_2d = nn.Linear(hidden, channels, bias=bias)
        self.fc2_3d = nn.Linear(hidden, channels, bias=bias)

    def weighted(self, f3d: torch.Tensor, f2d: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The two channel-weighted branches of Eq. 3.8, ``(3D_tfm * omega_3, 2D_fm * omega_2)``, each (B, C, H, W)."""
        t = self.transform(f3d)
        g = torch.cat([self.pool(t).flatten(1), self.pool(f2d).flatten(1)], dim=1)  # Eq. 3.5
        h2 = self.act(self.fc1_2d(g))
        h3 = h2 if self.shared else self.act(self.fc1_3d(g))
        w2 = torch.sigmoid(self.fc2_2d(h2))[:, :, None, None]  # Eq. 3.6
        w3 = torch.sigmoid(self.fc2_3d(h3))[:, :, None, None]  # Eq. 3.7
        return t * w3, f2d * w2

    def forward(self, f3d: torch.Tensor, f2d: torch.Tensor) -> torch.Tensor:
        """``f3d``: (B, C, D, H, W), ``f2d``: (B, C, H, W); returns the fused (B, C, H, W) feature (Eq. 3.8)."""
        t, f = self.weighted(f3d, f2d)
        return t + f  # Eq. 3.8


class AddFusion(nn.Module):
    """Plain additive 2D/3D fusion, Table 3.5's "Add" row: ``T(f3d) + f2d``, no attention.

    Ma Kunpeng's thesis (2023) §3.6.3, Table 3.5 (the common fusions CFF is compared with inside AGMR-Net). ``T`` is
    the same :class:`DimensionTransform` as in CFF (1x1x1 Conv3d to one channel, slices as channels, 3x3 Conv2d
    ``D -> C`` + activation), so the row differs from CFF only by the missing channel attention of Eqs. 3.5-3.7.

    Args:
        channels: channels ``C`` of both the 2D and the 3D feature.
        depth: depth ``D`` of the 3D feature.
        act: activation of the dimension transform. Defaults to ReLU.
    """

    def __init__(self, channels: int, depth: int, act: str | tuple = "relu") -> None:
        super().__init__()
        self.transform = DimensionTransform(channels, depth, channels, act=act)

    def forward(self, f3d: torch.Tensor, f2d: torch.Tensor) -> torch.Tensor:
        """``f3d``: (B, C, D, H, W), ``f2d``: (B, C, H, W); returns (B, C, H, W)."""
        return self.transform(f3d) + f2d


class ConcatFusion(nn.Module):
    """Concatenating 2D/3D fusion, Table 3.5's "Concatenate" row: ``Conv1x1([T(f3d), f2d])``, ``2C -> C``.

    Thesis §3.3 / §3.6.3: the concatenate variant "adds channels and kernels"; the simplest reading that keeps the
    stage's width is concatenation (3D first, the order of Eq. 3.5) followed by a 1x1 convolution ``2C -> C`` with bias
    and no normalisation or activation (so that it is a learnt linear mix, the counterpart of the plain addition).
    ``T`` is :class:`DimensionTransform`.

    Args:
        channels: channels ``C`` of both the 2D and the 3D feature.
        depth: depth ``D`` of the 3D feature.
        act: activation of the dimension transform. Defaults to ReLU.
    """

    def __init__(self, channels: int, depth: int, act: str | tuple = "relu") -> None:
        super().__init__()
        self.transform = DimensionTransform(channels, depth, channels, act=act)
        self.proj = Conv[Conv.CONV, 2](2 * channels, channels, kernel_size=1)

    def forward(self, f3d: torch.Tensor, f2d: torch.Tensor) -> torch.Tensor:
        """``f3d``: (B, C, D, H, W), ``f2d``: (B, C, H, W); returns (B, C, H, W)."""
        return self.proj(torch.cat([self.transform(f3d), f2d], dim=1))


class CFFConcatFusion(CrossDimensionFusion):
    """CFF with concatenation instead of addition, Table 3.5's "CFF-Concatenate" row.

    Eqs. 3.5-3.7 of :class:`CrossDimensionFusion` unchanged (the same modules and weights), then the two weighted
    branches ``3D_tfm * omega_3`` and ``2D_fm * omega_2`` are concatenated (3D first) and mixed by a 1x1 convolution
    ``2C -> C`` with bias, as in :class:`ConcatFusion`, instead of Eq. 3.8's addition.

    Args:
        channels: channels ``C`` of the 2D feature and of the 3D feature.
        depth: depth ``D`` of the 3D feature.
        reduction: CFF reduction rate ``R``. Defaults to 8.
        mlp_layout: ``"separate"`` or ``"shared"`` CFF MLPs. Defaults to ``"separate"``.
        bias: biases in the fully connected layers. Defaults to True.
        act: activation of the dimension transform. Defaults to ReLU.
    """

    def __init__(
        self,
        channels: int,
        depth: int,
        reduction: int = 8,
        mlp_layout: str = "separate",
        bias: bool = True,
        act: str | tuple = "relu",
    ) -> None:
        super().__init__(channels, depth, reduction, mlp_layout, bias, act)
        self.proj = Conv[Conv.CONV, 2](2 * channels, channels, kernel_size=1)

    def forward(self, f3d: torch.Tensor, f2d: torch.Tensor) -> torch.Tensor:
        """``f3d``: (B, C, D, H, W), ``f2d``: (B, C, H, W); returns (B, C, H, W)."""
        t, f = self.weighted(f3d, f2d)
        return self.proj(torch.cat([t, f], dim=1))
