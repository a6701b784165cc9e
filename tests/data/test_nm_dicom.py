"""DICOM NM out: the synthetic NM multi-frame writer and the renogram DICOM SEG, validated with dciodvfy (dicom3tools;
skipped without it, CI installs it) and read back with pydicom / highdicom; the SEG refusals; the output handler
keeps the PNG / NIfTI files when the SEG is refused."""

from __future__ import annotations

import os
import shutil
import subprocess
from types import SimpleNamespace

import numpy as np
import pydicom
import pytest
import torch
from monai.data import MetaTensor

from lesionlab.data import renogram
from lesionlab.data.nm_dicom import fused_source_frames, write_nm_dynamic, write_renogram_seg
from lesionlab.data.renogram import read_renogram
from lesionlab.errors import DataError

ROWS, COLS = 12, 10
# 60 x 1 s, then 14 x 15 s: after the first minute, fused frame 0 = frames 61-67, fused frame 1 = frames 68-74
PHASES = [(60, 1.0), (14, 15.0)]
FUSED1 = (60.0 + 7 * 15.0, 7 * 15.0)  # start 165 s, 105 s long


def _dciodvfy_errors(path: str) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (dicom3tools) not installed")
    r = subprocess.run(["dciodvfy", path], capture_output=True, text=True, timeout=120)
    return [line for line in (r.stdout + r.stderr).splitlines() if line.startswith("Error")]


@pytest.fixture
def nm(tmp_path):
    frames = np.random.default_rng(0).poisson(3, (74, ROWS, COLS)).astype(np.float32)
    return write_nm_dynamic(str(tmp_path / "renogram.dcm"), frames, PHASES, pixel_spacing=(3.0, 2.5))


def _mask():
    m = np.zeros((ROWS, COLS), bool)
    m[2:6, 1:4] = m[5:9, 6:9] = True  # two kidneys
    return m


def test_writer_is_reexported_and_nm_file_is_valid(nm):
    assert renogram.write_nm_dynamic is write_nm_dynamic  # still importable from lesionlab.data.renogram
    assert _dciodvfy_errors(nm) == []


def test_fused_frame_window_to_source_frames(nm):
    study = read_renogram(nm)
    assert fused_source_frames(study, *FUSED1) == list(range(68, 75))
    assert fused_source_frames(study, 60.0, 105.0) == list(range(61, 68))
    assert fused_source_frames(study, 0.0, 3.0) == [1, 2, 3]


def test_renogram_seg_geometry_references_codes_and_pixels(nm, tmp_path):
    import highdicom as hd

    study, mask = read_renogram(nm), _mask()
    out = write_renogram_seg(mask, study, *FUSED1, str(tmp_path / "r_fused1.seg.dcm"), algorithm_name="bundle-x")
    assert _dciodvfy_errors(out) == []
    seg, src = pydicom.dcmread(out), pydicom.dcmread(nm, stop_before_pixels=True)
    assert seg.Modality == "SEG" and seg.NumberOfFrames == 1 and (seg.Rows, seg.Columns) == (ROWS, COLS)
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID and seg.StudyInstanceUID == src.StudyInstanceUID
    frame = seg.PerFrameFunctionalGroupsSequence[0]
    shared = seg.SharedFunctionalGroupsSequence[0]
    groups = {**{e.keyword: e.value for e in shared}, **{e.keyword: e.value for e in frame}}
    np.testing.assert_allclose(groups["PlaneOrientationSequence"][0].ImageOrientationPatient, [-1, 0, 0, 0, 0, -1])
    np.testing.assert_allclose(groups["PlanePositionSequence"][0].ImagePositionPatient, [0, 0, 0])
    np.testing.assert_allclose(groups["PixelMeasuresSequence"][0].PixelSpacing, [3.0, 2.5])
    assert float(groups["PixelMeasuresSequence"][0].SliceThickness) == 3.0  # no NM SliceThickness: row spacing
    refs = frame.DerivationImageSequence[0].SourceImageSequence
    assert {r.ReferencedSOPInstanceUID for r in refs} == {src.SOPInstanceUID}
    assert [int(r.ReferencedFrameNumber) for r in refs] == list(range(68, 75))  # fused frame 1 = frames 68-74
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == src.SeriesInstanceUID
    segment = seg.SegmentSequence[0]
    assert segment.SegmentLabel == "renal parenchyma"
    assert (segment.SegmentedPropertyCategoryCodeSequence[0].CodeValue,
            segment.SegmentedPropertyTypeCodeSequence[0].CodeValue) == ("91723000", "64033007")
    assert segment.SegmentAlgorithmName == "bundle-x"
    np.testing.assert_array_equal(seg.pixel_array.astype(bool), mask)
    read = hd.seg.segread(out)  # highdicom reads it back too
    assert read.get_segment_description(1).segment_label == "renal parenchyma"
    np.testing.assert_array_equal(read.pixel_array.reshape(ROWS, COLS).astype(bool), mask)


def _refused(study, out, match, mask=None):
    with pytest.raises(DataError, match=match) as info:
        write_renogram_seg(_mask() if mask is None else mask, study, *FUSED1, out)
    assert not os.path.exists(out)
    return str(info.value)


@pytest.mark.parametrize("drop", ["FrameOfReferenceUID", "ImageOrientationPatient", "ImagePositionPatient",
                                  "PixelSpacing"])
def test_seg_refused_without_geometry(nm, tmp_path, drop):
    ds = pydicom.dcmread(nm)
    if drop in ("ImageOrientationPatient", "ImagePositionPatient"):
        delattr(ds.DetectorInformationSequence[0], drop)
    else:
        delattr(ds, drop)
    ds.save_as(nm)
    study = read_renogram(nm)
    msg = _refused(study, str(tmp_path / "s.dcm"), drop)
    assert nm in msg and "NM file without" in msg


def test_seg_refused_for_stacks_and_off_grid_masks(nm, tmp_path):
    study = read_renogram(nm)
    np.savez(tmp_path / "stack.npz", frames=study.frames, frame_start_s=study.frame_start_s,
             frame_duration_s=study.frame_duration_s)
    stack = read_renogram(str(tmp_path / "stack.npz"))
    assert "stack.npz" in _refused(stack, str(tmp_path / "a.dcm"), "image stack")
    assert "not on the study grid 12x10" in _refused(study, str(tmp_path / "b.dcm"), "grid", np.ones((10, 12)))


def test_output_handler_keeps_png_and_nifti_when_the_seg_is_refused(nm, tmp_path):
    from lesionlab.pipelines.renogram import RenogramOutputHandler

    study = read_renogram(nm)
    stack = str(tmp_path / "stack.npz")
    np.savez(stack, frames=study.frames, frame_start_s=study.frame_start_s, frame_duration_s=study.frame_duration_s)
    out = tmp_path / "out"
    out.mkdir()
    handler = RenogramOutputHandler(str(out), formats=["png", "nii.gz", "seg.dcm"], readout=False)
    engine = SimpleNamespace(state=SimpleNamespace(output=None, metrics={}))
    for src, name in ((nm, "a/dicom_fused1"), (stack, "a/stack_fused1")):
        pred = MetaTensor(torch.as_tensor(_mask()[None].astype(np.float32)),
                          meta={"filename_or_obj": name, "source_file": src, "frame_start_s": [FUSED1[0]],
                                "frame_duration_s": [FUSED1[1]]})
        engine.state.output = [{"pred": pred}]
        handler._iteration(engine)
    with pytest.raises(DataError, match="image stack"):
        handler._completed(engine)
    files = sorted(os.listdir(out))
    assert files == ["a_dicom_fused1.nii.gz", "a_dicom_fused1.png", "a_dicom_fused1.seg.dcm", "a_stack_fused1.nii.gz",
                     "a_stack_fused1.png"]


def test_seg_of_the_second_detector_uses_its_plane_and_frames(tmp_path):
    """Two interleaved detectors: the SEG of detector 2 lies on detector 2's plane and references its frames only."""
    import copy

    path = write_nm_dynamic(str(tmp_path / "two.dcm"), np.ones((6, ROWS, COLS)), [(4, 2.0), (2, 10.0)])
    ds = pydicom.dcmread(path)
    ds.DetectorVector, ds.NumberOfDetectors, ds.PhaseVector = [1, 2, 1, 2, 1, 2], 2, [1, 1, 1, 1, 2, 2]
    ds.PhaseInformationSequence[0].NumberOfFramesInPhase, ds.PhaseInformationSequence[1].NumberOfFramesInPhase = 2, 1
    second = copy.deepcopy(ds.DetectorInformationSequence[0])
    second.ViewCodeSequence[0].CodeMeaning = "anterior"
    second.ImageOrientationPatient, second.ImagePositionPatient = [1, 0, 0, 0, 0, -1], [0, 300, 0]
    ds.DetectorInformationSequence.append(second)
    ds.save_as(path)
    study = read_renogram(path, detector=2)  # frames 2, 4, 6 starting at 0, 2, 4 s
    out = write_renogram_seg(_mask(), study, 0.0, 4.0, str(tmp_path / "seg.dcm"))
    seg = pydicom.dcmread(out)
    frame = seg.PerFrameFunctionalGroupsSequence[0]
    refs = frame.DerivationImageSequence[0].SourceImageSequence
    assert [int(r.ReferencedFrameNumber) for r in refs] == [2, 4]
    np.testing.assert_allclose(frame.PlanePositionSequence[0].ImagePositionPatient, [0, 300, 0])
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    np.testing.assert_allclose(orientation, [1, 0, 0, 0, 0, -1])
