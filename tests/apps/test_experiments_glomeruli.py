"""`lesionlab experiments glomeruli --quick` on tiny synthetic tiles: the four Table 4.5 rows train and evaluate, the
table has the protocol header, the paper's columns, p-values against the CE row and the curves plot."""

from __future__ import annotations

import json
import os

import pytest

from lesionlab.apps.cli import main as cli
from lesionlab.data.synthetic import synth_hubmap
from lesionlab.data.tiles import tile_hubmap


@pytest.mark.slow
def test_quick_ablation_table(tmp_path):
    synth_hubmap(tmp_path / "raw", n_slides=2, shape=(1024, 1536), seed=7, n_levels=1)
    datalist = tile_hubmap(tmp_path / "raw", tmp_path / "tiles", tile=512, progress=False)
    rc = cli(["experiments", "glomeruli", "--datalist", datalist, "--workdir", str(tmp_path / "exp"), "--quick",
              "--iterations", "2", "--batch-size", "2"])
    assert rc == 0
    folder = tmp_path / "exp" / "table_4_5"
    table = (folder / "table_4_5.md").read_text()
    assert "Protocol: 2 iterations of batch 2 (thesis: 24,000 of 8)" in table
    for row in ("CE (PSPNet)", "CE+Dice", "CE+CBAM", "CE+Dice+CBAM (CBAM-PSPNet)"):
        assert f"| {row} |" in table
    assert "90.72 / 94.95 / 84.26 / 91.46" in table and "| ref. |" in table
    data = json.load(open(folder / "table_4_5.json"))
    n_val = len(json.load(open(datalist))["validation"])
    assert all(len(r["tile_dice"]) == n_val for r in data["results"].values())
    assert set(data["p_values"]) == {"CE+Dice", "CE+CBAM", "CE+Dice+CBAM (CBAM-PSPNet)"}
    assert os.path.getsize(folder / "table_4_5_curves.png") > 1000
    # the CBAM rows really have CBAM, the others not
    sd_files = {r: folder / r / "models" / "model.pt" for r in ("t45_ce", "t45_ce_dice_cbam")}
    import torch

    assert not any(".cbam." in k for k in torch.load(sd_files["t45_ce"], weights_only=True))
    assert any(".cbam." in k for k in torch.load(sd_files["t45_ce_dice_cbam"], weights_only=True))
