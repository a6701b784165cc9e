"""Tests of lesionlab.data.atlas on tiny NIfTI trees in the ATLAS R1.1 and R2.0 layouts."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionlab.data import detect_atlas_version, find_atlas, find_atlas_r11, find_atlas_r20, synth_atlas
from lesionlab.data.synthetic import brain as synthetic
from lesionlab.errors import DataError

__all__: list[str] = []

R20_STEM = "space-MNI152NLin2009aSym"


def _nii(path: Path, empty: bool = False) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    if empty:
        path.write_bytes(b"")
    else:
        nib.save(nib.Nifti1Image(np.zeros((8, 8, 8), dtype=np.uint8), np.eye(4)), str(path))
    return str(path)


def _r11_subject(root: Path, site: str, sid: str, masks: tuple[str, ...] = ("",)) -> tuple[str, list[str]]:
    folder = root / site / sid / "t01"
    image = _nii(folder / f"{sid}_t1w_deface_stx.nii.gz")
    labels = [_nii(folder / f"{sid}_LesionSmooth{suffix}_stx.nii.gz") for suffix in masks]
    return image, labels


def _r20_subject(root: Path, site: str, sub: str, image: bool = True, mask: bool = True) -> tuple[str, str]:
    folder = root / "ATLAS_2" / "Training" / site / sub / "ses-1" / "anat"
    img = folder / f"{sub}_ses-1_{R20_STEM}_T1w.nii.gz"
    msk = folder / f"{sub}_ses-1_{R20_STEM}_label-L_desc-T1lesion_mask.nii.gz"
    if image:
        _nii(img)
    if mask:
        _nii(msk)
    return str(img), str(msk)


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch) -> None:
    """Generate with a 32x40x32 toy brain instead of the MNI152 template (fast)."""
    data, mask = synthetic._toy_brain((32, 40, 32))
    tpl = synthetic._prepare_template(data, mask, np.eye(4))
    monkeypatch.setattr(synthetic, "_template", lambda: tpl)


# ---------------------------------------------------------------- R1.1


def test_r11_pairs_and_orders_masks(tmp_path: Path) -> None:
    img_b, labels_b = _r11_subject(tmp_path, "Site2", "000002", masks=("_10", "", "_2", "_1"))
    img_a, labels_a = _r11_subject(tmp_path, "Site1", "031768")
    (tmp_path / "Site1" / "notes.txt").write_text("not an image")
    found = find_atlas_r11(tmp_path)
    assert [f["subject"] for f in found] == ["Site1/031768", "Site2/000002"]
    assert found[0] == {"subject": "Site1/031768", "image": img_a, "label": labels_a}
    folder = os.path.dirname(img_b)
    expected = [os.path.join(folder, f"000002_LesionSmooth{s}_stx.nii.gz") for s in ("", "_1", "_2", "_10")]
    assert found[1]["label"] == expected
    assert all(os.path.isabs(p) for f in found for p in [f["image"], *f["label"]])
    assert find_atlas(tmp_path) == found
    assert detect_atlas_version(tmp_path) == "r1.1"


def test_r11_generated_tree(toy: None, tmp_path: Path) -> None:
    records = synth_atlas(tmp_path, n=5, seed=1, layout="r1.1", progress=False)
    found = find_atlas(tmp_path, version="auto")
    by_subject = {f["subject"]: f for f in found}
    assert len(found) == 5
    for i, rec in enumerate(records):
        item = by_subject[f"Site{i % 3 + 1}/{rec['subject']}"]
        assert item["image"] == rec["image"]
        assert item["label"] == rec["labels"]


def test_r11_broken_tree_lists_every_problem(tmp_path: Path) -> None:
    _r11_subject(tmp_path, "Site1", "000001")
    lonely_image, _ = _r11_subject(tmp_path, "Site1", "000002", masks=())
    _, (lonely_mask,) = _r11_subject(tmp_path, "Site2", "000003")
    os.remove(lonely_mask.replace("_LesionSmooth_stx", "_t1w_deface_stx"))
    empty = _nii(tmp_path / "Site3" / "000004" / "t01" / "000004_LesionSmooth_stx.nii.gz", empty=True)
    _nii(tmp_path / "Site3" / "000004" / "t01" / "000004_t1w_deface_stx.nii.gz")
    with pytest.raises(DataError) as info:
        find_atlas_r11(tmp_path)
    message = str(info.value)
    assert message.startswith(f"{tmp_path}: 3 problems")
    assert f"image without lesion mask: {lonely_image}" in message
    assert f"lesion mask without image: {lonely_mask}" in message
    assert f"empty (zero-byte) file: {empty}" in message
    assert isinstance(info.value, ValueError)

    with pytest.warns(UserWarning, match="000002_t1w_deface_stx") as record:
        found = find_atlas_r11(tmp_path, strict=False)
    text = " ".join(str(w.message) for w in record)
    assert lonely_mask in text and empty in text
    assert [f["subject"] for f in found] == ["Site1/000001"]


def test_r11_only_broken_subjects_non_strict(tmp_path: Path) -> None:
    _r11_subject(tmp_path, "Site1", "000002", masks=())
    with pytest.warns(UserWarning), pytest.raises(DataError, match="no usable ATLAS R1.1"):
        find_atlas_r11(tmp_path, strict=False)


def test_empty_and_missing_roots(tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="no ATLAS R1.1 files") as info:
        find_atlas_r11(empty)
    assert str(info.value).startswith(str(empty))
    with pytest.raises(DataError, match="no ATLAS R2.0 files"):
        find_atlas_r20(empty)
    with pytest.raises(DataError, match="R1.1.*R2.0"):
        find_atlas(empty)
    missing = tmp_path / "missing"
    for finder in (find_atlas_r11, find_atlas_r20, find_atlas):
        with pytest.raises(DataError, match="folder does not exist") as info:
            finder(missing)
        assert str(missing) in str(info.value)
    a_file = Path(_nii(tmp_path / "x.nii.gz"))
    with pytest.raises(DataError, match="not a folder"):
        find_atlas_r11(a_file)


def test_zero_byte_image(tmp_path: Path) -> None:
    folder = tmp_path / "Site1" / "000009" / "t01"
    image = _nii(folder / "000009_t1w_deface_stx.nii.gz", empty=True)
    _nii(folder / "000009_LesionSmooth_stx.nii.gz")
    with pytest.raises(DataError, match="1 problem: empty") as info:
        find_atlas_r11(tmp_path)
    assert image in str(info.value)


# ---------------------------------------------------------------- R2.0


def test_r20_pairs(tmp_path: Path) -> None:
    img2, mask2 = _r20_subject(tmp_path, "R002", "sub-r002s001")
    img1, mask1 = _r20_subject(tmp_path, "R001", "sub-r001s001")
    found = find_atlas_r20(tmp_path)
    assert found == [
        {"subject": "sub-r001s001/ses-1", "image": img1, "label": [mask1]},
        {"subject": "sub-r002s001/ses-1", "image": img2, "label": [mask2]},
    ]
    assert detect_atlas_version(tmp_path) == "r2.0"
    assert find_atlas(tmp_path) == found
    # pointing below the release folder works too
    assert find_atlas_r20(tmp_path / "ATLAS_2" / "Training" / "R001") == found[:1]


def test_r20_generated_tree(toy: None, tmp_path: Path) -> None:
    records = synth_atlas(tmp_path, n=4, seed=0, layout="r2.0", progress=False)
    found = find_atlas(tmp_path)
    assert [f["subject"] for f in found] == sorted(f"{r['subject']}/ses-1" for r in records)
    by_image = {f["image"]: f for f in found}
    for rec in records:
        assert by_image[rec["image"]]["label"] == rec["labels"]


def test_r20_broken_tree(tmp_path: Path) -> None:
    _r20_subject(tmp_path, "R001", "sub-r001s001")
    lonely_image, _ = _r20_subject(tmp_path, "R001", "sub-r001s002", mask=False)
    _, lonely_mask = _r20_subject(tmp_path, "R002", "sub-r002s001", image=False)
    with pytest.raises(DataError) as info:
        find_atlas_r20(tmp_path)
    message = str(info.value)
    assert "2 problems" in message
    assert f"image without lesion mask: {lonely_image}" in message
    assert f"lesion mask without image: {lonely_mask}" in message
    with pytest.warns(UserWarning, match="sub-r001s002"):
        found = find_atlas_r20(tmp_path, strict=False)
    assert [f["subject"] for f in found] == ["sub-r001s001/ses-1"]


def test_r20_testing_images_hint(tmp_path: Path) -> None:
    _r20_subject(tmp_path, "R001", "sub-r001s001")
    test_image = tmp_path / "ATLAS_2" / "Testing" / "R001" / "sub-r001s009" / "ses-1" / "anat"
    _nii(test_image / f"sub-r001s009_ses-1_{R20_STEM}_T1w.nii.gz")
    with pytest.raises(DataError, match="ATLAS_2/Training"):
        find_atlas_r20(tmp_path)


def test_auto_detection_rejects_mixed_trees(tmp_path: Path) -> None:
    _r11_subject(tmp_path, "Site1", "000001")
    _r20_subject(tmp_path, "R001", "sub-r001s001")
    with pytest.raises(DataError, match="both ATLAS R1.1 and R2.0"):
        find_atlas(tmp_path)
    assert len(find_atlas(tmp_path, version="r1.1")) == 1
    assert len(find_atlas(tmp_path, version="R2.0")) == 1
    with pytest.raises(ValueError, match="version"):
        find_atlas(tmp_path, version="r3")
