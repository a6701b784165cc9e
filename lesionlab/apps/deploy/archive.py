"""Deployment archives: safe extraction, the file listing, sha256 hashes and the manifest.

An archive is a zip with one top-level folder named after the bundle (``configs/``, ``docs/``, ``LICENSE``,
``models/``, ``manifest.json``); :func:`open_bundle` also accepts a bundle folder or a project bundle name, so every
deployment command reads both the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import os
import re
import tempfile
import zipfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from lesionlab.apps.bundle import BUNDLES_DIR, bundle_path
from lesionlab.apps.deploy.config import load_json
from lesionlab.errors import DataError, LesionlabError
from lesionlab.utils import atomic_path

__all__ = [
    "ARCHIVE_FORMAT",
    "BundleSource",
    "open_bundle",
    "safe_extract",
    "sha256",
    "list_files",
    "package_versions",
    "file_hashes",
    "manifest_problems",
    "write_zip",
]

ARCHIVE_FORMAT = "lesionlab-bundle-archive/1"
#: packages whose versions go into the manifest (PyPI names)
MANIFEST_PACKAGES = ("lesionlab", "torch", "monai", "numpy", "onnx", "onnxscript", "onnxruntime", "pytorch-ignite",
                     "nibabel", "SimpleITK", "pydicom", "highdicom", "pynrrd", "jsonschema")
MAX_ARCHIVE_BYTES = 8 * 1024**3  # refuse to extract more than this (zip bombs)


def sha256(path: str) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def package_versions() -> dict[str, str | None]:
    """Installed versions of :data:`MANIFEST_PACKAGES` (``None`` for a missing one)."""
    out: dict[str, str | None] = {}
    for name in MANIFEST_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def list_files(root: str) -> list[str]:
    """Every file below ``root`` as a sorted ``/``-separated relative path (no ``__pycache__`` or ``.pyc``)."""
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        out += [os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/") for f in sorted(files)
                if not f.endswith(".pyc")]
    return sorted(out)


def file_hashes(root: str) -> dict[str, dict[str, object]]:
    """``{relative path: {"sha256", "bytes"}}`` of every file below ``root`` (the manifest's ``files``)."""
    return {rel: {"sha256": sha256(os.path.join(root, rel)), "bytes": os.path.getsize(os.path.join(root, rel))}
            for rel in list_files(root)}


def manifest_problems(root: str, manifest: Mapping) -> list[str]:
    """What does not match the manifest: changed or missing files, files it does not list, an unknown format."""
    listed = manifest.get("files", {})
    bad = [rel for rel, info in listed.items()
           if not os.path.exists(os.path.join(root, rel)) or sha256(os.path.join(root, rel)) != info.get("sha256")]
    extra = [rel for rel in list_files(root) if rel != "manifest.json" and rel not in listed]
    problems = []
    if bad:
        problems.append(f"hash mismatch or missing: {bad}")
    if extra:
        problems.append(f"not in manifest: {extra}")
    if manifest.get("format") != ARCHIVE_FORMAT:
        problems.append(f"unknown format {manifest.get('format')!r}")
    return problems


def write_zip(root: str, out: str, top: str) -> None:
    """Zip every file of ``root`` under the folder ``top/`` into ``out`` (written atomically)."""
    with atomic_path(out, suffix=".zip") as tmp_zip:
        with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for rel in list_files(root):
                zf.write(os.path.join(root, rel), f"{top}/{rel}")


@dataclass
class BundleSource:
    """A bundle ready to read: its root folder (extracted when it came as an archive).

    Attributes:
        root: bundle root (has ``configs/``).
        name: bundle name (the root folder's name).
        archive: the zip it was extracted from, if any.
        manifest: parsed ``manifest.json``, if present.
        from_project: True when the bundle is one of this project's own bundles (``bundles/``).
    """

    root: str
    name: str
    archive: str | None
    manifest: dict | None
    from_project: bool


def safe_extract(archive: str, dest: str) -> None:
    """Extract ``archive`` into ``dest``, refusing absolute paths, ``..``, drive letters, links and zip bombs."""
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(archive, f"not a readable zip archive ({err})") from err
    with zf:
        total = 0
        for info in zf.infolist():
            name = info.filename
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
                raise DataError(archive, f"unsafe path in archive: {name!r}")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise DataError(archive, f"symbolic link in archive: {name!r}")
            total += info.file_size
        if total > MAX_ARCHIVE_BYTES:
            raise DataError(archive, f"archive expands to {total / 1024**3:.1f} GiB; refusing to extract")
        zf.extractall(dest)


def _read_manifest(root: str) -> dict | None:
    path = os.path.join(root, "manifest.json")
    return load_json(path) if os.path.exists(path) else None


def _extracted_root(archive: str, tmp: str) -> str:
    """The bundle root inside an extracted archive: ``tmp`` itself or its one top-level folder with ``configs/``."""
    if os.path.isdir(os.path.join(tmp, "configs")):
        return tmp
    tops = [d for d in os.listdir(tmp) if os.path.isdir(os.path.join(tmp, d, "configs"))]
    if len(tops) != 1:
        raise DataError(archive, "archive holds no bundle (expected one top-level folder with configs/)")
    return os.path.join(tmp, tops[0])


@contextlib.contextmanager
def open_bundle(path: str) -> Iterator[BundleSource]:
    """Yield a :class:`BundleSource` for a bundle folder, a project bundle name, or an exported ``.zip``.

    An archive is extracted (safely: no absolute paths, ``..`` or links) into a temporary folder that is removed on
    exit; a folder is used in place.

    Raises:
        DataError: for a missing path, an unreadable or unsafe archive, or an archive without a bundle inside.
    """
    if os.path.isfile(path):
        with tempfile.TemporaryDirectory(prefix="lesionlab-bundle-") as tmp:
            safe_extract(path, tmp)
            root = _extracted_root(path, tmp)
            manifest = _read_manifest(root)
            name = (manifest or {}).get("bundle_name") or os.path.basename(root)
            yield BundleSource(root, name, os.path.abspath(path), manifest, False)
        return
    if not os.path.exists(path) and not os.path.isdir(os.path.join(BUNDLES_DIR, path)):
        raise DataError(path, "no such bundle folder or archive")
    try:
        root = bundle_path(path)
    except LesionlabError as err:
        raise DataError(path, "not a bundle folder (no configs/ inside) nor a .zip archive") from err
    from_project = os.path.realpath(root).startswith(os.path.realpath(BUNDLES_DIR) + os.sep)
    yield BundleSource(root, os.path.basename(root), None, _read_manifest(root), from_project)
