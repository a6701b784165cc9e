"""Transforms: array versions in ``array.py``, dictionary twins in ``dictionary.py``."""

from __future__ import annotations

from .array import (
    DEFAULT_OFFSETS,
    InPlaneCropResize,
    MergeMasks,
    NeighbourSliceStack,
    RandSlice25D,
    RegisterToTemplate,
    ValidateHeader,
    ValidateVolume,
    stack_slices,
)
from .dictionary import (
    InPlaneCropResized,
    MergeMasksd,
    NeighbourSliceStackd,
    RandSlice25Dd,
    RegisterToTemplated,
    ValidateHeaderd,
    ValidateVolumed,
)
from .stain import StainNormalize, StainNormalized, StainNormalizer, ValidateRGB, ValidateRGBd

__all__ = [
    "DEFAULT_OFFSETS",
    "InPlaneCropResize",
    "MergeMasks",
    "NeighbourSliceStack",
    "RandSlice25D",
    "RegisterToTemplate",
    "ValidateHeader",
    "ValidateVolume",
    "stack_slices",
    "InPlaneCropResized",
    "MergeMasksd",
    "NeighbourSliceStackd",
    "RandSlice25Dd",
    "RegisterToTemplated",
    "ValidateHeaderd",
    "ValidateVolumed",
    "StainNormalize",
    "StainNormalized",
    "StainNormalizer",
    "ValidateRGB",
    "ValidateRGBd",
]
