"""DICOM in, DICOM out (lesionlab.data.dicom) and image I/O for deployment (lesionlab.data.io).

Every output is read back with an independent reader (pydicom/highdicom, pynrrd, nibabel) and its geometry is compared
with the source, computed from the DICOM headers by hand rather than through SimpleITK.
"""

from __future__ import annotations

import json
import os
import shutil

import nibabel as nib
import numpy as np
import pydicom
import pytest
import SimpleITK as sitk

from lesionlab.data.dicom import (
    SegmentInfo,
    dicom_series_to_nifti,
    is_dicom_file,
    list_dicom_series,
    read_dicom_series,
)
from lesionlab.data.dicom_seg import write_dicom_seg
from lesionlab.data.io import (
    find_cases,
    label_volumes_ml,
    prepare_case,
    segments_from_metadata,
    write_seg_nrrd,
)
from lesionlab.data.synthetic.dicom_series import synth_dicom_series
from lesionlab.errors import DataError

# a non-axial orientation (rows along +y, columns along -z) and anisotropic pixels catch axis and spacing swaps
ORIENTATION = (0.0, 1.0, 0.0, 0.0, 0.0, -1.0)
PIXEL_SPACING = (0.8, 1.1)  # (row spacing, column spacing)


def _pydicom_testdata_dir() -> str | None:
    from pydicom.data import get_testdata_file

    ct = get_testdata_file("CT_small.dcm")
    folder = os.path.join(os.path.dirname(ct), "dicomdirtests", "98892001", "CT5N") if ct else ""
    return folder if os.path.isdir(folder) else None


def _ras_affine_from_headers(files: list[str]) -> np.ndarray:
    """NIfTI (RAS) affine of a series computed from its DICOM headers (files in slice order)."""
    first, second = pydicom.dcmread(files[0]), pydicom.dcmread(files[1])
    iop = np.asarray(first.ImageOrientationPatient, float)
    row_sp, col_sp = (float(v) for v in first.PixelSpacing)
    lps = np.eye(4)
    lps[:3, 0] = iop[:3] * col_sp  # index i runs along a row (across columns)
    lps[:3, 1] = iop[3:] * row_sp  # index j runs down a column (across rows)
    lps[:3, 2] = np.asarray(second.ImagePositionPatient, float) - np.asarray(first.ImagePositionPatient, float)
    lps[:3, 3] = np.asarray(first.ImagePositionPatient, float)
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


@pytest.fixture(scope="module")
def mr_series(tmp_path_factory):
    return synth_dicom_series(str(tmp_path_factory.mktemp("dcm") / "mr"), n_slices=16, size=32, seed=3,
                              pixel_spacing=PIXEL_SPACING, slice_spacing=2.5, origin=(12.0, -40.0, 25.0),
                              orientation=ORIENTATION)


def test_synth_dicom_series_headers(mr_series):
    s = mr_series
    assert len(s.files) == 16 and all(is_dicom_file(f) for f in s.files)
    normal = np.cross(ORIENTATION[:3], ORIENTATION[3:])
    for k, f in enumerate(s.files):
        ds = pydicom.dcmread(f)
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.4" and ds.Modality == "MR"
        assert ds.file_meta.MediaStorageSOPClassUID == ds.SOPClassUID
        assert ds.SeriesInstanceUID == s.series_instance_uid and ds.StudyInstanceUID == s.study_instance_uid
        assert ds.FrameOfReferenceUID == s.frame_of_reference_uid
        np.testing.assert_allclose([float(v) for v in ds.ImageOrientationPatient], ORIENTATION)
        np.testing.assert_allclose([float(v) for v in ds.ImagePositionPatient],
                                   np.asarray([12.0, -40.0, 25.0]) + 2.5 * k * normal, atol=1e-4)
        np.testing.assert_allclose([float(v) for v in ds.PixelSpacing], PIXEL_SPACING)
        assert float(ds.SliceThickness) == 2.5 and ds.InstanceNumber == k + 1
        np.testing.assert_array_equal(ds.pixel_array, s.image[k])
    assert s.mask.shape == s.image.shape and 0 < s.mask.sum() < s.mask.size


def test_synth_dicom_series_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="modality"):
        synth_dicom_series(str(tmp_path / "x"), modality="NM")
    with pytest.raises(ValueError, match="at least 16"):
        synth_dicom_series(str(tmp_path / "x"), n_slices=4)
    with pytest.raises(ValueError, match="orthonormal"):
        synth_dicom_series(str(tmp_path / "x"), orientation=(1, 0, 0, 1, 0, 0))


def test_read_series_geometry_matches_headers(mr_series, tmp_path):
    image, series = read_dicom_series(mr_series.folder)
    assert series.series_instance_uid == mr_series.series_instance_uid and series.modality == "MR"
    assert series.files == mr_series.files  # slice order
    assert image.GetSize() == (32, 32, 16)
    np.testing.assert_allclose(image.GetSpacing(), (PIXEL_SPACING[1], PIXEL_SPACING[0], 2.5))
    np.testing.assert_allclose(image.GetOrigin(), (12.0, -40.0, 25.0))
    np.testing.assert_array_equal(sitk.GetArrayFromImage(image), mr_series.image)
    # NIfTI written on the fly: nibabel's affine equals the RAS affine computed from the headers
    out = str(tmp_path / "mr.nii.gz")
    dicom_series_to_nifti(mr_series.folder, out)
    nii = nib.load(out)
    np.testing.assert_allclose(nii.affine, _ras_affine_from_headers(mr_series.files), atol=1e-4)
    np.testing.assert_array_equal(np.asarray(nii.dataobj)[:, :, 3], mr_series.image[3].T)


def test_series_selection_in_a_folder_with_several(tmp_path):
    a = synth_dicom_series(str(tmp_path / "a"), n_slices=16, size=16, seed=1)
    b = synth_dicom_series(str(tmp_path / "b"), n_slices=18, size=16, seed=2)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    for s, prefix in ((a, "A"), (b, "B")):
        for f in s.files:
            shutil.copy(f, mixed / f"{prefix}_{os.path.basename(f)}")
    assert {u: len(f) for u, f in list_dicom_series(str(mixed)).items()} == {a.series_instance_uid: 16,
                                                                             b.series_instance_uid: 18}
    _, chosen = read_dicom_series(str(mixed))
    assert chosen.series_instance_uid == b.series_instance_uid  # the one with the most files
    assert chosen.other_series == {a.series_instance_uid: 16}
    _, picked = read_dicom_series(str(mixed), series_uid=a.series_instance_uid)
    assert picked.series_instance_uid == a.series_instance_uid and len(picked.files) == 16
    with pytest.raises(DataError, match="no series 1.2.3"):
        read_dicom_series(str(mixed), series_uid="1.2.3")
    cases = find_cases(str(mixed), series_uid=a.series_instance_uid)
    assert len(cases) == 1 and cases[0].kind == "dicom" and cases[0].series_uid == a.series_instance_uid


def test_missing_slice_and_mixed_orientations_are_refused(mr_series, tmp_path):
    gap = tmp_path / "gap"
    gap.mkdir()
    for f in mr_series.files[:7] + mr_series.files[8:]:
        shutil.copy(f, gap)
    with pytest.raises(DataError, match="not evenly spaced"):
        read_dicom_series(str(gap))
    with pytest.raises(DataError, match="no DICOM image series"):
        read_dicom_series(str(tmp_path))
    real = _pydicom_testdata_dir()
    if real:  # pydicom's MR700 folder: 7 slices of one series, each in another orientation
        localizer = os.path.join(os.path.dirname(os.path.dirname(real)), "98892003", "MR700")
        with pytest.raises(DataError, match="different orientations"):
            read_dicom_series(localizer)


def test_dicom_seg_references_source_series(mr_series, tmp_path):
    import highdicom as hd

    image, series = read_dicom_series(mr_series.folder)
    label = sitk.GetImageFromArray(mr_series.mask)
    label.CopyInformation(image)
    out = write_dicom_seg(label, series, str(tmp_path / "seg.dcm"), [SegmentInfo(1, "lesion")],
                          algorithm_name="test-bundle", algorithm_version="0.1.0")
    seg = hd.seg.segread(out)
    assert seg.Modality == "SEG" and seg.number_of_frames == 16  # one frame per source slice, empty ones kept
    assert seg.FrameOfReferenceUID == mr_series.frame_of_reference_uid
    assert seg.StudyInstanceUID == mr_series.study_instance_uid
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == mr_series.series_instance_uid
    assert seg.get_segment_description(1).SegmentLabel == "lesion"
    assert seg.get_segment_description(1).SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"
    sources = {pydicom.dcmread(f).SOPInstanceUID: (k, pydicom.dcmread(f)) for k, f in enumerate(mr_series.files)}
    for fg, frame in zip(seg.PerFrameFunctionalGroupsSequence, seg.pixel_array):
        ref_uid = fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        k, src = sources[ref_uid]
        np.testing.assert_allclose([float(v) for v in fg.PlanePositionSequence[0].ImagePositionPatient],
                                   [float(v) for v in src.ImagePositionPatient], atol=1e-4)
        np.testing.assert_array_equal(frame, mr_series.mask[k])
    np.testing.assert_allclose([float(v) for v in seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0]
                                .ImageOrientationPatient], ORIENTATION)


def test_dicom_seg_of_a_real_ct_series_and_a_label_on_another_grid(tmp_path):
    """pydicom's CT5N test series (5 real CT slices); the label comes as NIfTI written by nibabel."""
    import highdicom as hd

    folder = _pydicom_testdata_dir()
    if folder is None:
        pytest.skip("pydicom's dicomdirtests CT series is not installed")
    image, series = read_dicom_series(folder)
    assert series.modality == "CT" and len(series.files) == 5 and image.GetSize() == (16, 16, 5)
    ct = sitk.GetArrayFromImage(image)
    mask = (ct > np.median(ct)).astype(np.uint8)  # (slices, rows, columns)
    label_path = str(tmp_path / "label.nii.gz")
    nib.save(nib.Nifti1Image(np.transpose(mask, (2, 1, 0)), _ras_affine_from_headers(series.files)), label_path)
    out = write_dicom_seg(label_path, series, str(tmp_path / "ct_seg.dcm"), [SegmentInfo(1, "lesion")])
    seg = hd.seg.segread(out)
    assert seg.number_of_frames == 5 and seg.FrameOfReferenceUID == pydicom.dcmread(series.files[0]).FrameOfReferenceUID
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series.series_instance_uid
    by_uid = {pydicom.dcmread(f).SOPInstanceUID: k for k, f in enumerate(series.files)}
    for fg, frame in zip(seg.PerFrameFunctionalGroupsSequence, seg.pixel_array):
        k = by_uid[fg.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID]
        np.testing.assert_array_equal(frame, mask[k])


def test_seg_nrrd_header_and_geometry(mr_series, tmp_path):
    import nrrd

    image, _ = read_dicom_series(mr_series.folder)
    arr = mr_series.mask.copy()
    arr[0, :2, :2] = 2  # a second segment
    label = sitk.GetImageFromArray(arr)
    label.CopyInformation(image)
    segments = [SegmentInfo(1, "lesion", (0.9, 0.2, 0.2)), SegmentInfo(2, "oedema", (0.2, 0.6, 0.9))]
    out = write_seg_nrrd(label, str(tmp_path / "case.seg.nrrd"), segments)
    data, header = nrrd.read(out)
    assert header["space"] == "left-posterior-superior" and data.dtype == np.uint8 and header["dimension"] == 3
    np.testing.assert_array_equal(data, np.transpose(arr, (2, 1, 0)))
    # geometry against the DICOM headers (LPS): origin = first slice position, rows of space directions = index steps
    lps = np.diag([-1.0, -1.0, 1.0, 1.0]) @ _ras_affine_from_headers(mr_series.files)
    np.testing.assert_allclose(header["space origin"], lps[:3, 3], atol=1e-4)
    np.testing.assert_allclose(np.asarray(header["space directions"]), lps[:3, :3].T, atol=1e-4)
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    for n, s in enumerate(segments):
        assert header[f"Segment{n}_Name"] == s.name
        assert header[f"Segment{n}_LabelValue"] == str(s.label_value)
        assert header[f"Segment{n}_Layer"] == "0"
        assert header[f"Segment{n}_ID"] == f"Segment_{s.label_value}"
        assert [float(c) for c in header[f"Segment{n}_Color"].split()] == pytest.approx(list(s.color))
        assert "TerminologyEntry" in header[f"Segment{n}_Tags"]
    idx = np.argwhere(data == 1)
    extent = [int(v) for v in header["Segment0_Extent"].split()]
    assert extent == [idx[:, 0].min(), idx[:, 0].max(), idx[:, 1].min(), idx[:, 1].max(), idx[:, 2].min(),
                      idx[:, 2].max()]
    assert header["Segment1_Extent"] == "0 1 0 1 0 0"


def test_find_cases_in_folders_and_datalists(mr_series, tmp_path):
    root = tmp_path / "inputs"
    (root / "sub").mkdir(parents=True)
    affine = np.diag([1.0, 1.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((16, 16, 16), np.float32), affine), root / "a.nii.gz")
    img = sitk.Image(16, 16, 16, sitk.sitkFloat32)
    sitk.WriteImage(img, str(root / "sub" / "b.nrrd"))
    sitk.WriteImage(img, str(root / "sub" / "c.mha"))
    shutil.copytree(mr_series.folder, root / "study" / "series1")
    (root / "notes.txt").write_text("not an image")
    cases = find_cases(str(root))
    assert [(c.case_id, c.kind) for c in cases] == [("a", "nifti"), ("study_series1", "dicom"), ("sub_b", "nrrd"),
                                                    ("sub_c", "metaimage")]
    # a datalist: its testing list, paths relative to the file, a missing file kept (reported later as failed)
    dl = root / "datalist.json"
    dl.write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "x"}],
                              "testing": [{"image": "sub/b.nrrd"}, {"image": "missing.nii.gz"}]}))
    cases = find_cases(str(dl))
    assert [c.case_id for c in cases] == ["b", "missing"]
    assert cases[0].path == str(root / "sub" / "b.nrrd")
    with pytest.raises(DataError, match="no such file"):
        prepare_case(cases[1], str(tmp_path))
    with pytest.raises(DataError, match="give the folder"):
        find_cases(_copy_without_suffix(mr_series.files[0], tmp_path))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no images"):
        find_cases(str(empty))
    with pytest.raises(DataError, match="no such"):
        find_cases(str(tmp_path / "nope"))


def _copy_without_suffix(path: str, folder) -> str:
    out = os.path.join(str(folder), "single_dicom_file")
    shutil.copy(path, out)
    return out


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_prepare_case_converts_with_geometry(tmp_path, suffix):
    arr = np.random.default_rng(0).random((16, 20, 24)).astype(np.float32)  # (z, y, x)
    img = sitk.GetImageFromArray(arr)
    img.SetSpacing((0.7, 0.9, 2.0))
    img.SetOrigin((10.0, -20.0, 30.0))
    img.SetDirection((0.0, 0.0, 1.0, 1.0, 0.0, 0.0, 0.0, 1.0, 0.0))
    src = str(tmp_path / f"img{suffix}")
    sitk.WriteImage(img, src)
    (case,) = find_cases(src)
    prepared = prepare_case(case, str(tmp_path))
    assert prepared.nifti.endswith(".nii.gz") and prepared.series is None
    nii = nib.load(prepared.nifti)
    direction = np.asarray(img.GetDirection()).reshape(3, 3) * np.asarray(img.GetSpacing())[None, :]
    expected = np.eye(4)
    expected[:3, :3] = np.diag([-1.0, -1.0, 1.0]) @ direction
    expected[:3, 3] = np.asarray([-10.0, 20.0, 30.0])
    np.testing.assert_allclose(nii.affine, expected, atol=1e-5)
    np.testing.assert_allclose(np.asarray(nii.dataobj), np.transpose(arr, (2, 1, 0)))


def test_segments_and_volumes():
    meta = {"network_data_format": {"outputs": {"pred": {"channel_def": {"0": "background", "1": "lesion"}}}}}
    (seg,) = segments_from_metadata(meta)
    assert (seg.label_value, seg.name) == (1, "lesion")
    assert [s.name for s in segments_from_metadata({})] == ["label"]
    label = np.zeros((4, 4, 4), np.uint8)
    label[:2, :2, :2] = 1  # 8 voxels
    vols = label_volumes_ml(label, 2.5, [seg])
    assert vols["lesion"] == {"label_value": 1, "voxels": 8, "volume_ml": pytest.approx(8 * 2.5 / 1000)}


def test_synth_dicom_command(tmp_path, capsys):
    from lesionlab.apps.cli import main

    assert main(["synth", "dicom", "--toy", "--out", str(tmp_path / "s"), "--n-slices", "16", "--size", "16",
                 "--modality", "CT"]) == 0
    assert "wrote 16 CT DICOM files" in capsys.readouterr().out
    _, series = read_dicom_series(str(tmp_path / "s"))
    assert series.modality == "CT" and len(series.files) == 16
    assert pydicom.dcmread(series.files[0]).SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
