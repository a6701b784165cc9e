"""Write MONAI / Medical-Segmentation-Decathlon style datalist JSON files for ATLAS.

The split follows the AGMR-Net/TSRL-Net thesis (seed_002 §2.1): a subject-level 80/20 hold-out (183/46 of the 229
ATLAS R1.1 subjects) with no separate validation set, or k mutually exclusive folds (the ISLES 2015 protocol, §2.2).

Command line::

    python -m lesionlab.data.datalist --root DIR --out FILE [--version auto|r1.1|r2.0] [--folds K]
        [--seed S] [--val-fraction F] [--non-strict]
    python -m lesionlab.data.datalist --dataset isles2015 --root DIR --out FILE [--folds K] [--seed S]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from collections.abc import Sequence

import numpy as np

from lesionlab.data.atlas import ATLAS_VERSIONS, detect_atlas_version, find_atlas
from lesionlab.data.isles import find_isles2015
from lesionlab.errors import DataError

__all__ = ["split_subjects", "kfold_subjects", "build_datalist", "build_isles_datalist", "load_datalist", "main"]

_PATH_KEYS = ("image", "label")


def _groups(items: Sequence[dict]) -> list[list[int]]:
    """Indices of ``items`` grouped by their ``"subject"`` (items without one are their own group), sorted by subject.

    Sorting makes the split depend on the set of subjects only, not on the order they were listed in.
    """
    by_subject: dict[str, list[int]] = {}
    for i, item in enumerate(items):
        key = item.get("subject") if isinstance(item, dict) else None
        by_subject.setdefault(str(key) if key is not None else f"\0{i:012d}", []).append(i)
    return [by_subject[k] for k in sorted(by_subject)]


def _shuffled_groups(items: Sequence[dict], seed: int) -> list[list[int]]:
    groups = _groups(items)
    order = np.random.default_rng(seed).permutation(len(groups))
    return [groups[i] for i in order]


def split_subjects(items: Sequence[dict], val_fraction: float = 0.2, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Seeded subject-level hold-out split.

    Items sharing a ``"subject"`` value stay on the same side. The number of held-out subjects is
    ``round(val_fraction * n_subjects)`` (halves rounded up), e.g. 46 of 229 for the ATLAS 80/20 split. When
    ``val_fraction > 0`` and there are at least two subjects, each side gets at least one subject.

    Args:
        items: datalist items (dicts, usually with a ``"subject"`` key).
        val_fraction: fraction of subjects held out, in [0, 1).
        seed: shuffle seed; the same seed and the same subjects give the same split.

    Returns:
        ``(train, val)`` lists, each in the input order.

    Raises:
        ValueError: when ``val_fraction`` is outside [0, 1).
    """
    if not 0.0 <= float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    groups = _shuffled_groups(items, seed)
    n = len(groups)
    n_val = int(math.floor(val_fraction * n + 0.5))
    if val_fraction > 0 and n >= 2:
        n_val = min(max(n_val, 1), n - 1)
    val_idx = sorted(i for g in groups[:n_val] for i in g)
    train_idx = sorted(i for g in groups[n_val:] for i in g)
    return [items[i] for i in train_idx], [items[i] for i in val_idx]


def _fold_of(items: Sequence[dict], k: int, seed: int) -> list[int]:
    """Fold number of every item: shuffled subjects dealt into ``k`` near-equal folds (sizes differ by at most 1)."""
    groups = _shuffled_groups(items, seed)
    if not 2 <= k <= len(groups):
        raise ValueError(f"k must be between 2 and the number of subjects ({len(groups)}), got {k}")
    fold = [0] * len(items)
    for f, chunk in enumerate(np.array_split(np.arange(len(groups)), k)):
        for g in chunk:
            for i in groups[int(g)]:
                fold[i] = f
    return fold


def kfold_subjects(items: Sequence[dict], k: int, seed: int = 0) -> list[tuple[list[dict], list[dict]]]:
    """Seeded subject-level k-fold cross-validation.

    Subjects are shuffled and dealt into ``k`` mutually exclusive folds whose sizes (in subjects) differ by at most
    one, e.g. 6/6/6/5/5 for 28 subjects and 5 folds.

    Args:
        items: datalist items (dicts, usually with a ``"subject"`` key).
        k: number of folds, between 2 and the number of subjects.
        seed: shuffle seed.

    Returns:
        ``k`` pairs ``(train, val)``; ``val`` of pair ``i`` is fold ``i`` and ``train`` is everything else.

    Raises:
        ValueError: for a bad ``k``.
    """
    fold = _fold_of(items, int(k), seed)
    return [
        ([it for it, f in zip(items, fold) if f != i], [it for it, f in zip(items, fold) if f == i]) for i in range(k)
    ]


def _is_under(path: str, folder: str) -> bool:
    try:
        return os.path.commonpath([os.path.abspath(path), folder]) == folder
    except ValueError:  # different drives
        return False


def _entry(item: dict, base: str | None) -> dict:
    def rel(p: str) -> str:
        return os.path.relpath(p, base) if base is not None else os.path.abspath(p)

    labels = item["label"] if isinstance(item["label"], list) else [item["label"]]
    return {"image": rel(item["image"]), "label": [rel(p) for p in labels], "subject": item["subject"]}


def _write_json_atomic(data: dict, path: str) -> None:
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh, indent=2)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def build_datalist(
    root: str | os.PathLike,
    out_json: str | os.PathLike,
    version: str = "auto",
    val_fraction: float = 0.2,
    folds: int = 0,
    seed: int = 0,
    strict: bool = True,
) -> dict:
    """Find the ATLAS subjects under ``root`` and write a MONAI/Decathlon-style datalist.

    With ``folds=0`` the subjects are split into ``"training"`` and ``"validation"`` (subject-level, seeded,
    ``val_fraction`` held out). With ``folds=k >= 2``, ``"training"`` holds every subject with a ``"fold"`` key in
    ``0..k-1`` (MONAI convention: use ``monai.data.partition_dataset`` or select by fold) and there is no
    ``"validation"`` key. Every entry is ``{"image": path, "label": [mask paths], "subject": id}``; ``"label"`` is
    always a list (R1.1 subjects may have several masks whose union is the lesion).

    Paths are relative to the JSON file's folder when all data files live under that folder, otherwise absolute;
    :func:`monai.data.load_decathlon_datalist` resolves relative paths, including every element of a list-valued
    ``"label"``. The file is written atomically (temporary file in the same folder, then ``os.replace``).

    Args:
        root: ATLAS data folder.
        out_json: datalist file to write.
        version: ``"auto"``, ``"r1.1"`` or ``"r2.0"``.
        val_fraction: held-out fraction when ``folds == 0``.
        folds: 0 for a hold-out split, otherwise the number of folds (>= 2).
        seed: split seed (also written to the file).
        strict: passed to the finder; when False, broken subjects are skipped with a warning.

    Returns:
        The datalist dict that was written.

    Raises:
        DataError: problems with the data (see :func:`lesionlab.data.find_atlas`).
        ValueError: bad ``version``, ``val_fraction`` or ``folds``.
    """
    folds = int(folds)
    if folds < 0 or folds == 1:
        raise ValueError(f"folds must be 0 (hold-out split) or at least 2, got {folds}")
    version = version.lower()
    if version == "auto":
        version = detect_atlas_version(root)
    if version not in ATLAS_VERSIONS:
        raise ValueError(f"version must be 'auto', 'r1.1' or 'r2.0', got {version!r}")
    items = find_atlas(root, version=version, strict=strict)

    out_path = os.path.abspath(os.fspath(out_json))
    if os.path.isdir(out_path):
        raise DataError(out_path, "is a folder; give the datalist file name")
    out_dir = os.path.dirname(out_path)
    files = [p for it in items for p in [it["image"], *it["label"]]]
    base = out_dir if all(_is_under(p, out_dir) for p in files) else None

    data: dict = {
        "name": "ATLAS",
        "description": "Anatomical Tracings of Lesions After Stroke: T1-weighted MRI with manual lesion masks "
        "(the lesion is the union of the label files)",
        "version": ATLAS_VERSIONS[version],
        "reference": "Liew et al., Sci. Data 2018 (R1.1); Liew et al., Sci. Data 2022 (R2.0)",
        "tensorImageSize": "3D",
        "modality": {"0": "T1w"},
        "labels": {"0": "background", "1": "lesion"},
        "seed": int(seed),
    }
    if folds:
        fold = _fold_of(items, folds, seed)
        data["folds"] = folds
        data["training"] = [{**_entry(it, base), "fold": f} for it, f in zip(items, fold)]
    else:
        train, val = split_subjects(items, val_fraction=val_fraction, seed=seed)
        data["val_fraction"] = float(val_fraction)
        data["training"] = [_entry(it, base) for it in train]
        data["validation"] = [_entry(it, base) for it in val]
    data["numTraining"] = len(data["training"])
    _write_json_atomic(data, out_path)
    return data


def load_datalist(
    path: str | os.PathLike,
    key: str = "training",
    base_dir: str | os.PathLike | None = None,
) -> list[dict]:
    """Load one list of a datalist with :func:`monai.data.load_decathlon_datalist`, keeping subject ids intact.

    MONAI joins *any* string value with ``base_dir`` when the result exists on disk, so a subject id such as
    ``"Site1/031768"`` would become a folder path when the datalist sits at the top of an R1.1 tree. This wrapper
    restores the ``"subject"`` values from the file.

    Args:
        path: datalist JSON file.
        key: ``"training"`` or ``"validation"``.
        base_dir: folder relative paths are resolved against (default: the JSON file's folder).

    Returns:
        Items with absolute ``"image"`` and ``"label"`` paths.

    Raises:
        DataError: when the file is missing, unreadable or lacks ``key``.
    """
    from monai.data import load_decathlon_datalist

    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as fh:
            raw = json.load(fh)
    except FileNotFoundError:
        raise DataError(path, "datalist file does not exist") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise DataError(path, f"cannot read datalist: {exc}") from exc
    if key not in raw:
        raise DataError(path, f"datalist has no {key!r} list")
    items = load_decathlon_datalist(path, is_segmentation=True, data_list_key=key, base_dir=base_dir)
    for item, original in zip(items, raw[key]):
        if isinstance(original, dict) and "subject" in original:
            item["subject"] = original["subject"]
    return items


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m lesionlab.data.datalist",
        description="Write a MONAI datalist JSON for an ATLAS R1.1 or R2.0 folder.",
    )
    p.add_argument("--root", required=True, help="ATLAS data folder")
    p.add_argument("--dataset", default="atlas", choices=["atlas", "isles2015"],
                   help="data set layout (isles2015: ISLES 2015 SISS T1, cross-validation folds, 5 when --folds is 0)")
    p.add_argument("--out", required=True, help="datalist JSON file to write")
    p.add_argument("--version", default="auto", choices=["auto", "r1.1", "r2.0"], help="ATLAS release")
    p.add_argument("--folds", type=int, default=0, help="0: hold-out split; K>=2: K cross-validation folds")
    p.add_argument("--seed", type=int, default=0, help="split seed")
    p.add_argument("--val-fraction", type=float, default=0.2, help="held-out fraction when --folds is 0")
    p.add_argument("--non-strict", action="store_true", help="skip broken subjects with a warning instead of failing")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point.

    Args:
        argv: arguments (default: ``sys.argv[1:]``).

    Returns:
        0 on success, 2 on a data or argument error (the message goes to stderr as ``error: ...``).
    """
    parser = _parser()
    args = parser.parse_args(argv)
    if args.folds < 0 or args.folds == 1:
        parser.error(f"--folds must be 0 or at least 2, got {args.folds}")
    if not 0.0 <= args.val_fraction < 1.0:
        parser.error(f"--val-fraction must be in [0, 1), got {args.val_fraction}")
    try:
        if args.dataset == "isles2015":
            args.folds = args.folds or 5  # the ISLES 2015 protocol is 5-fold cross-validation (seed 002 §2.2)
            data = build_isles_datalist(args.root, args.out, folds=args.folds, seed=args.seed)
        else:
            data = build_datalist(
                args.root,
                args.out,
                version=args.version,
                val_fraction=args.val_fraction,
                folds=args.folds,
                seed=args.seed,
                strict=not args.non_strict,
            )
    except (DataError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    n_train = len(data["training"])
    if args.folds:
        sizes = np.bincount([it["fold"] for it in data["training"]], minlength=args.folds)
        split = f"{args.folds} folds of {'/'.join(str(int(s)) for s in sizes)}"
        n_total = n_train
    else:
        n_val = len(data["validation"])
        split = f"{n_train} train / {n_val} val"
        n_total = n_train + n_val
    print(f"{os.path.abspath(args.out)}: {data['version']}, {n_total} subjects, {split} (seed {args.seed})")
    return 0


def build_isles_datalist(
    root: str | os.PathLike,
    out_json: str | os.PathLike,
    folds: int = 5,
    seed: int = 0,
    check_geometry: bool = True,
) -> dict:
    """Find the ISLES 2015 SISS training cases under ``root`` and write a k-fold cross-validation datalist.

    The thesis evaluates on ISLES 2015 by 5-fold cross-validation at case level (seed 002 §2.2): the 28 cases are
    shuffled (seeded) and dealt into ``folds`` mutually exclusive folds whose sizes differ by at most one
    (6/6/6/5/5). ``"training"`` holds every case with a ``"fold"`` key in ``0..folds-1``; there is no
    ``"validation"`` key (select by fold, as for :func:`build_datalist` with ``folds``). Entries are
    ``{"image": T1 path, "label": [OT path], "subject": case}``: ``"label"`` is a one-element list so that ISLES and
    ATLAS datalists feed the same transforms (``MergeMasksd``). Paths are relative to the JSON file's folder when all
    files live under it, otherwise absolute; the file is written atomically.

    Args:
        root: folder holding ``Training/`` (or the ``Training`` folder itself).
        out_json: datalist file to write.
        folds: number of folds, between 2 and the number of cases. Defaults to 5.
        seed: split seed (also written to the file).
        check_geometry: passed to :func:`lesionlab.data.isles.find_isles2015`.

    Returns:
        The datalist dict that was written.

    Raises:
        DataError: problems with the data (see :func:`lesionlab.data.isles.find_isles2015`) or ``out_json`` being a
            folder.
        ValueError: a bad ``folds``.
    """
    if isinstance(folds, bool) or int(folds) != folds or folds < 2:
        raise ValueError(f"folds must be an integer >= 2 (ISLES 2015 is evaluated by cross-validation), got {folds}")
    folds = int(folds)
    items = find_isles2015(root, check_geometry=check_geometry)
    out_path = os.path.abspath(os.fspath(out_json))
    if os.path.isdir(out_path):
        raise DataError(out_path, "is a folder; give the datalist file name")
    out_dir = os.path.dirname(out_path)
    base = out_dir if all(_is_under(p, out_dir) for it in items for p in (it["image"], it["label"])) else None
    fold = _fold_of(items, folds, seed)  # raises ValueError when folds > number of cases
    data: dict = {
        "name": "ISLES 2015 SISS",
        "description": "Ischemic Stroke Lesion Segmentation 2015, sub-acute ischemic stroke (SISS) training cases: "
        "skull-stripped T1 MRI resampled to 1 mm isotropic, with manual lesion masks (OT)",
        "version": "ISLES 2015 SISS",
        "reference": "Maier et al., Med. Image Anal. 35, 2017",
        "tensorImageSize": "3D",
        "modality": {"0": "T1"},
        "labels": {"0": "background", "1": "lesion"},
        "seed": int(seed),
        "folds": folds,
        "training": [{**_entry(it, base), "fold": f} for it, f in zip(items, fold)],
    }
    data["numTraining"] = len(data["training"])
    _write_json_atomic(data, out_path)
    return data


if __name__ == "__main__":
    sys.exit(main())
