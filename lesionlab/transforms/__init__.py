"""Transforms: array versions in ``array.py``, dictionary twins in ``dictionary.py``."""

from __future__ import annotations

from .array import DEFAULT_OFFSETS, InPlaneCropResize, MergeMasks, NeighbourSliceStack, RandSlice25D, stack_slices
from .array import lesion_slices, take_slices
from .dictionary import InPlaneCropResized, MergeMasksd, NeighbourSliceStackd, RandSlice25Dd, Slice25Dd

__all__ = [
    "DEFAULT_OFFSETS", "InPlaneCropResize", "MergeMasks", "NeighbourSliceStack", "RandSlice25D", "stack_slices",
    "lesion_slices", "take_slices",
    "InPlaneCropResized", "MergeMasksd", "NeighbourSliceStackd", "RandSlice25Dd", "Slice25Dd",
]

from .array import ValidateVolume  # noqa: E402
from .dictionary import ValidateVolumed  # noqa: E402

__all__ += ["ValidateVolume", "ValidateVolumed"]
