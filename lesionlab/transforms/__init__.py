"""Transforms: array versions in ``array.py``, dictionary twins in ``dictionary.py``."""

from __future__ import annotations

from .array import DEFAULT_OFFSETS, InPlaneCropResize, MergeMasks, NeighbourSliceStack, RandSlice25D, stack_slices
from .dictionary import InPlaneCropResized, MergeMasksd, NeighbourSliceStackd, RandSlice25Dd

__all__ = [
    "DEFAULT_OFFSETS", "InPlaneCropResize", "MergeMasks", "NeighbourSliceStack", "RandSlice25D", "stack_slices",
    "InPlaneCropResized", "MergeMasksd", "NeighbourSliceStackd", "RandSlice25Dd",
]

from .array import ValidateVolume  # noqa: E402
from .dictionary import ValidateVolumed  # noqa: E402

__all__ += ["ValidateVolume", "ValidateVolumed"]

from .renogram import (  # noqa: E402
    DropEarlyFrames,
    DropEarlyFramesd,
    FuseFrames,
    FuseFramesd,
    LoadRenogram,
    LoadRenogramd,
    PseudoColour,
    PseudoColourd,
    SelectFrames,
    SelectFramesd,
)

__all__ += [
    "LoadRenogram", "DropEarlyFrames", "FuseFrames", "SelectFrames", "PseudoColour",
    "LoadRenogramd", "DropEarlyFramesd", "FuseFramesd", "SelectFramesd", "PseudoColourd",
]
