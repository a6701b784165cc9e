"""`lesionlab synth isles` and `lesionlab datalist --dataset isles2015` on real .mha files."""

from __future__ import annotations

import json
import os

import SimpleITK as sitk

from lesionlab.apps.cli import main


def test_synth_isles_then_cross_validation_datalist(tmp_path, capsys):
    out = str(tmp_path / "isles")
    assert main(["synth", "isles", "--out", out, "--n", "5", "--shape", "40", "40", "24", "--quiet"]) == 0
    mha = [os.path.join(d, f) for d, _, fs in os.walk(out) for f in fs if f.endswith(".mha")]
    assert len(mha) == 10 and any(".OT." in f for f in mha) and any("MR_T1" in f for f in mha)
    img = sitk.ReadImage(next(f for f in mha if "MR_T1" in f))
    assert img.GetSize() == (40, 40, 24) and img.GetSpacing() == (1.0, 1.0, 1.0)
    dl = str(tmp_path / "isles.json")
    assert main(["datalist", "--dataset", "isles2015", "--root", out, "--out", dl]) == 0
    d = json.load(open(dl))
    folds = sorted(item["fold"] for item in d["training"])
    assert len(folds) == 5 and sorted(set(folds)) == [0, 1, 2, 3, 4]
    assert "5 cross-validation folds" in capsys.readouterr().out
    assert main(["datalist", "--dataset", "isles2015", "--root", str(tmp_path / "nothing"), "--out", dl]) == 2
