"""Adapters that let third-party networks honour the project's network contract (one logits tensor out)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["FirstOutput", "check_io_args", "to_memory_format"]


class FirstOutput(nn.Module):
    """Wrap a network whose ``forward`` returns a list or tuple of tensors and return only the first one.

    MONAI's ``BasicUNetPlusPlus`` returns a list (one tensor, or four with deep supervision); bundles, inferers and
    exports expect a single logits tensor. With deep supervision off the first element is the full-resolution
    output.

    Args:
        network: the wrapped network.

    Example::

        >>> from monai.networks.nets import BasicUNetPlusPlus
        >>> net = FirstOutput(BasicUNetPlusPlus(spatial_dims=2, in_channels=4, out_channels=1))
        >>> net(torch.zeros(1, 4, 64, 64)).shape
        torch.Size([1, 1, 64, 64])
    """

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: the wrapped network's input; returns its first output."""
        out = self.network(x)
        if isinstance(out, torch.Tensor):
            return out
        return out[0]


def check_io_args(spatial_dims: int, in_channels: int, out_channels: int, dims: tuple[int, ...] = (2, 3)) -> None:
    """Raise ``ValueError`` naming the argument when ``spatial_dims`` is not in ``dims`` or a channel count is < 1."""
    if spatial_dims not in dims:
        raise ValueError(f"spatial_dims must be one of {dims}, got {spatial_dims}")
    if in_channels < 1 or out_channels < 1:
        raise ValueError(f"in_channels and out_channels must be >= 1, got {in_channels}, {out_channels}")


def to_memory_format(module: nn.Module, channels_last: bool = True) -> nn.Module:
    """Put every 4D parameter and buffer in ``channels_last`` and every 5D one in ``channels_last_3d`` (or all back
    to contiguous), in place; returns ``module``.

    ``module.to(memory_format=torch.channels_last)`` refuses networks that mix 2D and 3D convolutions (D-UNet's 3D
    encoder); converting tensor by tensor works for any mix. Convolutions follow the format of their weight, so the
    activations of a converted network stay channels-last without converting the input.
    """
    formats = {4: torch.channels_last, 5: torch.channels_last_3d} if channels_last else {}

    def convert(t: torch.Tensor) -> torch.Tensor:
        return t.contiguous(memory_format=formats.get(t.dim(), torch.contiguous_format))

    return module._apply(convert)

