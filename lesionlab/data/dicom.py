"""DICOM in: read an image series with its geometry, or synthesise one (SEG out: :mod:`~lesionlab.data.dicom_seg`).

* :func:`list_dicom_series` / :func:`read_dicom_series`: a folder of single-frame DICOM files (MR, CT, NM, PT...) read
  with SimpleITK's ``ImageSeriesReader`` (files of one ``SeriesInstanceUID``, sorted along the slice normal by GDCM).
  Spacing, origin and direction are kept. When a folder holds several series, the one with the most files is taken
  unless a series UID is given. Before the volume is trusted, the headers are checked with pydicom: one orientation,
  one frame of reference, one in-plane size and evenly spaced slices (a missing slice would silently stretch the
  volume).
* :func:`dicom_series_to_nifti`: the same, written as NIfTI so that a bundle's ``LoadImaged`` (nibabel) reads it.
* writing a DICOM SEG that references the series is :func:`lesionlab.data.dicom_seg.write_dicom_seg`.
* :func:`synth_dicom_series`: a synthetic MR or CT series written as real DICOM files (pydicom), from
  :func:`lesionlab.data.synthetic.synth_volume_pair`, for tests and demonstrations.

Geometry conventions: SimpleITK and DICOM use LPS patient coordinates; a SimpleITK array is indexed ``[slice, row,
column]``, which is also the order of the frames and pixels of the files returned in :attr:`DicomSeries.files`.
"""

from __future__ import annotations

import datetime
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lesionlab.errors import DataError
from lesionlab.utils import atomic_path

__all__ = [
    "DicomSeries",
    "SegmentInfo",
    "SyntheticSeries",
    "is_dicom_file",
    "list_dicom_series",
    "read_dicom_series",
    "dicom_series_to_nifti",
    "synth_dicom_series",
    "synth_head_dicom_series",
]

logger = logging.getLogger(__name__)

#: storage SOP classes of the images that :func:`synth_dicom_series` writes
_SOP_CLASS = {"MR": "1.2.840.10008.5.1.4.1.1.4", "CT": "1.2.840.10008.5.1.4.1.1.2"}
#: a source series must not be one of these (they hold no image volume)
_NON_IMAGE_MODALITIES = {"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "SR", "KO", "PR", "REG", "DOC"}
# tolerances of the header consistency checks (mm and direction cosines)
_ORIENTATION_TOL = 1e-3
_SPACING_REL_TOL = 0.01


@dataclass
class SegmentInfo:
    """One segment of a label map: its value in the map, its name and display colour (RGB in [0, 1]).

    Args:
        label_value: voxel value of the segment in the label map (1, 2, ...).
        name: segment name shown to the user (e.g. ``"lesion"``).
        color: RGB colour, each component in [0, 1].
    """

    label_value: int
    name: str
    color: tuple[float, float, float] = (0.9, 0.2, 0.2)


@dataclass
class DicomSeries:
    """A DICOM image series as read from a folder.

    Attributes:
        folder: the folder the files are in.
        series_instance_uid, study_instance_uid, frame_of_reference_uid: identifiers of the series.
        modality: DICOM ``Modality`` (``"MR"``, ``"CT"``...).
        files: the files of the series in volume order (SimpleITK's slice order).
        patient_id: ``PatientID`` (may be empty).
        series_description: ``SeriesDescription`` (may be empty).
        other_series: ``{uid: number of files}`` of the other series found in the same folder.
    """

    folder: str
    series_instance_uid: str
    study_instance_uid: str
    frame_of_reference_uid: str
    modality: str
    files: list[str]
    patient_id: str = ""
    series_description: str = ""
    other_series: dict[str, int] = field(default_factory=dict)
    assumptions: list[str] = field(default_factory=list)

    def info(self) -> dict[str, object]:
        """JSON-serialisable description (no file list) for reports."""
        return {
            "folder": self.folder,
            "series_instance_uid": self.series_instance_uid,
            "study_instance_uid": self.study_instance_uid,
            "frame_of_reference_uid": self.frame_of_reference_uid,
            "modality": self.modality,
            "n_files": len(self.files),
            "patient_id": self.patient_id,
            "series_description": self.series_description,
            "other_series": dict(self.other_series),
            "assumptions": list(self.assumptions),
        }


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


def is_dicom_file(path: str) -> bool:
    """True when ``path`` is a DICOM Part 10 file (``DICM`` magic at byte 128) or ends with ``.dcm``."""
    if not os.path.isfile(path):
        return False
    if path.lower().endswith(".dcm"):
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def list_dicom_series(folder: str) -> dict[str, list[str]]:
    """``{SeriesInstanceUID: files in slice order}`` of the DICOM image series directly inside ``folder``.

    Raises:
        DataError: when ``folder`` is not a folder or holds no readable DICOM image series.
    """
    import SimpleITK as sitk

    if not os.path.exists(folder):
        raise DataError(folder, "no such folder")
    if not os.path.isdir(folder):
        raise DataError(folder, "not a folder (a DICOM series is read from the folder that holds its files)")
    reader = sitk.ImageSeriesReader()
    try:
        uids = reader.GetGDCMSeriesIDs(folder)
        series = {uid: list(reader.GetGDCMSeriesFileNames(folder, uid)) for uid in uids}
    except RuntimeError as err:  # GDCM failing on the folder as a whole
        raise DataError(folder, f"DICOM files in this folder cannot be listed ({str(err).strip()[-200:]})") from err
    series = {uid: files for uid, files in series.items() if files}
    if not series:
        candidates = _candidate_files(folder)
        bad = next(((f, p) for f in candidates if (p := _file_problem(f)) is not None), None)
        detail = f"; {len(candidates)} file(s) look like DICOM but none is a readable image slice" if candidates else ""
        if bad:
            detail += f" (e.g. {os.path.basename(bad[0])}: {bad[1]})"
        raise DataError(folder, f"no DICOM image series found in this folder (sub-folders are not searched){detail}")
    return series


def _candidate_files(folder: str) -> list[str]:
    """Files directly in ``folder`` that claim to be DICOM (``.dcm`` suffix or ``DICM`` magic), hidden files aside."""
    paths = [os.path.join(folder, e) for e in sorted(os.listdir(folder)) if not e.startswith(".")]
    return [p for p in paths if is_dicom_file(p)]


def _file_problem(path: str, series_uid: str | None = None) -> str | None:
    """Why ``path`` (a file GDCM left out of every image series) is damaged, or ``None`` when it is a sound DICOM
    object of another series (an SR, a SEG...). With ``series_uid``, a readable file of that series is damaged too
    (its pixel data could not be read)."""
    import pydicom

    if os.path.getsize(path) == 0:
        return "zero-byte file (empty), not a DICOM image"
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # noqa: BLE001 - any parse failure is a data problem of this file
        text = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        return f"not a readable DICOM file: truncated, damaged or not DICOM at all ({text[:200]})"
    uid = ds.get("SeriesInstanceUID")
    if not uid:
        return "DICOM header without SeriesInstanceUID (truncated or damaged file)"
    if series_uid is not None and str(uid) == series_uid:
        return (f"a file of series {series_uid} whose image cannot be read (truncated or damaged pixel data, or an "
                "unsupported encoding)")
    return None


def _headers(files: Sequence[str]) -> list:
    import pydicom

    out = []
    for f in files:
        try:
            out.append(pydicom.dcmread(f, stop_before_pixels=True))
        except Exception as err:  # any parse failure is a data problem of this file
            raise DataError(f, f"not a readable DICOM file ({err})") from err
    return out


def _check_geometry(folder: str, headers: Sequence) -> None:
    """Raise :class:`DataError` unless the slices form one evenly spaced volume."""
    first = headers[0]
    if "ImageOrientationPatient" not in first or "ImagePositionPatient" not in first:
        raise DataError(folder, "series has no ImageOrientationPatient/ImagePositionPatient; geometry unknown")
    iop = np.asarray([float(v) for v in first.ImageOrientationPatient])
    size = (int(first.Rows), int(first.Columns))
    for h in headers[1:]:
        name = os.path.basename(str(getattr(h, "filename", "") or "?"))
        if "ImageOrientationPatient" not in h or "ImagePositionPatient" not in h:
            raise DataError(folder, f"slice {name} has no ImageOrientationPatient/ImagePositionPatient")
        if np.abs(np.asarray([float(v) for v in h.ImageOrientationPatient]) - iop).max() > _ORIENTATION_TOL:
            raise DataError(folder, f"slices of series {first.SeriesInstanceUID} have different orientations "
                                    f"({name} differs; a localizer or several stacks); not one volume")
        if (int(h.Rows), int(h.Columns)) != size:
            raise DataError(folder, f"slices of series {first.SeriesInstanceUID} have different sizes (rows x "
                                    f"columns): {name} is {int(h.Rows)}x{int(h.Columns)}, the first slice "
                                    f"{size[0]}x{size[1]}")
        if h.get("FrameOfReferenceUID") != first.get("FrameOfReferenceUID"):
            raise DataError(folder, f"slices of series {first.SeriesInstanceUID} have different frames of reference")
    if len(headers) < 2:
        return
    normal = np.cross(iop[:3], iop[3:])
    pos = np.asarray([np.dot(normal, [float(v) for v in h.ImagePositionPatient]) for h in headers])
    steps = np.diff(pos)
    if np.any(np.abs(steps) < 1e-4):
        raise DataError(folder, "two slices of the series share one position (duplicate files or several echoes)")
    step = float(np.median(steps))
    if np.abs(steps - step).max() > _SPACING_REL_TOL * abs(step) + 1e-3:
        raise DataError(folder, f"slices are not evenly spaced (steps {np.round(steps, 3).tolist()} mm); "
                                "missing slices or a variable-thickness series cannot be read as one volume")


def _geometry_missing(header) -> list[str]:
    """What a series' first header lacks of its geometry: pixel spacing and/or orientation (single- or multi-frame
    attributes, top level or in the shared/per-frame functional groups)."""

    def find(keyword: str, group: str) -> bool:
        if keyword in header:
            return True
        for seq in ("SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence"):
            items = header.get(seq) or []
            if items and group in items[0] and items[0][group].value and keyword in items[0][group][0]:
                return True
        return False

    missing = []
    if not find("PixelSpacing", "PixelMeasuresSequence"):
        missing.append("PixelSpacing")
    if not find("ImageOrientationPatient", "PlaneOrientationSequence"):
        missing.append("ImageOrientationPatient")
    return missing


def read_dicom_series(folder: str, series_uid: str | None = None, spacing: Sequence[float] | None = None):
    """Read one DICOM image series of ``folder`` as a SimpleITK image (LPS geometry kept) and describe it.

    Args:
        folder: folder with the series' files (not searched recursively).
        series_uid: ``SeriesInstanceUID`` to read; default: the series with the most files.
        spacing: explicit voxel spacing (mm, x y z) for a series whose headers have no PixelSpacing or orientation;
            without it such a series is refused (GDCM would read it as 1 x 1 x 1 mm with an identity direction).
            The assumption is recorded in :attr:`DicomSeries.assumptions`.

    Returns:
        ``(image, series)``: a ``SimpleITK.Image`` and its :class:`DicomSeries`.

    Raises:
        DataError: no series, an unknown ``series_uid``, a non-image series (SEG, RTSTRUCT...), inconsistent slices
            (orientation, rows/columns, frame of reference, uneven spacing: a missing slice), a single 2D slice, image
            data that cannot be read. A file of the folder that claims to be DICOM (``.dcm`` suffix or ``DICM``
            magic) but is zero-byte, truncated or not DICOM at all is never skipped: the read fails with a
            :class:`DataError` naming that file, because a damaged file in a series folder is most often a slice of
            the series, and reading without it would give a wrong volume. Sound DICOM objects of other series (SR,
            SEG...) are left out (logged).
    """
    import SimpleITK as sitk

    folder = os.path.abspath(folder)
    all_series = list_dicom_series(folder)
    if series_uid is not None:
        if series_uid not in all_series:
            raise DataError(folder, f"no series {series_uid} here; series found: "
                                    + ", ".join(f"{u} ({len(f)} files)" for u, f in all_series.items()))
        uid = series_uid
    else:
        uid = max(all_series, key=lambda u: (len(all_series[u]), u))
        if len(all_series) > 1:
            logger.warning("%s: %d series found, reading %s (%d files, the most); choose another with a series UID",
                           folder, len(all_series), uid, len(all_series[uid]))
    files = all_series[uid]
    listed = {os.path.normpath(f) for fs in all_series.values() for f in fs}
    for f in _candidate_files(folder):  # files GDCM silently left out: never ignore a damaged one
        if os.path.normpath(f) not in listed:
            problem = _file_problem(f, uid)
            if problem is not None:
                raise DataError(f, f"{problem}; it is in the DICOM series folder {folder} (remove or replace it: "
                                   "it may be a missing slice)")
            logger.info("%s: DICOM object of another series, not an image slice; not read", f)
    headers = _headers(files)
    modality = str(headers[0].get("Modality", ""))
    if modality.upper() in _NON_IMAGE_MODALITIES:
        raise DataError(folder, f"series {uid} is a {modality} object, not an image series")
    missing = _geometry_missing(headers[0])
    assumptions: list[str] = []
    if missing and spacing is None:
        raise DataError(files[0] if len(files) == 1 else folder,
                        f"series {uid} has no {' and no '.join(missing)}: voxel size and direction would be invented "
                        "(read as 1 x 1 x 1 mm), so lesion volumes in mL would be wrong. Give the spacing explicitly "
                        "(lesionlab infer --spacing X Y Z) to use it anyway")
    if missing:
        assumptions.append(f"series has no {' and no '.join(missing)}: voxel spacing {list(spacing)} mm given by the "
                           "user" + (", identity direction assumed" if "ImageOrientationPatient" in missing else ""))
    if len(files) == 1 and int(headers[0].get("NumberOfFrames", 1) or 1) > 1:
        try:
            image = sitk.ReadImage(files[0])  # one multi-frame file (e.g. NM): GDCM builds the volume
        except RuntimeError as err:
            raise DataError(files[0], "multi-frame image data cannot be read (truncated or damaged?): "
                                      f"{str(err).strip().splitlines()[-1][:200]}") from err
    else:
        if len(files) < 2:
            raise DataError(folder, f"series {uid} has a single 2D slice ({os.path.basename(files[0])}); a 3D volume "
                                    "(several slices) is expected")
        _check_geometry(folder, headers)
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(files)
        try:
            image = reader.Execute()
        except RuntimeError as err:
            raise DataError(folder, f"the image data of series {uid} cannot be read (truncated or damaged files?): "
                                    f"{str(err).strip().splitlines()[-1][:200]}") from err
    h = headers[0]
    series = DicomSeries(
        folder=folder,
        series_instance_uid=uid,
        study_instance_uid=str(h.get("StudyInstanceUID", "")),
        frame_of_reference_uid=str(h.get("FrameOfReferenceUID", "")),
        modality=modality,
        files=list(files),
        patient_id=str(h.get("PatientID", "")),
        series_description=str(h.get("SeriesDescription", "")),
        other_series={u: len(f) for u, f in all_series.items() if u != uid},
        assumptions=assumptions,
    )
    if missing:
        image.SetSpacing([float(v) for v in spacing])  # type: ignore[union-attr] - given when missing
        if "ImageOrientationPatient" in missing:
            image.SetDirection(np.eye(3).ravel().tolist())
    return image, series


def dicom_series_to_nifti(folder: str, out_path: str, series_uid: str | None = None,
                          spacing: Sequence[float] | None = None) -> DicomSeries:
    """Write one DICOM series of ``folder`` to NIfTI ``out_path`` (geometry kept; written atomically); ``spacing``
    as in :func:`read_dicom_series`."""
    import SimpleITK as sitk

    image, series = read_dicom_series(folder, series_uid, spacing)
    suffix = ".nii.gz" if out_path.endswith(".nii.gz") else os.path.splitext(out_path)[1]
    with atomic_path(out_path, suffix=suffix) as tmp:
        sitk.WriteImage(image, tmp, True)
    return series


def _uid() -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid())


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
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian

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
    study_uid, series_uid, for_uid = _uid(), _uid(), _uid()
    now = datetime.datetime.now()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    os.makedirs(out_dir, exist_ok=True)
    files = []
    for k in range(n_slices):
        sop_uid = _uid()
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
