"""Image headers checked before any voxel is allocated: declared size, spacing, orientation, data length.

:func:`check_image_header` reads a NIfTI, NRRD or MetaImage header without its voxel data (a gzip stream is
decompressed in chunks to count its bytes, never held) and refuses, with a :class:`~lesionlab.errors.DataError`
naming the file, what would make a reader allocate absurd memory or invent geometry. Every reader path of lesionlab
calls it first: :func:`lesionlab.data.validation.load_volume`, :func:`lesionlab.data.io.prepare_case` (``lesionlab
infer``) and, inside bundles, :class:`lesionlab.transforms.ValidateHeaderd` placed before ``LoadImaged``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from lesionlab.data.validation import (
    _GZIP_MAGIC,
    _ITK,
    _NIFTI,
    MAX_VOXELS,
    _check_file,
    _first_line,
    _itk_reason,
    _stream_problem,
    _suffix,
)
from lesionlab.errors import DataError

__all__ = ["HeaderInfo", "check_image_header", "itk_header_reader"]


@dataclass
class HeaderInfo:
    """What :func:`check_image_header` read: ``shape`` and ``spacing`` (mm) from the header, whether it holds a full
    geometry (orientation), and the ``assumptions`` made (empty unless an explicit spacing replaced a missing one)."""

    path: str
    kind: str
    shape: tuple[int, ...]
    spacing: tuple[float, ...]
    has_geometry: bool
    assumptions: list[str] = field(default_factory=list)


def _gzip_size(path: str) -> int:
    """Uncompressed size of a gzip file, streamed in 4 MB chunks (constant memory); DataError when truncated."""
    import gzip
    import zlib

    size = 0
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(1 << 22):
                size += len(chunk)
    except EOFError as err:
        raise DataError(path, "truncated image file: the compressed data end early") from err
    except (OSError, zlib.error) as err:
        raise DataError(path, f"truncated or corrupt image file ({_first_line(err)})") from err
    return size


def _raw_pixdim(path: str, header_class) -> tuple[float, ...]:
    """pixdim[1:4] as written in the file: nibabel's loader silently turns a 0 into 1 mm."""
    import gzip

    opener = gzip.open if path.lower().endswith(".gz") else open
    with opener(path, "rb") as f:
        raw = header_class.from_fileobj(f, check=False)
    return tuple(float(z) for z in np.asarray(raw["pixdim"], dtype=np.float64)[1:4])


def _nifti_header(path: str) -> tuple[tuple[int, ...], tuple[float, ...], bool, int]:
    """(shape, spacing, has orientation, bytes the header declares up to the end of the voxel data)."""
    import nibabel as nib

    try:
        img = nib.load(path)  # reads the header only
    except Exception as err:
        problem = _stream_problem(path) or f"not a NIfTI image ({_first_line(err)})"
        raise DataError(path, problem) from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    hdr = img.header
    shape = tuple(int(s) for s in img.shape)
    zooms = _raw_pixdim(path, type(hdr))
    if int(hdr["sform_code"]) > 0:  # the sform, when set, is what readers use; its axes must not vanish either
        zooms = tuple(min(z, float(n)) if z > 0 else z
                      for z, n in zip(zooms, np.linalg.norm(hdr.get_sform()[:3, :3], axis=0)))
    has_geometry = int(hdr["qform_code"]) > 0 or int(hdr["sform_code"]) > 0
    nbytes = int(np.prod(shape, dtype=np.float64)) * hdr.get_data_dtype().itemsize
    return shape, zooms, has_geometry, int(getattr(img.dataobj, "offset", 0) or hdr.get_data_offset()) + nbytes


def itk_header_reader(path: str, label: str = "image"):
    """A SimpleITK ``ImageFileReader`` of ``path`` with its header read (no voxel data), or a :class:`DataError`."""
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    try:
        reader.ReadImageInformation()
    except RuntimeError as err:
        raise DataError(path, f"not a readable {label}: its header cannot be parsed ({_itk_reason(err)})") from err
    return reader


def _itk_header(path: str) -> tuple[tuple[int, ...], tuple[float, ...], bool]:
    """(shape, spacing, has orientation) of an NRRD or MetaImage header, read as text (no voxel data)."""
    reader = itk_header_reader(path)
    size = tuple(int(s) for s in reader.GetSize())
    spacing = tuple(float(s) for s in reader.GetSpacing())
    with open(path, "rb") as f:
        head = f.read(1 << 16).decode("latin-1").lower()
    if path.lower().endswith((".nrrd", ".nhdr")):
        has_geometry = "space directions:" in head
    else:
        has_geometry = any(k in head for k in ("transformmatrix", "orientation", "rotation")) and \
            "elementspacing" in head
    return size, spacing, has_geometry


def check_image_header(path: str | os.PathLike, spacing: Sequence[float] | None = None) -> HeaderInfo:
    """Check an image file's header before any voxel is allocated; return what it declares.

    NIfTI, NRRD and MetaImage headers are read without their voxel data. Refused (:class:`DataError` naming the
    file): a missing, empty or unparsable file; a header declaring more than :data:`MAX_VOXELS` voxels (a 1 KB file
    declaring 1300^3 voxels would otherwise exhaust memory); zero, negative or non-finite voxel spacing; a header
    without orientation (NIfTI with qform and sform codes 0, NRRD without ``space directions``, MetaImage without a
    direction matrix), where spacing and direction would be invented, unless ``spacing`` is given; and an
    uncompressed file, or a gzip stream (decompressed in chunks, never held), shorter than the data it declares.

    Args:
        path: image file.
        spacing: explicit voxel spacing (mm) to use when the header has no geometry; the assumption is recorded in
            :attr:`HeaderInfo.assumptions` (identity direction, origin 0).

    Returns:
        the :class:`HeaderInfo`.
    """
    path = os.fspath(path)
    _check_file(path)
    suffix = _suffix(path)
    if suffix is None:
        raise DataError(path, f"unsupported image format (expected one of {', '.join((*_NIFTI, *_ITK))})")
    if suffix in _NIFTI:
        with open(path, "rb") as f:
            head = f.read(2)
        if suffix == ".nii.gz" and head != _GZIP_MAGIC:
            raise DataError(path, "not a gzip-compressed NIfTI file (no gzip signature; is it an image at all?)")
        shape, zooms, has_geometry, needed = _nifti_header(path)
        kind = "nifti"
    else:
        shape, zooms, has_geometry = _itk_header(path)
        needed, kind = 0, suffix.lstrip(".")
    if any(s < 0 for s in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_VOXELS:
        raise DataError(path, f"implausible image header (shape {shape}, more than {MAX_VOXELS} voxels); the file "
                              "is damaged or not an image")
    spatial = zooms[:3]
    if not all(np.isfinite(z) and z > 0 for z in spatial):
        raise DataError(path, f"invalid voxel spacing {tuple(round(z, 6) for z in spatial)} mm in the header (zero, "
                              "negative or not finite): the volume's size in mm, and any lesion volume in mL, would be "
                              "invented")
    assumptions: list[str] = []
    if not has_geometry:
        if spacing is None:
            raise DataError(path, "no voxel orientation in the header (NIfTI qform/sform codes 0, or NRRD/MetaImage "
                                  "without a direction matrix): spacing and direction would be invented. Give the "
                                  "spacing explicitly (lesionlab infer --spacing X Y Z) to use this file anyway")
        assumptions.append(f"header has no orientation: voxel spacing {list(spacing)} mm given by the user, identity "
                           "direction (RAS) and origin 0 assumed")
    if needed:
        actual = _gzip_size(path) if suffix == ".nii.gz" else os.path.getsize(path)
        if actual < needed:
            raise DataError(path, f"truncated image file: {actual} bytes of data where the header declares {needed}")
    return HeaderInfo(path, kind, shape, tuple(spatial), has_geometry, assumptions)


