"""Shared network blocks (spatial_dims-generic where the paper allows)."""

from __future__ import annotations

from .asymmetric_se import FactorizedConv, ImprovedSEResBlock
from .conv_blocks import DoubleConv, UpConv
from .dimension_fusion import (
    AddFusion,
    CFFConcatFusion,
    ConcatFusion,
    CrossDimensionFusion,
    DimensionTransform,
    SEAddFusion,
    SqueezeExcitation,
)
from .dunet_encoder import DUNetEncoder
from .multiscale import MultiScaleConv, MultiScaleDeconvUpsample
from .patch_attention import CoarsePatchAttention, FineSpatialAttention, block_upsample, prior_location_map
from .residual_attention import CoarseResidualLearning

__all__ = [
    "FactorizedConv",
    "ImprovedSEResBlock",
    "DoubleConv",
    "UpConv",
    "DimensionTransform",
    "SqueezeExcitation",
    "SEAddFusion",
    "CrossDimensionFusion",
    "AddFusion",
    "ConcatFusion",
    "CFFConcatFusion",
    "CoarsePatchAttention",
    "FineSpatialAttention",
    "prior_location_map",
    "block_upsample",
    "MultiScaleDeconvUpsample",
    "MultiScaleConv",
    "CoarseResidualLearning",
    "DUNetEncoder",
]
