"""Networks, one file per network."""

from __future__ import annotations

from .dunet import DUNet

__all__ = ["DUNet"]
