"""Transforms: array versions in ``array.py``, dictionary twins in ``dictionary.py``."""

from __future__ import annotations

from .array import (
    DEFAULT_OFFSETS,
    InPlaneCropResize,
    MergeMasks,
    NeighbourSliceStack,
    RandSlice25D,
    ValidateVolume,
    lesion_slices,
    stack_slices,
    take_slices,
)
from .dictionary import (
    InPlaneCropResized,
    MergeMasksd,
    NeighbourSliceStackd,
    RandSlice25Dd,
    Slice25Dd,
    ValidateVolumed,
)

__all__ = [
    "DEFAULT_OFFSETS",
    "InPlaneCropResize",
    "MergeMasks",
    "NeighbourSliceStack",
    "RandSlice25D",
    "ValidateVolume",
    "lesion_slices",
    "stack_slices",
    "take_slices",
    "InPlaneCropResized",
    "MergeMasksd",
    "NeighbourSliceStackd",
    "RandSlice25Dd",
    "Slice25Dd",
    "ValidateVolumed",
]
