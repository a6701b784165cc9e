"""Small shared utilities: atomic file writing, device selection."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["TEMP_PREFIX", "atomic_write_text", "atomic_path", "remove_stale_temp_files", "get_device", "save_figure"]

#: name prefix of the temporary files of :func:`atomic_path` (a killed process may leave some behind)
TEMP_PREFIX = ".tmp-"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def remove_stale_temp_files(folder: str | os.PathLike) -> list[str]:
    """Delete the temporary files that :func:`atomic_path` left in ``folder`` when a process was killed; return them.

    Only names starting with :data:`TEMP_PREFIX` directly inside ``folder`` are touched; call it when no other process
    writes there.
    """
    folder = os.fspath(folder)
    removed = []
    if os.path.isdir(folder):
        for name in os.listdir(folder):
            path = os.path.join(folder, name)
            if name.startswith(TEMP_PREFIX) and os.path.isfile(path):
                with contextlib.suppress(OSError):
                    os.unlink(path)
                    removed.append(path)
    return removed


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[str]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path`` (atomic on POSIX).

    A crash or kill at any moment leaves either the old file or the new one, never a truncated file. ``suffix``
    lets writers that choose the format by extension (e.g. ``.nii.gz``) see the right one.
    """
    path = os.fspath(path)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX + os.path.basename(path) + "-", suffix=suffix, dir=folder)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a finished file gets the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (temporary file in the same folder, then rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def get_device(device: str | torch.device | None = None) -> torch.device:
    """``device`` if given, else the first CUDA device when one is available, else the CPU."""
    if device is not None and str(device) != "auto":
        return torch.device(device)
    return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")


def save_figure(fig: Any, out_png: str | os.PathLike, dpi: int = 110) -> str:
    """Write a matplotlib figure as PNG atomically (temp file + rename) and close it; returns ``out_png``."""
    import matplotlib.pyplot as plt

    with atomic_path(out_png, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=dpi)
    plt.close(fig)
    return os.fspath(out_png)
