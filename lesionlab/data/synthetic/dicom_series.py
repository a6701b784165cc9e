"""Synthetic MR and CT series written as real DICOM files (pydicom), for tests and demonstrations.

* :func:`synth_dicom_series`: a brain-like series with one lesion (from
  :func:`lesionlab.data.synthetic.synth_volume_pair`, or a given volume), one file per slice.
* :func:`synth_head_dicom_series`: a synthetic T1 head in scanner space (tilted, shifted, not on the model grid).

Both return a :class:`SyntheticSeries` (files, UIDs, stored image and lesion mask). Reading a series back is
:func:`lesionlab.data.dicom.read_dicom_series`. The data are synthetic; nothing identifies a person.
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from lesionlab.utils import atomic_path

__all__ = ["SyntheticSeries", "synth_dicom_series", "synth_head_dicom_series"]

#: storage SOP classes of the images that :func:`synth_dicom_series` writes
_SOP_CLASS = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}


@dataclass
class SyntheticSeries:
    """What :func:`synth_dicom_series` wrote.

    Attributes:
        folder: output folder.
        files: the files, in slice order (slice ``k`` is ``files[k]``).
        series_instance_uid, study_instance_uid, frame_of_reference_uid: the UIDs written.
        image: stored pixel values, ``(n_slices, rows, columns)``.
        mask: the lesion mask of the synthetic volume, ``(n_slices, rows, columns)`` uint8.
        pixel_spacing: (row spacing, column spacing) in mm.
        slice_spacing: distance between slice centres in mm.
    """

    folder: str
    files: list[str]
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    image: np.ndarray
    mask: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_spacing: float


def synth_dicom_series(
    out_dir: str,
    n_slices: int = 24,
    modality: str = "MR",
    size: int = 64,
    seed: int = 0,
    pixel_spacing: tuple[float, float] = (0.9375, 0.9375),
    slice_spacing: float = 2.0,
    origin: tuple[float, float, float] = (-30.0, -30.0, 10.0),
    orientation: Sequence[float] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    patient_id: str = "LESIONLAB-SYNTH",
    patient_name: str = "LESIONLAB^SYNTHETIC",
    volume: tuple[np.ndarray, np.ndarray] | None = None,
) -> SyntheticSeries:
    """Write a synthetic brain-like series (one lesion) as DICOM files, one file per slice.

    The volume comes from :func:`lesionlab.data.synthetic.synth_volume_pair` (``size x size x n_slices``); its axis
    0 runs along the image rows' direction (columns of the DICOM pixel matrix), axis 1 along the columns' direction,
    axis 2 along the slice normal. Files are named ``IM0001.dcm``... in slice order and carry proper Image
    Position/Orientation (Patient), Pixel Spacing, Slice Thickness, Spacing Between Slices, Series/Study/Frame of
    Reference UIDs and the MR (or CT) Image Storage SOP class. Nothing identifies a person.

    Args:
        out_dir: folder to write (created; existing files of the same names are replaced).
        n_slices: number of slices (at least 16).
        modality: ``"MR"`` or ``"CT"``.
        size: rows and columns (at least 16).
        seed: random seed of the synthetic volume.
        pixel_spacing: (row spacing, column spacing) in mm, DICOM order.
        slice_spacing: slice distance (and thickness) in mm.
        origin: ImagePositionPatient of the first slice (LPS, mm).
        orientation: ImageOrientationPatient (row direction, column direction).
        patient_id: PatientID written.
        patient_name: PatientName written (DICOM ``family^given`` form).
        volume: ``(image, mask)`` to write instead of the toy brain, axes ``(columns, rows, slices)``, image in about
            [0, 1] (``n_slices`` and ``size`` are then taken from it; rows and columns may differ).

    Returns:
        the :class:`SyntheticSeries` written.

    Raises:
        ValueError: for an unsupported modality, too few slices or a non-orthonormal orientation.
    """
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    from lesionlab import __version__
    from lesionlab.data.synthetic import synth_volume_pair

    modality = modality.upper()
    if modality not in _SOP_CLASS:
        raise ValueError(f"modality must be one of {sorted(_SOP_CLASS)}, got {modality!r} "
                         "(NM and PT series are multi-frame or need decay data; not synthesised)")
    if volume is None and (n_slices < 16 or size < 16):
        raise ValueError(f"n_slices and size must be at least 16, got {n_slices} and {size}")
    iop = np.asarray(orientation, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    if not (np.isclose(np.linalg.norm(row_dir), 1, atol=1e-4) and np.isclose(np.linalg.norm(col_dir), 1, atol=1e-4)
            and abs(np.dot(row_dir, col_dir)) < 1e-4):
        raise ValueError(f"orientation must be two orthonormal direction cosines, got {tuple(orientation)}")
    normal = np.cross(row_dir, col_dir)
    if volume is None:
        image, mask = synth_volume_pair((size, size, n_slices), seed=seed)  # (x=columns, y=rows, z=slices)
    else:
        image, mask = np.asarray(volume[0], dtype=np.float32), np.asarray(volume[1])
        n_slices = image.shape[2]
    image = np.transpose(image, (2, 1, 0))  # -> (slices, rows, columns)
    mask = np.transpose(mask, (2, 1, 0)).astype(np.uint8)
    if modality == "MR":
        stored = np.clip(np.round(image * 1000.0), 0, 4095).astype(np.uint16)
        slope, intercept = 1.0, 0.0
    else:  # CT: tissue-like values in HU, stored with a -1024 intercept
        hu = np.where(image < 0.05, -1000.0, np.round(image * 80.0))  # air -1000 HU, brain-like 0..80 HU
        stored = np.clip(hu + 1024, 0, 4095).astype(np.uint16)
        slope, intercept = 1.0, -1024.0
    study_uid, series_uid, for_uid = generate_uid(), generate_uid(), generate_uid()
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for k in range(n_slices):
        sop_uid = generate_uid()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = _SOP_CLASS[modality]
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        path = os.path.join(out_dir, f"IM{k + 1:04d}.dcm")
        ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = _SOP_CLASS[modality], sop_uid
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
        ds.Modality = modality
        ds.Manufacturer = "lesionlab (synthetic)"
        ds.SoftwareVersions = __version__
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, for_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = date
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = time
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.StudyDescription = "lesionlab synthetic study"
        ds.SeriesDescription = f"synthetic {modality} (lesionlab, seed {seed})"
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = 1, k + 1, 1
        ds.BodyPartExamined = "BRAIN"
        ds.PositionReferenceIndicator = ""
        ds.PatientPosition = "HFS"
        ipp = np.asarray(origin, dtype=float) + k * slice_spacing * normal
        ds.ImagePositionPatient = [f"{v:.6g}" for v in ipp]
        ds.ImageOrientationPatient = [f"{v:.6g}" for v in iop]
        ds.SliceLocation = f"{float(np.dot(ipp, normal)):.6g}"
        ds.PixelSpacing = [f"{v:.6g}" for v in pixel_spacing]
        ds.SliceThickness = f"{slice_spacing:.6g}"
        ds.SpacingBetweenSlices = f"{slice_spacing:.6g}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleSlope, ds.RescaleIntercept = f"{slope:g}", f"{intercept:g}"
        if modality == "MR":
            ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions = "GR", "SP", ""
            ds.MRAcquisitionType = "3D"
            ds.RepetitionTime, ds.EchoTime, ds.EchoTrainLength = "8.1", "3.7", "1"
            ds.MagneticFieldStrength = "3"
            ds.WindowCenter, ds.WindowWidth = "600", "1200"
        else:
            ds.RescaleType = "HU"
            ds.KVP = "120"
            ds.WindowCenter, ds.WindowWidth = "40", "80"
        ds.PixelData = np.ascontiguousarray(stored[k]).tobytes()
        with atomic_path(path, suffix=".dcm") as tmp:
            ds.save_as(tmp, enforce_file_format=True)
        files.append(path)
    pydicom.dcmread(files[0], stop_before_pixels=True)  # fail here, not in a user's viewer, if unreadable
    return SyntheticSeries(
        folder=os.path.abspath(out_dir), files=files, series_instance_uid=series_uid, study_instance_uid=study_uid,
        frame_of_reference_uid=for_uid, image=stored, mask=mask,
        pixel_spacing=(float(pixel_spacing[0]), float(pixel_spacing[1])), slice_spacing=float(slice_spacing),
    )


def synth_head_dicom_series(
    out_dir: str,
    seed: int = 0,
    tilt_degrees: tuple[float, float, float] = (12.0, -4.0, 6.0),
    shift_mm: tuple[float, float, float] = (6.0, -10.0, 8.0),
    pixel_spacing: float = 0.9375,
    slice_spacing: float = 3.0,
    size: int = 224,
    n_slices: int = 52,
) -> SyntheticSeries:
    """A synthetic T1 head series in scanner space: a synthetic stroke subject (MNI152 template based, as in
    :func:`lesionlab.data.synthetic.synth_atlas`) moved by a rigid map (``tilt_degrees`` about x, y, z and
    ``shift_mm``) and sampled on an axial-oblique grid of ``size`` x ``size`` x ``n_slices`` voxels of
    ``pixel_spacing`` x ``pixel_spacing`` x ``slice_spacing`` mm, written as real DICOM files. It is what a hospital
    series looks like to ``lesionlab infer``: not on the model grid, so the bundles register it to MNI152.
    :attr:`SyntheticSeries.mask` is the lesion on the series grid (linear interpolation, threshold 0.5).
    """
    from lesionlab.data.grid import resample
    from lesionlab.data.synthetic.brain import synth_subject

    image, mask, affine = synth_subject(seed)
    rx, ry, rz = np.deg2rad(tilt_degrees)
    rot_x = np.array([[1, 0, 0], [0, np.cos(rx), -np.sin(rx)], [0, np.sin(rx), np.cos(rx)]])
    rot_y = np.array([[np.cos(ry), 0, np.sin(ry)], [0, 1, 0], [-np.sin(ry), 0, np.cos(ry)]])
    rot_z = np.array([[np.cos(rz), -np.sin(rz), 0], [np.sin(rz), np.cos(rz), 0], [0, 0, 1]])
    move = np.eye(4)  # series (scanner) world -> MNI world
    move[:3, :3], move[:3, 3] = rot_z @ rot_y @ rot_x, shift_mm
    axes = np.diag([-1.0, -1.0, 1.0])  # RAS directions of an axial series: rows to the left, columns backwards, up
    spacing = np.array([pixel_spacing, pixel_spacing, slice_spacing])
    extent = (np.array([size, size, n_slices]) - 1) * spacing
    grid = np.eye(4)
    grid[:3, :3] = axes * spacing[None, :]
    grid[:3, 3] = -axes @ (extent / 2.0) + np.array([0.0, -18.0, 10.0])  # centred on the head
    head = resample(image[None].astype(np.float32), affine, (size, size, n_slices), grid, move, order=1)[0]
    lesion = resample(mask[None].astype(np.float32), affine, (size, size, n_slices), grid, move, order=1)[0] > 0.5
    head = head / max(float(head.max()), 1e-6)
    lps = np.diag([-1.0, -1.0, 1.0]) @ axes
    orientation = (*lps[:, 0], *lps[:, 1])
    origin = tuple(float(v) for v in np.diag([-1.0, -1.0, 1.0]) @ grid[:3, 3])
    return synth_dicom_series(out_dir, seed=seed, pixel_spacing=(pixel_spacing, pixel_spacing),
                              slice_spacing=slice_spacing, origin=origin, orientation=orientation,
                              volume=(head, lesion.astype(np.uint8)))
