"""DICOM NM out: dynamic NM multi-frame files (synthetic renograms) and DICOM SEG of renogram predictions.

* :func:`write_nm_dynamic` writes frames as one NM Image Storage multi-frame dynamic acquisition (posterior view)
  that DICOM validators accept: ``dciodvfy`` (dicom3tools) reports no error for it (tests/data/test_nm_dicom.py).
* :func:`write_renogram_seg` writes a binary DICOM Segmentation of one predicted parenchyma mask of a fused frame.
  A renogram is planar: every NM frame lies on the detector's one plane, so the SEG has one frame per segment, on the
  NM file's plane, and that frame references the source NM frames it was fused from (``ReferencedFrameNumber`` in
  the frame's ``DerivationImageSequence``), found by time: the fused frame's window ``[start, start + duration)``.
  One SEG per fused frame (the fused frames of one study share one plane position, which a single SEG cannot tell
  apart).

  Geometry: ``ImageOrientationPatient`` and ``ImagePositionPatient`` of the detector's item of the
  ``DetectorInformationSequence``, ``PixelSpacing``, the NM file's ``FrameOfReferenceUID``. The SEG's pixel
  measures need a ``SliceThickness``, which a planar projection does not have: the NM file's ``SliceThickness`` when
  it has one, otherwise the nominal value of the row pixel spacing (recorded in the SEG; it places nothing).
  Segment: category SCT 91723000 "Anatomical Structure", type SCT 64033007 "Kidney" (DICOM CID 7150 / 7151; SNOMED
  has no pre-coordinated "renal parenchyma" code in those groups, SCT 91772007 is "Organ" / "Parenchyma" of any
  organ), label ``"renal parenchyma"``.

  Refused with a :class:`~lesionlab.errors.DataError` naming the file: sources that are not DICOM NM multi-frame
  files (image stacks, folders of single-frame files), NM files without ``FrameOfReferenceUID``, detector
  orientation / position or ``PixelSpacing``, and predictions that are not on the study's grid (rows x columns).
"""

from __future__ import annotations

import copy
import datetime
import os
from collections.abc import Sequence

import numpy as np

from lesionlab.data.dicom import SegmentInfo, is_dicom_file
from lesionlab.errors import DataError
from lesionlab.utils import atomic_path

__all__ = ["NM_IMAGE_STORAGE", "write_nm_dynamic", "nm_plane", "fused_source_frames", "write_renogram_seg",
           "PARENCHYMA"]

NM_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.20"
# (0054,0010) EnergyWindowVector, (0054,0020) DetectorVector, (0054,0030) PhaseVector
_ENERGY, _DETECTOR, _PHASE = 0x00540010, 0x00540020, 0x00540030
#: the one segment of a renogram SEG (label value 1 of the predicted mask)
PARENCHYMA = SegmentInfo(1, "renal parenchyma", (0.95, 0.75, 0.1))


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def write_nm_dynamic(
    path: str,
    frames: np.ndarray,
    phases: Sequence[tuple[int, float]],
    pixel_spacing: tuple[float, float] = (4.8, 4.8),
    patient_id: str = "LESIONLAB-SYNTH",
    patient_name: str = "LESIONLAB^SYNTHETIC",
    study_description: str = "lesionlab synthetic renogram",
    study_uid: str | None = None,
) -> str:
    """Write ``frames`` as one DICOM NM multi-frame dynamic acquisition (NM Image Storage, posterior view).

    Args:
        path: ``.dcm`` file to write (atomically).
        frames: counts, ``(n_frames, rows, columns)``; stored as uint16 (values clipped to 0..65535).
        phases: ``[(number of frames, frame duration in seconds), ...]`` in acquisition order; the frame numbers
            must add up to ``n_frames``.
        pixel_spacing: (row, column) spacing in mm.
        patient_id, patient_name, study_description: written as given (synthetic data: nothing identifies a person).
        study_uid: StudyInstanceUID (a new one by default).

    Returns:
        ``path``.
    """
    from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
    from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid

    from lesionlab import __version__

    frames = np.asarray(frames)
    if frames.ndim != 3:
        raise ValueError(f"frames must be (n_frames, rows, columns), got shape {frames.shape}")
    if sum(int(n) for n, _ in phases) != frames.shape[0]:
        raise ValueError(f"phases hold {sum(int(n) for n, _ in phases)} frames, frames has {frames.shape[0]}")
    stored = np.clip(np.round(frames), 0, 65535).astype(np.uint16)
    sop_uid = generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = NM_IMAGE_STORAGE
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds = FileDataset(path, {}, file_meta=meta, preamble=b"\0" * 128)
    now = datetime.datetime.now()
    ds.SOPClassUID, ds.SOPInstanceUID = NM_IMAGE_STORAGE, sop_uid
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "DYNAMIC", "EMISSION"]
    ds.Modality, ds.Manufacturer, ds.SoftwareVersions = "NM", "lesionlab (synthetic)", __version__
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = patient_name, patient_id, "", "O"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid()
    ds.PositionReferenceIndicator = ""  # type 2: no anatomical reference point
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.AcquisitionTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
    ds.StudyDescription, ds.SeriesDescription = study_description, "dynamic renal scintigraphy (posterior)"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.BodyPartExamined = "KIDNEY"  # PatientPosition is replaced by the NM/PET orientation codes below
    ds.Laterality = ""  # type 2C for a paired body part: both kidneys are imaged, so no single side
    # NM/PET Patient Orientation: supine (recumbent, modifier supine), head first (SCT codes of CID 19/20/21)
    orientation = _code("102538003", "SCT", "recumbent")
    orientation.PatientOrientationModifierCodeSequence = [_code("40199007", "SCT", "supine")]
    ds.PatientOrientationCodeSequence = [orientation]
    ds.PatientGantryRelationshipCodeSequence = [_code("102540008", "SCT", "headfirst")]
    n = int(frames.shape[0])
    ds.NumberOfFrames = n
    ds.FrameIncrementPointer = [_ENERGY, _DETECTOR, _PHASE]
    ds.EnergyWindowVector, ds.NumberOfEnergyWindows = [1] * n, 1
    ds.DetectorVector, ds.NumberOfDetectors = [1] * n, 1
    ds.PhaseVector = [k for k, (m, _) in enumerate(phases, start=1) for _ in range(int(m))]
    ds.NumberOfPhases = len(phases)
    items = []
    for m, dur in phases:
        ph = Dataset()
        ph.PhaseDelay, ph.ActualFrameDuration, ph.PauseBetweenFrames = 0, int(round(dur * 1000)), 0
        ph.NumberOfFramesInPhase = int(m)
        items.append(ph)
    ds.PhaseInformationSequence = items
    total = int(stored.sum(dtype=np.int64))
    ds.CountsAccumulated = total if total < 2**31 else None  # IS holds 31 bits; type 2: empty when it cannot
    # a local code (99 prefix: private coding scheme), so that no standard code is guessed
    view = Dataset()
    view.ViewCodeSequence = [_code("POSTERIOR", "99LESIONLAB", "posterior")]
    view.CollimatorType = "PARA"  # parallel hole, the renogram collimator
    view.ImageOrientationPatient = [-1, 0, 0, 0, 0, -1]  # seen from behind: rows run to the patient's left
    view.ImagePositionPatient = [0, 0, 0]
    ds.DetectorInformationSequence = [view]
    ew, rp = Dataset(), Dataset()
    rp.Radiopharmaceutical = "99mTc-MAG3 (synthetic)"
    rp.RadionuclideCodeSequence = [_code("44588005", "SCT", "Technetium^99m^")]
    ew.EnergyWindowName = "Tc99m"
    ds.EnergyWindowInformationSequence = [ew]
    ds.RadiopharmaceuticalInformationSequence = [rp]
    ds.PixelSpacing = [f"{v:.6g}" for v in pixel_spacing]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape[1], stored.shape[2]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    with atomic_path(path, suffix=".dcm") as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return path


def nm_plane(ds, path: str, detector: int = 1) -> dict:
    """The plane of an NM file's ``detector`` (1-based): ``orientation`` (6 cosines), ``position`` (mm),
    ``spacing`` (row, column mm), ``thickness`` (mm, see the module docstring) and ``frame_of_reference``.

    Raises:
        DataError: naming ``path``, for each missing piece (no FrameOfReferenceUID, no detector item, no
            ImageOrientationPatient / ImagePositionPatient in it, no PixelSpacing).
    """
    missing = []
    if not str(ds.get("FrameOfReferenceUID", "") or ""):
        missing.append("FrameOfReferenceUID")
    items = list(ds.get("DetectorInformationSequence") or [])
    item = items[detector - 1] if 0 < detector <= len(items) else None
    if item is None:
        missing.append(f"DetectorInformationSequence item {detector}")
    else:
        missing += [k for k in ("ImageOrientationPatient", "ImagePositionPatient") if not item.get(k)]
    spacing = ds.get("PixelSpacing")
    if not spacing or len(spacing) != 2:
        missing.append("PixelSpacing")
    if missing:
        raise DataError(path, f"NM file without {', '.join(missing)}: a DICOM SEG cannot be placed on its grid "
                              "(the PNG / NIfTI label images are written)")
    thickness = ds.get("SliceThickness")
    return {"orientation": [float(v) for v in item.ImageOrientationPatient],
            "position": [float(v) for v in item.ImagePositionPatient],
            "spacing": [float(v) for v in spacing],
            "thickness": float(thickness) if thickness not in (None, "") else float(spacing[0]),
            "frame_of_reference": str(ds.FrameOfReferenceUID)}


def fused_source_frames(study, start_s: float, duration_s: float) -> list[int]:
    """1-based source frame numbers of ``study`` (a :class:`~lesionlab.data.renogram.RenogramStudy`) acquired within
    ``[start_s, start_s + duration_s)``: the frames a fused frame with this timing was fused from."""
    tol = 1e-3
    starts = np.asarray(study.frame_start_s, float)
    ends = starts + np.asarray(study.frame_duration_s, float)
    inside = (starts >= start_s - tol) & (ends <= start_s + duration_s + tol)
    return [int(v) for v in np.asarray(study.frame_numbers)[inside]]


def write_renogram_seg(
    mask: np.ndarray,
    study,
    start_s: float,
    duration_s: float,
    out_path: str,
    algorithm_name: str = "lesionlab",
    series_description: str = "renal parenchyma (lesionlab)",
) -> str:
    """Write a binary DICOM SEG of the parenchyma ``mask`` of one fused frame of a DICOM NM renogram.

    Args:
        mask: ``(rows, columns)`` prediction on the study grid (non-zero = parenchyma).
        study: the :class:`~lesionlab.data.renogram.RenogramStudy` (read from a DICOM NM multi-frame file).
        start_s, duration_s: timing of the fused frame (seconds after the start of acquisition); the SEG frame
            references the source frames acquired in this window.
        out_path: ``.dcm`` file to write (atomically).
        algorithm_name: recorded as the segmentation algorithm (e.g. the bundle's name).
        series_description: ``SeriesDescription`` of the SEG series.

    Returns:
        ``out_path``.

    Raises:
        DataError: naming the file, for a source that is not a DICOM NM multi-frame file, an NM file without the
            geometry of a SEG (see :func:`nm_plane`), a mask off the study grid, or a window holding no source frame.
            ``out_path`` is untouched.
    """
    import pydicom
    from highdicom import PixelMeasuresSequence, PlaneOrientationSequence, PlanePositionSequence
    from pydicom.dataset import Dataset
    from pydicom.sr.codedict import codes

    from lesionlab.data.dicom_seg import build_segmentation

    path = str(study.source)
    if os.path.isdir(path) or not is_dicom_file(path):
        what = "a folder of single-frame DICOM files" if os.path.isdir(path) else "an image stack, not DICOM"
        raise DataError(path, f"renogram source is {what}: a DICOM SEG is written for DICOM NM multi-frame files only "
                              "(use --format nifti or png)")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
    except Exception as err:  # any parse failure is a data problem of this file
        raise DataError(path, f"not a readable DICOM file any more ({err})") from err
    if str(ds.get("SOPClassUID", "")) != NM_IMAGE_STORAGE:
        raise DataError(path, "not an NM Image Storage file: a renogram DICOM SEG needs a DICOM NM source")
    first = int(study.frame_numbers[0])  # the detector whose frames were read
    detector = int(np.atleast_1d(ds[_DETECTOR].value)[first - 1]) if _DETECTOR in ds else 1
    plane = nm_plane(ds, path, detector)
    mask = np.asarray(mask) > 0
    grid = (int(ds.Rows), int(ds.Columns))
    if mask.shape != grid:
        raise DataError(path, f"prediction of shape {mask.shape} is not on the study grid {grid[0]}x{grid[1]}; "
                              "no DICOM SEG written")
    frames = fused_source_frames(study, start_s, duration_s)
    if not frames:
        raise DataError(path, f"no source frame lies in the fused frame's window {start_s:g}-{start_s + duration_s:g}"
                              " s; the SEG cannot reference its source frames")
    # highdicom reads a multi-frame source's plane from enhanced functional groups, which NM files do not have: a
    # one-frame header copy presents the detector's plane that way; its frame reference is replaced below
    header = Dataset()
    for elem in ds:
        if elem.tag.group > 0x0002 and elem.tag not in (_ENERGY, _DETECTOR, _PHASE, 0x00280009):
            header.add(elem)
    header.NumberOfFrames = 1
    measures = PixelMeasuresSequence(plane["spacing"], plane["thickness"])
    orientation = PlaneOrientationSequence("PATIENT", plane["orientation"])
    shared = Dataset()
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = measures, orientation
    header.SharedFunctionalGroupsSequence = [shared]
    per_frame = Dataset()
    per_frame.PlanePositionSequence = PlanePositionSequence("PATIENT", plane["position"])
    header.PerFrameFunctionalGroupsSequence = [per_frame]
    seg = build_segmentation([header], mask[None, :, :, None].astype(np.uint8), [PARENCHYMA], algorithm_name,
                             series_description=series_description, category=codes.SCT.AnatomicalStructure,
                             property_type=codes.SCT.Kidney, content_label="PARENCHYMA",
                             content_description="Automatic renal parenchyma segmentation")
    # one Source Image item per source frame (readers such as highdicom's take one frame number per item)
    derivation = seg.PerFrameFunctionalGroupsSequence[0].DerivationImageSequence[0]
    template = derivation.SourceImageSequence[0]
    items = []
    for number in frames:
        item = copy.deepcopy(template)
        item.ReferencedFrameNumber = number
        items.append(item)
    derivation.SourceImageSequence = items
    with atomic_path(out_path, suffix=".dcm") as tmp:
        seg.save_as(tmp)
    return out_path
