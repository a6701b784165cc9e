"""Class-share statistics and the six Focal-Loss class-weight functions of the nuclei imbalance thesis (seed 001).

Source: "Research and Implementation of Methods for Imbalanced Data in Medical Images" (undergraduate thesis,
Tongji University, 2022), §4.4, Tables 3.2, 3.3 and 4.11. With ``p_i`` the pixel fraction of class ``i`` of the
data set, ``N`` the number of classes and ``e`` Euler's number, every function is normalised to sum 1:

====  ============================  ===========================================================================
 #    name                          weight before normalisation
====  ============================  ===========================================================================
 ①    ``equal``                     ``1``
 ②    ``balanced``                  ``sum_j M_j / (N M_i)`` (inverse frequency; Table 3.2)
 ③    ``exp_increasing``            ``exp(+e p_i)`` (the thesis gives no formula; the mirror image of ④)
 ④    ``exp_decreasing``            ``exp(-e p_i)`` (reproduces Table 4.11, column ④, to 4 decimals)
 ⑤    ``proposed``                  foreground ``exp(-e p_j / sum_{k != bg} p_k)``, background ``exp(-e p_bg)``
 ⑥    ``proposed_zero_background``  as ⑤ with the background weight 0
====  ============================  ===========================================================================

⑤ concatenates the *raw* exponentials before normalising; that is the reading which reproduces Table 4.11
(normalising ④'s background weight first does not).

:func:`pixel_counts` streams per-class pixel counts over any iterable of label maps (one map in memory at a
time) and :func:`dataset_class_shares` caches them to JSON next to the data so a datalist is read only once.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from lesionlab.errors import DataError
from lesionlab.utils import atomic_write_text

__all__ = [
    "WEIGHT_FUNCTIONS",
    "WEIGHT_FUNCTION_NUMBERS",
    "class_weights",
    "pixel_counts",
    "shares_from_counts",
    "dataset_class_shares",
]

WEIGHT_FUNCTIONS = (
    "equal",
    "balanced",
    "exp_increasing",
    "exp_decreasing",
    "proposed",
    "proposed_zero_background",
)
#: the thesis numbers functions ① to ⑥ (``--focal_weight`` of its demo); 1-based like the thesis
WEIGHT_FUNCTION_NUMBERS = {i + 1: name for i, name in enumerate(WEIGHT_FUNCTIONS)}


def _normalise(w: np.ndarray) -> np.ndarray:
    return w / w.sum()


def _check_shares(shares: Sequence[float], background_index: int | None) -> np.ndarray:
    p = np.asarray(shares, dtype=np.float64)
    if p.ndim != 1 or p.size < 2:
        raise ValueError(f"class_weights: shares must be a 1-D sequence of >= 2 class fractions, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"class_weights: shares must be finite and >= 0, got {p.tolist()}")
    if p.sum() <= 0:
        raise ValueError("class_weights: shares sum to 0")
    if background_index is not None and not -p.size <= background_index < p.size:
        raise ValueError(f"class_weights: background_index {background_index} out of range for {p.size} classes")
    return p / p.sum()


def class_weights(
    shares: Sequence[float], function: str | int = "proposed", background_index: int = 0
) -> np.ndarray:
    """Focal-Loss class weights (sum 1) from the data set's class pixel shares.

    Args:
        shares: pixel fraction (or count, or percentage: they are normalised first) of every class, in class-index
            order.
        function: one of :data:`WEIGHT_FUNCTIONS` or its thesis number 1-6 (① ... ⑥).
        background_index: index of the background class (used by ``proposed`` and ``proposed_zero_background``).

    Returns:
        float64 array of the same length as ``shares``, summing to 1.

    Raises:
        ValueError: unknown function, malformed shares, or a zero share with ``balanced`` (infinite weight).

    Example::

        >>> class_weights([83.975, 0.126, 10.308, 1.855, 0.551, 0.103, 3.081], "proposed").round(4)[:2]
        array([0.0228, 0.2189])
    """
    if isinstance(function, (int, np.integer)) and not isinstance(function, bool):
        if int(function) not in WEIGHT_FUNCTION_NUMBERS:
            raise ValueError(f"class_weights: function number must be 1-6, got {function}")
        function = WEIGHT_FUNCTION_NUMBERS[int(function)]
    if function not in WEIGHT_FUNCTIONS:
        raise ValueError(f"class_weights: unknown function {function!r}; choose one of {WEIGHT_FUNCTIONS}")
    p = _check_shares(shares, background_index)
    n = p.size
    if function == "equal":
        return np.full(n, 1.0 / n)
    if function == "balanced":
        if np.any(p == 0):
            raise ValueError(f"class_weights: 'balanced' needs every class present, shares are {p.tolist()}")
        return _normalise(1.0 / (n * p))
    if function == "exp_increasing":
        return _normalise(np.exp(np.e * p))
    if function == "exp_decreasing":
        return _normalise(np.exp(-np.e * p))
    fg = np.ones(n, dtype=bool)
    fg[background_index] = False
    if p[fg].sum() <= 0:
        raise ValueError("class_weights: the foreground classes have no pixels; 'proposed' is undefined")
    raw = np.empty(n)
    raw[fg] = np.exp(-np.e * p[fg] / p[fg].sum())
    raw[background_index] = 0.0 if function == "proposed_zero_background" else np.exp(-np.e * p[background_index])
    return _normalise(raw)


def pixel_counts(labels: Iterable[np.ndarray], num_classes: int, name: str | None = None) -> np.ndarray:
    """Per-class pixel counts over ``labels`` (an iterable of integer label maps), one map in memory at a time.

    Raises:
        DataError: a label map holds a negative or non-integer value or a class id >= ``num_classes`` (names
            ``name`` and the item index).
    """
    counts = np.zeros(num_classes, dtype=np.int64)
    for i, lab in enumerate(labels):
        a = np.asarray(lab)
        if a.dtype.kind not in "iu":
            if a.dtype.kind != "f" or not np.all(np.equal(np.mod(a, 1), 0)):
                raise DataError(name, f"item {i}: label map must hold integer class ids, got dtype {a.dtype}")
            a = a.astype(np.int64)
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise DataError(name, f"item {i}: class ids must be in [0, {num_classes - 1}], found {a.min()}..{a.max()}")
        counts += np.bincount(a.ravel().astype(np.int64), minlength=num_classes)[:num_classes]
    return counts


def shares_from_counts(counts: Sequence[int]) -> np.ndarray:
    """Pixel fractions from counts (sum 1)."""
    c = np.asarray(counts, dtype=np.float64)
    if c.sum() <= 0:
        raise ValueError("shares_from_counts: no pixels counted")
    return c / c.sum()


def dataset_class_shares(
    labels: Callable[[], Iterable[np.ndarray]],
    num_classes: int,
    cache_file: str | os.PathLike | None = None,
    key: str = "",
) -> np.ndarray:
    """Class pixel shares of a data set, cached to JSON (``{"key", "num_classes", "counts", "shares"}``).

    Args:
        labels: zero-argument callable returning an iterable of label maps (called only on a cache miss).
        num_classes: number of classes.
        cache_file: JSON cache; reused when its ``key`` and ``num_classes`` match, rewritten atomically otherwise.
        key: identifies the data (e.g. file names, sizes, mtimes and the split) so a stale cache is not reused.
    """
    if cache_file is not None and os.path.isfile(cache_file):
        try:
            with open(cache_file, encoding="utf-8") as f:
                cached = json.load(f)
            if cached.get("key") == key and cached.get("num_classes") == num_classes:
                return shares_from_counts(cached["counts"])
        except (OSError, ValueError, KeyError, TypeError):
            pass  # unreadable or foreign cache: recount and overwrite
    counts = pixel_counts(labels(), num_classes, name=None if cache_file is None else os.fspath(cache_file))
    shares = shares_from_counts(counts)
    if cache_file is not None:
        payload = {"key": key, "num_classes": num_classes, "counts": counts.tolist(), "shares": shares.tolist()}
        atomic_write_text(cache_file, json.dumps(payload, indent=2) + "\n")
    return shares
