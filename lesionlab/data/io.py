"""Image input and segmentation output for deployment: what ``lesionlab infer`` reads and writes.

Inputs (:func:`find_cases`, :func:`prepare_case`): NIfTI (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr``),
MetaImage (``.mha``, ``.mhd``) files, DICOM series folders (:mod:`lesionlab.data.dicom`), a folder holding any mix of
those, or a MONAI datalist JSON. Every case is handed to a bundle as NIfTI, because the bundles' ``LoadImaged`` reads
NIfTI with nibabel in every environment (MONAI's ITK reader is optional); non-NIfTI inputs are converted with
SimpleITK, which keeps spacing, origin and direction.

Outputs: the bundle's own NIfTI prediction, a 3D Slicer segmentation ``.seg.nrrd`` (:func:`write_seg_nrrd`), a DICOM
SEG (:func:`lesionlab.data.dicom_seg.write_dicom_seg`), and per-case numbers (:func:`label_volumes_ml`).
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from lesionlab.data.dicom import DicomSeries, SegmentInfo, dicom_series_to_nifti, is_dicom_file, list_dicom_series
from lesionlab.data.headers import check_image_header, itk_header_reader
from lesionlab.errors import DataError
from lesionlab.utils import atomic_path

logger = logging.getLogger(__name__)

__all__ = [
    "is_mask_name",
    "IMAGE_SUFFIXES",
    "Case",
    "PreparedCase",
    "image_kind",
    "find_cases",
    "read_volume",
    "prepare_case",
    "segments_from_metadata",
    "label_volumes_ml",
    "write_seg_nrrd",
]

#: file suffixes read as images, and their kind
IMAGE_SUFFIXES: dict[str, str] = {
    ".nii.gz": "nifti", ".nii": "nifti", ".nrrd": "nrrd", ".nhdr": "nrrd", ".mha": "metaimage", ".mhd": "metaimage",
}
#: colours given to segments in label order (RGB in [0, 1]); the first is Slicer's usual red for lesions
_PALETTE = [(0.9, 0.2, 0.2), (0.2, 0.6, 0.9), (0.95, 0.8, 0.2), (0.4, 0.8, 0.3), (0.7, 0.4, 0.9), (0.9, 0.5, 0.1)]


@dataclass
class Case:
    """One input to segment.

    Attributes:
        case_id: name of the case in outputs (file-system safe, unique within a run).
        path: image file or DICOM series folder.
        kind: ``"nifti"``, ``"nrrd"``, ``"metaimage"`` or ``"dicom"``.
        series_uid: for DICOM, the series to read (``None``: the one with the most files).
    """

    case_id: str
    path: str
    kind: str
    series_uid: str | None = None


@dataclass
class PreparedCase:
    """A case ready for a bundle: its NIfTI path, for DICOM the series it came from, and the assumptions made."""

    case: Case
    nifti: str
    series: DicomSeries | None = None
    assumptions: list[str] = field(default_factory=list)


#: file names that are label masks or segmentations, never scans (ATLAS R1.1/R2.0, BIDS, lesionlab's own outputs)
MASK_NAME = re.compile(r"(lesionsmooth|_mask\b|_mask[._]|label-|_label\b|_seg\b|_seg[._]|\.seg\.|_lesion\b|_lesion[._]|"
                       r"_roi\b|_roi[._]|_ot\b|_ot[._])", re.IGNORECASE)


def is_mask_name(path: str) -> bool:
    """True when the file name says it is a label mask or a segmentation (``*_LesionSmooth_stx``, ``*_mask``,
    ``label-*``, ``*_seg``, ``*.seg.nrrd``...): such files are never taken as scans when a folder is searched."""
    return bool(MASK_NAME.search(os.path.basename(path)))


def image_kind(path: str) -> str | None:
    """Kind of an image file from its suffix (``"nifti"``, ``"nrrd"``, ``"metaimage"``), else ``None``."""
    low = path.lower()
    for suffix, kind in IMAGE_SUFFIXES.items():
        if low.endswith(suffix):
            return kind
    return None


def _stem(path: str) -> str:
    name = os.path.basename(os.path.normpath(path))
    low = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if low.endswith(suffix):
            return name[: -len(suffix)]
    return name


def _safe_id(text: str) -> str:
    text = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._")
    return text or "case"


def _unique(cases: list[Case]) -> list[Case]:
    seen: dict[str, int] = {}
    for c in cases:
        base = c.case_id
        if base in seen:
            seen[base] += 1
            c.case_id = f"{base}_{seen[base]}"
        else:
            seen[base] = 0
    return cases


def _datalist_images(path: str) -> list[str]:
    """Image paths of a MONAI datalist (its ``testing`` list if any, else every list), relative to the file."""
    try:
        with open(path) as f:
            data = json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(path, f"not a readable JSON datalist ({err})") from err
    if isinstance(data, list):
        groups = [data]
    elif isinstance(data, Mapping):
        if isinstance(data.get("testing"), list):
            groups = [data["testing"]]
        else:
            groups = [v for v in data.values() if isinstance(v, list)]
    else:
        groups = []
    base = os.path.dirname(os.path.abspath(path))
    images: list[str] = []
    for group in groups:
        for item in group:
            image = item.get("image") if isinstance(item, Mapping) else item
            if isinstance(image, (list, tuple)):  # several channels: not a single-input case
                raise DataError(path, f"datalist item has several images {image}; one image per case is expected")
            if isinstance(image, str):
                full = image if os.path.isabs(image) else os.path.join(base, image)
                if full not in images:
                    images.append(full)
    if not images:
        raise DataError(path, "datalist lists no images (expected items with an 'image' key)")
    return images


def _case_for(path: str, root: str | None = None, series_uid: str | None = None) -> Case:
    rel = os.path.relpath(path, root) if root else os.path.basename(os.path.normpath(path))
    if os.path.isdir(path):
        return Case(_safe_id(rel.replace(os.sep, "_")), os.path.abspath(path), "dicom", series_uid)
    kind = image_kind(path)
    if kind is None:
        if is_dicom_file(path):
            raise DataError(path, "a single DICOM file: give the folder of its series instead")
        raise DataError(path, f"unsupported input (expected one of {sorted(IMAGE_SUFFIXES)} or a DICOM folder)")
    rel_stem = os.path.join(os.path.dirname(rel), _stem(path)) if root else _stem(path)
    return Case(_safe_id(rel_stem.replace(os.sep, "_")), os.path.abspath(path), kind)


def find_cases(path: str, series_uid: str | None = None) -> list[Case]:
    """The cases named by ``path``: an image file, a DICOM series folder, a folder of inputs, or a datalist JSON.

    A folder that directly holds DICOM files is one case (one series; see ``series_uid``). Any other folder is
    searched recursively: every image file is a case and every sub-folder holding DICOM files is a case. Files that
    do not exist are still returned (from a datalist), so that they are reported as failed cases, not skipped.

    Args:
        path: the input given by the user.
        series_uid: ``SeriesInstanceUID`` to read from a DICOM folder (default: the series with the most files).

    Raises:
        DataError: when ``path`` does not exist, or names nothing that can be segmented.
    """
    if not os.path.exists(path):
        raise DataError(path, "no such file or folder")
    if os.path.isfile(path):
        if path.lower().endswith(".json"):
            return _unique([
                _case_for(p) if os.path.exists(p) else Case(_safe_id(_stem(p)), p, image_kind(p) or "missing")
                for p in _datalist_images(path)
            ])
        return [_case_for(path)]
    entries = sorted(os.listdir(path))
    if any(is_dicom_file(os.path.join(path, e)) for e in entries):
        return [_case_for(path, series_uid=series_uid)]
    cases: list[Case] = []
    for folder, dirs, files in os.walk(path):
        dirs.sort()
        full = [os.path.join(folder, f) for f in sorted(files) if not f.startswith(".")]
        if folder != path and any(is_dicom_file(f) for f in full):
            cases.append(_case_for(folder, root=path, series_uid=series_uid))
            dirs[:] = []  # a series folder's sub-folders are not searched
            continue
        masks = [f for f in full if image_kind(f) and is_mask_name(f)]
        for f in masks:
            logger.info("%s: a label mask or segmentation by its name; not segmented", f)
        cases.extend(_case_for(f, root=path) for f in full if image_kind(f) and f not in masks)
    if not cases:
        raise DataError(path, f"no images ({', '.join(IMAGE_SUFFIXES)}) and no DICOM series found in this folder")
    return _unique(cases)


def _last_line(err: BaseException) -> str:
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    return next((ln for ln in reversed(lines) if "ERROR" in ln), lines[-1] if lines else type(err).__name__)


def read_volume(path: str, kind: str | None = None, spacing: Sequence[float] | None = None):
    """Read an NRRD or MetaImage file as a 3D single-component SimpleITK image, or say clearly what is wrong.

    A 4D image whose fourth axis has size 1 is read as its 3D volume. Floating-point images must hold finite values.

    Args:
        path: ``.nrrd``/``.nhdr``/``.mha``/``.mhd`` file.
        kind: ``"nrrd"`` or ``"metaimage"`` (default: from the suffix), used in messages.
        spacing: explicit spacing (mm) for a header without orientation (see
            :func:`lesionlab.data.headers.check_image_header`); such a header is refused without it.

    Returns:
        the ``SimpleITK.Image`` (with ``spacing`` and identity direction when they were given for a header without).

    Raises:
        DataError: naming ``path``, for a missing, zero-byte, unparsable or truncated file, an image that is not 3D
            (2D, 4D with several volumes) or has several components, and NaN or infinite voxels.
    """
    import SimpleITK as sitk

    label = {"nrrd": "NRRD", "metaimage": "MetaImage"}.get(kind or image_kind(path) or "", "image")
    if not os.path.exists(path):
        raise DataError(path, "no such file")
    if not os.path.isfile(path):
        raise DataError(path, f"is a folder, not a {label} file")
    if os.path.getsize(path) == 0:
        raise DataError(path, f"zero-byte file (empty), not a {label} image")
    reader = itk_header_reader(path, f"{label} image")
    check_image_header(path, spacing)  # declared size and spacing, before the voxels are allocated
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise DataError(path, f"{label} voxel data cannot be read: the file is truncated or damaged, or its data file "
                              f"is missing ({_last_line(err)})") from err
    size = image.GetSize()
    if image.GetDimension() == 4 and size[3] == 1:
        image = sitk.Extract(image, [size[0], size[1], size[2], 0], [0, 0, 0, 0])
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(path, f"expected a 3D volume with one component per voxel, got a {image.GetDimension()}D "
                              f"image of size {list(size)} with {image.GetNumberOfComponentsPerPixel()} components")
    if spacing is not None and not check_image_header(path, spacing).has_geometry:
        image.SetSpacing([float(v) for v in spacing])
        image.SetDirection(np.eye(3).ravel().tolist())
        image.SetOrigin((0.0, 0.0, 0.0))
    arr = sitk.GetArrayViewFromImage(image)
    if np.issubdtype(arr.dtype, np.floating):
        n_nan, n_inf = int(np.isnan(arr).sum()), int(np.isinf(arr).sum())
        if n_nan or n_inf:
            raise DataError(path, f"{n_nan} NaN and {n_inf} infinite voxels; a volume must hold finite values")
    return image


def prepare_case(case: Case, work_dir: str, spacing: Sequence[float] | None = None) -> PreparedCase:
    """Make ``case`` readable by a bundle: NIfTI as is, anything else converted to ``work_dir/<case_id>.nii.gz``.

    Every input is checked before its voxels are allocated (:func:`lesionlab.data.headers.check_image_header`:
    declared size, spacing > 0, orientation present, data length); NRRD and MetaImage inputs are then read by
    :func:`read_volume`, DICOM series by :func:`lesionlab.data.dicom.read_dicom_series`. A NIfTI input with a sound
    header is passed on unread. A header without orientation is refused unless ``spacing`` is given; then the case
    is rewritten with that spacing, identity direction and origin 0, and the assumption is listed in
    :attr:`PreparedCase.assumptions`.

    Raises:
        DataError: for a missing or unreadable input.
    """
    import SimpleITK as sitk

    if not os.path.exists(case.path):
        raise DataError(case.path, "no such file or folder")
    out = os.path.join(work_dir, f"{case.case_id}.nii.gz")
    if case.kind == "dicom":
        list_dicom_series(case.path)  # a clear error for a folder without a series
        series = dicom_series_to_nifti(case.path, out, case.series_uid, spacing=spacing)
        return PreparedCase(case, out, series, list(series.assumptions))
    if case.kind not in ("nifti", "nrrd", "metaimage"):
        raise DataError(case.path, f"unsupported input kind {case.kind!r}")
    header = check_image_header(case.path, spacing)
    if case.kind == "nifti" and header.has_geometry:
        return PreparedCase(case, case.path)
    if case.kind == "nifti":
        import nibabel as nib

        img = nib.load(case.path)
        affine = np.diag([*[float(v) for v in spacing], 1.0])  # type: ignore[union-attr] - checked above
        fixed = nib.Nifti1Image(np.asanyarray(img.dataobj), affine)
        fixed.set_qform(affine, 1)
        fixed.set_sform(affine, 1)
        with atomic_path(out, suffix=".nii.gz") as tmp:
            nib.save(fixed, tmp)
        return PreparedCase(case, out, None, header.assumptions)
    image = read_volume(case.path, case.kind, spacing)
    with atomic_path(out, suffix=".nii.gz") as tmp:
        sitk.WriteImage(image, tmp, True)
    return PreparedCase(case, out, None, header.assumptions)


def segments_from_metadata(metadata: Mapping) -> list[SegmentInfo]:
    """Segments of a bundle's label output: ``network_data_format.outputs.<first>.channel_def`` without background.

    The label value of a segment is its ``channel_def`` key (as in MONAI Label). A bundle without a usable
    ``channel_def`` gets one segment ``"label"`` with value 1.
    """
    outputs = metadata.get("network_data_format", {}).get("outputs", {})
    channel_def = next(iter(outputs.values()), {}).get("channel_def", {}) if outputs else {}
    segments = []
    for key, name in sorted(channel_def.items(), key=lambda kv: int(kv[0]) if str(kv[0]).isdigit() else 0):
        if not str(key).isdigit() or int(key) == 0 or str(name).lower() == "background":
            continue
        segments.append(SegmentInfo(int(key), str(name), _PALETTE[(len(segments)) % len(_PALETTE)]))
    return segments or [SegmentInfo(1, "label", _PALETTE[0])]


def label_volumes_ml(label: np.ndarray, voxel_volume_mm3: float, segments: Sequence[SegmentInfo]) -> dict[str, dict]:
    """Voxel count and volume in mL (voxels x voxel volume / 1000) of every segment of a label array."""
    out = {}
    for s in segments:
        n = int(np.count_nonzero(label == s.label_value))
        out[s.name] = {"label_value": s.label_value, "voxels": n, "volume_ml": n * voxel_volume_mm3 / 1000.0}
    return out


def _extent(mask: np.ndarray) -> str:
    """Slicer ``SegmentN_Extent``: inclusive index bounds ``i0 i1 j0 j1 k0 k1`` (``0 -1 ...`` when empty)."""
    if not mask.any():
        return "0 -1 0 -1 0 -1"
    bounds = []
    for axis in range(3):
        other = tuple(a for a in range(3) if a != axis)
        idx = np.nonzero(mask.any(axis=other))[0]
        bounds += [int(idx[0]), int(idx[-1])]
    return " ".join(str(b) for b in bounds)


def _read_label(path: str):
    """A label image read with SimpleITK, or :class:`DataError` naming it when its geometry cannot be read."""
    import SimpleITK as sitk

    if not os.path.isfile(path):
        raise DataError(path, "label image: no such file")
    if os.path.getsize(path) == 0:
        raise DataError(path, "label image: zero-byte file (empty)")
    try:
        return sitk.ReadImage(path)
    except RuntimeError as err:
        raise DataError(path, f"label image cannot be read, so its geometry is unknown ({_last_line(err)})") from err


def write_seg_nrrd(label, out_path: str, segments: Sequence[SegmentInfo]) -> str:
    """Write a label volume as a 3D Slicer segmentation (``.seg.nrrd``), atomically.

    The file is a 3D ``unsigned char`` NRRD in LPS space (``space directions`` and ``space origin`` from the label's
    geometry) with the header keys Slicer's segmentation reader uses: ``Segmentation_MasterRepresentation``,
    ``Segmentation_ContainedRepresentationNames``, ``Segmentation_ReferenceImageExtentOffset`` and, for each segment
    ``N``, ``SegmentN_ID``, ``SegmentN_Name``, ``SegmentN_NameAutoGenerated``, ``SegmentN_Color``,
    ``SegmentN_ColorAutoGenerated``, ``SegmentN_LabelValue``, ``SegmentN_Layer`` (all segments in layer 0: one label
    map), ``SegmentN_Extent`` and ``SegmentN_Tags`` (a terminology entry: morphologically abnormal structure / lesion).

    Args:
        label: a SimpleITK image, or the path of a label image (NIfTI...), with values ``segments[i].label_value``.
        out_path: file to write; should end with ``.seg.nrrd``.
        segments: the segments to declare.

    Returns:
        ``out_path``.

    Raises:
        DataError: naming the label file when it cannot be read or is not 3D; ``out_path`` is then left untouched.
    """
    import nrrd
    import SimpleITK as sitk

    source = os.fspath(label) if isinstance(label, (str, os.PathLike)) else None
    if source is not None:
        label = _read_label(source)
    if label.GetDimension() != 3:
        raise DataError(source, f"a segmentation must be 3D, got {label.GetDimension()}D")
    arr = np.transpose(sitk.GetArrayFromImage(label), (2, 1, 0))  # -> (i, j, k) = NRRD's fastest axis first
    arr = np.rint(arr).astype(np.uint8)
    direction = np.asarray(label.GetDirection(), dtype=float).reshape(3, 3)
    spacing = np.asarray(label.GetSpacing(), dtype=float)
    header: dict[str, object] = {
        "type": "unsigned char",
        "dimension": 3,
        "space": "left-posterior-superior",
        "sizes": np.asarray(arr.shape),
        "space directions": (direction * spacing[None, :]).T,  # row i: step of index i in LPS mm
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
        "space origin": np.asarray(label.GetOrigin(), dtype=float),
        "Segmentation_MasterRepresentation": "Binary labelmap",
        "Segmentation_ContainedRepresentationNames": "Binary labelmap|",
        "Segmentation_ReferenceImageExtentOffset": "0 0 0",
    }
    for n, s in enumerate(segments):
        header.update({
            f"Segment{n}_ID": f"Segment_{s.label_value}",
            f"Segment{n}_Name": s.name,
            f"Segment{n}_NameAutoGenerated": "0",
            f"Segment{n}_Color": " ".join(f"{c:.6g}" for c in s.color),
            f"Segment{n}_ColorAutoGenerated": "0",
            f"Segment{n}_LabelValue": str(s.label_value),
            f"Segment{n}_Layer": "0",
            f"Segment{n}_Extent": _extent(arr == s.label_value),
            f"Segment{n}_Tags": "TerminologyEntry:Segmentation category and type - 3D Slicer General Anatomy list"
                                "~SCT^49755003^Morphologically Altered Structure~SCT^52988006^Lesion~^^~"
                                "Anatomic codes - DICOM master list~^^~^^|",
        })
    with atomic_path(out_path, suffix=".nrrd") as tmp:
        nrrd.write(tmp, arr, header, index_order="F")
    return out_path
