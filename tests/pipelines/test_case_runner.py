"""run_cases: a failing case is logged and reported, the other cases still run."""

from __future__ import annotations

import json
import logging
import os

import pytest

from lesionlab.errors import DataError
from lesionlab.pipelines.case_runner import CaseReport, case_name, run_cases


def test_failures_are_isolated_logged_and_reported(tmp_path, caplog):
    done = []

    def fn(case):
        if case == "b.nii.gz":
            raise DataError(case, "truncated or corrupt file")
        if case == "c.nii.gz":
            raise RuntimeError("out of memory")
        done.append(case)

    with caplog.at_level(logging.INFO, logger="lesionlab.pipelines.case_runner"):
        report = run_cases(["a.nii.gz", "b.nii.gz", "c.nii.gz", "d.nii.gz"], fn)
    assert done == ["a.nii.gz", "d.nii.gz"] and report.ok == done
    assert [(f.case, f.error) for f in report.failed] == [("b.nii.gz", "DataError"), ("c.nii.gz", "RuntimeError")]
    assert report.failed[0].reason == "b.nii.gz: truncated or corrupt file"
    assert report.exit_code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("b.nii.gz" in m and "truncated" in m for m in errors)
    assert any("c.nii.gz" in m and "out of memory" in m for m in errors)

    path = report.write_json(tmp_path / "sub" / "report.json")
    with open(path) as f:
        data = json.load(f)
    assert data["n_cases"] == 4 and data["n_failed"] == 2 and data["exit_code"] == 1
    assert data["failed"][1] == {"case": "c.nii.gz", "error": "RuntimeError", "reason": "out of memory"}
    assert sorted(os.listdir(tmp_path / "sub")) == ["report.json"]  # atomic: no temporary file left


def test_data_error_inside_monai_transform_is_unwrapped():
    from monai.transforms import Compose, Lambda

    def broken(x):
        raise DataError("/data/x.nii.gz", "NaN or infinite voxel values (3 of 8 voxels)")

    pipeline = Compose([Lambda(broken)])
    report = run_cases(["x"], pipeline)
    assert report.failed[0].error == "DataError"
    assert report.failed[0].reason == "/data/x.nii.gz: NaN or infinite voxel values (3 of 8 voxels)"


def test_on_done_reports_each_case_as_it_finishes():
    seen = []

    def fn(c):
        seen.append(("run", c))
        if c == 2:
            raise DataError(f"/d/{c}.nii", "empty file")

    run_cases([1, 2, 3], fn, on_done=lambda c, f: seen.append(("done", c, f and f.reason)))
    assert seen == [("run", 1), ("done", 1, None), ("run", 2), ("done", 2, "/d/2.nii: empty file"), ("run", 3),
                    ("done", 3, None)]


def test_all_ok_and_empty():
    assert run_cases([1, 2], lambda c: None).exit_code == 0
    empty = run_cases([], lambda c: None)
    assert empty.exit_code == 0 and empty.to_dict()["n_cases"] == 0


def test_interrupt_is_not_swallowed():
    def fn(case):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_cases([1], fn)


def test_case_names():
    assert case_name({"image": "/d/x.nii.gz", "subject": "Site1/1"}) == "Site1/1"
    assert case_name({"image": "/d/x.nii.gz"}) == "/d/x.nii.gz"
    assert case_name(7) == "7"
    assert isinstance(CaseReport().to_dict()["failed"], list)
