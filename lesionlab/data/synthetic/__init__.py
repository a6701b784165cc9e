"""Synthetic data sets that need no download: one module per data set, plus shared helpers.

- ``brain``: synthetic brains from the MNI152 template (shared by the stroke writers) and a toy in-memory volume pair.
- ``atlas``: ATLAS R1.1 / R2.0 layout (:func:`synth_atlas`).
- ``isles``: ISLES 2015 SISS layout (:func:`synth_isles2015`).
- ``common``: the output folder with its README and notices (:func:`prepare_output_folder`), for every generator.

A new data set's generator goes in its own module here and uses :func:`prepare_output_folder`. The data are
synthetic: for smoke tests, demos and pipeline checks, never for clinical use or for reporting accuracy.
"""

from __future__ import annotations

from .atlas import SYNTHETIC_README, synth_atlas
from .brain import MNI152_NOTICE, synth_volume_pair
from .common import prepare_output_folder
from .isles import SYNTHETIC_ISLES_README, synth_isles2015

__all__ = [
    "MNI152_NOTICE",
    "SYNTHETIC_ISLES_README",
    "SYNTHETIC_README",
    "prepare_output_folder",
    "synth_atlas",
    "synth_isles2015",
    "synth_volume_pair",
]
