"""DICOM out: a binary DICOM Segmentation (highdicom) of a label volume on the grid of the series it was computed from.

One frame per source slice (empty frames kept, so frame ``k`` lies on source slice ``k``), the same
``FrameOfReferenceUID``, segments named after the bundle's labels. The series comes from
:func:`lesionlab.data.dicom.read_dicom_series`.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import numpy as np

from lesionlab.data.dicom import DicomSeries, SegmentInfo, read_dicom_series
from lesionlab.errors import DataError, LesionlabError
from lesionlab.utils import atomic_path

__all__ = ["build_segmentation", "frame_slices", "write_dicom_seg"]

logger = logging.getLogger(__name__)


def _on_series_grid(label, reference):
    """``label`` (SimpleITK image) resampled with nearest neighbour onto ``reference``'s grid when they differ."""
    import SimpleITK as sitk

    same = (
        label.GetSize() == reference.GetSize()
        and np.allclose(label.GetSpacing(), reference.GetSpacing(), atol=1e-4)
        and np.allclose(label.GetOrigin(), reference.GetOrigin(), atol=1e-3)
        and np.allclose(label.GetDirection(), reference.GetDirection(), atol=1e-4)
    )
    if same:
        return label
    logger.info("label grid differs from the DICOM series grid: resampling (nearest neighbour)")
    return sitk.Resample(label, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0, label.GetPixelID())


def frame_slices(source, reference, path: str) -> list[int]:
    """For each frame of a multi-frame (enhanced) source, the slice of ``reference`` (its volume) it lies on."""
    frames = source.get("PerFrameFunctionalGroupsSequence") or []
    n = int(source.NumberOfFrames)
    positions = []
    for f in frames:
        if "PlanePositionSequence" not in f:
            break
        positions.append([float(v) for v in f.PlanePositionSequence[0].ImagePositionPatient])
    if len(positions) != n:
        raise LesionlabError(f"{path}: multi-frame source without a plane position for every frame; a DICOM SEG "
                             "cannot place its frames (use --format nifti or nrrd)")
    index = [int(reference.TransformPhysicalPointToIndex(p)[2]) for p in positions]
    if sorted(index) != list(range(reference.GetSize()[2])):
        raise LesionlabError(f"{path}: the frames of the multi-frame source do not form one volume (frame slices "
                             f"{index[:8]}...); use --format nifti or nrrd")
    return index


def build_segmentation(
    sources: Sequence,
    masks: np.ndarray,
    segments: Sequence[SegmentInfo],
    algorithm_name: str = "lesionlab",
    algorithm_version: str = "",
    series_description: str = "lesionlab segmentation",
    category=None,
    property_type=None,
    content_label: str = "LESIONS",
    content_description: str = "Automatic lesion segmentation",
    **geometry,
):
    """The highdicom ``Segmentation`` (binary, empty frames kept) of ``masks`` derived from ``sources``.

    Shared by :func:`write_dicom_seg` and :func:`lesionlab.data.nm_dicom.write_renogram_seg`.

    Args:
        sources: source datasets (headers suffice), as highdicom takes them.
        masks: ``(frames, rows, columns, segments)`` 0/1.
        segments: one per mask channel (segment numbers 1, 2...): name and display colour.
        algorithm_name, algorithm_version: recorded as the segmentation algorithm (version: the package's by default).
        series_description: ``SeriesDescription`` of the SEG series.
        category, property_type: segmented property category and type codes (default: SCT morphologically
            abnormal structure / lesion).
        content_label, content_description: ``ContentLabel`` and ``ContentDescription``.
        geometry: ``pixel_measures``, ``plane_orientation``, ``plane_positions`` for highdicom when given.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    from lesionlab import __version__

    algorithm = hd.AlgorithmIdentificationSequence(
        name=algorithm_name[:64], family=codes.cid7162.ArtificialIntelligence,
        version=(algorithm_version or __version__)[:64],
    )
    descriptions = []
    for number, s in enumerate(segments, start=1):
        rgb = np.clip(np.asarray(s.color, dtype=float), 0.0, 1.0)
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number,
            segment_label=s.name[:64],
            segmented_property_category=category or codes.SCT.MorphologicallyAbnormalStructure,
            segmented_property_type=property_type or codes.SCT.Lesion,
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            display_color=hd.color.CIELabColor.from_rgb(*[int(round(255 * c)) for c in rgb]),
        ))
    return hd.seg.Segmentation(
        source_images=list(sources),
        pixel_array=masks,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=max(1, int(sources[0].get("SeriesNumber", 0) or 0)) + 1000,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="lesionlab",
        manufacturer_model_name=algorithm_name[:64],
        software_versions=__version__,
        device_serial_number="0",
        series_description=series_description[:64],
        content_label=content_label,
        content_description=content_description[:64],
        omit_empty_frames=False,
        **geometry,
    )


def write_dicom_seg(
    label,
    series: DicomSeries,
    out_path: str,
    segments: Sequence[SegmentInfo],
    algorithm_name: str = "lesionlab",
    algorithm_version: str = "",
    series_description: str = "lesionlab segmentation",
) -> str:
    """Write a binary DICOM SEG of ``label`` that references ``series`` (one frame per source slice).

    Args:
        label: label volume on the series grid: a SimpleITK image or the path of one (NIfTI, NRRD...). Voxel value
            ``segments[i].label_value`` belongs to segment ``i + 1``.
        series: the source series (from :func:`read_dicom_series`).
        out_path: ``.dcm`` file to write (atomically).
        segments: segments to encode, in order (segment numbers 1, 2...).
        algorithm_name, algorithm_version: recorded as the segmentation algorithm.
        series_description: ``SeriesDescription`` of the SEG series.

    Returns:
        ``out_path``.

    Raises:
        LesionlabError: when no segment is given, or a multi-frame source's frames do not form one volume.
        DataError: naming the file, when the label image or a source slice cannot be read (``out_path`` untouched).
    """
    import pydicom
    import SimpleITK as sitk

    if not segments:
        raise LesionlabError("write_dicom_seg needs at least one segment")
    if isinstance(label, (str, os.PathLike)):
        path = os.fspath(label)
        if not os.path.isfile(path) or os.path.getsize(path) == 0:
            raise DataError(path, "label image: no such file" if not os.path.isfile(path) else "label image: zero-byte")
        try:
            label = sitk.ReadImage(path)
        except RuntimeError as err:
            raise DataError(path, "label image cannot be read, so its geometry is unknown "
                                  f"({str(err).strip().splitlines()[-1][:200]})") from err
    sources = []
    for f in series.files:
        try:
            sources.append(pydicom.dcmread(f))
        except Exception as err:  # any parse failure is a data problem of this file
            raise DataError(f, f"source slice is not a readable DICOM file any more ({err})") from err
    reference, _ = read_dicom_series(series.folder, series.series_instance_uid)
    label = _on_series_grid(label, reference)
    arr = sitk.GetArrayFromImage(label)  # (slices, rows, columns), slices in series.files order
    if len(sources) == 1 and int(sources[0].get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame_slices(sources[0], reference, series.files[0])]  # one label frame per source frame
    elif arr.shape[0] != len(sources) or arr.shape[1:] != (int(sources[0].Rows), int(sources[0].Columns)):
        raise LesionlabError(f"label shape {arr.shape} does not match the series ({len(sources)} slices of "
                             f"{sources[0].Rows}x{sources[0].Columns})")
    masks = np.stack([(arr == s.label_value) for s in segments], axis=-1).astype(np.uint8)  # (F, R, C, S)
    seg = build_segmentation(sources, masks, segments, algorithm_name, algorithm_version, series_description)
    with atomic_path(out_path, suffix=".dcm") as tmp:
        seg.save_as(tmp)
    return out_path
