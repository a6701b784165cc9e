"""``lesionlab experiments renogram``: row sizes and the table layout (no training here; the bundle tests train)."""

from __future__ import annotations

import os

import pytest

from lesionlab.apps.renogram import TABLE, _markdown, _size_overrides, is_renogram_bundle
from lesionlab.errors import LesionlabError


def _row(name):
    return next(r for r in TABLE["rows"] if r.name == name)


def test_size_overrides_keep_the_paper_grid():
    assert _size_overrides(_row("Our (3x3 patches)"), 96)["network_def#patch_size"] == 32  # 3 x 3 tokens
    assert _size_overrides(_row("Our (16-pixel patches)"), 96)["network_def#patch_size"] == 16
    assert _size_overrides(_row("U-Net"), 96) == {"spatial_size": [96, 96]}  # no Transformer ids for baselines
    with pytest.raises(LesionlabError):
        _size_overrides(_row("Our (16-pixel patches)"), 40)


def test_table_has_paper_columns_protocol_and_p_values():
    cases = [{"case": f"s{i}", "dsc": d, "precision": 0.9, "recall": 0.8, "accuracy": 0.97, "jaccard": 0.7}
             for i, d in enumerate((0.8, 0.9))]
    res = {"params": 1234, "cases": cases, "summary": {"dsc_global": 0.85}}
    text = _markdown({"Our (3x3 patches)": res, "U-Net": res}, {"U-Net": 0.5}, 25, True, 30, 10)
    assert "Protocol:" in text and "30 training / 10 test images" in text and "at most 25 epochs" in text
    assert "| Our (3x3 patches) | 0.8500 ± 0.071 | 0.9000 | 0.8000 | 0.9700 | 0.7000 | 0.8500 | ref. | 1,234 |" in text
    assert "0.95066 / 0.95685 / 0.95592" in text  # the paper's Table 2 row
    header = next(line for line in text.splitlines() if line.startswith("| method"))
    for line in text.splitlines():
        if line.startswith("| ") and "---" not in line:
            assert line.count("|") == header.count("|"), line


def test_renogram_bundle_is_recognised():
    assert is_renogram_bundle("kidney_nm_renogram_parenchyma_segmentation")
    assert not is_renogram_bundle("brain_mri_dunet_stroke_segmentation")


def test_renogram_bundle_is_recognised_in_a_zip_archive(tmp_path):
    """An exported ``.zip`` (one top-level folder, or configs/ at the top) is dispatched to the renogram path."""
    from lesionlab.apps.bundle import bundle_path
    from lesionlab.apps.deploy.archive import write_zip

    for name, expected in (("kidney_nm_renogram_parenchyma_segmentation", True),
                           ("brain_mri_dunet_stroke_segmentation", False)):
        nested, flat = str(tmp_path / f"{name}.zip"), str(tmp_path / f"{name}_flat.zip")
        write_zip(os.path.join(bundle_path(name), "configs"), nested, f"{name}/configs")
        write_zip(os.path.join(bundle_path(name), "configs"), flat, "configs")
        assert is_renogram_bundle(nested) is expected and is_renogram_bundle(flat) is expected
    (tmp_path / "not_a.zip").write_bytes(b"PK\x03\x04 broken")
    assert not is_renogram_bundle(str(tmp_path / "not_a.zip"))


def _row_network(row):
    """The row's network as the table builds it (bundle's inference.json + the row's variant), on the meta device."""
    import torch
    from monai.bundle import ConfigParser

    from lesionlab.apps.bundle import bundle_path
    from lesionlab.apps.experiments import _configs

    root = bundle_path(row.bundle)
    parser = ConfigParser()
    parser.read_config(_configs(root, row, "inference"))
    parser["bundle_root"] = root
    with torch.device("meta"):  # no memory for 139 M parameters; counts only
        return parser.get_parsed_content("network_def"), parser


def test_every_row_runs_and_counts_its_parameters_at_bundle_widths():
    """Every row has a bundle (the DeepLabV3+ baseline is never skipped); parameter counts at the bundle's widths."""
    from lesionlab.pipelines.complexity import count_parameters

    expected = {"FCN": 134_290_253, "U-Net": 25_981_662, "SegNet": 24_943_361, "Deeplab-v3+": 59_338_913,
                "Our (3x3 patches)": 139_120_513, "Our (16-pixel patches)": 102_397_057,
                "Our* (flip augmentation)": 139_120_513}
    assert [r.name for r in TABLE["rows"]] == list(expected) and all(r.bundle for r in TABLE["rows"])
    for row in TABLE["rows"]:
        assert count_parameters(_row_network(row)[0]) == expected[row.name], row.name


def test_patch_presets_differ_by_projection_and_position_embedding_by_hand():
    """Preset A (3 x 3 grid) minus preset B (16-pixel patches), from the bundle configs' own values: the patch
    projection (a linear map of the flattened patch, + bias) and the learned position embedding (one vector per
    token); everything else (12 layers, decoder) is shared."""
    from lesionlab.pipelines.complexity import count_parameters

    (a, pa), (b, pb) = _row_network(_row("Our (3x3 patches)")), _row_network(_row("Our (16-pixel patches)"))
    net_a, net_b = pa["network_def"], pb["network_def"]
    c, size, in_ch = net_a["hidden_size"], net_a["img_size"][0], net_a["in_channels"]
    patch_a, patch_b = net_a["patch_size"], net_b["patch_size"]
    assert (c, size, in_ch, patch_a, patch_b) == (768, 384, 3, 128, 16)
    tokens_a, tokens_b = (size // patch_a) ** 2, (size // patch_b) ** 2  # 9 and 576
    projection = (in_ch * patch_a**2 * c + c) - (in_ch * patch_b**2 * c + c)  # 37,749,504 - 590,592
    positions = (tokens_a - tokens_b) * c  # 6,912 - 442,368
    assert projection + positions == 36_723_456
    assert count_parameters(a) - count_parameters(b) == projection + positions
    assert count_parameters(a) == 139_120_513 and count_parameters(b) == 102_397_057
