"""Renogram readers: DICOM NM multi-frame (written and read back), real pydicom NM files, folders of DICOM frames,
plain stacks; the synthetic studies."""

from __future__ import annotations

import os

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file

from lesionlab.data.renogram import read_renogram, write_nm_dynamic
from lesionlab.data.synthetic.renogram import PHASES, synth_renogram_study, synth_renograms
from lesionlab.errors import DataError


def _frames(n=10, size=8, seed=0):
    return np.random.default_rng(seed).poisson(20, (n, size, size)).astype(np.float32)


def test_nm_multiframe_round_trip_with_phase_timing(tmp_path):
    frames = _frames(7)
    path = write_nm_dynamic(str(tmp_path / "r.dcm"), frames, [(4, 1.0), (3, 15.0)], pixel_spacing=(3.0, 2.5))
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.20" and ds.ImageType[2] == "DYNAMIC"
    study = read_renogram(path)
    np.testing.assert_array_equal(study.frames, frames)
    np.testing.assert_allclose(study.frame_start_s, [0, 1, 2, 3, 4, 19, 34])  # 4 x 1 s, then 15 s frames
    np.testing.assert_allclose(study.frame_duration_s, [1, 1, 1, 1, 15, 15, 15])
    assert study.pixel_spacing == (3.0, 2.5) and study.view == "POSTERIOR"


def test_phase_delay_and_two_detectors(tmp_path):
    path = write_nm_dynamic(str(tmp_path / "r.dcm"), _frames(6), [(3, 2.0), (3, 10.0)])
    ds = pydicom.dcmread(path)
    ds.PhaseInformationSequence[1].PhaseDelay = 5000  # 5 s pause before phase 2
    ds.DetectorVector = [1, 2, 1, 2, 1, 2]
    ds.NumberOfDetectors = 2
    ds.PhaseInformationSequence[0].NumberOfFramesInPhase = 2
    ds.PhaseInformationSequence[1].NumberOfFramesInPhase = 1
    ds.PhaseVector = [1, 1, 1, 1, 2, 2]
    ds.save_as(path)
    np.testing.assert_allclose(read_renogram(path).frame_start_s, [0, 2, 9])  # detector 1: the posterior view
    study = read_renogram(path, detector=2)
    np.testing.assert_allclose(study.frame_start_s, [0, 2, 4 + 5])
    assert list(study.frame_numbers) == [2, 4, 6] and list(read_renogram(path).frame_numbers) == [1, 3, 5]
    np.testing.assert_array_equal(study.frames, pydicom.dcmread(path).pixel_array[[1, 3, 5]])
    del ds.DetectorInformationSequence  # no view codes: two detectors are ambiguous
    ds.save_as(path)
    with pytest.raises(DataError, match="2 detectors"):
        read_renogram(path)


def test_real_pydicom_nm_whole_body_bone_scan_is_refused_with_the_reason():
    path = get_testdata_file("JPEG2000.dcm")  # GE whole-body bone scan shipped with pydicom
    with pytest.raises(DataError, match="WHOLE BODY.*not a dynamic renogram") as err:
        read_renogram(path)
    assert os.path.basename(path) in str(err.value)


def test_non_nm_dicom_is_refused():
    with pytest.raises(DataError, match="modality is CT, not NM"):
        read_renogram(get_testdata_file("CT_small.dcm"))


def test_folder_of_single_frame_files_is_ordered_by_acquisition_time(tmp_path):
    frames = _frames(4)
    times, durs = ["100005", "100000", "100015", "100010"], [5000, 5000, 5000, 5000]
    for k in range(4):
        path = write_nm_dynamic(str(tmp_path / f"f{k}.dcm"), frames[k:k + 1], [(1, 5.0)])
        ds = pydicom.dcmread(path)
        ds.AcquisitionTime, ds.ActualFrameDuration = times[k], durs[k]
        ds.SeriesInstanceUID = "1.2.3.4"
        ds.save_as(path)
    study = read_renogram(str(tmp_path))
    np.testing.assert_allclose(study.frame_start_s, [0, 5, 10, 15])
    np.testing.assert_array_equal(study.frames, frames[[1, 0, 3, 2]])


def test_plain_stacks(tmp_path):
    from PIL import Image

    frames = _frames(3).astype(np.uint8)
    np.savez(tmp_path / "s.npz", frames=frames, frame_start_s=[0, 10, 20], frame_duration_s=[10, 10, 10])
    assert read_renogram(str(tmp_path / "s.npz")).n_frames == 3
    tif = str(tmp_path / "s.tif")
    Image.fromarray(frames[0]).save(tif, save_all=True, append_images=[Image.fromarray(f) for f in frames[1:]])
    with pytest.raises(DataError, match="no frame timing"):
        read_renogram(tif)
    study = read_renogram(tif, frame_seconds=20)
    np.testing.assert_allclose(study.frame_start_s, [0, 20, 40])
    np.testing.assert_array_equal(study.frames, frames)


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_renogram(str(tmp_path / "nope.dcm"))
    (tmp_path / "empty.dcm").write_bytes(b"")
    with pytest.raises(DataError, match="zero-byte"):
        read_renogram(str(tmp_path / "empty.dcm"))


def test_synthetic_study_and_writer(tmp_path):
    s = synth_renogram_study(size=48, seed=3)
    assert s["frames"].shape == (sum(n for n, _ in PHASES), 48, 48)
    assert set(np.unique(s["kidneys"])) == {0, 1, 2}
    # the left kidney is on the image's left (posterior view)
    assert np.nonzero(s["kidneys"] == 1)[1].mean() < np.nonzero(s["kidneys"] == 2)[1].mean()
    assert 10 < s["truth"]["split_left_percent"] < 90
    records = synth_renograms(str(tmp_path), n=2, size=48, seed=1, progress=False)
    study = read_renogram(os.path.join(tmp_path, records[0]["image"]))
    assert study.n_frames == 137 and study.frame_start_s[60] == 60.0 and study.frame_duration_s[-1] == 15.0
    assert os.path.exists(tmp_path / "README.txt")
