"""`lesionlab experiments stroke`: the Wilcoxon p-value, the markdown table (including "not run" rows), the wiring of
every table row to existing override files, the CLI, and Table 3.1 end to end on the tiny data set."""

from __future__ import annotations

import json
import math
import os

import pytest

from lesionlab.apps import experiments
from lesionlab.apps.bundle import bundle_path
from lesionlab.apps.experiments import TABLES, Row, run_table, wilcoxon_p

# the tiny fixture's 48 x 48 slices, uncropped, resized to 96 x 96 (AGMR-Net / TSRL-Net need multiples of 96)
TINY_SIZES = {"roi_start": [0, 0], "roi_end": [48, 48], "spatial_size": [96, 96]}


def test_wilcoxon_p_matches_scipy_and_the_exact_value():
    from scipy.stats import wilcoxon

    a = [0.55, 0.60, 0.70, 0.58, 0.63, 0.72]
    b = [0.50, 0.62, 0.60, 0.50, 0.60, 0.60]
    # |a - b| = 0.05, 0.02, 0.10, 0.08, 0.03, 0.12: ranks 3, 1, 5, 4, 2, 6; only rank 1 is negative, so W = 1 and the
    # exact two-sided p = 2 * #{subsets of 1..6 with rank sum <= 1} / 2^6 = 2 * 2 / 64
    assert wilcoxon_p(a, b) == pytest.approx(4 / 64)
    assert wilcoxon_p(a, b) == pytest.approx(wilcoxon(a, b).pvalue)
    assert wilcoxon_p(b, a) == pytest.approx(wilcoxon(a, b).pvalue)  # two-sided: symmetric


def test_wilcoxon_p_undefined_cases():
    assert math.isnan(wilcoxon_p([0.5], [0.4]))  # one case
    assert math.isnan(wilcoxon_p([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]))  # no difference
    with pytest.raises(ValueError, match="differ in length"):
        wilcoxon_p([0.1, 0.2], [0.1])


def _fake_result(dsc: list[float], params: int) -> dict:
    metric = {"mean": sum(dsc) / len(dsc), "std": 0.1}
    summary = {k: dict(metric) for k in ("dsc", "recall", "precision", "jaccard", "asd_mm", "hd95_mm")}
    summary["dsc_global"] = 0.7
    return {"summary": summary, "cases": [{"case": f"c{i}", "dsc": d} for i, d in enumerate(dsc)],
            "params": params, "flops_torch": 3.2e10}


def test_markdown_of_table_3_2_lists_rows_that_were_not_run():
    spec = TABLES["3.2"]
    results = {"D-UNet": _fake_result([0.5, 0.6], 9_503_779), "AGMR-Net": _fake_result([0.6, 0.7], 23_014_801)}
    text = experiments._markdown("3.2", spec, results, {"D-UNet": 0.0625})
    lines = {line.split("|")[1].strip(): line for line in text.splitlines() if line.startswith("| ")}
    # no implementation in the project: always "not run", with the thesis's numbers still shown
    for name in ("SegNet", "PSPNet", "DeepLab v3", "ACSNet", "X-Net", "CLCI-Net"):
        assert "not run" in lines[name], lines[name]
        assert lines[name].rstrip().endswith(" |") and " / " in lines[name]
    assert "not run" in lines["2D U-Net"]  # runnable, but not in these results
    assert "0.451 / 0.662" in lines["SegNet"]  # thesis DSC / DSC(G)
    dunet = lines["D-UNet"]
    assert "not run" not in dunet and "0.550 ± 0.100" in dunet and "0.0625" in dunet and "9,503,779" in dunet
    assert "32.00 G" in dunet
    assert "AGMR-Net (ref.)" in lines and "| ref. |" in lines["AGMR-Net (ref.)"]
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    for col in ("DSC(G)", "p (DSC vs ref.)", "params", "FLOPs (torch)", "thesis DSC / DSC(G)"):
        assert col in header
    assert len(lines) == len(spec["rows"]) + 1  # every row of the table plus the header


def test_every_row_points_to_existing_override_files():
    for table_id, spec in TABLES.items():
        assert sum(r.reference for r in spec["rows"]) <= 1, table_id
        for row in spec["rows"]:
            if row.bundle is None:
                continue
            cfg = os.path.join(bundle_path(row.bundle), "configs")
            for override in row.overrides:
                assert os.path.isfile(os.path.join(cfg, override)), (table_id, row.name, override)


def test_cli_dispatches_to_run_table(monkeypatch, tmp_path, capsys):
    from lesionlab.apps import cli

    calls = []

    def fake_run_table(table_id, datalist, workdir, epochs=150, quick=False, rows=None, extra=None):
        calls.append((table_id, datalist, workdir, epochs, quick, extra))
        table = tmp_path / "table.md"
        table.write_text("## fake table\n")
        return {"table": str(table)}

    monkeypatch.setattr(experiments, "run_table", fake_run_table)
    rc = cli.main(["experiments", "stroke", "--table", "3.1", "--datalist", "d.json", "--epochs", "1", "--quick",
                   "--workdir", str(tmp_path), "--slices-per-volume", "2"])
    assert rc == 0 and "fake table" in capsys.readouterr().out
    assert calls == [("3.1", "d.json", str(tmp_path), 1, True, {"slices_per_volume": 2})]


@pytest.fixture
def two_case_datalist(tiny_atlas, tmp_path) -> str:
    """The tiny set with two validation cases (p-values need paired samples), absolute paths."""
    dl = json.load(open(os.path.join(tiny_atlas, "datalist.json")))
    train, val = dl["training"][:-1], dl["training"][-1:] + dl["validation"]

    def absolute(item: dict) -> dict:
        labels = item["label"] if isinstance(item["label"], list) else [item["label"]]
        return {**item, "image": os.path.join(tiny_atlas, item["image"]),
                "label": [os.path.join(tiny_atlas, x) for x in labels]}

    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"training": [absolute(i) for i in train], "validation": [absolute(i) for i in val]}))
    return str(path)


@pytest.mark.slow
def test_table_3_1_end_to_end_on_tiny_data(two_case_datalist, tmp_path):
    paths = run_table("3.1", two_case_datalist, str(tmp_path / "exp"), epochs=1, quick=True,
                      extra={**TINY_SIZES, "slices_per_volume": 1})
    rows: list[Row] = TABLES["3.1"]["rows"]
    text = open(paths["table"]).read()
    assert "**Our runs** -- data: 4 training / 2 held-out volumes" in text and "**Thesis** --" in text
    assert "- all rows: 1 epochs x 1 = 1 optimiser updates" in text  # 4 volumes x 1 slice, one batch of 16
    lines = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| method")]
    assert len(lines) == 6 and not any("not run" in line for line in lines)
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    assert "p (DSC vs ref.)" in header and "params" in header and "FLOPs (torch)" in header
    for line in lines:
        cells = [c.strip() for c in line.strip("|").split("|")]
        float(cells[1].split(" ± ")[0])  # DSC mean is a number
        assert cells[9].replace(",", "").isdigit()  # params
        assert cells[10].endswith(" G")  # FLOPs
    with open(paths["boxplot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    report = json.load(open(paths["json"]))
    assert set(report["results"]) == {r.name for r in rows}
    # parameter counts at paper width, whatever the quick width trained
    assert [report["results"][r.name]["params"] for r in rows] == [
        9_503_779, 9_510_529, 9_514_451, 22_997_379, 9_521_201, 23_014_801]
    ref = next(r.name for r in rows if r.reference)
    ref_dsc = [c["dsc"] for c in report["results"][ref]["cases"]]
    for r in rows:
        res = report["results"][r.name]
        assert res["summary"]["n_cases"] == 2 and len(res["cases"]) == 2
        if r.name != ref:  # the p-value column is the Wilcoxon test of the per-case DSCs against the reference row
            expected = wilcoxon_p([c["dsc"] for c in res["cases"]], ref_dsc)
            got = report["p_values"][r.name]
            assert (math.isnan(expected) and (got is None or math.isnan(got))) or got == pytest.approx(expected)


def test_table_header_states_our_protocol_next_to_the_thesis():
    spec = TABLES["3.6"]
    proto = {"text": "8 of 189 slices per volume and epoch (0.5 on lesion slices), shuffled, batch 16", "epochs": 150,
             "updates": 13_800, "updates_per_epoch": 92, "model_selection": "final"}
    results = {r.name: {**_fake_result([0.5, 0.6], 9_503_779), "protocol": proto} for r in spec["rows"]}
    data = {"datalist": "/data/atlas_r11/datalist.json", "n_train": 183, "n_test": 46, "slices_per_volume": 189,
            "synthetic": False}
    text = experiments._markdown("3.6", spec, results, {}, data)
    head = text.split("| method |")[0]
    assert "183 training / 46 held-out volumes of `atlas_r11`" in head and "189 slices per volume" in head
    # one protocol shared by all rows: stated once, with the share of the thesis's updates (13,800 / 324,300)
    assert "- all rows: 150 epochs x 92 = 13800 optimiser updates = 4.26% of the thesis's updates" in head
    assert "sampling: 8 of 189 slices per volume" in head and "weights: final epoch" in head
    assert "**Thesis** -- 150 epochs x 2,162 = 324,300 optimiser updates" in head
    # rows with different protocols are listed per group
    results["D-UNet (baseline)"] = {**results["D-UNet (baseline)"], "protocol": {**proto, "updates": 324_300,
                                                                                 "updates_per_epoch": 2_162}}
    head = experiments._markdown("3.6", spec, results, {}, {**data, "synthetic": True}).split("| method |")[0]
    assert "- D-UNet (baseline): 150 epochs x 2162 = 324300 optimiser updates = 100.00%" in head
    assert "synthetic data set (not ATLAS)" in head


def test_protocol_and_data_description_from_a_run(tmp_path):
    import nibabel as nib
    import numpy as np
    import torch

    (tmp_path / "README.txt").write_text("SYNTHETIC DATA - NOT FOR CLINICAL USE\n")
    nib.save(nib.Nifti1Image(np.zeros((4, 4, 7), np.int16), np.eye(4)), str(tmp_path / "a.nii.gz"))
    dl = tmp_path / "datalist.json"
    dl.write_text(json.dumps({"training": [{"image": "a.nii.gz"}] * 3, "validation": [{"image": "a.nii.gz"}]}))
    data = experiments._data_description(str(dl))
    assert data == {"datalist": str(dl), "n_train": 3, "n_test": 1, "slices_per_volume": 7, "synthetic": True}
    models = tmp_path / "run" / "models"
    models.mkdir(parents=True)
    torch.save({"trainer": {"epoch": 2, "iteration": 6, "epoch_length": 3}}, str(models / "last_checkpoint_epoch=2.pt"))
    trainer = experiments._trainer_state(str(tmp_path / "run"))
    assert trainer == {"epoch": 2, "iteration": 6, "epoch_length": 3}
    p = experiments._protocol({"sampling": "all", "batch_size": 16, "epochs": 2}, trainer, data)
    assert p["updates"] == 6 and p["updates_per_epoch"] == 3 and p["epochs"] == 2
    assert p["text"].startswith("every slice of every training volume once per epoch")
