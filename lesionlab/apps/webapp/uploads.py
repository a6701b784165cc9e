"""Uploaded files: checked, written into a private temporary folder, turned into what a bundle reads.

Every upload goes through :func:`save_upload` into a :class:`Workspace` (a folder under the server's temp folder that
is removed when the analysis ends, success or not). 2D images are decoded with Pillow (so a corrupt file is refused
before the model sees it), brought to the channel count the network reads (RGBA -> RGB, grey -> RGB or RGB -> grey,
each change reported) and written as PNG for the bundle's own ``LoadImaged``. Volumes are NIfTI, NRRD or MetaImage
files, or a DICOM series as a zip; they go through :func:`lesionlab.data.io.prepare_case` (the same path as
``lesionlab infer``). Masks for evaluation are read the same way; a binary mask stored as 0/255 becomes 0/1.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from dataclasses import dataclass, field

import numpy as np

from lesionlab.errors import DataError

__all__ = ["Workspace", "PreparedImage", "save_upload", "prepare_image", "prepare_slide",
           "prepare_dicom", "prepare_volume", "read_mask",
           "suffix_of",
           "DEFAULT_MAX_UPLOAD_MB"]

DEFAULT_MAX_UPLOAD_MB = 1024
_VOLUME_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
_Image = None


def _pil():
    global _Image
    if _Image is None:
        from PIL import Image

        Image.MAX_IMAGE_PIXELS = 20000 * 20000  # large tiles are fine (1.2 GB as RGB); bigger ones are refused
        _Image = Image
    return _Image


def suffix_of(name: str) -> str:
    """Lower-case suffix of a file name, ``.nii.gz`` kept whole."""
    low = name.lower()
    return ".nii.gz" if low.endswith(".nii.gz") else os.path.splitext(low)[1]


def _safe_name(name: str) -> str:
    base = os.path.basename(name.replace("\\", "/"))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", base).strip("._") or "upload"


class Workspace:
    """A private folder under the system temp folder for one analysis; removed on exit.

    Example::

        with Workspace() as ws:
            path = save_upload(ws, "tile.png", data, max_mb=200)
    """

    def __init__(self) -> None:
        self.path = tempfile.mkdtemp(prefix="lesionlab-upload-")

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def cleanup(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)

    def sub(self, name: str) -> str:
        path = os.path.join(self.path, name)
        os.makedirs(path, exist_ok=True)
        return path


def save_upload(ws: Workspace, name: str, data: bytes, max_mb: float, allowed: tuple[str, ...] | None = None) -> str:
    """Write an uploaded file's bytes into ``ws`` after checking its size and type; return the path.

    Raises:
        DataError: empty file, larger than ``max_mb`` megabytes, or a suffix not in ``allowed``.
    """
    if allowed is not None:
        suffix = suffix_of(name).lstrip(".")
        if suffix.split(".")[-1] not in allowed:
            raise DataError(name, f"file type '.{suffix or '?'}' is not accepted here; expected one of "
                                  + ", ".join("." + a for a in allowed))
    if len(data) == 0:
        raise DataError(name, "the file is empty (0 bytes)")
    if len(data) > max_mb * 1024 * 1024:
        raise DataError(name, f"the file is {len(data) / 1024**2:.1f} MB; the limit is {max_mb:g} MB")
    path = os.path.join(ws.sub("uploads"), _safe_name(name))
    with open(path, "wb") as f:
        f.write(data)
    return path


@dataclass
class PreparedImage:
    """An input ready for the bundle.

    Attributes:
        path: file the bundle's ``LoadImaged`` reads.
        display: image for display: ``(H, W, 3)`` uint8 for 2D, ``(Z, Y, X)`` float for volumes.
        notes: conversions made on the way (shown to the user).
        spacing: voxel size in mm (volumes; x, y, z), else None.
    """

    path: str
    display: np.ndarray
    notes: list[str] = field(default_factory=list)
    spacing: tuple[float, ...] | None = None


def _open_2d(path: str):
    Image = _pil()  # noqa: N806 - the PIL module, lazily imported
    try:
        with Image.open(path) as probe:
            probe.verify()
        img = Image.open(path)
        img.load()
    except Image.DecompressionBombError as err:
        raise DataError(path, f"image is too large to open safely ({err})") from err
    except Exception as err:
        raise DataError(path, f"not a readable image: the file is damaged or not in the format its name says "
                              f"({type(err).__name__})") from err
    return img


def prepare_image(ws: Workspace, path: str, in_channels: int) -> PreparedImage:
    """Decode a 2D image upload, match the network's channel count and write it as PNG for the bundle.

    Raises:
        DataError: unreadable or damaged image, a multi-frame image, or a channel count the network cannot use.
    """
    img = _open_2d(path)
    notes: list[str] = []
    if getattr(img, "n_frames", 1) > 1:
        raise DataError(path, f"holds {img.n_frames} frames; upload a single 2D image")
    mode = img.mode
    if in_channels == 3:
        if mode != "RGB":
            notes.append(f"converted from {mode} to RGB (the model reads 3 channels)")
            img = img.convert("RGB")
    elif in_channels == 1:
        if mode not in ("L", "I;16", "I", "F"):
            notes.append(f"converted from {mode} to grey (the model reads 1 channel)")
            img = img.convert("L")
    else:
        raise DataError(path, f"the model reads {in_channels} channels; a 2D image upload has 1 or 3")
    out = os.path.join(ws.sub("input"), os.path.splitext(os.path.basename(path))[0] + ".png")
    img.save(out, format="PNG")
    display = np.asarray(img.convert("RGB") if img.mode != "L" else img)
    if display.ndim == 2:
        display = np.repeat(_to_uint8(display)[..., None], 3, axis=2)
    return PreparedImage(out, display, notes)


def prepare_slide(path: str, max_side: int = 2048) -> PreparedImage:
    """A whole-slide upload (.svs, .ndpi, .scn, pyramidal TIFF) passed to the bundle as it is (its own reader tiles
    it), with a thumbnail for display read by OpenSlide when installed (``pip install openslide-python
    openslide-bin``); without it the result is drawn on a grey background and a note says why."""
    notes: list[str] = []
    try:
        import openslide

        with openslide.OpenSlide(path) as slide:
            thumb = np.asarray(slide.get_thumbnail((max_side, max_side)).convert("RGB"))
    except ImportError:
        thumb = np.zeros((0, 0, 3), np.uint8)
        notes.append("no slide thumbnail: OpenSlide is not installed (pip install openslide-python openslide-bin)")
    except Exception as err:
        raise DataError(path, f"not a readable whole-slide image ({type(err).__name__}: {err})") from err
    return PreparedImage(path, thumb, notes)


def prepare_dicom(path: str) -> PreparedImage:
    """A 2D DICOM upload passed to the bundle as it is (its own reader); refused when it is not a DICOM file."""
    from lesionlab.data.dicom import is_dicom_file

    with open(path, "rb") as f:
        head = f.read(132)
    if not (len(head) == 132 and head[128:132] == b"DICM") or not is_dicom_file(path):
        raise DataError(path, "not a DICOM file (no 'DICM' marker at byte 128)")
    return PreparedImage(path, np.zeros((0, 0, 3), np.uint8))


def _to_uint8(a: np.ndarray) -> np.ndarray:
    a = a.astype(np.float32)
    lo, hi = np.percentile(a, 0.5), np.percentile(a, 99.5)
    return (np.clip((a - lo) / max(hi - lo, 1e-6), 0, 1) * 255).astype(np.uint8)


def _unzip_series(ws: Workspace, path: str) -> str:
    from lesionlab.apps.deploy.archive import safe_extract

    dest = ws.sub("dicom")
    safe_extract(path, dest)
    folders = sorted({os.path.dirname(os.path.join(d, f)) for d, _, files in os.walk(dest) for f in files
                      if not f.startswith(".")})
    if not folders:
        raise DataError(path, "the zip archive is empty")
    from lesionlab.data.dicom import is_dicom_file

    series = [d for d in folders if any(is_dicom_file(os.path.join(d, f)) for f in os.listdir(d))]
    if not series:
        raise DataError(path, "the zip holds no DICOM files (expected one DICOM series)")
    if len(series) > 1:
        raise DataError(path, f"the zip holds DICOM files in {len(series)} folders; upload one series per zip")
    return series[0]


def prepare_volume(ws: Workspace, path: str) -> PreparedImage:
    """A volume upload (NIfTI, NRRD, MetaImage or a DICOM series zip) as NIfTI for the bundle, plus its display array.

    Raises:
        DataError: unsupported type, damaged file, or a zip that is not one DICOM series.
    """
    from lesionlab.data.io import find_cases, prepare_case

    suffix = suffix_of(path)
    if suffix == ".zip":
        source = _unzip_series(ws, path)
    elif suffix in _VOLUME_SUFFIXES:
        source = path
    else:
        raise DataError(path, f"'{suffix}' is not a volume; upload NIfTI (.nii/.nii.gz), NRRD, MetaImage (.mha) "
                              "or a DICOM series as .zip")
    case = find_cases(source)[0]
    prepared = prepare_case(case, ws.sub("prepared"))
    volume, spacing = _load_volume(prepared.nifti)
    notes = [f"DICOM series of {volume.shape[0]} slices"] if suffix == ".zip" else []
    return PreparedImage(prepared.nifti, volume, notes, spacing)


def _load_volume(path: str) -> tuple[np.ndarray, tuple[float, ...]]:
    """``(Z, Y, X)`` array (MONAI's x, y, z reversed) and the x, y, z voxel size of a NIfTI file."""
    import nibabel as nib

    try:
        img = nib.load(path)
        arr = np.asarray(img.dataobj, dtype=np.float32)
    except Exception as err:
        raise DataError(path, f"not a readable NIfTI volume ({type(err).__name__}: {err})") from err
    while arr.ndim > 3 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataError(path, f"expected a 3D volume, got an array of shape {list(arr.shape)}")
    if not np.isfinite(arr).all():
        raise DataError(path, "the volume holds NaN or infinite values")
    spacing = tuple(float(s) for s in img.header.get_zooms()[:3])
    return np.ascontiguousarray(arr.transpose(2, 1, 0)), spacing


def read_mask(path: str, kind: str, num_classes: int) -> np.ndarray:
    """A ground-truth mask in display order (``(H, W)`` for 2D, ``(Z, Y, X)`` for volumes) with class indices.

    2D masks: a grey PNG/TIFF holding class indices, or 0/255 for a binary task; an RGB mask is read from its first
    channel only when all channels are equal. Volumes: NIfTI/NRRD/MHA label maps.

    Raises:
        DataError: unreadable, a colour mask, or values outside the task's classes.
    """
    if kind == "segmentation-3d":
        from lesionlab.data.io import find_cases, prepare_case

        case = find_cases(path)[0]
        nifti = prepare_case(case, os.path.dirname(path)).nifti
        mask = np.rint(_load_volume(nifti)[0]).astype(np.int64)
    else:
        img = _open_2d(path)
        arr = np.asarray(img)
        if arr.ndim == 3:
            if not (arr[..., :3] == arr[..., :1]).all():
                raise DataError(path, "a colour mask: expected a single-channel image of class indices")
            arr = arr[..., 0]
        mask = arr.astype(np.int64)
    values = np.unique(mask)
    if num_classes == 2 and set(values.tolist()) <= {0, 255}:
        mask = (mask == 255).astype(np.int64)
        values = np.unique(mask)
    if values.min() < 0 or values.max() >= num_classes:
        raise DataError(path, f"mask values {values.tolist()[:8]} lie outside the task's classes 0..{num_classes - 1}")
    return mask
