"""PSPNet's pyramid pooling module, spatial_dims-generic.

Zhao, Shi, Qi, Wang, Jia, "Pyramid Scene Parsing Network", CVPR 2017, https://arxiv.org/abs/1612.01105.
Thesis (spec seed 000 §3.3) eq. 3-3/3-4 and 2-23..2-25.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution

__all__ = ["PyramidPooling", "AdaptiveAvgPool"]


class AdaptiveAvgPool(nn.Module):
    """Adaptive average pooling to ``output_size`` per spatial axis, written as one matrix product per axis.

    Same cells as ``torch.nn.AdaptiveAvgPoolNd`` (cell ``i`` of ``s`` averages input indices
    ``floor(i n / s) .. ceil((i + 1) n / s) - 1``), but expressed with ``arange``/``matmul`` so that it exports to
    ONNX when ``n`` is not a multiple of ``s`` (PSPNet's 3 x 3 and 6 x 6 bins on a 32 x 32 map), which the
    exporter refuses for the built-in operator. MONAI's ``Pool[ADAPTIVEAVG]`` is therefore not used here.
    """

    def __init__(self, output_size: int) -> None:
        super().__init__()
        self.output_size = int(output_size)

    def _matrix(self, n: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        s = self.output_size
        i = torch.arange(s, device=device).unsqueeze(1)
        j = torch.arange(n, device=device).unsqueeze(0)
        start = torch.div(i * n, s, rounding_mode="floor")
        end = torch.div((i + 1) * n + s - 1, s, rounding_mode="floor")
        inside = ((j >= start) & (j < end)).to(dtype)
        return inside / (end - start).to(dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, *S)`` -> ``(B, C, output_size, ...)``."""
        last = x.dim() - 1  # explicit index: ONNX Transpose rejects the negative axes movedim(-1) would give
        for axis in range(2, x.dim()):
            m = self._matrix(x.shape[axis], x.device, x.dtype)
            x = torch.matmul(x.movedim(axis, last), m.t()).movedim(last, axis)
        return x


class PyramidPooling(nn.Module):
    """Pool the feature map to ``bins`` grids, reduce channels, upsample back, concatenate with the input.

    For each bin ``s``: :class:`AdaptiveAvgPool` ``(s) -> 1x1 conv (in_channels -> channels) + norm + act ->
    upsample`` to the input size (linear interpolation, ``align_corners=False``); the output is
    ``concat(x, branch_1, ..., branch_N)`` with ``in_channels + len(bins) * channels`` channels (eq. 2-25;
    2048 + 4 x 512 = 4096 in the paper).

    Args:
        spatial_dims: 1, 2 or 3.
        in_channels: input channels (2048 after ResNet-50 stage 4).
        channels: channels per branch C' (the thesis omits it; 512 = in_channels / 4 as in PSPNet).
        bins: output grid sides of the adaptive pools (1, 2, 3, 6 in the paper).
        act: activation (MONAI factory format).
        norm: normalisation (MONAI factory format).

    Example::

        ppm = PyramidPooling(2, 2048)
        y = ppm(torch.randn(1, 2048, 32, 32))   # (1, 4096, 32, 32)
    """

    def __init__(
        self,
        spatial_dims: int,
        in_channels: int,
        channels: int = 512,
        bins: Sequence[int] = (1, 2, 3, 6),
        act: str | tuple = "relu",
        norm: str | tuple = "batch",
    ) -> None:
        super().__init__()
        if spatial_dims not in (1, 2, 3):
            raise ValueError(f"spatial_dims must be 1, 2 or 3, got {spatial_dims}")
        if in_channels < 1 or channels < 1:
            raise ValueError(f"in_channels and channels must be positive, got {in_channels}, {channels}")
        if len(bins) == 0 or any(int(b) < 1 for b in bins):
            raise ValueError(f"bins must be a non-empty sequence of positive sizes, got {bins}")
        self.mode = ("linear", "bilinear", "trilinear")[spatial_dims - 1]
        self.branches = nn.ModuleList(
            nn.Sequential(
                AdaptiveAvgPool(int(b)),
                Convolution(spatial_dims, in_channels, channels, kernel_size=1, act=act, norm=norm, bias=False),
            )
            for b in bins
        )
        self.out_channels = in_channels + len(bins) * channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, in_channels, *S)`` -> ``(B, in_channels + len(bins) * channels, *S)``."""
        size = x.shape[2:]
        outs = [x]
        for branch in self.branches:
            outs.append(F.interpolate(branch(x), size=size, mode=self.mode, align_corners=False))
        return torch.cat(outs, dim=1)
