"""DICOM in: read an image series with its geometry (SEG out: :mod:`~lesionlab.data.dicom_seg`).

* :func:`list_dicom_series` / :func:`read_dicom_series`: a folder of single-frame DICOM files (MR, CT, NM, PT...) read
  with SimpleITK's ``ImageSeriesReader`` (files of one ``SeriesInstanceUID``, sorted along the slice normal by GDCM).
  Spacing, origin and direction are kept. When a folder holds several series, the one with the most files is taken
  unless a series UID is given. Before the volume is trusted, the headers are checked with pydicom: one orientation,
  one frame of reference, one in-plane size and evenly spaced slices (a missing slice would silently stretch the
  volume).
* :func:`dicom_series_to_nifti`: the same, written as NIfTI so that a bundle's ``LoadImaged`` (nibabel) reads it.
* writing a DICOM SEG that references the series is :func:`lesionlab.data.dicom_seg.write_dicom_seg`.
* :class:`SegmentInfo`: one segment of a label map (value, name, colour), for the writers of segmentations
  (:mod:`~lesionlab.data.io`, :mod:`~lesionlab.data.dicom_seg`, :mod:`~lesionlab.data.nm_dicom`).
* synthetic MR and CT series written as DICOM files, for tests and demonstrations, are in
  :mod:`lesionlab.data.synthetic.dicom_series`.

Geometry conventions: SimpleITK and DICOM use LPS patient coordinates; a SimpleITK array is indexed ``[slice, row,
column]``, which is also the order of the frames and pixels of the files returned in :attr:`DicomSeries.files`.
"""

from __future__ import annotations

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
    "is_dicom_file",
    "list_dicom_series",
    "read_dicom_series",
    "dicom_series_to_nifti",
]

logger = logging.getLogger(__name__)

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
