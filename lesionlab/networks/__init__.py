"""Networks and their building blocks."""

from __future__ import annotations

from .nets import AGMRNet, DUNet, TSRLNet, split_train_output

__all__ = ["DUNet", "AGMRNet", "TSRLNet", "split_train_output"]
