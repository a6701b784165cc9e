"""Shared network blocks (spatial_dims-generic where the paper allows)."""

from __future__ import annotations

from .conv_blocks import DoubleConv, UpConv
from .dimension_fusion import CrossDimensionFusion, DimensionTransform, SEAddFusion, SqueezeExcitation
from .multiscale import MultiScaleDeconvUpsample
from .patch_attention import CoarsePatchAttention, block_upsample, prior_location_map
from .residual_attention import CoarseResidualLearning

__all__ = [
    "DoubleConv",
    "UpConv",
    "DimensionTransform",
    "SqueezeExcitation",
    "SEAddFusion",
    "CrossDimensionFusion",
    "CoarsePatchAttention",
    "prior_location_map",
    "block_upsample",
    "MultiScaleDeconvUpsample",
    "CoarseResidualLearning",
]
