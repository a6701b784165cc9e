"""Crash-safe image writers for MONAI's ``SaveImage``/``SaveImaged`` (``writer=...``).

A prediction written with MONAI's own ``NibabelWriter`` goes straight to its final name, so a process killed while
``nib.save`` compresses the data leaves a truncated ``.nii.gz`` that looks like a result. :class:`AtomicNibabelWriter`
writes to a hidden temporary file in the same folder and renames it onto the final name (``os.replace``, atomic on
POSIX): after a kill the output is either absent (or the previous version) or complete.

A kill can leave one orphan temporary file per interrupted write, named ``.tmp-<final name>-<random><ext>`` (e.g.
``.tmp-case_lesion.nii.gz-k2j1x9.nii.gz``). It is hidden, and its name never ends with the final name, so globs such as
``*_lesion.nii.gz`` and the ATLAS/datalist finders never take it for an output; it can be deleted at any time.
"""

from __future__ import annotations

import logging
import os

from monai.config import PathLike
from monai.data import NibabelWriter

from lesionlab.utils import atomic_path

__all__ = ["AtomicNibabelWriter", "image_suffix", "make_readable"]

logger = logging.getLogger(__name__)

_MULTI_SUFFIXES = (".nii.gz", ".mha.gz", ".nrrd.gz", ".tar.gz")


def image_suffix(path: PathLike) -> str:
    """The format-defining extension of ``path``: ``.nii.gz`` for ``a.nii.gz``, ``.nii`` for ``a.nii``."""
    name = os.path.basename(os.fspath(path)).lower()
    for suffix in _MULTI_SUFFIXES:
        if name.endswith(suffix):
            return os.fspath(path)[-len(suffix):]
    return os.path.splitext(os.fspath(path))[1]


def make_readable(path: PathLike) -> None:
    """Give ``path`` the permissions a plain ``open()`` would (0666 minus the umask); ``mkstemp`` makes files 0600."""
    mask = os.umask(0)
    os.umask(mask)
    os.chmod(path, 0o666 & ~mask)


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's ``NibabelWriter`` whose ``write`` goes through a temporary file and ``os.replace``.

    The temporary file keeps the final file's extension (``.nii.gz``), so nibabel picks the same format and
    compression. Works with the ``ImageWriter`` API of MONAI 1.4 to 1.6 (only ``write(filename, verbose, **kwargs)``
    is overridden). Use it in a bundle as
    ``{"_target_": "SaveImaged", ..., "writer": "lesionlab.data.writers.AtomicNibabelWriter"}``.

    Example::

        writer = AtomicNibabelWriter(output_dtype=numpy.uint8)
        writer.set_data_array(mask, channel_dim=None)
        writer.set_metadata({"affine": affine, "original_affine": affine}, resample=False)
        writer.write("out/case_lesion.nii.gz")
    """

    def write(self, filename: PathLike, verbose: bool = False, **obj_kwargs) -> None:
        """Write to ``filename`` atomically; ``obj_kwargs`` go to ``create_backend_obj`` as in MONAI."""
        final = os.fspath(filename)
        with atomic_path(final, suffix=image_suffix(final)) as tmp:
            super().write(tmp, verbose=False, **obj_kwargs)
            make_readable(tmp)
        if verbose:
            logger.info("wrote %s", final)
