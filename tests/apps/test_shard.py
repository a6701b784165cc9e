"""Archive inference sharded over 2 ``torchrun`` processes (gloo, CPU): own outputs per rank, manifest, resume, a
failing case listed (lesionlab.apps.deploy.shard), and the pieces on their own."""

from __future__ import annotations

import glob
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from lesionlab.apps.bundle import copy_bundle, set_config_values
from lesionlab.apps.deploy.shard import MANIFEST_DIR, merge_manifests, shard
from lesionlab.utils import TEMP_PREFIX
from tests.apps.test_export import DUNET, TINY
from tests.conftest import write_tiny_atlas

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def test_shard_splits_round_robin():
    cases = list("abcde")
    assert shard(cases, 0, 2) == ["a", "c", "e"] and shard(cases, 1, 2) == ["b", "d"]
    assert sorted(shard(cases, 0, 3) + shard(cases, 1, 3) + shard(cases, 2, 3)) == cases
    assert shard(cases, 0, 1) == cases and shard([], 1, 2) == []
    with pytest.raises(ValueError, match="rank 2"):
        shard(cases, 2, 2)


def test_merge_keeps_the_latest_line_of_a_case(tmp_path):
    """manifest.jsonl of an earlier run, then this run's rank files: this run's line of a case wins, a case only in the
    earlier run stays, a line cut by a kill is skipped; failed cases make exit code 1."""
    (tmp_path / MANIFEST_DIR).mkdir()
    (tmp_path / "manifest.jsonl").write_text(
        json.dumps({"case": "a", "status": "failed", "error": "boom"}) + "\n"
        + json.dumps({"case": "b", "status": "ok"}) + "\n")
    (tmp_path / MANIFEST_DIR / "rank0.jsonl").write_text(json.dumps({"case": "a", "status": "ok", "rank": 0}) + "\n")
    (tmp_path / MANIFEST_DIR / "rank1.jsonl").write_text(
        json.dumps({"case": "c", "status": "failed", "error": "bad header", "rank": 1}) + '\n{"case": "d", "sta')
    s = merge_manifests(str(tmp_path))
    assert [(r["case"], r["status"]) for r in s["cases"]] == [("a", "ok"), ("b", "ok"), ("c", "failed")]
    assert (s["n_cases"], s["n_ok"], s["n_failed"], s["exit_code"]) == (3, 2, 1, 1)
    lines = [json.loads(x) for x in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert lines == s["cases"] and json.loads((tmp_path / "summary.json").read_text()) == s


def _infer(root: str, inputs: str, out: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([REPO, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "lesionlab.apps.cli", "infer", root, "--input", inputs, "--output", out, "--distributed"]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=300, env=env)


def _rank_rows(out: str) -> dict[int, list[dict]]:
    files = sorted(glob.glob(os.path.join(out, MANIFEST_DIR, "rank*.jsonl")))
    return {int(os.path.basename(f)[4:-6]): [json.loads(x) for x in open(f)] for f in files}


@pytest.mark.slow
def test_torchrun_two_ranks_shard_an_archive_and_resume(tmp_path):
    """5 cases (4 NIfTI volumes, 1 truncated file) on 2 gloo ranks with a random-weights tiny D-UNet, then a rerun
    after one output was lost; 65-85 s on 2 cores (two torchrun launches, each building the bundle on 2 ranks)."""
    root = copy_bundle(DUNET, str(tmp_path / DUNET))
    set_config_values(root, TINY)
    torch.manual_seed(0)
    from lesionlab.apps.deploy.config import build_network

    os.makedirs(os.path.join(root, "models"))
    torch.save(build_network(root).state_dict(), os.path.join(root, "models", "model.pt"))
    atlas = write_tiny_atlas(str(tmp_path / "atlas"), n=4)
    inputs = tmp_path / "archive"
    inputs.mkdir()
    for i, f in enumerate(sorted(glob.glob(os.path.join(atlas, "Site1", "*", "t01", "*_t1w_deface_stx.nii.gz")))):
        shutil.copy(f, inputs / f"case{i}.nii.gz")
    cut = (inputs / "case1.nii.gz").read_bytes()
    (inputs / "case2b.nii.gz").write_bytes(cut[: len(cut) // 2])  # truncated gzip stream
    out = str(tmp_path / "out")

    r = _infer(root, str(inputs), out)
    log = r.stdout + r.stderr
    assert r.returncode == 1, log[-4000:]  # rank 0 exits 1: one case failed (listed, the others done)
    # the sorted cases case0 case1 case2 case2b case3: rank 0 takes 0, 2, 4 and rank 1 takes 1, 3
    rows = _rank_rows(out)
    assert {k: [x["case"] for x in v] for k, v in rows.items()} == {0: ["case0", "case2", "case3"],
                                                                     1: ["case1", "case2b"]}
    assert all(x["rank"] == rank for rank, v in rows.items() for x in v)
    summary = json.load(open(os.path.join(out, "summary.json")))
    status = {c["case"]: c for c in summary["cases"]}
    assert (summary["n_cases"], summary["n_ok"], summary["n_failed"]) == (5, 4, 1)
    assert status["case2b"]["status"] == "failed" and "case2b.nii.gz" in status["case2b"]["error"]
    for c in ("case0", "case1", "case2", "case3"):
        assert status[c]["status"] == "ok" and os.path.isfile(status[c]["output"])
        report = json.load(open(os.path.join(out, f"{c}_report.json")))
        assert report["output"] == status[c]["output"] and report["shape"] == [48, 48, 10]
    merged = [json.loads(x) for x in open(os.path.join(out, "manifest.jsonl"))]
    assert merged == summary["cases"]
    for rank in (0, 1):  # each rank: its own summary and log, its scratch folder gone
        assert os.path.isfile(os.path.join(out, MANIFEST_DIR, f"summary_rank{rank}.json"))
        assert os.path.isfile(os.path.join(out, MANIFEST_DIR, f"rank{rank}.log"))
        assert not os.path.exists(os.path.join(out, MANIFEST_DIR, f"work-rank{rank}"))
    assert "case2b" in open(os.path.join(out, MANIFEST_DIR, "rank1.log")).read()
    assert not glob.glob(os.path.join(out, TEMP_PREFIX + "*"))

    # rank 1 "stopped" before finishing case1 (its output and report lost, a temporary file left) -- a rerun redoes
    # case1, skips the finished cases without rewriting them and lists case2b again
    os.remove(status["case1"]["output"])
    os.remove(os.path.join(out, "case1_report.json"))
    stale = os.path.join(out, TEMP_PREFIX + "case1_seg.nii.gz-x.nii.gz")
    open(stale, "wb").close()
    before = {c: os.stat(status[c]["output"]).st_mtime_ns for c in ("case0", "case2", "case3")}
    r = _infer(root, str(inputs), out)
    log = r.stdout + r.stderr
    assert r.returncode == 1, log[-4000:]
    summary = json.load(open(os.path.join(out, "summary.json")))
    now = {c["case"]: c["status"] for c in summary["cases"]}
    assert now == {"case0": "skipped", "case1": "ok", "case2": "skipped", "case2b": "failed", "case3": "skipped"}
    assert os.path.isfile(status["case1"]["output"]) and not os.path.exists(stale)
    assert {c: os.stat(status[c]["output"]).st_mtime_ns for c in before} == before
    assert len([json.loads(x) for x in open(os.path.join(out, "manifest.jsonl"))]) == 5
    assert {k: [x["status"] for x in v] for k, v in _rank_rows(out).items()} == {0: ["skipped"] * 3,
                                                                                 1: ["ok", "failed"]}


def test_distributed_refuses_what_it_does_not_shard(tmp_path, capsys):
    """Tile folders, renogram studies and classification crops are not sharded: --distributed says so instead of
    letting every rank process every input."""
    from PIL import Image

    from lesionlab.apps.cli import main

    tiles = tmp_path / "tiles"
    tiles.mkdir()
    Image.new("RGB", (8, 8)).save(tiles / "t.png")
    for bundle, what in (("colon_he_nuclei_imbalance_segmentation", "tile folders"),
                         ("kidney_nm_renogram_parenchyma_segmentation", "renogram studies"),
                         ("kidney_pathology_seresnet_glomerulus_classification", "classify crops")):
        args = ["infer", bundle, "--input", str(tiles), "--output", str(tmp_path / "out"), "--distributed"]
        assert main(args) == 2, bundle
        err = capsys.readouterr().err
        assert "--distributed" in err and what in err, err
    assert not (tmp_path / "out").exists()
