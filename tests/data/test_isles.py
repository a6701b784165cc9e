"""ISLES 2015 SISS: synthetic writer, finder with header checks, 5-fold datalist, MONAI loading (seed 002 §2.2)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from lesionlab.data.datalist import build_isles_datalist, main
from lesionlab.data.isles import ISLES2015_SPACING, find_isles2015
from lesionlab.data.synthetic import brain as synthetic
from lesionlab.data.synthetic import synth_isles2015
from lesionlab.errors import DataError

__all__: list[str] = []

SHAPE = (48, 48, 20)


@pytest.fixture(scope="module")
def isles_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Six cases written by synth_isles2015 from a 32x40x32 toy brain (fast) instead of the MNI152 template."""
    data, mask = synthetic._toy_brain((32, 40, 32))
    tpl = synthetic._prepare_template(data, mask, np.eye(4))
    root = tmp_path_factory.mktemp("isles2015")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(synthetic, "_template", lambda: tpl)
        synth_isles2015(root, n=6, seed=0, shape=SHAPE, progress=False)
    return root


def _copy(root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "copy"
    shutil.copytree(root, dst)
    return dst


def _case_files(root: Path, case: str) -> tuple[Path, Path]:
    folder = root / "Training" / case
    t1 = next(folder.glob("VSD.Brain.XX.O.MR_T1.*/*.mha"))
    ot = next(folder.glob("VSD.Brain.XX.O.OT.*/*.mha"))
    return t1, ot


def _rewrite(path: Path, spacing: tuple[float, ...] | None = None, origin: tuple[float, ...] | None = None) -> None:
    img = sitk.ReadImage(str(path))
    if spacing is not None:
        img.SetSpacing(spacing)
    if origin is not None:
        img.SetOrigin(origin)
    sitk.WriteImage(img, str(path))


# ---------------------------------------------------------------- synthetic writer


def test_synth_isles2015_layout_headers_and_content(isles_root: Path) -> None:
    assert (isles_root / "NOTICE_MNI152.txt").read_text().count("McConnell Brain Imaging Centre") == 1
    assert "NOT FOR CLINICAL USE" in (isles_root / "README.txt").read_text()
    cases = sorted(os.listdir(isles_root / "Training"), key=int)
    assert cases == [str(i) for i in range(1, 7)]
    for case in cases:
        t1, ot = _case_files(isles_root, case)
        m1 = re.fullmatch(r"VSD\.Brain\.XX\.O\.MR_T1\.(\d+)\.mha", t1.name)
        m2 = re.fullmatch(r"VSD\.Brain\.XX\.O\.OT\.(\d+)\.mha", ot.name)
        assert m1 and m2 and m1[1] != m2[1]  # the two ids differ, as in the challenge data
        assert t1.parent.name == t1.stem and ot.parent.name == ot.stem
        image, label = sitk.ReadImage(str(t1)), sitk.ReadImage(str(ot))
        for img in (image, label):
            assert img.GetSize() == SHAPE
            assert img.GetSpacing() == ISLES2015_SPACING
            assert img.GetOrigin() != (0.0, 0.0, 0.0)
        assert image.GetPixelID() == sitk.sitkInt16 and label.GetPixelID() == sitk.sitkUInt8
        a, m = sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(label)
        assert set(np.unique(m)) == {0, 1}
        assert a[m > 0].mean() < a[(a > 0) & (m == 0)].mean()  # lesions are T1-hypointense
        assert a[0, 0, 0] == 0 and a[-1, -1, -1] == 0 and (a == 0).mean() > 0.2  # skull-stripped background


def test_synth_isles2015_from_mni_template(tmp_path: Path) -> None:
    """One case from the real MNI152 template on a small grid: the brain is shrunk to fit and skull-stripped."""
    (rec,) = synth_isles2015(tmp_path, n=1, seed=3, shape=(40, 44, 36), progress=False)
    a = sitk.GetArrayFromImage(sitk.ReadImage(rec["image"]))
    m = sitk.GetArrayFromImage(sitk.ReadImage(rec["label"]))
    assert a.shape == (36, 44, 40) and m.shape == a.shape
    assert 0.1 < (a > 0).mean() < 0.8 and a.max() > 300
    assert m.sum() > 0 and rec["lesion_ml"] == pytest.approx(m.sum() / 1000.0)
    assert (a[:, 0, :] == 0).all() and (a[0] == 0).all()  # background margin around the brain


def test_synth_isles2015_invalid(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="n must"):
        synth_isles2015(tmp_path, n=0)
    with pytest.raises(ValueError, match="shape"):
        synth_isles2015(tmp_path, shape=(48, 48))
    with pytest.raises(ValueError, match="shape"):
        synth_isles2015(tmp_path, shape=(48, 48, 4))
    (tmp_path / "file").write_text("x")
    with pytest.raises(DataError, match="not a folder"):
        synth_isles2015(tmp_path / "file")


# ---------------------------------------------------------------- finder


def test_find_isles2015_pairs_and_sorts_by_case_number(isles_root: Path, tmp_path: Path) -> None:
    root = _copy(isles_root, tmp_path)
    shutil.copytree(root / "Training" / "2", root / "Training" / "10")  # "10" sorts after "6", not after "1"
    flair = root / "Training" / "1" / "VSD.Brain.XX.O.MR_Flair.70110" / "VSD.Brain.XX.O.MR_Flair.70110.mha"
    flair.parent.mkdir()
    shutil.copy(_case_files(root, "1")[0], flair)  # other sequences are ignored
    (root / "Training" / "notes").mkdir()  # non-numeric folders too
    items = find_isles2015(root)
    assert [it["subject"] for it in items] == ["1", "2", "3", "4", "5", "6", "10"]
    for it in items:
        t1, ot = _case_files(root, it["subject"])
        assert it == {"subject": it["subject"], "image": str(t1), "label": str(ot)}
    # root may be the Training folder itself
    assert find_isles2015(root / "Training") == items


def test_find_isles2015_geometry_mismatch_names_file(isles_root: Path, tmp_path: Path) -> None:
    root = _copy(isles_root, tmp_path)
    _t1, ot = _case_files(root, "3")
    _rewrite(ot, spacing=(1.0, 1.0, 2.0))
    with pytest.raises(DataError) as info:
        find_isles2015(root)
    assert info.value.path == str(ot)
    assert "(1, 1, 2)" in str(info.value) and "1 mm isotropic" in str(info.value)
    assert len(find_isles2015(root, check_geometry=False)) == 6  # headers are not checked


def test_find_isles2015_origin_and_spacing_problems(isles_root: Path, tmp_path: Path) -> None:
    root = _copy(isles_root, tmp_path)
    t1_2, ot_2 = _case_files(root, "2")
    _rewrite(ot_2, origin=(0.0, 0.0, 0.0))
    with pytest.raises(DataError) as info:
        find_isles2015(root)
    assert info.value.path == str(ot_2) and "origin (0, 0, 0) differs" in str(info.value) and str(t1_2) in str(
        info.value
    )
    # both files at 0.9 mm: they agree, but ISLES 2015 is 1 mm isotropic; two problems come in one error
    t1_5, ot_5 = _case_files(root, "5")
    _rewrite(t1_5, spacing=(0.9, 0.9, 0.9))
    _rewrite(ot_5, spacing=(0.9, 0.9, 0.9))
    with pytest.raises(DataError) as info:
        find_isles2015(root)
    message = str(info.value)
    assert message.count("problems") == 1 and "3 problems" in message
    assert str(ot_2) in message and str(t1_5) in message and str(ot_5) in message and "(0.9, 0.9, 0.9)" in message


def test_find_isles2015_missing_files_listed_in_one_error(isles_root: Path, tmp_path: Path) -> None:
    root = _copy(isles_root, tmp_path)
    _t1, ot = _case_files(root, "2")
    shutil.rmtree(ot.parent)
    with pytest.raises(DataError) as info:
        find_isles2015(root)
    assert "case 2 has no lesion mask" in str(info.value)
    assert info.value.path == str(root / "Training" / "2")
    t1_4, _ot = _case_files(root, "4")
    t1_4.unlink()
    empty = _case_files(root, "5")[1]
    empty.write_bytes(b"")
    with pytest.raises(DataError) as info:
        find_isles2015(root)
    message = str(info.value)
    assert "3 problems" in message and "case 2 has no lesion mask" in message and "case 4 has no T1 image" in message
    assert f"{empty}: empty (zero-byte) file" in message


def test_find_isles2015_bad_roots(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        find_isles2015(tmp_path / "missing")
    (tmp_path / "Training" / "abc").mkdir(parents=True)
    with pytest.raises(DataError, match="no ISLES 2015 case folders"):
        find_isles2015(tmp_path)


# ---------------------------------------------------------------- 5-fold datalist and MONAI loading


def test_isles_datalist_folds_exclusive_covering(isles_root: Path, tmp_path: Path) -> None:
    root = _copy(isles_root, tmp_path)
    for k in range(7, 29):  # 28 cases, as in the challenge: copies of the six generated ones
        shutil.copytree(root / "Training" / str((k - 1) % 6 + 1), root / "Training" / str(k))
    out = root / "datalist.json"
    data = build_isles_datalist(root, out, folds=5, seed=0, check_geometry=False)
    assert json.loads(out.read_text()) == data
    assert data["folds"] == 5 and data["numTraining"] == 28 and "validation" not in data
    subjects = [it["subject"] for it in data["training"]]
    assert sorted(subjects, key=int) == [str(i) for i in range(1, 29)]  # covering, each case once
    sizes = sorted(np.bincount([it["fold"] for it in data["training"]], minlength=5).tolist())
    assert sizes == [5, 5, 6, 6, 6]
    by_fold = [{it["subject"] for it in data["training"] if it["fold"] == f} for f in range(5)]
    assert sum(len(s) for s in by_fold) == len(set().union(*by_fold)) == 28  # mutually exclusive
    again = build_isles_datalist(root, tmp_path / "other.json", folds=5, seed=0, check_geometry=False)
    assert [it["fold"] for it in again["training"]] == [it["fold"] for it in data["training"]]  # seeded
    reshuffled = build_isles_datalist(root, tmp_path / "seed1.json", folds=5, seed=1, check_geometry=False)
    assert [it["fold"] for it in reshuffled["training"]] != [it["fold"] for it in data["training"]]


def test_isles_datalist_loads_in_monai_and_itk_reads_pairs(isles_root: Path) -> None:
    from monai.data import load_decathlon_datalist

    out = isles_root / "datalist.json"
    data = build_isles_datalist(isles_root, out, folds=5, seed=0)
    sizes = np.bincount([it["fold"] for it in data["training"]], minlength=5)
    assert sizes.max() - sizes.min() <= 1 and sizes.sum() == 6
    assert not os.path.isabs(data["training"][0]["image"])  # relative to the JSON file's folder
    items = load_decathlon_datalist(str(out), is_segmentation=True, data_list_key="training")
    assert len(items) == 6
    for it in items:
        assert os.path.isfile(it["image"]) and len(it["label"]) == 1 and os.path.isfile(it["label"][0])
        assert it["fold"] in range(5)

    import itk  # noqa: F401 - itk-io is a hard requirement (setup.cfg): MONAI's ITKReader needs it for .mha files
    from monai.transforms import LoadImaged

    loader = LoadImaged(keys=["image", "label"], reader="ITKReader", ensure_channel_first=True)
    for it in items[:2]:
        d = loader(dict(it))
        assert d["image"].shape == d["label"].shape == (1, *SHAPE)
        assert set(np.unique(d["label"].numpy())) == {0.0, 1.0}
        np.testing.assert_allclose(d["image"].affine.numpy(), d["label"].affine.numpy())


def test_isles_datalist_cli_and_invalid(isles_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "cli.json"
    assert main(["--dataset", "isles2015", "--root", str(isles_root), "--out", str(out)]) == 0
    assert json.loads(out.read_text())["folds"] == 5
    assert "ISLES 2015 SISS, 6 subjects, 5 folds of" in capsys.readouterr().out
    assert main(["--dataset", "isles2015", "--root", str(tmp_path / "none"), "--out", str(out)]) == 2
    for bad in (0, 1, 2.5, True):
        with pytest.raises(ValueError, match="folds"):
            build_isles_datalist(isles_root, tmp_path / "x.json", folds=bad)
    with pytest.raises(ValueError, match="k must be between 2"):
        build_isles_datalist(isles_root, tmp_path / "x.json", folds=7)  # more folds than cases
    with pytest.raises(DataError, match="is a folder"):
        build_isles_datalist(isles_root, tmp_path, folds=5)
