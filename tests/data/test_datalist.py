"""Tests of lesionlab.data.datalist (splits, datalist JSON, MONAI loading, command line)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from monai.data import load_decathlon_datalist, partition_dataset

from lesionlab.data.datalist import build_datalist, kfold_subjects, load_datalist, main, split_subjects
from lesionlab.errors import DataError

__all__: list[str] = []


def _items(n: int) -> list[dict]:
    return [
        {"subject": f"Site{i % 3 + 1}/{i:06d}", "image": f"/d/{i}.nii.gz", "label": [f"/d/{i}_m.nii.gz"]}
        for i in range(n)
    ]


def _nii(path: Path) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.uint8), np.eye(4)), str(path))
    return str(path)


def _r11_tree(root: Path, n: int, multi: tuple[int, ...] = (1,)) -> None:
    for i in range(n):
        sid = f"{100000 + i:06d}"
        folder = root / f"Site{i % 3 + 1}" / sid / "t01"
        _nii(folder / f"{sid}_t1w_deface_stx.nii.gz")
        _nii(folder / f"{sid}_LesionSmooth_stx.nii.gz")
        if i in multi:
            _nii(folder / f"{sid}_LesionSmooth_1_stx.nii.gz")


# ---------------------------------------------------------------- splits


def test_split_sizes_match_the_thesis() -> None:
    items = _items(229)
    train, val = split_subjects(items, val_fraction=0.2, seed=0)
    assert (len(train), len(val)) == (183, 46)
    train_ids, val_ids = {t["subject"] for t in train}, {v["subject"] for v in val}
    assert not train_ids & val_ids
    assert train_ids | val_ids == {t["subject"] for t in items}


def test_split_is_seeded_and_order_independent() -> None:
    items = _items(50)
    a = split_subjects(items, seed=7)
    assert split_subjects(items, seed=7) == a
    rev_train, rev_val = split_subjects(list(reversed(items)), seed=7)
    assert {v["subject"] for v in rev_val} == {v["subject"] for v in a[1]}
    assert rev_val == list(reversed(a[1]))  # each side keeps the input order
    assert {v["subject"] for v in split_subjects(items, seed=8)[1]} != {v["subject"] for v in a[1]}


def test_split_keeps_a_subject_together_and_edge_cases() -> None:
    items = _items(10) + [{"subject": "Site1/000000", "image": "/d/t02.nii.gz", "label": ["/d/t02_m.nii.gz"]}]
    train, val = split_subjects(items, val_fraction=0.3, seed=1)
    assert len({v["subject"] for v in val}) == 3
    assert not {t["subject"] for t in train} & {v["subject"] for v in val}
    assert len(train) + len(val) == 11
    tiny_train, tiny_val = split_subjects(_items(2), val_fraction=0.2)
    assert (len(tiny_train), len(tiny_val)) == (1, 1)
    assert split_subjects(_items(5), val_fraction=0.0)[1] == []
    with pytest.raises(ValueError):
        split_subjects(_items(5), val_fraction=1.0)


def test_kfold_exclusive_covering_near_equal() -> None:
    items = _items(28)
    folds = kfold_subjects(items, 5, seed=0)
    assert len(folds) == 5
    sizes = sorted(len(val) for _, val in folds)
    assert sizes == [5, 5, 6, 6, 6]
    seen: list[str] = []
    for train, val in folds:
        assert len(train) + len(val) == 28
        assert not {t["subject"] for t in train} & {v["subject"] for v in val}
        seen += [v["subject"] for v in val]
    assert sorted(seen) == sorted(i["subject"] for i in items)
    assert kfold_subjects(items, 5, seed=0) == folds
    with pytest.raises(ValueError):
        kfold_subjects(items, 1)
    with pytest.raises(ValueError):
        kfold_subjects(_items(3), 4)


# ---------------------------------------------------------------- datalist JSON


def test_build_datalist_relative_paths_load_in_monai(tmp_path: Path) -> None:
    _r11_tree(tmp_path, 10, multi=(1, 4))
    out = tmp_path / "datalist.json"
    data = build_datalist(tmp_path, out, seed=0)
    on_disk = json.loads(out.read_text())
    assert on_disk == data
    assert data["version"] == "ATLAS R1.1" and data["seed"] == 0
    assert (len(data["training"]), len(data["validation"])) == (8, 2)
    for item in data["training"] + data["validation"]:
        assert not os.path.isabs(item["image"])
        assert isinstance(item["label"], list) and not any(os.path.isabs(p) for p in item["label"])
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left

    for key in ("training", "validation"):
        loaded = load_decathlon_datalist(out, data_list_key=key)
        for raw, item in zip(data[key], loaded):
            assert item["image"] == os.path.normpath(os.path.join(tmp_path, raw["image"]))
            assert isinstance(item["label"], list) and len(item["label"]) == len(raw["label"])
            for p in [item["image"], *item["label"]]:
                assert os.path.isabs(p) and os.path.isfile(p)
        # MONAI also turns the subject id into a path when <base>/<site>/<id> exists; load_datalist keeps it
        ours = load_datalist(out, key)
        assert [i["subject"] for i in ours] == [i["subject"] for i in data[key]]
        assert [i["label"] for i in ours] == [i["label"] for i in loaded]
    multi = [i for i in data["training"] + data["validation"] if len(i["label"]) == 2]
    assert len(multi) == 2
    assert all(i["label"][1].endswith("_LesionSmooth_1_stx.nii.gz") for i in multi)


def test_build_datalist_absolute_paths_outside_data(tmp_path: Path) -> None:
    data_root = tmp_path / "data"
    _r11_tree(data_root, 5)
    out = tmp_path / "lists" / "atlas.json"
    data = build_datalist(data_root, out, val_fraction=0.4, seed=3)
    assert (len(data["training"]), len(data["validation"])) == (3, 2)
    assert all(os.path.isabs(p) for i in data["training"] for p in [i["image"], *i["label"]])
    loaded = load_decathlon_datalist(out, data_list_key="validation")
    assert [i["image"] for i in loaded] == [i["image"] for i in data["validation"]]


def test_build_datalist_folds(tmp_path: Path) -> None:
    _r11_tree(tmp_path, 11)
    out = tmp_path / "folds.json"
    data = build_datalist(tmp_path, out, folds=3, seed=0)
    assert "validation" not in data
    assert data["folds"] == 3 and len(data["training"]) == 11
    counts = np.bincount([i["fold"] for i in data["training"]])
    assert sorted(counts.tolist()) == [3, 4, 4]
    loaded = load_decathlon_datalist(out)
    assert [i["fold"] for i in loaded] == [i["fold"] for i in data["training"]]
    val = [i for i in loaded if i["fold"] == 0]
    assert len(val) == counts[0]
    assert sum(len(p) for p in partition_dataset(loaded, num_partitions=3)) == 11
    with pytest.raises(ValueError):
        build_datalist(tmp_path, out, folds=1)


def test_build_datalist_r20_and_errors(tmp_path: Path) -> None:
    for i in range(1, 4):
        sub = f"sub-r001s{i:03d}"
        folder = tmp_path / "ATLAS_2" / "Training" / "R001" / sub / "ses-1" / "anat"
        _nii(folder / f"{sub}_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz")
        _nii(folder / f"{sub}_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz")
    data = build_datalist(tmp_path, tmp_path / "r20.json")
    assert data["version"] == "ATLAS R2.0"
    assert len(data["training"]) + len(data["validation"]) == 3
    with pytest.raises(DataError, match="no ATLAS R1.1"):
        build_datalist(tmp_path, tmp_path / "x.json", version="r1.1")
    with pytest.raises(DataError, match="does not exist"):
        build_datalist(tmp_path / "nope", tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()


# ---------------------------------------------------------------- command line


def test_main_exit_codes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _r11_tree(tmp_path / "atlas", 10)
    out = tmp_path / "dl.json"
    assert main(["--root", str(tmp_path / "atlas"), "--out", str(out), "--seed", "1"]) == 0
    printed = capsys.readouterr().out
    assert "10 subjects" in printed and "8 train / 2 val" in printed
    assert json.loads(out.read_text())["seed"] == 1
    assert main(["--root", str(tmp_path / "atlas"), "--out", str(out), "--folds", "5"]) == 0
    assert "5 folds of 2/2/2/2/2" in capsys.readouterr().out

    os.remove(next((tmp_path / "atlas").rglob("100000_LesionSmooth_stx.nii.gz")))
    assert main(["--root", str(tmp_path / "atlas"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "image without lesion mask" in err
    with pytest.warns(UserWarning):
        assert main(["--root", str(tmp_path / "atlas"), "--out", str(out), "--non-strict"]) == 0
    assert "9 subjects" in capsys.readouterr().out
    assert main(["--root", str(tmp_path / "missing"), "--out", str(out)]) == 2
    assert "folder does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["--root", str(tmp_path), "--out", str(out), "--folds", "1"])
    assert info.value.code == 2


def test_python_dash_m(tmp_path: Path) -> None:
    _r11_tree(tmp_path, 4)
    out = tmp_path / "cli.json"
    proc = subprocess.run(
        [sys.executable, "-m", "lesionlab.data.datalist", "--root", str(tmp_path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "4 subjects" in proc.stdout and out.is_file()
