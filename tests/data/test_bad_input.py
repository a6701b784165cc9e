"""Bad input, reader by reader: every broken file gives a DataError naming the file and the problem.

Readers: NIfTI volumes (``load_volume``/``check_pair``), NIfTI through MONAI ``LoadImaged`` in the bundle pipelines
(``ValidateVolumed``), ATLAS R1.1/R2.0 discovery (``find_atlas``), datalist JSON (``validate_datalist``,
``load_checked_datalist``, ``data.datalist``), ISLES 2015 ``.mha`` (``find_isles2015`` and ``load_volume``).
Each table row is ``(id, setup)``; ``setup(tmp_path)`` returns ``(call, file named in the message, keyword)``.
``bad_input_counts()`` gives the number of broken inputs tried per reader (printed by the last test).
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from lesionlab.data.validation import check_pair, load_checked_datalist, load_volume, validate_datalist
from lesionlab.errors import DataError

SHAPE = (12, 10, 6)
AFFINE = np.array([[1.0, 0, 0, -6], [0, 1.0, 0, -5], [0, 0, 2.0, 3], [0, 0, 0, 1]])


def _img(shape=SHAPE, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).random(shape).astype(np.float32) + 0.1


def _lab(shape=SHAPE) -> np.ndarray:
    lab = np.zeros(shape, np.uint8)
    lab[3:6, 3:6, 2:4] = 1
    return lab


def _nii(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return str(path)


def _truncate(path: str, keep: float = 0.5) -> str:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])
    return path


def _pair(tmp: Path, image: np.ndarray | None = None, label: np.ndarray | None = None,
          label_affine: np.ndarray = AFFINE) -> tuple[str, str]:
    return (_nii(tmp / "img.nii.gz", _img() if image is None else image),
            _nii(tmp / "lab.nii.gz", _lab() if label is None else label, label_affine))


Case = Callable[[Path], tuple[Callable[[], object], str, str]]


# ----------------------------------------------------------------- NIfTI volumes: load_volume / check_pair
def _nifti_cases() -> list[tuple[str, Case]]:
    def missing(t):
        return lambda: load_volume(t / "nope.nii.gz"), "nope.nii.gz", "does not exist"

    def folder(t):
        (t / "dir.nii.gz").mkdir()
        return lambda: load_volume(t / "dir.nii.gz"), "dir.nii.gz", "folder"

    def zero_byte(t):
        (t / "zero.nii.gz").write_bytes(b"")
        return lambda: load_volume(t / "zero.nii.gz"), "zero.nii.gz", "zero-byte"

    def truncated_gz(t):
        p = _truncate(_nii(t / "cut.nii.gz", _img((30, 30, 20))))
        return lambda: load_volume(p), "cut.nii.gz", "truncated"

    def truncated_header(t):
        p = _truncate(_nii(t / "hdr.nii.gz", _img()), keep=0.02)
        return lambda: load_volume(p), "hdr.nii.gz", "truncated"

    def truncated_nii(t):
        p = _truncate(_nii(t / "cut.nii", _img((30, 30, 20))))
        return lambda: load_volume(p), "cut.nii", "truncated"

    def corrupt_gz_stream(t):
        p = _nii(t / "flip.nii.gz", _img((30, 30, 20)))
        data = bytearray(Path(p).read_bytes())
        for i in range(200, len(data) - 20, 97):
            data[i] ^= 0xFF
        Path(p).write_bytes(bytes(data))
        return lambda: load_volume(p), "flip.nii.gz", "corrupt"

    def text_as_nii_gz(t):
        (t / "notes.nii.gz").write_text("patient list, not an image\n")
        return lambda: load_volume(t / "notes.nii.gz"), "notes.nii.gz", "not a gzip-compressed NIfTI"

    def gzipped_text(t):
        (t / "zipped.nii.gz").write_bytes(gzip.compress(b"<html>not an image</html>" * 40))
        return lambda: load_volume(t / "zipped.nii.gz"), "zipped.nii.gz", "not a NIfTI"

    def random_bytes_nii(t):
        (t / "rand.nii").write_bytes(np.random.default_rng(1).bytes(2000))
        return lambda: load_volume(t / "rand.nii"), "rand.nii", "not a NIfTI"

    def png_extension(t):
        (t / "slice.png").write_bytes(b"\x89PNG\r\n")
        return lambda: load_volume(t / "slice.png"), "slice.png", "unsupported image format"

    def two_d(t):
        p = _nii(t / "flat.nii.gz", _img((12, 10)))
        return lambda: load_volume(p), "flat.nii.gz", "expected a 3D volume"

    def four_d_series(t):
        p = _nii(t / "series.nii.gz", _img((12, 10, 6, 3)))
        return lambda: load_volume(p), "series.nii.gz", "expected a 3D volume"

    def nan_voxels(t):
        a = _img()
        a[2, 3, 1] = np.nan
        p = _nii(t / "nan.nii.gz", a)
        return lambda: load_volume(p), "nan.nii.gz", "NaN"

    def inf_voxels(t):
        a = _img()
        a[0, 0, 0] = -np.inf
        p = _nii(t / "inf.nii.gz", a)
        return lambda: load_volume(p), "inf.nii.gz", "infinite"

    def constant_image(t):
        p = _nii(t / "blank.nii.gz", np.zeros(SHAPE, np.float32))
        return lambda: load_volume(p), "blank.nii.gz", "constant image"

    def empty_volume(t):
        p = _nii(t / "novox.nii.gz", np.zeros((12, 0, 6), np.float32))
        return lambda: load_volume(p), "novox.nii.gz", "empty volume"

    def singular_affine(t):  # nibabel refuses to write one: set the sform rows of the header directly
        hdr = nib.Nifti1Header()
        hdr["srow_x"], hdr["srow_y"], hdr["srow_z"] = [1, 0, 0, 0], [0, 0, 0, 0], [0, 0, 2, 0]
        hdr["sform_code"], hdr["qform_code"] = 1, 0
        p = str(t / "affine.nii.gz")
        # the header check sees the zero row (spacing 0) before the affine check
        nib.save(nib.Nifti1Image(_img(), None, header=hdr), p)
        return lambda: load_volume(p), "affine.nii.gz", "invalid voxel spacing"

    def rgb_voxels(t):
        rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
        p = _nii(t / "rgb.nii.gz", rgb)
        return lambda: load_volume(p), "rgb.nii.gz", "unsupported voxel type"

    def label_value_two(t):
        lab = _lab()
        lab[0, 0, 0] = 2
        img, lb = _pair(t, label=lab)
        return lambda: check_pair(img, [lb]), "lab.nii.gz", "label values outside {0, 1}"

    def label_fraction(t):
        lab = _lab().astype(np.float32)
        lab[4, 4, 2] = 0.5
        img, lb = _pair(t, label=lab)
        return lambda: check_pair(img, lb), "lab.nii.gz", "label values outside"

    def shape_mismatch(t):
        img, lb = _pair(t, label=_lab((12, 10, 5)))
        return lambda: check_pair(img, lb), "lab.nii.gz", "shape mismatch"

    def affine_mismatch(t):
        moved = AFFINE.copy()
        moved[0, 3] += 0.01  # 10 micrometres > 1e-3 mm tolerance
        img, lb = _pair(t, label_affine=moved)
        return lambda: check_pair(img, lb), "lab.nii.gz", "affine mismatch"

    def second_mask_missing(t):
        img, lb = _pair(t)
        return lambda: check_pair(img, [lb, str(t / "lab_1.nii.gz")]), "lab_1.nii.gz", "does not exist"

    return [(f.__name__, f) for f in (
        missing, folder, zero_byte, truncated_gz, truncated_header, truncated_nii, corrupt_gz_stream, text_as_nii_gz,
        gzipped_text, random_bytes_nii, png_extension, two_d, four_d_series, nan_voxels, inf_voxels, constant_image,
        empty_volume, singular_affine, rgb_voxels, label_value_two, label_fraction, shape_mismatch, affine_mismatch,
        second_mask_missing)]


# ---------------------------------------------- NIfTI through MONAI LoadImaged + ValidateVolumed (bundle pipelines)
def _bundle_preprocessing(config: str, key: str, **overrides):
    """The bundle's own preprocessing Compose, parsed from its config (the real wiring is tested)."""
    from monai.bundle import ConfigParser

    from lesionlab.apps.bundle import bundle_path

    parser = ConfigParser()
    files = [os.path.join(bundle_path("brain_mri_dunet_stroke_segmentation"), "configs", c) for c in config]
    parser.read_config(files if len(files) > 1 else files[0])
    for k, v in overrides.items():
        parser[k] = v
    return parser.get_parsed_content(key)


def _pipeline_cases() -> list[tuple[str, Case]]:
    def train(image, label):
        pre = _bundle_preprocessing(["train.json"], "base_preprocessing", roi_start=[1, 1], roi_end=[9, 9],
                                    spatial_size=[8, 8])
        from monai.transforms import Compose

        return lambda: Compose(pre)({"image": image, "label": [label]})

    def infer(image):
        pre = _bundle_preprocessing(["inference.json"], "preprocessing", roi_start=[1, 1], roi_end=[9, 9],
                                    spatial_size=[8, 8])
        return lambda: pre({"image": image})

    def nan_image(t):
        a = _img()
        a[1, 1, 1] = np.nan
        img, lb = _pair(t, image=a)
        return train(img, lb), "img.nii.gz", "NaN"

    def two_d_image(t):
        return infer(_nii(t / "flat.nii.gz", _img((12, 10)))), "flat.nii.gz", "expected a 3D volume"

    def four_d_image(t):
        return infer(_nii(t / "series.nii.gz", _img((12, 10, 6, 2)))), "series.nii.gz", "channel"

    def constant(t):
        return infer(_nii(t / "blank.nii.gz", np.zeros(SHAPE, np.float32))), "blank.nii.gz", "constant image"

    def shape_mismatch(t):
        img, lb = _pair(t, label=_lab((12, 10, 5)))
        return train(img, lb), "lab.nii.gz", "shape mismatch"

    def affine_mismatch(t):
        moved = AFFINE.copy()
        moved[2, 2] = 2.01
        img, lb = _pair(t, label_affine=moved)
        return train(img, lb), "lab.nii.gz", "affine mismatch"

    def label_values(t):
        img, lb = _pair(t, label=_lab() * 255)
        return train(img, lb), "lab.nii.gz", "label values outside"

    def evaluate_inf(t):
        a = _img()
        a[0, 1, 2] = np.inf
        img, lb = _pair(t, image=a)
        pre = _bundle_preprocessing(["train.json", "evaluate.json"], "validate#preprocessing", roi_start=[1, 1],
                                    roi_end=[9, 9], spatial_size=[8, 8])
        return lambda: pre({"image": img, "label": [lb]}), "img.nii.gz", "infinite"

    return [(f.__name__, f) for f in (nan_image, two_d_image, four_d_image, constant, shape_mismatch,
                                      affine_mismatch, label_values, evaluate_inf)]


# ------------------------------------------------------------------------------ ATLAS R1.1 / R2.0 discovery
def _r11(root: Path, sid: str = "000001", image: bool = True, mask: bool = True, empty: str = "") -> Path:
    folder = root / "Site1" / sid / "t01"
    folder.mkdir(parents=True, exist_ok=True)
    if image:
        p = folder / f"{sid}_t1w_deface_stx.nii.gz"
        p.write_bytes(b"") if empty == "image" else _nii(p, _img())
    if mask:
        p = folder / f"{sid}_LesionSmooth_stx.nii.gz"
        p.write_bytes(b"") if empty == "mask" else _nii(p, _lab())
    return folder


def _atlas_cases() -> list[tuple[str, Case]]:
    from lesionlab.data import find_atlas

    def missing_root(t):
        return lambda: find_atlas(t / "nowhere"), "nowhere", "does not exist"

    def root_is_file(t):
        (t / "atlas.zip").write_bytes(b"PK")
        return lambda: find_atlas(t / "atlas.zip"), "atlas.zip", "not a folder"

    def no_atlas_files(t):
        (t / "data").mkdir()
        (t / "data" / "readme.txt").write_text("x")
        return lambda: find_atlas(t / "data"), "data", "no ATLAS"

    def zero_byte_image(t):
        _r11(t / "a", empty="image")
        return lambda: find_atlas(t / "a"), "000001_t1w_deface_stx.nii.gz", "zero-byte"

    def zero_byte_mask(t):
        _r11(t / "a", empty="mask")
        return lambda: find_atlas(t / "a"), "000001_LesionSmooth_stx.nii.gz", "zero-byte"

    def image_without_mask(t):
        _r11(t / "a")
        _r11(t / "a", sid="000002", mask=False)
        return lambda: find_atlas(t / "a", version="r1.1"), "000002_t1w_deface_stx.nii.gz", "without lesion mask"

    def mask_without_image(t):
        _r11(t / "a")
        _r11(t / "a", sid="000003", image=False)
        return lambda: find_atlas(t / "a"), "000003_LesionSmooth_stx.nii.gz", "mask without image"

    def both_layouts(t):
        _r11(t / "a")
        r20 = t / "a" / "sub-r001" / "ses-1" / "anat"
        _nii(r20 / "sub-r001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz", _img())
        return lambda: find_atlas(t / "a"), "a", "both ATLAS R1.1 and R2.0"

    def r20_image_without_mask(t):
        r20 = t / "b" / "sub-r001" / "ses-1" / "anat"
        _nii(r20 / "sub-r001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz", _img())
        return lambda: find_atlas(t / "b"), "sub-r001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz", "without lesion mask"

    return [(f.__name__, f) for f in (missing_root, root_is_file, no_atlas_files, zero_byte_image, zero_byte_mask,
                                      image_without_mask, mask_without_image, both_layouts, r20_image_without_mask)]


# ------------------------------------------------------------------------------------------ datalist JSON
def _datalist(t: Path, content: object, name: str = "datalist.json", raw: bytes | None = None) -> str:
    p = t / name
    p.write_bytes(raw) if raw is not None else p.write_text(json.dumps(content))
    return str(p)


def _good_items(t: Path, n: int = 2) -> list[dict]:
    items = []
    for i in range(n):
        img, lb = _nii(t / f"s{i}" / "img.nii.gz", _img()), _nii(t / f"s{i}" / "lab.nii.gz", _lab())
        items.append({"image": os.path.relpath(img, t), "label": [os.path.relpath(lb, t)], "subject": f"s{i}"})
    return items


def _datalist_cases() -> list[tuple[str, Case]]:
    from lesionlab.data.datalist import load_datalist

    def missing(t):
        return lambda: validate_datalist(t / "datalist.json"), "datalist.json", "does not exist"

    def zero_byte(t):
        p = _datalist(t, None, raw=b"")
        return lambda: validate_datalist(p), "datalist.json", "zero-byte"

    def truncated_json(t):
        p = _datalist(t, None, raw=json.dumps({"training": _good_items(t)}).encode()[:-15])
        return lambda: validate_datalist(p), "datalist.json", "not valid JSON"

    def binary_json(t):
        p = _datalist(t, None, raw=b"\xff\xfe\x00garbage\x80")
        return lambda: validate_datalist(p), "datalist.json", "not valid JSON"

    def top_level_list(t):
        p = _datalist(t, _good_items(t))
        return lambda: validate_datalist(p), "datalist.json", "JSON object"

    def no_training(t):
        p = _datalist(t, {"validation": _good_items(t)})
        return lambda: validate_datalist(p), "datalist.json", "no 'training' list"

    def training_not_list(t):
        p = _datalist(t, {"training": {"image": "a.nii.gz"}})
        return lambda: validate_datalist(p), "datalist.json", "must be a list"

    def item_not_object(t):
        p = _datalist(t, {"training": ["s0/img.nii.gz"]})
        return lambda: validate_datalist(p), "datalist.json", "is not an object"

    def item_without_image(t):
        p = _datalist(t, {"training": [{"label": ["s0/lab.nii.gz"]}]})
        return lambda: validate_datalist(p), "datalist.json", "has no 'image'"

    def item_without_label(t):
        items = _good_items(t)
        del items[1]["label"]
        p = _datalist(t, {"training": items})
        return lambda: validate_datalist(p), "datalist.json", "has no 'label'"

    def image_not_a_path(t):
        p = _datalist(t, {"training": [{"image": 17, "label": "s0/lab.nii.gz"}]})
        return lambda: validate_datalist(p), "datalist.json", "must be a path"

    def missing_image_file(t):
        items = _good_items(t)
        items[0]["image"] = "s0/gone.nii.gz"
        p = _datalist(t, {"training": items})
        return lambda: validate_datalist(p), "gone.nii.gz", "does not exist"

    def several_missing_files(t):
        items = _good_items(t)
        items[0]["label"], items[1]["label"] = ["s0/x.nii.gz"], ["s1/y.nii.gz"]
        p = _datalist(t, {"training": items})
        return lambda: validate_datalist(p), "x.nii.gz", "2 listed files do not exist"

    def dotdot_escape(t):
        items = _good_items(t / "data")
        outside = _nii(t / "secret" / "img.nii.gz", _img())
        items[0]["image"] = "../secret/img.nii.gz"
        p = _datalist(t / "data", {"training": items})
        assert os.path.exists(outside)
        return lambda: validate_datalist(p, allowed_root=t / "data"), "datalist.json", "outside the data folder"

    def absolute_elsewhere(t):
        items = _good_items(t / "data")
        items[1]["label"] = [_nii(t / "other" / "lab.nii.gz", _lab())]
        p = _datalist(t / "data", {"training": items})
        return lambda: validate_datalist(p, allowed_root=t / "data"), "datalist.json", "outside the data folder"

    def duplicate_in_list(t):
        items = _good_items(t)
        p = _datalist(t, {"training": items + [dict(items[0])]})
        return lambda: validate_datalist(p), "img.nii.gz", "listed twice"

    def duplicate_across_lists(t):
        items = _good_items(t)
        p = _datalist(t, {"training": items, "validation": [items[1]]})
        return lambda: load_checked_datalist(p, data_list_key="validation"), "img.nii.gz", "listed twice"

    def key_absent_for_loader(t):
        p = _datalist(t, {"training": _good_items(t)})
        return lambda: load_checked_datalist(p, data_list_key="validation"), "datalist.json", "no 'validation' list"

    def monai_loader_missing_file(t):  # lesionlab.data.datalist.load_datalist (MONAI's loader inside)
        return lambda: load_datalist(t / "none.json"), "none.json", "does not exist"

    def monai_loader_bad_json(t):
        p = _datalist(t, None, raw=b'{"training": [')
        return lambda: load_datalist(p), "datalist.json", "cannot read datalist"

    def monai_loader_missing_key(t):
        p = _datalist(t, {"training": _good_items(t)})
        return lambda: load_datalist(p, key="validation"), "datalist.json", "no 'validation' list"

    return [(f.__name__, f) for f in (
        missing, zero_byte, truncated_json, binary_json, top_level_list, no_training, training_not_list,
        item_not_object, item_without_image, item_without_label, image_not_a_path, missing_image_file,
        several_missing_files, dotdot_escape, absolute_elsewhere, duplicate_in_list, duplicate_across_lists,
        key_absent_for_loader, monai_loader_missing_file, monai_loader_bad_json, monai_loader_missing_key)]


# ------------------------------------------------------------------------------------ ISLES 2015 .mha
def _mha(path: Path, data: np.ndarray, spacing=(1.0, 1.0, 1.0)) -> str:
    import SimpleITK as sitk

    path.parent.mkdir(parents=True, exist_ok=True)
    img = sitk.GetImageFromArray(data.transpose())  # (x, y, z) -> sitk's (z, y, x) array order
    img.SetSpacing(spacing[: data.ndim])
    sitk.WriteImage(img, str(path))
    return str(path)


def _isles_case(root: Path, case: str = "1", t1: np.ndarray | None = None, ot: np.ndarray | None = None,
                ot_spacing=(1.0, 1.0, 1.0), with_ot: bool = True) -> tuple[str, str]:
    folder = root / "Training" / case
    t1p = _mha(folder / "VSD.Brain.XX.O.MR_T1.101" / "VSD.Brain.XX.O.MR_T1.101.mha", _img() if t1 is None else t1)
    otp = str(folder / "VSD.Brain.XX.O.OT.102" / "VSD.Brain.XX.O.OT.102.mha")
    if with_ot:
        _mha(Path(otp), _lab() if ot is None else ot, ot_spacing)
    return t1p, otp


def _isles_cases() -> list[tuple[str, Case]]:
    def find(root):
        from lesionlab.data.isles import find_isles2015

        return lambda: find_isles2015(root)

    def zero_byte_t1(t):
        t1, _ = _isles_case(t / "i")
        Path(t1).write_bytes(b"")
        return find(t / "i"), "VSD.Brain.XX.O.MR_T1.101.mha", "zero-byte"

    def text_as_mha(t):
        _, ot = _isles_case(t / "i")
        Path(ot).write_text("lesion outline drawn on paper")
        return find(t / "i"), "VSD.Brain.XX.O.OT.102.mha", "cannot read"

    def two_d_t1(t):
        _isles_case(t / "i", t1=_img((12, 10)))
        return find(t / "i"), "VSD.Brain.XX.O.MR_T1.101.mha", "3D"

    def spacing_mismatch(t):
        _isles_case(t / "i", ot_spacing=(1.0, 1.0, 2.0))
        return find(t / "i"), "VSD.Brain.XX.O.OT.102.mha", "spacing"

    def missing_ot(t):
        _isles_case(t / "i", with_ot=False)
        return find(t / "i"), "1", "no lesion mask"

    def truncated_t1(t):  # the header is intact (find_isles2015 reads headers only): load_volume reads the data
        t1, _ = _isles_case(t / "i", t1=_img((30, 30, 20)))
        _truncate(t1, 0.6)
        return lambda: load_volume(t1), "VSD.Brain.XX.O.MR_T1.101.mha", "truncated"

    def random_bytes_mha(t):
        (t / "r.mha").write_bytes(np.random.default_rng(3).bytes(3000))
        return lambda: load_volume(t / "r.mha"), "r.mha", "not a readable image"

    def nan_t1(t):
        a = _img()
        a[5, 5, 3] = np.nan
        t1, _ = _isles_case(t / "i", t1=a)
        return lambda: load_volume(t1), "VSD.Brain.XX.O.MR_T1.101.mha", "NaN"

    def ot_values(t):
        t1, ot = _isles_case(t / "i", ot=_lab() * 3)
        return lambda: check_pair(t1, ot), "VSD.Brain.XX.O.OT.102.mha", "label values outside"

    def ot_shape(t):
        t1, ot = _isles_case(t / "i", ot=_lab((12, 10, 7)))
        return lambda: check_pair(t1, ot), "VSD.Brain.XX.O.OT.102.mha", "shape mismatch"

    return [(f.__name__, f) for f in (zero_byte_t1, text_as_mha, two_d_t1, spacing_mismatch, missing_ot,
                                      truncated_t1, random_bytes_mha, nan_t1, ot_values, ot_shape)]


def _isles_available() -> bool:
    try:
        import SimpleITK  # noqa: F401

        from lesionlab.data.isles import find_isles2015  # noqa: F401
    except ImportError:
        return False
    return True


TABLES: dict[str, list[tuple[str, Case]]] = {
    "nifti_volume": _nifti_cases(),
    "bundle_pipeline_nifti": _pipeline_cases(),
    "atlas_discovery": _atlas_cases(),
    "datalist_json": _datalist_cases(),
    **({"isles2015_mha": _isles_cases()} if _isles_available() else {}),
}
ROWS = [(reader, name, setup) for reader, rows in TABLES.items() for name, setup in rows]


def bad_input_counts() -> dict[str, int]:
    """Number of broken inputs tried per reader."""
    return {reader: len(rows) for reader, rows in TABLES.items()}


def _data_error(exc: BaseException) -> DataError | None:
    """The DataError itself, or the one MONAI wrapped in ``RuntimeError("applying transform ...")``."""
    while exc is not None and not isinstance(exc, DataError):
        exc = exc.__cause__ or exc.__context__
    return exc


@pytest.mark.parametrize("reader,name,setup", ROWS, ids=[f"{r}-{n}" for r, n, _ in ROWS])
def test_bad_input_gives_data_error_naming_file_and_problem(reader, name, setup, tmp_path):
    call, culprit, keyword = setup(tmp_path)
    with pytest.raises(Exception) as info:
        call()
    err = _data_error(info.value)
    assert err is not None, f"{type(info.value).__name__} instead of DataError: {info.value}"
    if reader != "bundle_pipeline_nifti":
        assert info.value is err  # the reader itself raises DataError (MONAI wraps it in its Compose)
    message = str(err)
    assert culprit in message, message
    assert keyword.lower() in message.lower(), message


def test_good_inputs_pass(tmp_path):
    img, lb = _pair(tmp_path)
    image, labels, affine = check_pair(img, [lb])
    assert image.shape == SHAPE and labels[0].shape == SHAPE
    np.testing.assert_allclose(affine, AFFINE)
    # (X, Y, Z, 1) is a 3D volume; an affine within 1e-3 mm of the image's is the same grid
    moved = AFFINE.copy()
    moved[0, 3] += 5e-4
    _nii(tmp_path / "lab4d.nii.gz", _lab()[..., None], moved)
    check_pair(img, str(tmp_path / "lab4d.nii.gz"))
    data = validate_datalist(_datalist(tmp_path, {"training": _good_items(tmp_path)}), allowed_root=tmp_path)
    assert all(os.path.isabs(it["image"]) and os.path.isabs(it["label"][0]) for it in data["training"])
    assert data["training"][0]["subject"] == "s0"  # other keys untouched


def test_bundle_pipelines_accept_good_data(tiny_atlas):
    from monai.transforms import Compose

    items = load_checked_datalist(os.path.join(tiny_atlas, "datalist.json"), data_list_key="training")
    pre = Compose(_bundle_preprocessing(["train.json"], "base_preprocessing", roi_start=[4, 4], roi_end=[44, 44],
                                        spatial_size=[32, 32]))
    out = pre(items[1])  # the subject whose lesion is split over two mask files
    assert tuple(out["image"].shape) == (1, 32, 32, 10) and tuple(out["label"].shape) == (1, 32, 32, 10)


def test_failed_datalist_build_keeps_existing_file(tmp_path, monkeypatch):
    """Nothing already written is damaged: a build that fails (bad data, or a crash while writing) leaves the
    existing datalist byte for byte, and no temporary file."""
    from lesionlab.data import datalist as dl

    root = tmp_path / "atlas"
    _r11(root, "000001")
    _r11(root, "000002")
    out = root / "datalist.json"
    dl.build_datalist(root, out, version="r1.1")
    before = out.read_bytes()

    _r11(root, "000003", mask=False)  # now broken: an image without mask
    with pytest.raises(DataError, match="000003_t1w_deface_stx.nii.gz"):
        dl.build_datalist(root, out, version="r1.1")
    assert out.read_bytes() == before

    (root / "Site1" / "000003" / "t01" / "000003_t1w_deface_stx.nii.gz").unlink()

    def crash(*args, **kwargs):
        args[1].write('{"training": [')  # half a file, then the writer dies
        raise OSError("no space left on device")

    monkeypatch.setattr(dl.json, "dump", crash)
    with pytest.raises(OSError, match="no space"):
        dl.build_datalist(root, out, version="r1.1")
    assert out.read_bytes() == before
    assert sorted(p.name for p in root.iterdir()) == ["Site1", "datalist.json"]
    validate_datalist(out)  # still a valid, complete datalist


def test_readers_do_not_modify_their_inputs(tmp_path):
    img, lb = _pair(tmp_path)
    stamp = {p: (os.path.getmtime(p), Path(p).read_bytes()) for p in (img, lb)}
    check_pair(img, lb)
    assert {p: (os.path.getmtime(p), Path(p).read_bytes()) for p in (img, lb)} == stamp


def test_bad_input_case_counts():
    counts = bad_input_counts()
    print("bad-input cases tried per reader:", json.dumps(counts))
    assert counts["nifti_volume"] >= 20 and counts["datalist_json"] >= 15 and counts["atlas_discovery"] >= 8
