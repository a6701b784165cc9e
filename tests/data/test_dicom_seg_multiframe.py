"""DICOM SEG for a multi-frame (enhanced) MR source: frames placed by their plane positions; dciodvfy clean."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pydicom
import pytest

from lesionlab.data.dicom import SegmentInfo, read_dicom_series
from lesionlab.data.dicom_seg import write_dicom_seg
from lesionlab.data.synthetic.dicom_series import synth_dicom_series


@pytest.fixture(scope="module")
def enhanced(tmp_path_factory):
    """A synthetic MR series converted to one Legacy Converted Enhanced MR object (highdicom), frames stored from
    the top slice down, as some scanners do."""
    import highdicom as hd

    base = tmp_path_factory.mktemp("mf")
    s = synth_dicom_series(str(base / "series"), n_slices=16, size=32, seed=1)
    sources = [pydicom.dcmread(f) for f in s.files]
    mf = hd.legacy.LegacyConvertedEnhancedMRImage(sources, series_instance_uid=hd.UID(), series_number=2,
                                                  sop_instance_uid=hd.UID(), instance_number=1)
    (base / "enh").mkdir()
    mf.save_as(str(base / "enh" / "enhanced.dcm"))
    return str(base / "enh")


def test_seg_of_multiframe_source(enhanced, tmp_path):
    import SimpleITK as sitk

    image, series = read_dicom_series(enhanced)
    arr = np.zeros(sitk.GetArrayFromImage(image).shape, np.uint8)
    arr[3:6, 10:20, 12:22] = 1
    label = sitk.GetImageFromArray(arr)
    label.CopyInformation(image)
    out = write_dicom_seg(label, series, str(tmp_path / "seg.dcm"), [SegmentInfo(1, "lesion")])
    seg = pydicom.dcmread(out)
    assert int(seg.NumberOfFrames) == 16
    frame_z = [float(f.PlanePositionSequence[0].ImagePositionPatient[2]) for f in seg.PerFrameFunctionalGroupsSequence]
    lesion_z = {float(image.TransformIndexToPhysicalPoint((0, 0, k))[2]) for k in (3, 4, 5)}
    pixels = seg.pixel_array
    with_lesion = {frame_z[i] for i in range(16) if pixels[i].any()}
    assert with_lesion == lesion_z and pixels.sum() == arr.sum()
    if shutil.which("dciodvfy"):
        r = subprocess.run(["dciodvfy", out], capture_output=True, text=True)
        errors = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.startswith("Error")]
        assert errors == [], errors
