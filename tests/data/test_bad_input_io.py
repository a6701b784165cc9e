"""Bad input for the deployment readers (``lesionlab infer``): DICOM series folders, NRRD and MetaImage files.

Readers: DICOM series (``find_cases`` + ``prepare_case`` -> ``list_dicom_series``/``read_dicom_series``), NRRD and
MetaImage (``prepare_case`` -> ``read_volume``), input discovery (``find_cases``) and label outputs
(``write_seg_nrrd``, ``write_dicom_seg``) for a label whose geometry cannot be read. Each table row is
``(id, setup)``; ``setup(tmp_path, series)`` returns ``(call, file or folder named in the message, keyword)``.
``bad_input_io_case_counts()`` gives the number of broken inputs tried per reader (printed by
``test_case_counts``). A hypothesis fuzz writes random and damaged bytes as a ``.dcm`` slice of a series folder,
``.nrrd`` and ``.mha`` and checks that the readers raise :class:`DataError` or succeed, nothing else.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lesionlab.data.dicom import SegmentInfo, read_dicom_series
from lesionlab.data.dicom_seg import write_dicom_seg
from lesionlab.data.io import find_cases, prepare_case, write_seg_nrrd
from lesionlab.data.synthetic.dicom_series import SyntheticSeries, synth_dicom_series
from lesionlab.errors import DataError

__all__ = ["bad_input_io_case_counts"]

SHAPE = (6, 7, 5)  # numpy (z, y, x)
Setup = Callable[[Path, SyntheticSeries], tuple[Callable[[], object], str, str]]


@pytest.fixture(scope="module")
def series(tmp_path_factory) -> SyntheticSeries:
    """A valid 16-slice 16x16 MR series (the smallest ``synth_dicom_series`` writes), copied before damage."""
    return synth_dicom_series(str(tmp_path_factory.mktemp("dcm") / "mr"), n_slices=16, size=16, seed=4)


def _read_input(path: str | Path, work: Path) -> object:
    """What ``lesionlab infer`` does with one input: find its case(s) and prepare every one."""
    work.mkdir(exist_ok=True)
    return [prepare_case(c, str(work)) for c in find_cases(str(path))]


def _copy_series(tmp: Path, s: SyntheticSeries, name: str = "series") -> Path:
    dst = tmp / name
    shutil.copytree(s.folder, dst)
    return dst


def _truncate(path: str | Path, keep: float = 0.5) -> None:
    data = Path(path).read_bytes()
    Path(path).write_bytes(data[: int(len(data) * keep)])


def _volume(dtype=np.float32, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random(SHAPE) * 100 + 1).astype(dtype)


def _write(path: Path, arr: np.ndarray, compress: bool = False) -> str:
    sitk.WriteImage(sitk.GetImageFromArray(arr, isVector=False), str(path), compress)
    return str(path)


# ------------------------------------------------------------------------------------------- DICOM series folders
def _dicom_cases() -> list[tuple[str, Setup]]:
    def damaged_slice(problem: Callable[[Path], None], keyword: str) -> Setup:
        def setup(t, s):
            d = _copy_series(t, s)
            problem(d / "IM0005.dcm")
            return lambda: _read_input(d, t / "work"), "IM0005.dcm", keyword
        return setup

    def extra_junk(t, s):
        d = _copy_series(t, s)
        (d / "readme.dcm").write_text("not DICOM, just notes\n")
        return lambda: _read_input(d, t / "work"), "readme.dcm", "not a readable DICOM"

    def extra_zero(t, s):
        d = _copy_series(t, s)
        (d / "IM9999.dcm").write_bytes(b"")
        return lambda: _read_input(d, t / "work"), "IM9999.dcm", "zero-byte"

    def no_series(t, s):
        d = t / "junk"
        d.mkdir()
        for k in range(3):
            (d / f"IM{k}.dcm").write_bytes(np.random.default_rng(k).bytes(700))
        return lambda: _read_input(d, t / "work"), "junk", "no DICOM image series"

    def only_other_files(t, s):
        d = t / "notes"
        d.mkdir()
        (d / "notes.txt").write_text("x")
        return lambda: _read_input(d, t / "work"), "notes", "no images"

    def missing_slice(t, s):
        d = _copy_series(t, s)
        os.remove(d / "IM0007.dcm")
        return lambda: _read_input(d, t / "work"), "series", "missing slices"

    def rows_differ(t, s):
        d = _copy_series(t, s)
        ds = pydicom.dcmread(d / "IM0003.dcm")
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:8]).tobytes()
        ds.Rows = 8
        ds.save_as(d / "IM0003.dcm")
        return lambda: _read_input(d, t / "work"), "IM0003.dcm", "different sizes"

    def columns_differ(t, s):
        d = _copy_series(t, s)
        ds = pydicom.dcmread(d / "IM0010.dcm")
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, :12]).tobytes()
        ds.Columns = 12
        ds.save_as(d / "IM0010.dcm")
        return lambda: _read_input(d, t / "work"), "IM0010.dcm", "different sizes"

    def single_slice(t, s):
        d = t / "one"
        d.mkdir()
        shutil.copy(s.files[0], d / "IM0001.dcm")
        return lambda: read_dicom_series(str(d)), "one", "single 2D slice"

    def missing_folder(t, s):
        return lambda: read_dicom_series(str(t / "gone")), "gone", "no such folder"

    def file_not_folder(t, s):
        return lambda: read_dicom_series(s.files[0]), "IM0001.dcm", "not a folder"

    return [
        ("zero_byte_slice", damaged_slice(lambda p: p.write_bytes(b""), "zero-byte")),
        ("truncated_header", damaged_slice(lambda p: _truncate(p, 0.05), "truncated")),
        ("truncated_pixels", damaged_slice(lambda p: _truncate(p, 0.9), "truncated")),
        ("text_as_dcm", damaged_slice(lambda p: p.write_text("hello, not an image\n" * 30), "not a readable DICOM")),
        ("random_bytes_as_dcm", damaged_slice(lambda p: p.write_bytes(np.random.default_rng(2).bytes(3000)),
                                              "not a readable DICOM")),
        ("extra_non_dicom_file", extra_junk),
        ("extra_zero_byte_file", extra_zero),
        ("no_series", no_series),
        ("no_dicom_at_all", only_other_files),
        ("missing_slice", missing_slice),
        ("rows_differ", rows_differ),
        ("columns_differ", columns_differ),
        ("single_2d_slice", single_slice),
        ("missing_folder", missing_folder),
        ("file_instead_of_folder", file_not_folder),
    ]


# ----------------------------------------------------------------------------------------- NRRD / MetaImage files
def _volume_cases(ext: str) -> list[tuple[str, Setup]]:
    def zero(t, s):
        (t / f"zero.{ext}").write_bytes(b"")
        return lambda: _read_input(t / f"zero.{ext}", t / "work"), f"zero.{ext}", "zero-byte"

    def truncated(compress: bool) -> Setup:
        def setup(t, s):
            p = _write(t / f"cut.{ext}", _volume(seed=1) if not compress else _volume(seed=1), compress)
            _truncate(p, 0.6)
            return lambda: _read_input(p, t / "work"), f"cut.{ext}", "truncated"
        return setup

    def header_only(t, s):
        p = _write(t / f"hdr.{ext}", _volume())
        _truncate(p, 0.05)
        return lambda: _read_input(p, t / "work"), f"hdr.{ext}", "header cannot be parsed"

    def text(t, s):
        (t / f"notes.{ext}").write_text("patient list, not an image\n")
        return lambda: _read_input(t / f"notes.{ext}", t / "work"), f"notes.{ext}", "not a readable"

    def random_bytes(t, s):
        (t / f"rand.{ext}").write_bytes(np.random.default_rng(3).bytes(1500))
        return lambda: _read_input(t / f"rand.{ext}", t / "work"), f"rand.{ext}", "not a readable"

    def values(name: str, value: float, keyword: str) -> Setup:
        def setup(t, s):
            a = _volume()
            a[2, 3, 1] = value
            p = _write(t / f"{name}.{ext}", a)
            return lambda: _read_input(p, t / "work"), f"{name}.{ext}", keyword
        return setup

    def two_d(t, s):
        p = _write(t / f"flat.{ext}", _volume()[0])
        return lambda: _read_input(p, t / "work"), f"flat.{ext}", "expected a 3D volume"

    def four_d(t, s):
        p = _write(t / f"multi.{ext}", np.stack([_volume(), _volume(seed=1)]))
        return lambda: _read_input(p, t / "work"), f"multi.{ext}", "expected a 3D volume"

    def vector(t, s):
        p = str(t / f"rgb.{ext}")
        sitk.WriteImage(sitk.GetImageFromArray(np.stack([_volume()] * 3, axis=-1), isVector=True), p)
        return lambda: _read_input(p, t / "work"), f"rgb.{ext}", "3 components"

    def missing(t, s):
        return lambda: _read_input(t / f"nope.{ext}", t / "work"), f"nope.{ext}", "no such file"

    def missing_in_prepare(t, s):  # listed (e.g. by a datalist) but gone when prepared
        p = _write(t / f"gone.{ext}", _volume())
        cases = find_cases(p)
        os.remove(p)
        return lambda: prepare_case(cases[0], str(t)), f"gone.{ext}", "no such file"

    return [
        ("zero_byte", zero),
        ("truncated_raw", truncated(False)),
        ("truncated_gzip", truncated(True)),
        ("header_only", header_only),
        ("text_with_extension", text),
        ("random_bytes", random_bytes),
        ("nan_voxels", values("nan", np.nan, "NaN")),
        ("inf_voxels", values("inf", np.inf, "infinite")),
        ("minus_inf_voxels", values("ninf", -np.inf, "infinite")),
        ("two_d", two_d),
        ("four_d_non_singleton", four_d),
        ("vector_pixels", vector),
        ("missing_path", missing),
        ("missing_at_prepare", missing_in_prepare),
    ]


# ----------------------------------------------------------------------------------- label outputs of a bad label
def _output_cases() -> list[tuple[str, Setup]]:
    seg = [SegmentInfo(1, "lesion")]

    def seg_nrrd(name: str, make: Callable[[Path], str], keyword: str) -> Setup:
        def setup(t, s):
            label = make(t)
            out = t / "case.seg.nrrd"
            out.write_bytes(b"previous output")  # must survive the failed write
            def call():
                try:
                    write_seg_nrrd(label, str(out), seg)
                finally:
                    assert out.read_bytes() == b"previous output"
            return call, os.path.basename(label), keyword
        return setup

    def dicom_seg(t, s):
        d = _copy_series(t, s)
        _, info = read_dicom_series(str(d))
        label = t / "label.nii.gz"
        label.write_bytes(b"\x1f\x8b not really gzip")
        out = t / "case_seg.dcm"
        out.write_bytes(b"previous output")
        def call():
            try:
                write_dicom_seg(str(label), info, str(out), seg)
            finally:
                assert out.read_bytes() == b"previous output"
        return call, "label.nii.gz", "geometry is unknown"

    def zero_label(t):
        (t / "zero.nii.gz").write_bytes(b"")
        return str(t / "zero.nii.gz")

    def text_label(t):
        (t / "text.nrrd").write_text("not a label\n")
        return str(t / "text.nrrd")

    def flat_label(t):
        return _write(t / "flat.nrrd", np.zeros((8, 8), np.uint8))

    return [
        ("seg_nrrd_missing_label", seg_nrrd("missing", lambda t: str(t / "nolabel.nii.gz"), "no such file")),
        ("seg_nrrd_zero_byte_label", seg_nrrd("zero", zero_label, "zero-byte")),
        ("seg_nrrd_unreadable_label", seg_nrrd("text", text_label, "geometry is unknown")),
        ("seg_nrrd_2d_label", seg_nrrd("flat", flat_label, "must be 3D")),
        ("dicom_seg_unreadable_label", dicom_seg),
    ]


TABLE: dict[str, list[tuple[str, Setup]]] = {
    "dicom": _dicom_cases(),
    "nrrd": _volume_cases("nrrd"),
    "mha": _volume_cases("mha"),
    "label-output": _output_cases(),
}
PARAMS = [pytest.param(reader, setup, id=f"{reader}-{cid}") for reader, rows in TABLE.items() for cid, setup in rows]


def bad_input_io_case_counts() -> dict[str, int]:
    """Number of broken inputs in the table, per reader."""
    return {reader: len(rows) for reader, rows in TABLE.items()}


@pytest.mark.parametrize("reader, setup", PARAMS)
def test_bad_input_raises_data_error(reader, setup, series, tmp_path):
    call, name, keyword = setup(tmp_path, series)
    with pytest.raises(DataError) as info:
        call()
    msg = str(info.value)
    assert name in msg, msg
    assert keyword.lower() in msg.lower(), msg
    assert info.value.path is not None and name in info.value.path + msg


def test_valid_inputs_still_read(series, tmp_path):
    d = _copy_series(tmp_path, series)
    (prep,) = _read_input(d, tmp_path / "w1")
    assert sitk.ReadImage(prep.nifti).GetSize() == (16, 16, 16)
    for ext in ("nrrd", "mha", "nhdr", "mhd"):
        (prep,) = _read_input(_write(tmp_path / f"ok.{ext}", _volume(np.int16)), tmp_path / f"w_{ext}")
        assert sitk.ReadImage(prep.nifti).GetSize() == SHAPE[::-1]
    p = _write(tmp_path / "single.nrrd", _volume()[None])  # 4D with one volume: read as that volume
    (prep,) = _read_input(p, tmp_path / "w4")
    assert sitk.ReadImage(prep.nifti).GetSize() == SHAPE[::-1]


def test_case_counts():
    counts = bad_input_io_case_counts()
    print("\nbad-input cases per reader:", counts, "total", sum(counts.values()))
    assert all(n >= 5 for n in counts.values())


# -------------------------------------------------------------------------------------------------------- fuzz
SETTINGS = settings(max_examples=60, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def samples(series, tmp_path_factory) -> dict[str, bytes]:
    tmp = tmp_path_factory.mktemp("io_fuzz")
    return {
        "dcm": Path(series.files[4]).read_bytes(),
        "nrrd": Path(_write(tmp / "a.nrrd", _volume())).read_bytes(),
        "mha": Path(_write(tmp / "a.mha", _volume(), compress=True)).read_bytes(),
    }


def _damage(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(data[: max(0, min(cut, len(data)))] if cut >= 0 else data)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


def _fuzz_read(tmp: Path, series: SyntheticSeries, ext: str, data: bytes) -> None:
    if ext == "dcm":  # the damaged file replaces one slice of a valid series folder
        target = tmp / "series"
        if not target.exists():
            shutil.copytree(series.folder, target)
        path = target / "IM0005.dcm"
        read = target
    else:
        path = read = tmp / f"x.{ext}"
    path.write_bytes(data)
    shutil.rmtree(tmp / "work", ignore_errors=True)
    try:
        _read_input(read, tmp / "work")
    except DataError as err:
        assert os.path.basename(str(read)) in str(err), str(err)


@SETTINGS
@given(ext=st.sampled_from(["dcm", "nrrd", "mha"]), random=st.binary(max_size=1500), use_random=st.booleans(),
       cut=st.integers(-1, 5000), flips=st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 255)), max_size=6))
def test_fuzz_io_readers_raise_only_data_error(samples, series, tmp_path, ext, random, use_random, cut, flips):
    data = random if use_random else _damage(samples[ext], cut, flips)
    _fuzz_read(tmp_path, series, ext, data)


# ---------------------------------------------------------------------------------------- lesionlab infer, end to end
@pytest.mark.slow
def test_infer_keeps_good_case_and_reports_broken_ones(tmp_path):
    """A random-weights tiny D-UNet bundle folder (no training, no export) segments a folder with one good DICOM
    series, one series with a zero-byte slice and one truncated ``.nrrd``: the good case is written, the broken ones
    are reported in the summary by file name, and an earlier file in the output folder is left alone."""
    import json

    import torch

    from lesionlab.apps.bundle import copy_bundle, set_config_values
    from lesionlab.apps.cli import main
    from lesionlab.apps.deploy.config import build_network
    from tests.apps.test_export import DUNET, TINY

    root = copy_bundle(DUNET, str(tmp_path / DUNET))
    set_config_values(root, TINY)
    torch.manual_seed(0)
    os.makedirs(os.path.join(root, "models"), exist_ok=True)
    torch.save(build_network(root).state_dict(), os.path.join(root, "models", "model.pt"))
    inputs = tmp_path / "inputs"
    synth_dicom_series(str(inputs / "good"), n_slices=16, size=48, seed=1)
    synth_dicom_series(str(inputs / "bad"), n_slices=16, size=48, seed=2)
    (inputs / "bad" / "IM0005.dcm").write_bytes(b"")
    _truncate(_write(inputs / "cut.nrrd", _volume()), 0.6)
    out = tmp_path / "out"
    out.mkdir()
    (out / "bad.seg.nrrd").write_bytes(b"earlier output")
    assert main(["infer", root, "--input", str(inputs), "--output", str(out), "--format", "nrrd"]) == 1
    summary = json.loads((out / "summary.json").read_text())
    status = {c["case"]: c for c in summary["cases"]}
    assert summary["n_ok"] == 1 and summary["n_failed"] == 2 and summary["exit_code"] == 1
    assert status["good"]["status"] == "ok" and os.path.exists(status["good"]["output"])
    assert status["bad"]["status"] == "failed" and "IM0005.dcm" in status["bad"]["error"]
    assert "zero-byte" in status["bad"]["error"]
    assert status["cut"]["status"] == "failed" and "cut.nrrd" in status["cut"]["error"]
    assert "truncated" in status["cut"]["error"]
    assert (out / "bad.seg.nrrd").read_bytes() == b"earlier output"
