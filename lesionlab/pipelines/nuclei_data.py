"""Datalists, seeded splits and cached class shares of the nuclei data sets (seed 001 §2), for bundle configs."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from lesionlab.data.datalist import split_subjects
from lesionlab.data.nuclei import CONIC_CLASSES, MONUSAC_CLASSES, conic_items, find_monusac, iter_nuclei_labels
from lesionlab.errors import DataError
from lesionlab.pipelines.class_weights import dataset_class_shares

__all__ = ["nuclei_items", "nuclei_split", "nuclei_class_shares", "class_names"]


def class_names(dataset: str) -> tuple[str, ...]:
    """Class names in index order (background first) of ``conic`` or ``monusac``."""
    if dataset not in ("conic", "monusac"):
        raise ValueError(f"dataset must be 'conic' or 'monusac', got {dataset!r}")
    return CONIC_CLASSES if dataset == "conic" else MONUSAC_CLASSES


def nuclei_items(root: str, dataset: str = "conic", group: bool = False) -> list[dict[str, Any]]:
    """Every item of a CoNIC or MoNuSAC folder; ``group`` keeps one slide (CoNIC) or patient (MoNuSAC) together."""
    class_names(dataset)
    if dataset == "conic":
        return conic_items(root, group_by_source=group)
    items = find_monusac(root)
    if not group:
        items = [{k: v for k, v in it.items() if k != "subject"} for it in items]
    return items


def nuclei_split(
    root: str, dataset: str = "conic", part: str = "train", test_fraction: float = 0.1, seed: int = 0,
    group: bool = False, limit: int | None = None,
) -> list[dict[str, Any]]:
    """The ``train`` or ``test`` side of the thesis's seeded 9 : 1 split (``group``: by slide/patient).

    ``limit`` keeps the first items of the side (quick runs). CoNIC's 4981 patches give 498 test patches, as in the
    thesis.
    """
    if part not in ("train", "test", "all"):
        raise ValueError(f"part must be 'train', 'test' or 'all', got {part!r}")
    items = nuclei_items(root, dataset, group)
    if part != "all":
        train, test = split_subjects(items, test_fraction, seed)
        items = train if part == "train" else test
    if not items:
        raise DataError(root, f"the {part} split is empty (test_fraction {test_fraction}, {dataset})")
    return items[:limit] if limit else items


def nuclei_class_shares(
    items: Sequence[dict[str, Any]], dataset: str = "conic", cache_file: str | None = None
) -> list[float]:
    """Class pixel shares of ``items`` (streamed, one label map at a time), cached to ``cache_file`` when given."""
    names = class_names(dataset)
    key = "|".join(f"{it.get('label', it.get('annotation'))}#{it.get('index', '')}#{_stamp(it)}" for it in items)
    digest = hashlib.sha1(key.encode()).hexdigest()
    shares = dataset_class_shares(lambda: iter_nuclei_labels(items), len(names), cache_file, key=digest)
    return np.asarray(shares).tolist()


def _stamp(item: dict[str, Any]) -> str:
    path = item.get("label", item.get("annotation"))
    try:
        st = os.stat(path)
        return f"{st.st_size}:{int(st.st_mtime)}"
    except (OSError, TypeError):
        return ""
