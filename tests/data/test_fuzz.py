"""Fuzzing: random and damaged bytes make the readers raise DataError (or succeed) and nothing else; random
command lines make ``lesionlab.apps.cli.main`` return an exit code or exit through argparse, and nothing else."""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import os
import shutil

import nibabel as nib
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lesionlab.data.validation import load_volume, validate_datalist
from lesionlab.errors import DataError

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.fixture(scope="module")
def samples(tmp_path_factory) -> dict[str, bytes]:
    """Valid files to damage: NIfTI (gzipped and plain), MetaImage, datalist JSON."""
    tmp = tmp_path_factory.mktemp("fuzz_samples")
    vol = np.random.default_rng(0).random((6, 5, 4)).astype(np.float32)
    out = {}
    for name in ("a.nii.gz", "a.nii"):
        nib.save(nib.Nifti1Image(vol, np.diag([1.0, 1.0, 2.0, 1.0])), str(tmp / name))
        out[name] = (tmp / name).read_bytes()
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(vol.transpose()), str(tmp / "a.mha"))
    out["a.mha"] = (tmp / "a.mha").read_bytes()
    out["a.json"] = json.dumps({"training": [{"image": "a.nii.gz", "label": ["a.nii.gz"], "subject": "s"}]}).encode()
    return out


def _damage(data: bytes, cut: int, flips: list[tuple[int, int]]) -> bytes:
    b = bytearray(data[: max(0, min(cut, len(data)))] if cut >= 0 else data)
    for pos, val in flips:
        if b:
            b[pos % len(b)] = val
    return bytes(b)


def _read(path: str) -> None:
    """The reader for the file's type; anything but DataError escapes to fail the test."""
    if path.endswith(".json"):
        validate_datalist(path)
    else:
        load_volume(path)
        load_volume(path, kind="label")


def _check(tmp, name: str, data: bytes) -> None:
    path = os.path.join(tmp, name)
    with open(path, "wb") as f:
        f.write(data)
    try:
        _read(path)
    except DataError as err:
        assert path in str(err) or os.path.basename(path) in str(err), str(err)


@SETTINGS
@given(name=st.sampled_from(["x.nii.gz", "x.nii", "x.mha", "x.json"]), data=st.binary(max_size=2048),
       gz=st.booleans())
def test_random_bytes_only_raise_data_error(tmp_path, name, data, gz):
    if gz and name == "x.nii.gz":
        data = gzip.compress(data)  # past the gzip signature, into nibabel's header parsing
    _check(tmp_path, name, data)


@SETTINGS
@given(name=st.sampled_from(["a.nii.gz", "a.nii", "a.mha", "a.json"]), cut=st.integers(-1, 4000),
       flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=6))
def test_damaged_valid_files_only_raise_data_error(samples, tmp_path, name, cut, flips):
    data = samples[name]
    if name == "a.json":  # also keep the listed files around so the datalist can be valid
        shutil.copyfile(os.devnull, os.path.join(tmp_path, "a.nii.gz"))
    _check(tmp_path, name, _damage(data, cut, flips))


# --------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def cli_paths(tmp_path_factory) -> list[str]:
    from tests.conftest import write_tiny_atlas

    tmp = tmp_path_factory.mktemp("fuzz_cli")
    atlas = write_tiny_atlas(str(tmp / "atlas"), n=3)
    (tmp / "empty").mkdir()
    (tmp / "file.txt").write_text("x")
    return [atlas, str(tmp / "empty"), str(tmp / "file.txt"), str(tmp / "missing"), str(tmp / "file.txt" / "x.json"),
            str(tmp / "out" / "dl.json"), str(tmp / "atlas" / "datalist.json"), str(tmp / "empty"), "", "."]


VALUES = st.one_of(st.sampled_from(["r1.1", "r2.0", "auto", "0", "1", "2", "3", "-1", "0.5", "1.5", "nan", "1e9",
                                    "-0.2", "x", "", "--", "="]),
                   st.integers(-5, 50).map(str), st.floats(allow_nan=True).map(str), st.text(max_size=8))
OPTIONS = st.sampled_from(["--version", "--val-fraction", "--folds", "--seed"])
JUNK = st.sampled_from(["--skip-incomplete", "--help", "-h", "--bogus", "-x", "--root", "--out", "--folds"])


@st.composite
def argv(draw, paths):
    """Mostly ``datalist --root P --out O`` with random option values; sometimes junk or other top-level forms."""
    form = draw(st.sampled_from(["datalist"] * 6 + ["junk", "nosuchcommand", "--version", "-h"]))
    if form != "datalist":
        args = [] if form == "junk" else [form]
        return args + draw(st.lists(st.one_of(JUNK, VALUES), max_size=4))
    args = ["datalist", "--root", draw(st.sampled_from(paths)), "--out", draw(st.sampled_from(paths[4:7] + paths[8:]))]
    for _ in range(draw(st.integers(0, 3))):
        args += [draw(OPTIONS), draw(VALUES)]
    if draw(st.integers(0, 5)) == 0:
        args.insert(draw(st.integers(1, len(args))), draw(JUNK))
    return args


def test_cli_fuzz(cli_paths, tmp_path, monkeypatch):
    from lesionlab.apps.cli import main

    monkeypatch.chdir(tmp_path)  # a relative --out such as "" or "." stays inside the test folder; restored after

    @SETTINGS
    @given(args=argv(cli_paths))
    def run(args):
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(args)
            except SystemExit as exc:  # argparse: --help, --version, bad arguments
                assert exc.code in (0, 2, None), exc.code
                return
        assert isinstance(code, int) and code in (0, 1, 2), code
        if code == 2:
            assert err.getvalue().startswith("error: "), err.getvalue()

    run()
