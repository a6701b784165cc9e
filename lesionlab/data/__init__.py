"""Data access: ATLAS discovery on disk and embedded synthetic data sets."""

from __future__ import annotations

from .atlas import ATLAS_VERSIONS, detect_atlas_version, find_atlas, find_atlas_r11, find_atlas_r20
from .isles import ISLES2015_SPACING, find_isles2015
from .synthetic import (
    MNI152_NOTICE,
    SYNTHETIC_ISLES_README,
    SYNTHETIC_README,
    synth_atlas,
    synth_isles2015,
    synth_volume_pair,
)

__all__ = [
    "ATLAS_VERSIONS",
    "ISLES2015_SPACING",
    "SYNTHETIC_ISLES_README",
    "find_isles2015",
    "synth_isles2015",
    "MNI152_NOTICE",
    "SYNTHETIC_README",
    "detect_atlas_version",
    "find_atlas",
    "find_atlas_r11",
    "find_atlas_r20",
    "synth_atlas",
    "synth_volume_pair",
]
