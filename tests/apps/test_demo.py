"""``lesionlab demo``: the three-way split (train / model selection / held-out test) and the command line."""

from __future__ import annotations

import inspect

import pytest

from lesionlab.apps import demo

run_demo_function = demo.run_demo


def test_three_way_split_keeps_the_test_subjects_out_of_model_selection():
    split = {"training": [{"subject": f"t{i}"} for i in range(10)],
             "validation": [{"subject": "h0"}, {"subject": "h1"}]}
    out = demo.three_way_split(split, 2)
    assert [d["subject"] for d in out["training"]] == [f"t{i}" for i in range(8)]
    assert [d["subject"] for d in out["validation"]] == ["t8", "t9"]  # chooses the epoch
    assert [d["subject"] for d in out["test"]] == ["h0", "h1"]  # reported, never used for a choice
    with pytest.raises(ValueError, match="synthesise more subjects"):
        demo.three_way_split({"training": [{"subject": "a"}, {"subject": "b"}], "validation": []}, 2)


def test_demo_command_line(monkeypatch):
    from lesionlab.apps import cli

    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda *a, **k: calls.append((a, k)))
    assert cli.main(["demo", "--workdir", "w", "--seed", "2", "--sampling", "all", "--width", "half"]) == 0
    (args, kwargs), = calls
    assert args == ("w",) and kwargs["seed"] == 2 and kwargs["sampling"] == "all" and kwargs["width"] == "half"
    assert kwargs["epochs"] == 20 and kwargs["spatial_size"] == 96 and kwargs["val_interval"] == 2
    assert kwargs["learning_rate"] == 3e-3 and kwargs["slices_per_volume"] == 24
    # the command line's defaults are run_demo's (the README's "Demo settings" state them once)
    signature = inspect.signature(run_demo_function)
    for name, value in kwargs.items():
        if name not in ("seed", "sampling", "width"):
            assert signature.parameters[name].default == value, name
    calls.clear()
    cli.main(["demo", "--full-width"])
    assert calls[0][1]["width"] == "full"


def test_demo_rejects_bad_settings(tmp_path):
    with pytest.raises(ValueError, match="width must be one of"):
        demo.run_demo(str(tmp_path), width="eighth")
    with pytest.raises(ValueError, match="multiple of 16"):
        demo.run_demo(str(tmp_path), spatial_size=100)


def test_configure_bundle_keeps_configs_and_metadata_consistent(tmp_path):
    import json

    from lesionlab.apps.bundle import copy_bundle

    root = copy_bundle(demo.DEMO_BUNDLE, str(tmp_path / "b"))
    demo.configure_bundle(root, demo.WIDTHS["quarter"], 96)
    for name in ("train", "inference"):
        with open(tmp_path / "b" / "configs" / f"{name}.json") as f:
            cfg = json.load(f)
        assert cfg["network_def"]["features"] == [8, 16, 32, 64, 128] and cfg["spatial_size"] == [96, 96], name
    with open(tmp_path / "b" / "configs" / "metadata.json") as f:
        fmt = json.load(f)["network_data_format"]
    assert fmt["inputs"]["image"]["spatial_shape"] == [96, 96] and fmt["outputs"]["pred"]["spatial_shape"] == [96, 96]
    assert fmt["inputs"]["image"]["num_channels"] == 4  # the rest of the metadata is untouched
