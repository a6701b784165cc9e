"""Adapters that let third-party networks honour the project's network contract (one logits tensor out)."""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["FirstOutput"]


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
