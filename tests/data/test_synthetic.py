"""Tests of lesionlab.data.synthetic (two subjects from the real MNI152 template, the rest on a toy template)."""

from __future__ import annotations

import os
import re

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage as ndi

from lesionlab.data import MNI152_NOTICE, synth_atlas, synth_volume_pair
from lesionlab.data.synthetic import brain as synthetic
from lesionlab.errors import DataError

__all__: list[str] = []

TOY_SHAPE = (40, 48, 40)


def _toy_template() -> synthetic._Template:
    data, mask = synthetic._toy_brain(TOY_SHAPE)
    affine = np.eye(4)
    affine[:3, 3] = [-(s - 1) / 2 for s in TOY_SHAPE]
    return synthetic._prepare_template(data, mask, affine)


@pytest.fixture()
def toy(monkeypatch: pytest.MonkeyPatch) -> synthetic._Template:
    """Replace the MNI152 template by a 40x48x40 toy brain for fast layout tests."""
    tpl = _toy_template()
    monkeypatch.setattr(synthetic, "_template", lambda: tpl)
    return tpl


@pytest.fixture(scope="module")
def real_subject() -> synthetic._Subject:
    """Subject 0 of seed 0 built from the real template (the first of the two real-template subjects)."""
    return synthetic._generate_subject(synthetic._template(), 0, 0)


def _union(paths: list[str]) -> np.ndarray:
    return np.logical_or.reduce([np.asarray(nib.load(p).dataobj) > 0 for p in paths])


# ---------------------------------------------------------------- real MNI152 template


def test_real_subject_geometry_and_lesions(real_subject: synthetic._Subject) -> None:
    tpl = synthetic._template()
    assert real_subject.image.shape == (197, 233, 189)
    assert real_subject.image.dtype == np.int16
    assert 1 <= len(real_subject.lesions) <= 3
    lesion = np.logical_or.reduce(real_subject.lesions)
    brain = real_subject.brain_mask > 0
    # strictly inside the warped brain mask
    assert not (lesion & ~ndi.binary_erosion(brain)).any()
    # the brain mask really was warped, but only a little
    template_brain = tpl.mask > 0
    assert (brain != template_brain).any()
    dice = 2 * (brain & template_brain).sum() / (brain.sum() + template_brain.sum())
    assert dice > 0.9
    # lesions are pairwise disjoint and a few mL to ~100 mL in total
    assert sum(int(les.sum()) for les in real_subject.lesions) == int(lesion.sum())
    assert 1_000 < lesion.sum() < 120_000
    # hypointense: darker than the tissue around it and than white matter
    image = real_subject.image.astype(np.float32)
    shell = ndi.binary_dilation(lesion, iterations=6) & ~ndi.binary_dilation(lesion, iterations=2) & brain
    assert image[lesion].mean() < 0.75 * image[shell].mean()
    core = ndi.binary_erosion(lesion, iterations=2)
    assert image[core].mean() < 0.6 * np.percentile(image[brain], 90)


def test_real_synth_atlas_files(tmp_path: os.PathLike, real_subject: synthetic._Subject) -> None:
    from nilearn.datasets import load_mni152_template

    records = synth_atlas(tmp_path, n=1, seed=0, progress=False)
    assert len(records) == 1
    rec = records[0]
    template = load_mni152_template(resolution=1)
    img = nib.load(rec["image"])
    assert img.shape == (197, 233, 189)
    np.testing.assert_allclose(img.affine, template.affine)
    # determinism on the real template: the file equals an independent in-memory generation
    np.testing.assert_array_equal(np.asarray(img.dataobj), real_subject.image)
    labels = [nib.load(p) for p in rec["labels"]]
    for lab in labels:
        assert lab.shape == img.shape
        assert lab.get_data_dtype() == np.uint8
        np.testing.assert_allclose(lab.affine, template.affine)
        assert set(np.unique(np.asarray(lab.dataobj))) <= {0, 1}
    union = _union(rec["labels"])
    np.testing.assert_array_equal(union, np.logical_or.reduce(real_subject.lesions))
    voxel_ml = abs(np.linalg.det(img.affine[:3, :3])) / 1000.0
    assert voxel_ml == pytest.approx(0.001)
    assert rec["lesion_ml"] == pytest.approx(union.sum() * voxel_ml, abs=1e-3)
    notice = (tmp_path / "NOTICE_MNI152.txt").read_text()
    assert MNI152_NOTICE in notice
    assert "Copyright (C) 1993-2009 Louis Collins, McConnell Brain Imaging Centre" in notice
    assert "Permission to use, copy, modify, and distribute" in notice
    readme = (tmp_path / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "NOT FOR CLINICAL USE" in readme and "MNI152" in readme


def test_lesion_volumes_span_the_data_set() -> None:
    tpl = synthetic._template()
    totals = []
    for i in range(12):
        rng = np.random.default_rng(i)
        totals.append(sum(synthetic._lesion_budget(tpl, 0, i, rng)) * tpl.voxel_ml)
    assert min(totals) < 6.0
    assert max(totals) > 60.0
    assert max(totals) < 110.0


# ---------------------------------------------------------------- toy template


def test_generation_is_deterministic(toy: synthetic._Template) -> None:
    a = synthetic._generate_subject(toy, 0, 3)
    b = synthetic._generate_subject(toy, 0, 3)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.subject_id == b.subject_id
    for la, lb in zip(a.lesions, b.lesions):
        np.testing.assert_array_equal(la, lb)
    c = synthetic._generate_subject(toy, 1, 3)
    assert not np.array_equal(a.image, c.image)
    d = synthetic._generate_subject(toy, 0, 4)
    assert not np.array_equal(a.image, d.image)


def test_subjects_do_not_depend_on_n(toy: synthetic._Template, tmp_path: os.PathLike) -> None:
    small = synth_atlas(tmp_path / "a", n=2, seed=5, progress=False)
    large = synth_atlas(tmp_path / "b", n=4, seed=5, progress=False)
    for s, big in zip(small, large):
        assert s["subject"] == big["subject"]
        np.testing.assert_array_equal(
            np.asarray(nib.load(s["image"]).dataobj), np.asarray(nib.load(big["image"]).dataobj)
        )


def test_r11_layout_and_split_masks(
    toy: synthetic._Template, tmp_path: os.PathLike, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(synthetic, "_SPLIT_PROBABILITY", 1.0)
    records = synth_atlas(tmp_path, n=6, seed=0, layout="r1.1", progress=False)
    assert len({r["subject"] for r in records}) == 6
    n_split = 0
    for i, rec in enumerate(records):
        sid = rec["subject"]
        assert re.fullmatch(r"\d{6}", sid)
        folder = os.path.join(str(tmp_path), f"Site{i % 3 + 1}", sid, "t01")
        assert rec["image"] == os.path.join(folder, f"{sid}_t1w_deface_stx.nii.gz")
        assert os.path.isfile(rec["image"])
        assert rec["labels"][0] == os.path.join(folder, f"{sid}_LesionSmooth_stx.nii.gz")
        subject = synthetic._generate_subject(toy, 0, i)
        lesion = np.logical_or.reduce(subject.lesions)
        if len(subject.lesions) >= 2:
            n_split += 1
            assert rec["labels"][1:] == [os.path.join(folder, f"{sid}_LesionSmooth_1_stx.nii.gz")]
            first, second = (np.asarray(nib.load(p).dataobj) > 0 for p in rec["labels"])
            assert first.any() and second.any() and not (first & second).any()
        else:
            assert len(rec["labels"]) == 1
        np.testing.assert_array_equal(_union(rec["labels"]), lesion)
        assert rec["lesion_ml"] == pytest.approx(lesion.sum() / 1000.0, abs=1e-3)
    assert n_split >= 1
    assert (tmp_path / "NOTICE_MNI152.txt").is_file() and (tmp_path / "README.txt").is_file()


def test_r11_split_is_occasional(toy: synthetic._Template, tmp_path: os.PathLike) -> None:
    records = synth_atlas(tmp_path, n=16, seed=0, progress=False)
    n_split = sum(len(r["labels"]) == 2 for r in records)
    assert n_split < 8  # about one in four of the multi-lesion subjects


def test_r20_layout(toy: synthetic._Template, tmp_path: os.PathLike) -> None:
    records = synth_atlas(tmp_path, n=4, seed=0, layout="r2.0", progress=False)
    expected = ["sub-r001s001", "sub-r002s001", "sub-r003s001", "sub-r001s002"]
    assert [r["subject"] for r in records] == expected
    for rec in records:
        sub = rec["subject"]
        site = "R" + sub[5:8]
        folder = os.path.join(str(tmp_path), "ATLAS_2", "Training", site, sub, "ses-1", "anat")
        stem = f"{sub}_ses-1_space-MNI152NLin2009aSym"
        assert rec["image"] == os.path.join(folder, f"{stem}_T1w.nii.gz")
        assert rec["labels"] == [os.path.join(folder, f"{stem}_label-L_desc-T1lesion_mask.nii.gz")]
        assert os.path.isfile(rec["image"]) and os.path.isfile(rec["labels"][0])
        assert rec["lesion_ml"] > 0


def test_bad_arguments(toy: synthetic._Template, tmp_path: os.PathLike) -> None:
    with pytest.raises(ValueError, match="layout"):
        synth_atlas(tmp_path, n=1, layout="r3.0", progress=False)
    with pytest.raises(ValueError, match="n must be"):
        synth_atlas(tmp_path, n=0, progress=False)
    a_file = tmp_path / "file.txt"
    a_file.write_text("x")
    with pytest.raises(DataError, match="file.txt"):
        synth_atlas(a_file, n=1, progress=False)


# ---------------------------------------------------------------- synth_volume_pair


def test_synth_volume_pair() -> None:
    image, mask = synth_volume_pair(seed=3, n_lesions=2)
    assert image.shape == mask.shape == (64, 64, 48)
    assert image.dtype == np.float32 and mask.dtype == np.uint8
    assert set(np.unique(mask)) == {0, 1}
    again_image, again_mask = synth_volume_pair(seed=3, n_lesions=2)
    np.testing.assert_array_equal(image, again_image)
    np.testing.assert_array_equal(mask, again_mask)
    other, _ = synth_volume_pair(seed=4, n_lesions=2)
    assert not np.array_equal(image, other)
    lesion = mask > 0
    _, brain = synthetic._toy_brain((64, 64, 48))
    assert not (lesion & ~ndi.binary_erosion(brain > 0)).any()
    shell = ndi.binary_dilation(lesion, iterations=4) & ~ndi.binary_dilation(lesion, iterations=2) & (brain > 0)
    assert image[lesion].mean() < 0.75 * image[shell].mean()


def test_synth_volume_pair_options() -> None:
    image, mask = synth_volume_pair(shape=(24, 24, 20), seed=0, n_lesions=0)
    assert image.shape == (24, 24, 20) and not mask.any()
    with pytest.raises(ValueError):
        synth_volume_pair(shape=(8, 8, 8))
    with pytest.raises(ValueError):
        synth_volume_pair(n_lesions=-1)


# ---------------------------------------------------------------- lesions a model must tell from CSF


def test_chronic_lesions_differ_from_csf_by_more_than_intensity() -> None:
    from lesionlab.data.synthetic.lesions import parenchyma_mask

    image, mask = synth_volume_pair(shape=(64, 64, 48), seed=5, n_lesions=3)
    clean, brain = synthetic._toy_brain((64, 64, 48))
    lesion = mask > 0
    csf = (clean > 0) & (clean < 0.3)  # the toy's ventricles
    # location: in parenchyma, at least two voxels from the ventricles and from the brain's border
    assert not (lesion & ndi.binary_dilation(csf, iterations=2)).any()
    assert not (lesion & ~parenchyma_mask(clean, brain, 0.25, 0.85, margin=2)).any()
    # intensity: hypointense against the surrounding tissue, but the core is brighter than CSF
    core = ndi.binary_erosion(lesion, iterations=2)
    shell = ndi.binary_dilation(lesion, iterations=4) & ~ndi.binary_dilation(lesion, iterations=2) & (brain > 0)
    assert core.sum() > 20
    assert image[core].mean() < 0.7 * image[shell].mean()
    assert image[core].mean() > 1.2 * image[csf & ndi.binary_erosion(csf)].mean()
    # texture: the core is mottled, the ventricles smooth (relative spread, noise included in both)
    inner_csf = ndi.binary_erosion(csf)
    assert image[core].std() / image[core].mean() > 1.5 * image[inner_csf].std() / image[inner_csf].mean()
    # border: a rim of intermediate intensity between core and tissue
    rim = lesion & ~ndi.binary_erosion(lesion)
    assert image[core].mean() < image[rim].mean() < image[shell].mean()


def test_paint_chronic_lesions_on_a_flat_image() -> None:
    from lesionlab.data.synthetic.lesions import paint_chronic_lesions

    image = np.full((32, 32, 32), 0.85, dtype=np.float32)
    lesion = np.zeros_like(image, dtype=bool)
    lesion[10:22, 10:22, 10:22] = True
    before = image.copy()
    paint_chronic_lesions(image, [lesion], 0.25, 0.85, np.random.default_rng(0))
    core = ndi.binary_erosion(lesion, iterations=3)
    halo = ndi.binary_dilation(lesion) & ~lesion
    far = ~ndi.binary_dilation(lesion, iterations=2)
    # core level csf + u (wm - csf), u in [0.12, 0.32]: about 0.32-0.44 on average
    assert 0.30 < image[core].mean() < 0.46
    assert image[halo].mean() < 0.85 and image[halo].mean() > image[core].mean()  # partial-volume halo
    np.testing.assert_array_equal(image[far], before[far])  # nothing painted away from the lesion
    paint_chronic_lesions(image, [], 0.25, 0.85, np.random.default_rng(0))  # no lesion: no-op
