"""Exception types raised by lesionlab for problems a user can fix (bad files, bad arguments)."""

from __future__ import annotations

import os

__all__ = ["LesionlabError", "DataError"]


class LesionlabError(Exception):
    """Base class of every error lesionlab raises on purpose."""


class DataError(LesionlabError, ValueError):
    """A data file or folder is missing, unreadable or inconsistent.

    Args:
        path: the file or folder at fault (named first in the message).
        problem: what is wrong with it, in plain words.
    """

    def __init__(self, path: str | os.PathLike | None, problem: str) -> None:
        self.path = None if path is None else os.fspath(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path is not None else problem)
