"""Synthetic data sets that need no download: one module per data set, plus shared helpers.

- ``brain``: synthetic brains from the MNI152 template (shared by the stroke writers) and a toy in-memory volume pair.
- ``atlas``: ATLAS R1.1 / R2.0 layout (:func:`synth_atlas`).
- ``isles``: ISLES 2015 SISS layout (:func:`synth_isles2015`).
- ``nuclei``: H&E nuclei in CoNIC (:func:`synth_conic`) and MoNuSAC (:func:`synth_monusac`) formats.
- ``renogram``: paediatric dynamic renal scintigraphy as DICOM NM with parenchyma masks (:func:`synth_renograms`).
- ``hubmap``: PAS-like kidney slides in the HuBMAP "Hacking the Kidney" layout (:func:`synth_hubmap`).
- ``dicom_series``: MR or CT series as real DICOM files (:func:`synth_dicom_series`), and a T1 head series in scanner
  space (:func:`synth_head_dicom_series`).
- ``common``: the output folder with its README and notices (:func:`prepare_output_folder`), for every generator.

A new data set's generator goes in its own module here and uses :func:`prepare_output_folder`. The data are
synthetic: for smoke tests, demos and pipeline checks, never for clinical use or for reporting accuracy.
"""

from __future__ import annotations

from .atlas import SYNTHETIC_README, synth_atlas
from .brain import MNI152_NOTICE, synth_volume_pair
from .common import prepare_output_folder
from .dicom_series import SyntheticSeries, synth_dicom_series, synth_head_dicom_series
from .hubmap import SYNTHETIC_HUBMAP_README, synth_hubmap
from .isles import SYNTHETIC_ISLES_README, synth_isles2015
from .nuclei import synth_conic, synth_monusac
from .renogram import SYNTHETIC_RENOGRAM_README, synth_renograms

__all__ = [
    "MNI152_NOTICE",
    "SYNTHETIC_HUBMAP_README",
    "SYNTHETIC_ISLES_README",
    "SYNTHETIC_README",
    "SYNTHETIC_RENOGRAM_README",
    "SyntheticSeries",
    "prepare_output_folder",
    "synth_atlas",
    "synth_conic",
    "synth_dicom_series",
    "synth_head_dicom_series",
    "synth_hubmap",
    "synth_isles2015",
    "synth_monusac",
    "synth_renograms",
    "synth_volume_pair",
]
