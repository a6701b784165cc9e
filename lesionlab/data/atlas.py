"""Find the images and lesion masks of an ATLAS (Anatomical Tracings of Lesions After Stroke) download.

Two releases are understood:

* **R1.1** (229 subjects, the version used by D-UNet and the AGMR-Net/TSRL-Net thesis):
  ``Site<k>/<id>/t01/<id>_t1w_deface_stx.nii.gz`` with one or more masks in the same folder,
  ``<id>_LesionSmooth_stx.nii.gz`` and ``<id>_LesionSmooth_<k>_stx.nii.gz`` (k = 1, 2, ...; the lesion is their union).
* **R2.0** (BIDS): ``.../sub-<x>/ses-<y>/anat/sub-<x>_ses-<y>_space-MNI152NLin2009aSym_T1w.nii.gz`` with
  ``sub-<x>_ses-<y>_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz`` in the same folder.

Every problem found (an image without a mask, a mask without an image, an empty file) is collected and reported in one
:class:`~lesionlab.errors.DataError` that names each file, so a broken download can be fixed in one go.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Iterator

from lesionlab.errors import DataError

__all__ = ["find_atlas", "find_atlas_r11", "find_atlas_r20", "detect_atlas_version", "ATLAS_VERSIONS"]

#: Accepted ``version`` values and the names written into datalists.
ATLAS_VERSIONS: dict[str, str] = {"r1.1": "ATLAS R1.1", "r2.0": "ATLAS R2.0"}

_R11_IMAGE = re.compile(r"^(?P<id>.+)_t1w_deface_stx\.nii\.gz$")
_R11_MASK = re.compile(r"^(?P<id>.+?)_LesionSmooth(?:_(?P<k>\d+))?_stx\.nii\.gz$")
_R20_SPACE = "space-MNI152NLin2009aSym"
_R20_IMAGE = re.compile(rf"^(?P<sub>sub-[^_]+)_(?P<ses>ses-[^_]+)_{_R20_SPACE}_T1w\.nii\.gz$")
_R20_MASK = re.compile(rf"^(?P<sub>sub-[^_]+)_(?P<ses>ses-[^_]+)_{_R20_SPACE}_label-L_desc-T1lesion_mask\.nii\.gz$")
_SITE = re.compile(r"^site\d+$", re.IGNORECASE)
_TIMEPOINT = re.compile(r"^t\d+$", re.IGNORECASE)


def _check_root(root: str | os.PathLike) -> str:
    path = os.path.abspath(os.fspath(root))
    if not os.path.exists(path):
        raise DataError(path, "folder does not exist")
    if not os.path.isdir(path):
        raise DataError(path, "is not a folder")
    return path


def _walk_files(root: str) -> Iterator[tuple[str, str]]:
    """Yield ``(folder, file name)`` for every file under ``root``, following folder links once, in sorted order."""
    seen: set[str] = set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link loop
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        for name in sorted(files):
            yield folder, name


def _report(root: str, problems: list[tuple[str, str]], strict: bool) -> None:
    """Raise one DataError listing every problem (strict) or warn about the files being skipped."""
    if not problems:
        return
    listing = "; ".join(f"{what}: {path}" for what, path in problems)
    count = f"{len(problems)} problem{'s' if len(problems) != 1 else ''}"
    if strict:
        hint = ""
        if any(os.sep + "Testing" + os.sep in path for _, path in problems):
            hint = " (the ATLAS R2.0 Testing images come without masks: point root at ATLAS_2/Training)"
        raise DataError(root, f"{count}: {listing}{hint}; pass strict=False to skip these subjects")
    warnings.warn(f"{root}: skipping {count}: {listing}", UserWarning, stacklevel=3)


def _empty_files(paths: list[str]) -> list[str]:
    return [p for p in paths if os.path.getsize(p) == 0]


def _subject_r11(folder: str, subject_id: str) -> str:
    """``<site>/<id>``, plus ``/<timepoint>`` for a timepoint folder other than t01."""
    parts = os.path.normpath(folder).split(os.sep)
    site = next((p for p in reversed(parts) if _SITE.match(p)), "")
    name = f"{site}/{subject_id}" if site else subject_id
    last = parts[-1] if parts else ""
    if _TIMEPOINT.match(last) and last.lower() != "t01":
        name += f"/{last}"
    return name


def _finish(root: str, found: list[dict], problems: list[tuple[str, str]], strict: bool, version: str) -> list[dict]:
    _report(root, problems, strict)
    if not found:
        raise DataError(root, f"no usable {ATLAS_VERSIONS[version]} image/lesion-mask pairs remain after skipping")
    found.sort(key=lambda item: item["subject"])
    seen: dict[str, str] = {}
    for item in found:
        if item["subject"] in seen:
            raise DataError(item["image"], f"subject {item['subject']!r} also found at {seen[item['subject']]}")
        seen[item["subject"]] = item["image"]
    return found


def find_atlas_r11(root: str | os.PathLike, strict: bool = True) -> list[dict]:
    """Find every ATLAS R1.1 subject under ``root`` (searched recursively).

    Each ``*_t1w_deface_stx.nii.gz`` is paired with all masks of the same subject in the same folder:
    ``<id>_LesionSmooth_stx.nii.gz`` first, then ``<id>_LesionSmooth_<k>_stx.nii.gz`` by increasing ``k``.

    Args:
        root: folder holding the data (e.g. ``ATLAS_R1.1``, or any folder above the ``Site<k>`` folders).
        strict: when True, any image without a mask, mask without an image or zero-byte file raises; when False such
            subjects (and orphan masks) are skipped with a warning.

    Returns:
        ``[{"subject": "<site>/<id>", "image": abs path, "label": [abs mask paths]}]`` sorted by subject.

    Raises:
        DataError: root missing or without R1.1 files, or (strict) the list of every problem found.
    """
    path = _check_root(root)
    images: dict[tuple[str, str], str] = {}
    masks: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for folder, name in _walk_files(path):
        m = _R11_IMAGE.match(name)
        if m:
            images[(folder, m["id"])] = os.path.join(folder, name)
            continue
        m = _R11_MASK.match(name)
        if m:
            k = -1 if m["k"] is None else int(m["k"])
            masks.setdefault((folder, m["id"]), []).append((k, os.path.join(folder, name)))
    if not images and not masks:
        raise DataError(path, "no ATLAS R1.1 files (*_t1w_deface_stx.nii.gz, *_LesionSmooth*_stx.nii.gz) were found")

    found: list[dict] = []
    problems: list[tuple[str, str]] = []
    for key in sorted(set(images) | set(masks)):
        image = images.get(key)
        labels = [p for _, p in sorted(masks.get(key, []))]
        if image is None:
            problems.extend(("lesion mask without image", p) for p in labels)
            continue
        if not labels:
            problems.append(("image without lesion mask", image))
            continue
        empty = _empty_files([image, *labels])
        if empty:
            problems.extend(("empty (zero-byte) file", p) for p in empty)
            continue
        found.append({"subject": _subject_r11(key[0], key[1]), "image": image, "label": labels})
    return _finish(path, found, problems, strict, "r1.1")


def find_atlas_r20(root: str | os.PathLike, strict: bool = True) -> list[dict]:
    """Find every ATLAS R2.0 (BIDS) subject/session under ``root`` (searched recursively).

    Each ``sub-*_ses-*_space-MNI152NLin2009aSym_T1w.nii.gz`` is paired with the
    ``..._label-L_desc-T1lesion_mask.nii.gz`` of the same subject and session in the same folder.

    Args:
        root: folder holding the data, e.g. ``ATLAS_2/Training`` (the R2.0 ``Testing`` images have no masks).
        strict: when True, any image without a mask, mask without an image or zero-byte file raises; when False such
            subjects are skipped with a warning.

    Returns:
        ``[{"subject": "sub-XXX/ses-Y", "image": abs path, "label": [abs mask path]}]`` sorted by subject.

    Raises:
        DataError: root missing or without R2.0 files, or (strict) the list of every problem found.
    """
    path = _check_root(root)
    images: dict[tuple[str, str, str], str] = {}
    masks: dict[tuple[str, str, str], str] = {}
    for folder, name in _walk_files(path):
        m = _R20_IMAGE.match(name)
        if m:
            images[(folder, m["sub"], m["ses"])] = os.path.join(folder, name)
            continue
        m = _R20_MASK.match(name)
        if m:
            masks[(folder, m["sub"], m["ses"])] = os.path.join(folder, name)
    if not images and not masks:
        raise DataError(
            path, f"no ATLAS R2.0 files (sub-*_ses-*_{_R20_SPACE}_T1w.nii.gz and lesion masks) were found"
        )

    found: list[dict] = []
    problems: list[tuple[str, str]] = []
    for key in sorted(set(images) | set(masks)):
        image, label = images.get(key), masks.get(key)
        if image is None:
            problems.append(("lesion mask without image", str(label)))
            continue
        if label is None:
            problems.append(("image without lesion mask", image))
            continue
        empty = _empty_files([image, label])
        if empty:
            problems.extend(("empty (zero-byte) file", p) for p in empty)
            continue
        found.append({"subject": f"{key[1]}/{key[2]}", "image": image, "label": [label]})
    return _finish(path, found, problems, strict, "r2.0")


def detect_atlas_version(root: str | os.PathLike) -> str:
    """Tell whether ``root`` holds ATLAS R1.1 or R2.0 files.

    Args:
        root: data folder.

    Returns:
        ``"r1.1"`` or ``"r2.0"``.

    Raises:
        DataError: root missing, holding neither layout, or holding both.
    """
    path = _check_root(root)
    has_r11 = has_r20 = False
    for _folder, name in _walk_files(path):
        has_r11 = has_r11 or bool(_R11_IMAGE.match(name) or _R11_MASK.match(name))
        has_r20 = has_r20 or bool(_R20_IMAGE.match(name) or _R20_MASK.match(name))
        if has_r11 and has_r20:
            raise DataError(path, "holds both ATLAS R1.1 and R2.0 files; pass version='r1.1' or version='r2.0'")
    if has_r11:
        return "r1.1"
    if has_r20:
        return "r2.0"
    raise DataError(path, "no ATLAS R1.1 (*_t1w_deface_stx.nii.gz) or R2.0 (sub-*_T1w.nii.gz) files were found")


def find_atlas(root: str | os.PathLike, version: str = "auto", strict: bool = True) -> list[dict]:
    """Find ATLAS subjects, detecting the release when ``version="auto"``.

    Args:
        root: data folder.
        version: ``"auto"``, ``"r1.1"`` or ``"r2.0"``.
        strict: see :func:`find_atlas_r11`.

    Returns:
        The list returned by :func:`find_atlas_r11` or :func:`find_atlas_r20`.

    Raises:
        ValueError: for an unknown ``version``.
        DataError: see :func:`detect_atlas_version` and the finders.
    """
    version = version.lower()
    if version == "auto":
        version = detect_atlas_version(root)
    if version == "r1.1":
        return find_atlas_r11(root, strict=strict)
    if version == "r2.0":
        return find_atlas_r20(root, strict=strict)
    raise ValueError(f"version must be 'auto', 'r1.1' or 'r2.0', got {version!r}")
