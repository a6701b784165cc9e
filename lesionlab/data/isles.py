"""Find the T1 images and lesion masks of the ISLES 2015 SISS (sub-acute ischemic stroke) training data.

ISLES 2015 SISS (Maier et al., "ISLES 2015 - A public evaluation benchmark for ischemic stroke lesion segmentation
from multispectral MRI", Med. Image Anal. 35, 2017) is the second data set of the AGMR-Net/TSRL-Net thesis
(seed 002 §2.2): 28 training cases, skull-stripped and resampled to 1 mm isotropic, 230 x 230 x 154 voxels, of which
only the T1 sequence is used. The challenge layout is::

    <root>/Training/<case>/VSD.Brain.XX.O.MR_T1.<id>/VSD.Brain.XX.O.MR_T1.<id>.mha
    <root>/Training/<case>/VSD.Brain.XX.O.OT.<id2>/VSD.Brain.XX.O.OT.<id2>.mha      (the lesion mask)

with case folders ``1`` .. ``28``; the other sequences (``MR_Flair``, ``MR_T2``, ``MR_DWI``) are ignored. ``root``
may also be the ``Training`` folder itself.

Headers are read with SimpleITK (``ImageFileReader.ReadImageInformation``, no pixel data), and every problem found
(a case without T1 or OT, several candidates, an empty or unreadable file, image and mask geometries that disagree,
a spacing that is not 1 mm isotropic) is reported in one :class:`~lesionlab.errors.DataError` naming each file.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

from lesionlab.data.atlas import _check_root, _empty_files, _walk_files
from lesionlab.errors import DataError

__all__ = ["find_isles2015", "ISLES2015_SPACING"]

#: Voxel spacing (mm) of every ISLES 2015 SISS volume: the organisers resampled all sequences to 1 mm isotropic.
ISLES2015_SPACING: tuple[float, float, float] = (1.0, 1.0, 1.0)

_T1 = re.compile(r"^VSD\.Brain\.XX\.O\.MR_T1\.(?P<id>\d+)\.mha$", re.IGNORECASE)
_OT = re.compile(r"^VSD\.Brain\.XX\.O\.OT\.(?P<id>\d+)\.mha$", re.IGNORECASE)
_CASE = re.compile(r"^\d+$")
#: Tolerances of the geometry checks: spacing/origin in mm, direction cosines unitless.
_SPACING_TOL = 1e-3
_ORIGIN_TOL = 1e-2
_DIRECTION_TOL = 1e-4


def _training_folder(root: str) -> str:
    """``<root>/Training`` when it exists, else ``root`` (which may be the Training folder itself)."""
    sub = os.path.join(root, "Training")
    return sub if os.path.isdir(sub) else root


def _header(path: str) -> dict:
    """Size, spacing, origin and direction of an image file, from its header only."""
    import SimpleITK as sitk  # local import: SimpleITK is only needed here

    reader = sitk.ImageFileReader()
    reader.SetFileName(path)
    reader.ReadImageInformation()
    return {
        "size": tuple(int(s) for s in reader.GetSize()),
        "spacing": tuple(float(s) for s in reader.GetSpacing()),
        "origin": tuple(float(s) for s in reader.GetOrigin()),
        "direction": tuple(float(s) for s in reader.GetDirection()),
    }


def _fmt(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"


def _close(a: Sequence[float], b: Sequence[float], tol: float) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b))


def _geometry_problems(image: str, label: str) -> list[tuple[str, str]]:
    """Problems of one T1/OT pair: unreadable header, not 3D, spacing not 1 mm isotropic, geometries that differ.

    Each problem is ``(description with the values, file at fault)``.
    """
    headers = {}
    problems: list[tuple[str, str]] = []
    for path in (image, label):
        try:
            headers[path] = _header(path)
        except RuntimeError as exc:  # SimpleITK raises RuntimeError for unreadable files
            first = str(exc).strip().splitlines()[-1] if str(exc).strip() else type(exc).__name__
            problems.append((f"cannot read the image header ({first})", path))
    if problems:
        return problems
    img, lab = headers[image], headers[label]
    for path, h in ((image, img), (label, lab)):
        if len(h["size"]) != 3:
            problems.append((f"is {len(h['size'])}D, expected a 3D volume (size {h['size']})", path))
        elif not _close(h["spacing"], ISLES2015_SPACING, _SPACING_TOL):
            problems.append(
                (f"spacing {_fmt(h['spacing'])} mm is not the 1 mm isotropic spacing of ISLES 2015 SISS", path)
            )
    if problems:
        return problems
    if img["size"] != lab["size"]:
        problems.append((f"lesion mask size {lab['size']} differs from the T1 size {img['size']} of {image}", label))
    if not _close(img["spacing"], lab["spacing"], _SPACING_TOL):
        problems.append(
            (f"lesion mask spacing {_fmt(lab['spacing'])} differs from the T1 spacing {_fmt(img['spacing'])} "
             f"of {image}", label)
        )
    if not _close(img["origin"], lab["origin"], _ORIGIN_TOL):
        problems.append(
            (f"lesion mask origin {_fmt(lab['origin'])} differs from the T1 origin {_fmt(img['origin'])} of {image}",
             label)
        )
    if not _close(img["direction"], lab["direction"], _DIRECTION_TOL):
        problems.append(
            (f"lesion mask direction {_fmt(lab['direction'])} differs from the T1 direction "
             f"{_fmt(img['direction'])} of {image}", label)
        )
    return problems


def _raise(root: str, problems: list[tuple[str, str]]) -> None:
    """One DataError: naming the file first when there is a single problem, else listing every problem."""
    if len(problems) == 1:
        what, path = problems[0]
        raise DataError(path, what)
    listing = "; ".join(f"{path}: {what}" for what, path in problems)
    raise DataError(root, f"{len(problems)} problems: {listing}")


def find_isles2015(root: str | os.PathLike, check_geometry: bool = True) -> list[dict]:
    """Find every ISLES 2015 SISS training case under ``root`` and pair its T1 image with its lesion mask (OT).

    Each numbered case folder is searched (recursively) for exactly one ``VSD.Brain.XX.O.MR_T1.<id>.mha`` and one
    ``VSD.Brain.XX.O.OT.<id>.mha`` (the two ids differ). Folders whose name is not a number are ignored, and so are
    the Flair, T2 and DWI sequences.

    Args:
        root: the folder holding ``Training/``, or the ``Training`` folder itself.
        check_geometry: read both headers (no pixel data) and check that the T1 and OT sizes, spacings, origins and
            directions agree and that the spacing is 1 mm isotropic (``ISLES2015_SPACING``), as the challenge
            resampled every volume. Defaults to True.

    Returns:
        ``[{"subject": "<case>", "image": abs T1 path, "label": abs OT path}]`` sorted by case number.

    Raises:
        DataError: ``root`` missing or without case folders; otherwise one error listing every problem found (a case
            without T1 or OT, several T1 or OT files in one case, an empty file, an unreadable header, a geometry
            mismatch). A single problem is reported as ``DataError(file, problem)``.
    """
    path = _check_root(root)
    training = _training_folder(path)
    cases = sorted((name for name in os.listdir(training) if _CASE.match(name)
                    and os.path.isdir(os.path.join(training, name))), key=int)
    if not cases:
        raise DataError(training, "no ISLES 2015 case folders (1, 2, ..., 28) were found here or in Training/")

    found: list[dict] = []
    problems: list[tuple[str, str]] = []
    for case in cases:
        folder = os.path.join(training, case)
        t1s, ots = [], []
        for sub, name in _walk_files(folder):
            if _T1.match(name):
                t1s.append(os.path.join(sub, name))
            elif _OT.match(name):
                ots.append(os.path.join(sub, name))
        bad = False
        for kind, files in (("T1 image (VSD.Brain.XX.O.MR_T1.<id>.mha)", t1s),
                            ("lesion mask (VSD.Brain.XX.O.OT.<id>.mha)", ots)):
            if not files:
                problems.append((f"case {case} has no {kind}", folder))
                bad = True
            elif len(files) > 1:
                problems.append((f"case {case} has {len(files)} candidates for its {kind}: {', '.join(files)}", folder))
                bad = True
        if bad:
            continue
        image, label = t1s[0], ots[0]
        empty = _empty_files([image, label])
        if empty:
            problems.extend(("empty (zero-byte) file", p) for p in empty)
            continue
        if check_geometry:
            geometry = _geometry_problems(image, label)
            if geometry:
                problems.extend(geometry)
                continue
        found.append({"subject": case, "image": image, "label": label})
    if problems:
        _raise(training, problems)
    return found
