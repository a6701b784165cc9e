"""Input validation: every broken volume or datalist becomes one :class:`~lesionlab.errors.DataError` naming the file.

Volumes (:func:`load_volume`, :func:`check_pair`, and :func:`check_volume`/:func:`check_same_grid` on arrays already
loaded, which :class:`lesionlab.transforms.ValidateVolume` uses inside bundle pipelines):

=========================================  ============================================================
problem                                    message (after ``<file>: ``)
=========================================  ============================================================
missing file / a folder                    ``file does not exist`` / ``is a folder, not an image file``
header declaring too many voxels           ``implausible image header ...`` (before any voxel is allocated)
zero, negative or non-finite spacing       ``invalid voxel spacing ...``
no orientation (NIfTI q/sform code 0,      ``no voxel spacing/orientation in the header ...`` unless an
NRRD/MHA without space directions)         explicit spacing is given (:func:`check_image_header`)
fewer data bytes than the header declares  ``truncated image file: ...``
zero-byte file                             ``empty (zero-byte) file``
not an image (text, HTML...)               ``not a NIfTI image ...`` / ``not a gzip-compressed NIfTI file ...``
truncated or damaged data                  ``truncated or corrupt image file (...)``
implausible header                         ``implausible image header ...``
unsupported voxel type (RGB, complex)      ``unsupported voxel type ...``
not 3D                                     ``expected a 3D volume, got ...`` (trailing axes of length 1 are
                                           dropped first: ``(X, Y, Z, 1)`` is accepted as 3D)
no voxels                                  ``empty volume (shape ...)``
NaN or Inf voxels                          ``NaN or infinite voxel values (n of N voxels)``
non-finite or singular affine              ``invalid affine ...``
constant image                             ``constant image (every voxel is v) ...``
label values                               ``label values outside {0, 1}: ...``
image/label grids                          ``shape mismatch ...`` / ``affine mismatch ...`` (tolerance 1e-3 mm)
=========================================  ============================================================

Datalists (:func:`validate_datalist`, :func:`load_checked_datalist`, a drop-in for MONAI's
``load_decathlon_datalist`` in bundle configs): unreadable or invalid JSON, missing lists or keys, wrong types,
missing files, paths outside ``allowed_root`` (``..`` escapes, absolute paths elsewhere) and images listed twice.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from typing import Any

import numpy as np

from lesionlab.errors import DataError

__all__ = [
    "AFFINE_TOL",
    "MAX_VOXELS",
    "load_volume",
    "check_volume",
    "check_same_grid",
    "check_pair",
    "validate_datalist",
    "load_checked_datalist",
]

#: Largest difference (mm) allowed between the affines of an image and its label.
AFFINE_TOL = 1e-3
#: Headers declaring more voxels than this are rejected before any data is read (2**31 voxels = 8 GB as float32).
MAX_VOXELS = 2**31
_NIFTI = (".nii.gz", ".nii")
_ITK = (".mha", ".mhd", ".nrrd", ".nhdr")
_GZIP_MAGIC = b"\x1f\x8b"
_LISTS = ("training", "validation", "testing")


def _suffix(path: str) -> str | None:
    low = path.lower()
    return next((s for s in (*_NIFTI, *_ITK) if low.endswith(s)), None)


def _check_file(path: str) -> None:
    if not os.path.exists(path):
        raise DataError(path, "file does not exist")
    if os.path.isdir(path):
        raise DataError(path, "is a folder, not an image file")
    if os.path.getsize(path) == 0:
        raise DataError(path, "empty (zero-byte) file")


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return text.splitlines()[0].strip() if text else type(err).__name__


def _stream_problem(path: str) -> str | None:
    """Why the file cannot even be a NIfTI file (an incomplete gzip stream, fewer bytes than a header), else None."""
    import gzip
    import zlib

    if path.lower().endswith(".gz"):
        try:
            with gzip.open(path, "rb") as f:
                size = 0
                while chunk := f.read(1 << 22):
                    size += len(chunk)
        except EOFError:
            return "truncated or corrupt image file (the compressed data end early)"
        except (OSError, zlib.error) as err:
            return f"truncated or corrupt image file ({_first_line(err)})"
    else:
        size = os.path.getsize(path)
    if size < 348:
        return f"truncated or corrupt image file ({size} bytes, fewer than a NIfTI header)"
    return None


def _read_nifti(path: str) -> tuple[np.ndarray, np.ndarray]:
    import nibabel as nib

    from lesionlab.data.headers import check_image_header

    check_image_header(path, spacing=(1.0, 1.0, 1.0))  # before any allocation; orientation is the caller's concern

    with open(path, "rb") as f:
        head = f.read(2)
    if path.lower().endswith(".gz") and head != _GZIP_MAGIC:
        raise DataError(path, "not a gzip-compressed NIfTI file (no gzip signature; is it an image at all?)")
    try:
        img = nib.load(path)
    except (EOFError, OSError) as err:  # zlib.error is an OSError subclass in gzip, BadGzipFile too
        raise DataError(path, f"truncated or corrupt image file ({_first_line(err)})") from err
    except Exception as err:  # nibabel's ImageFileError, HeaderDataError, ValueError... for non-NIfTI content
        raise DataError(path, _stream_problem(path) or f"not a NIfTI image ({_first_line(err)})") from err
    if not isinstance(img, (nib.Nifti1Image, nib.Nifti2Image)):
        raise DataError(path, f"not a NIfTI image (nibabel read it as {type(img).__name__})")
    shape = tuple(int(s) for s in img.shape)
    if any(s < 0 for s in shape) or int(np.prod(shape, dtype=np.float64)) > MAX_VOXELS:
        raise DataError(path, f"implausible image header (shape {shape}); the file is damaged or not an image")
    try:
        data = np.asanyarray(img.dataobj)
        affine = np.asarray(img.affine, dtype=np.float64)
    except (EOFError, OSError, ValueError, MemoryError) as err:
        raise DataError(path, f"truncated or corrupt image file ({_first_line(err)})") from err
    except Exception as err:
        raise DataError(path, f"unreadable NIfTI data ({type(err).__name__}: {_first_line(err)})") from err
    return data, affine


def _itk_reason(err: BaseException) -> str:
    """The informative line of a SimpleITK exception (its first line is only the C++ source location)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    line = next((ln for ln in lines if "ERROR" in ln), lines[-1] if lines else type(err).__name__)
    return re.sub(r"^(sitk::ERROR:|ITK ERROR:)\s*(\w+\(0x[0-9a-f]+\):\s*)?", "", line)


def _read_itk(path: str) -> tuple[np.ndarray, np.ndarray]:
    """MetaImage/NRRD with SimpleITK, returned like nibabel/MONAI ITKReader: array (x, y, z), RAS affine."""
    import SimpleITK as sitk

    from lesionlab.data.headers import check_image_header, itk_header_reader

    check_image_header(path, spacing=(1.0, 1.0, 1.0))  # before any allocation; orientation is the caller's concern
    reader = itk_header_reader(path)
    size = tuple(int(s) for s in reader.GetSize())
    if int(np.prod(size, dtype=np.float64)) * max(1, reader.GetNumberOfComponents()) > MAX_VOXELS:
        raise DataError(path, f"implausible image header (size {size}); the file is damaged or not an image")
    try:
        image = reader.Execute()
    except RuntimeError as err:
        raise DataError(path, f"truncated or corrupt image file ({_itk_reason(err)})") from err
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(path, f"unsupported voxel type ({image.GetNumberOfComponentsPerPixel()} components per "
                              "voxel; expected a scalar image)")
    data = sitk.GetArrayFromImage(image).transpose()  # (z, y, x) -> (x, y, z)
    dim = image.GetDimension()
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(dim, dim)
    affine = np.eye(4)
    n = min(dim, 3)
    affine[:n, :n] = (direction * np.asarray(image.GetSpacing(), dtype=np.float64))[:n, :n]
    affine[:n, 3] = np.asarray(image.GetOrigin(), dtype=np.float64)[:n]
    affine[:2] *= -1  # LPS (ITK) -> RAS (NIfTI), as MONAI's ITKReader does
    affine[3, 3] = 1.0
    return data, affine


def _squeeze_trailing(array: np.ndarray, keep: int = 3) -> np.ndarray:
    while array.ndim > keep and array.shape[-1] == 1:
        array = array[..., 0]
    return array


def check_volume(
    array: Any,
    affine: Any,
    name: str,
    kind: str = "image",
    label_values: Sequence[float] | None = (0, 1),
    channel_first: bool = False,
    channels: int | None = None,
) -> None:
    """Raise a :class:`DataError` naming ``name`` when ``array`` is not a usable 3D image or label.

    Args:
        array: voxel data, ``(X, Y, Z)`` or channel first ``(C, X, Y, Z)`` (NumPy or torch).
        affine: its 4x4 voxel-to-world matrix (``None`` to skip the affine check).
        name: file named in the error.
        kind: ``"image"`` (must not be constant) or ``"label"`` (values in ``label_values``).
        label_values: the values a label may hold; ``None`` skips the check. Defaults to ``(0, 1)``.
        channel_first: ``array`` has a leading channel axis. Defaults to False.
        channels: expected number of channels (channel-first arrays only; ``None``: any).

    Raises:
        ValueError: for an unknown ``kind``.
        DataError: see the module docstring.
    """
    if kind not in ("image", "label"):
        raise ValueError(f"kind must be 'image' or 'label', got {kind!r}")
    a = _as_numpy(array)
    if a.size == 0:
        raise DataError(name, f"empty volume (shape {tuple(a.shape)}, no voxels)")
    spatial = a.shape[1:] if channel_first else a.shape
    if len(spatial) != 3:
        raise DataError(name, f"expected a 3D volume, got {len(spatial)}D data of shape {tuple(spatial)}")
    if channel_first and channels is not None and a.shape[0] != channels:
        raise DataError(name, f"expected {channels} channel(s), got {a.shape[0]} (a 4D series or a multi-channel "
                              f"image?) of shape {tuple(a.shape)}")
    if not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.floating) or a.dtype == np.bool_):
        raise DataError(name, f"unsupported voxel type {a.dtype} (expected integer or floating-point intensities)")
    if np.issubdtype(a.dtype, np.floating):
        finite = np.isfinite(a)
        if not finite.all():
            raise DataError(name, f"NaN or infinite voxel values ({int(finite.size - finite.sum())} of {a.size} "
                                  "voxels)")
    if affine is not None:
        m = _as_numpy(affine).astype(np.float64)
        if m.shape != (4, 4) or not np.isfinite(m).all() or abs(np.linalg.det(m[:3, :3])) < 1e-12:
            raise DataError(name, "invalid affine (voxel-to-world matrix is not a finite, invertible 4x4 matrix)")
    if kind == "image":
        lo, hi = a.min(), a.max()
        if lo == hi:
            raise DataError(name, f"constant image (every voxel is {lo.item():g}): blank or failed export")
    elif label_values is not None:
        allowed = np.asarray(sorted(label_values))
        ok = np.isin(a, allowed)
        if not ok.all():
            bad = np.unique(a[~ok])
            shown = ", ".join(f"{v:g}" for v in bad[:5].tolist()) + (", ..." if bad.size > 5 else "")
            values = "{" + ", ".join(f"{v:g}" for v in allowed.tolist()) + "}"
            raise DataError(name, f"label values outside {values}: found {shown} (not a binary lesion mask?)")


def check_same_grid(
    label_shape: Sequence[int],
    label_affine: Any,
    image_shape: Sequence[int],
    image_affine: Any,
    label_name: str,
    image_name: str,
    tol: float = AFFINE_TOL,
) -> None:
    """Raise a :class:`DataError` naming the label when its spatial shape or affine differ from the image's.

    Args:
        label_shape: spatial shape of the label.
        label_affine: its affine (``None``: not checked).
        image_shape: spatial shape of the image.
        image_affine: its affine (``None``: not checked).
        label_name: file named first in the error.
        image_name: file it is compared with.
        tol: largest allowed absolute difference of any affine entry (mm). Defaults to :data:`AFFINE_TOL`.
    """
    if tuple(label_shape) != tuple(image_shape):
        raise DataError(label_name, f"shape mismatch: label shape {tuple(label_shape)} differs from image shape "
                                    f"{tuple(image_shape)} of {image_name}")
    if label_affine is None or image_affine is None:
        return
    a, b = _as_numpy(label_affine).astype(np.float64), _as_numpy(image_affine).astype(np.float64)
    diff = float(np.abs(a - b).max())
    if diff > tol:
        raise DataError(label_name, f"affine mismatch: label voxel-to-world matrix differs from that of "
                                    f"{image_name} by up to {diff:.4g} mm (tolerance {tol:g} mm)")


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # torch tensor or MONAI MetaTensor
        x = x.detach().cpu()
        x = x.as_tensor() if hasattr(x, "as_tensor") else x
        return x.numpy()
    return np.asarray(x)


def load_volume(
    path: str | os.PathLike, kind: str = "image", label_values: Sequence[float] | None = (0, 1)
) -> tuple[np.ndarray, np.ndarray]:
    """Read a 3D NIfTI (``.nii``, ``.nii.gz``), MetaImage or NRRD volume and check it.

    Trailing axes of length 1 are dropped (``(X, Y, Z, 1)`` from some converters is a 3D volume); any other
    dimensionality is an error.

    Args:
        path: the file.
        kind: ``"image"`` or ``"label"`` (see :func:`check_volume`).
        label_values: allowed label values (``None``: any).

    Returns:
        ``(array, affine)``: voxel data in the file's type, axes ``(x, y, z)``, and the 4x4 RAS affine.

    Raises:
        DataError: naming ``path`` and the problem (see the module docstring).
    """
    path = os.fspath(path)
    _check_file(path)
    suffix = _suffix(path)
    if suffix is None:
        raise DataError(path, f"unsupported image format (expected one of {', '.join((*_NIFTI, *_ITK))})")
    data, affine = _read_nifti(path) if suffix in _NIFTI else _read_itk(path)
    data = _squeeze_trailing(data)
    check_volume(data, affine, path, kind=kind, label_values=label_values)
    return data, affine


def check_pair(
    image_path: str | os.PathLike,
    label_paths: str | os.PathLike | Sequence[str | os.PathLike],
    label_values: Sequence[float] | None = (0, 1),
    tol: float = AFFINE_TOL,
) -> tuple[np.ndarray, list[np.ndarray], np.ndarray]:
    """Load and check an image and its label file(s) (ATLAS R1.1 subjects may have several masks).

    Args:
        image_path: the image.
        label_paths: one label file or a list of them, each on the image's grid.
        label_values: allowed label values (``None``: any).
        tol: affine tolerance in mm.

    Returns:
        ``(image, [labels], affine)``.

    Raises:
        DataError: naming the file at fault (see the module docstring).
    """
    image, affine = load_volume(image_path, "image")
    paths = [label_paths] if isinstance(label_paths, (str, os.PathLike)) else list(label_paths)
    if not paths:
        raise DataError(image_path, "no label file given for this image")
    labels = []
    for p in paths:
        label, label_affine = load_volume(p, "label", label_values)
        check_same_grid(label.shape, label_affine, image.shape, affine, os.fspath(p), os.fspath(image_path), tol)
        labels.append(label)
    return image, labels, affine


def _is_under(path: str, root: str) -> bool:
    try:
        return os.path.commonpath([path, root]) == root
    except ValueError:  # different drives
        return False


def _read_json(path: str) -> Any:
    _check_file(path)
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except UnicodeDecodeError as err:
        raise DataError(path, f"not valid JSON (not UTF-8 text: {err.reason} at byte {err.start})") from err
    except json.JSONDecodeError as err:
        raise DataError(path, f"not valid JSON ({err.msg} at line {err.lineno}, column {err.colno})") from err
    except (OSError, RecursionError, ValueError) as err:
        raise DataError(path, f"not a readable JSON datalist ({_first_line(err)})") from err


def validate_datalist(
    path: str | os.PathLike,
    base_dir: str | os.PathLike | None = None,
    allowed_root: str | os.PathLike | None = None,
    required_keys: Sequence[str] = ("training",),
    is_segmentation: bool = True,
    check_files: bool = True,
) -> dict:
    """Check a MONAI/Decathlon datalist JSON and return it with absolute paths.

    The lists ``training``, ``validation`` and ``testing`` (those present, and those in ``required_keys``, which
    must be) are checked: each must be a list of objects with an ``"image"`` path (a string, or a non-empty list of
    strings), plus a ``"label"`` in ``training``/``validation`` when ``is_segmentation``. Relative paths are resolved
    against ``base_dir`` (default: the JSON file's folder), as ``monai.data.load_decathlon_datalist`` does; other
    keys (``"subject"``, ``"fold"``...) are returned unchanged.

    Args:
        path: the datalist file.
        base_dir: folder relative paths are resolved against.
        allowed_root: when given, every resolved path must lie inside this folder (``..`` escapes and absolute paths
            elsewhere are errors). Symbolic links are not followed, so a linked data folder inside it is allowed.
        required_keys: lists that must exist. Defaults to ``("training",)``.
        is_segmentation: require ``"label"`` in training and validation items. Defaults to True.
        check_files: require every listed file to exist. Defaults to True.

    Returns:
        The datalist dict; the checked lists hold copies of the items with absolute ``image``/``label`` paths.

    Raises:
        DataError: naming the datalist (or the listed file at fault) and the problem.
    """
    path = os.path.abspath(os.fspath(path))
    data = _read_json(path)
    if not isinstance(data, dict):
        raise DataError(path, f"a datalist must be a JSON object with lists such as 'training', got a "
                              f"{type(data).__name__}")
    for key in required_keys:
        if key not in data:
            raise DataError(path, f"datalist has no {key!r} list (keys: {sorted(data)})")
    base = os.path.abspath(os.fspath(base_dir)) if base_dir is not None else os.path.dirname(path)
    root = os.path.normpath(os.path.abspath(os.fspath(allowed_root))) if allowed_root is not None else None

    out = dict(data)
    seen: dict[str, str] = {}
    missing: list[tuple[str, str]] = []
    for key in dict.fromkeys(k for k in (*required_keys, *_LISTS) if k in data):
        items = data[key]
        if not isinstance(items, list):
            raise DataError(path, f"{key!r} must be a list of items, got a {type(items).__name__}")
        checked = []
        for i, item in enumerate(items):
            where = f"{key!r} item {i}"
            if not isinstance(item, dict):
                raise DataError(path, f"{where} is not an object with an 'image' path (got {item!r:.60})")
            needed = ("image", "label") if is_segmentation and key != "testing" else ("image",)
            for field in needed:
                if field not in item:
                    raise DataError(path, f"{where} has no {field!r}")
            new = dict(item)
            for field in ("image", "label"):
                if field not in item:
                    continue
                value = item[field]
                values = value if isinstance(value, list) else [value]
                if not values or not all(isinstance(v, str) and v.strip() for v in values):
                    raise DataError(path, f"{where}: {field!r} must be a path or a list of paths, got {value!r:.80}")
                resolved = [os.path.normpath(v if os.path.isabs(v) else os.path.join(base, v)) for v in values]
                for v, r in zip(values, resolved):
                    if root is not None and not _is_under(r, root):
                        raise DataError(path, f"{where}: {field} {v!r} resolves to {r}, outside the data folder "
                                              f"{root}")
                    if check_files and not os.path.isfile(r):
                        missing.append((r, where))
                new[field] = resolved if isinstance(value, list) else resolved[0]
            for image in (new["image"] if isinstance(new["image"], list) else [new["image"]]):
                if image in seen:
                    raise DataError(path, f"{image} is listed twice ({seen[image]} and {where}): duplicate case")
                seen[image] = where
            checked.append(new)
        out[key] = checked
    if len(missing) == 1:
        file, where = missing[0]
        raise DataError(file, f"file does not exist (listed in {path}, {where})")
    if missing:
        shown = "; ".join(f"{f} ({w})" for f, w in missing[:10]) + ("; ..." if len(missing) > 10 else "")
        raise DataError(path, f"{len(missing)} listed files do not exist: {shown}")
    return out


def load_checked_datalist(
    data_list_file_path: str | os.PathLike,
    is_segmentation: bool = True,
    data_list_key: str = "training",
    base_dir: str | os.PathLike | None = None,
    allowed_root: str | os.PathLike | None = None,
) -> list[dict]:
    """Drop-in for ``monai.data.load_decathlon_datalist`` that validates the whole file first.

    Only ``image`` and ``label`` are resolved to absolute paths (MONAI also joins any other string that happens to
    name an existing file, e.g. a subject id ``"Site1/031768"``). Use it in a bundle config as
    ``{"_target_": "lesionlab.data.validation.load_checked_datalist", "data_list_file_path": "@datalist",
    "data_list_key": "training"}``.

    Raises:
        DataError: see :func:`validate_datalist`; also when ``data_list_key`` is missing.
    """
    data = validate_datalist(data_list_file_path, base_dir=base_dir, allowed_root=allowed_root,
                             required_keys=(data_list_key,), is_segmentation=is_segmentation)
    return data[data_list_key]
