"""Networks and their building blocks."""

from __future__ import annotations

from .nets import DUNet

__all__ = ["DUNet"]
