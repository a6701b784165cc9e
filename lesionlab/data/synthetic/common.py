"""Helpers shared by the synthetic data-set generators: the output folder with its notices and README."""

from __future__ import annotations

import os
from collections.abc import Mapping

from lesionlab.errors import DataError
from lesionlab.utils import atomic_write_text

__all__ = ["prepare_output_folder"]


def prepare_output_folder(out_dir: str | os.PathLike, readme: str, notices: Mapping[str, str] | None = None) -> str:
    """Create a generator's output folder and write its ``README.txt`` and notice files into it (atomically).

    Every synthetic data set carries a README saying that it is synthetic and not for clinical use, and a notice file
    for each third-party resource it is derived from (e.g. ``NOTICE_MNI152.txt``).

    Args:
        out_dir: folder to create (may exist; must not be a file).
        readme: text of ``README.txt``.
        notices: file name -> text of each notice file.

    Returns:
        the absolute path of the folder.

    Raises:
        DataError: ``out_dir`` exists and is not a folder.
    """
    out = os.path.abspath(os.fspath(out_dir))
    if os.path.exists(out) and not os.path.isdir(out):
        raise DataError(out, "exists and is not a folder")
    os.makedirs(out, exist_ok=True)
    for name, text in (notices or {}).items():
        atomic_write_text(os.path.join(out, name), text)
    atomic_write_text(os.path.join(out, "README.txt"), readme)
    return out
