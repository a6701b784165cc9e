"""Shared network blocks (spatial_dims-generic where the paper allows)."""

from __future__ import annotations

from .conv_blocks import DoubleConv, UpConv
from .dimension_fusion import DimensionTransform, SEAddFusion, SqueezeExcitation

__all__ = ["DoubleConv", "UpConv", "DimensionTransform", "SqueezeExcitation", "SEAddFusion"]
