"""The benchmark suite (``lesionlab bench`` / ``bench/run.py``): FLOP counts against hand computation, the quick run's
results structure, the peak-memory probe. No timing is asserted."""

from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn as nn

from lesionlab.apps.benchmark import NETWORKS, PEERS, PeakMemory, conv_flops, count_flops, goals, run
from lesionlab.networks import nets as project_nets


def test_conv_flops_by_hand():
    # 2 x (batch 2 x 8 out x 3 in x 16 x 16 x 3 x 3 MACs) = 2 x 110,592
    assert conv_flops(2, 3, 8, (16, 16), (3, 3)) == 221_184
    assert conv_flops(1, 8, 8, (4, 4, 4), (3, 3, 3), groups=4) == 2 * 8 * 2 * 64 * 27


def test_count_flops_small_conv_network_by_hand():
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
                        nn.Conv2d(8, 2, 1))
    f1 = 2 * 2 * 8 * 3 * 16 * 16 * 9  # 221,184
    f2 = 2 * 2 * 8 * 8 * 8 * 8 * 9  # 147,456 (stride 2: 8 x 8 outputs)
    f3 = 2 * 2 * 2 * 8 * 8 * 8  # 4,096
    assert count_flops(net, (2, 3, 16, 16), train=False) == f1 + f2 + f3 == 372_736
    # backward: weight gradient (same FLOPs as the forward) for every conv, input gradient for all but the first
    # (the input does not require a gradient)
    assert count_flops(net, (2, 3, 16, 16), train=True) == 3 * (f1 + f2 + f3) - f1


def test_every_project_network_is_benchmarked():
    # the quick builds stand for the paper-size rows (same classes; building every paper-size network is slow)
    built = {type(n.quick_build()).__name__ for n in NETWORKS}
    exported = {n for n in project_nets.__all__ if isinstance(getattr(project_nets, n), type)}
    assert exported <= built, f"networks without a benchmark row: {sorted(exported - built)}"
    assert {p.ours for p in PEERS} <= {n.name for n in NETWORKS}


_LINUX_PEAK = pytest.mark.skipif(not os.access("/proc/self/clear_refs", os.W_OK),
                                 reason="per-phase peaks need a writable /proc/self/clear_refs (Linux)")


@_LINUX_PEAK
def test_peak_memory_sees_a_large_allocation():
    with PeakMemory() as mem:
        x = torch.ones(64, 2**20)  # 256 MiB, touched
        del x
    assert mem.mib > 200


@_LINUX_PEAK
def test_peak_memory_not_hidden_by_freed_heap():
    # 100 chunks of 1-5 MiB (300 MiB), freed: glibc keeps such chunks on its heap once its mmap threshold has grown,
    # and a later phase reusing them would show no RSS growth without malloc_trim
    for _ in range(2):
        chunks = [torch.ones(256 * 1024 * (i % 5 + 1)) for i in range(100)]
        del chunks
    with PeakMemory() as mem:
        chunks = [torch.ones(256 * 1024 * (i % 5 + 1)) for i in range(100)]
        del chunks
    assert mem.mib > 250


def test_goals_flags():
    res = {"networks": [{"name": "a", "conv": True, "best_format": "contiguous",
                         "formats": {"contiguous": {"train_peak_ratio": 0.7}}},
                        {"name": "b", "conv": True, "best_format": "contiguous",
                         "formats": {"contiguous": {"train_peak_ratio": 0.2}}},
                        {"name": "vit", "conv": False, "best_format": "contiguous",
                         "formats": {"contiguous": {"train_peak_ratio": 0.1}}}],
           "peers": [{"ours": "a", "peer": "p", "same_architecture": True, "forward_ratio": 0.9, "train_ratio": 1.2},
                     {"ours": "b", "peer": "q", "same_architecture": False, "forward_ratio": 3.0, "train_ratio": 3.0}],
           "end_to_end": {"slice25d": [{"network": "a", "default": True, "outside_share": 0.05},
                                       {"network": "a", "default": False, "outside_share": 0.5}],
                          "sliding_window_3d": {"outside_share": 0.2}}}
    got = [(g["subject"], g["pass"]) for g in goals(res)]
    assert got == [("a", True), ("b", False), ("2.5D a", True), ("3D sliding window UNet3D", False),
                   ("a vs p", False)]


@pytest.mark.slow  # about 40 s on 2 loaded cores (two networks, one peer, the end-to-end rows without the slide)
def test_quick_run_structure(tmp_path):
    out = tmp_path / "results.json"
    res = run(out, quick=True, threads=1, networks=["DUNet", "SEResNet50Improved"], repeats=1, min_seconds=0.0,
              slices=8, whole_slide=False)
    assert json.loads(out.read_text()) == json.loads(json.dumps(res))
    pk = res["peak"]
    assert pk["flops"] == conv_flops(*pk["input_shape"][:2], pk["input_shape"][1], pk["input_shape"][2:], (3, 3))
    assert pk["best_format"] in ("contiguous", "channels_last") and pk["gflops"] > 0
    assert res["reference_gflops"] == max(pk["gflops"], res["peak_end"]["gflops"])
    assert [r["name"] for r in res["networks"]] == ["DUNet", "SEResNet50Improved"]
    for r in res["networks"]:
        assert set(r["formats"]) == {"contiguous", "channels_last"}
        assert r["flops_train"] > 2 * r["flops_forward"] > 0
        for f in r["formats"].values():
            assert f["train_s_per_sample"] > 0 and f["forward_peak_mib"] >= 0
            assert f["train_gflops"] == pytest.approx(r["flops_train"] / (f["train_s_per_sample"] * r["batch"]) / 1e9)
            assert f["train_peak_ratio"] == pytest.approx(f["train_gflops"] / res["reference_gflops"])
    assert [p["ours"] for p in res["peers"]] == ["SEResNet50Improved", "DUNet"]
    assert "train_ratio" in res["peers"][0] and res["peers"][0]["same_architecture"]
    e2e = res["end_to_end"]
    assert [r["network"] for r in e2e["slice25d"]] == ["DUNet"] * 4
    assert all(0 <= r["outside_share"] < 1 and r["network_s"] <= r["seconds"] for r in e2e["slice25d"])
    assert "sliding_window_3d" not in e2e and "wsi" not in e2e
    for k in ("Dataset", "CacheDataset", "PersistentDataset"):
        assert e2e["data_loader"][k]["steady_samples_per_s"] > 0
    subjects = [g["subject"] for g in res["goals"]]
    assert subjects == ["DUNet", "SEResNet50Improved", "2.5D DUNet", "SEResNet50Improved vs MONAI SEResNet50"]
    table = (tmp_path / "results.md").read_text()
    assert "| DUNet | 2x4x32x32 |" in table and "| goal |" in table
    assert sorted(os.path.basename(p) for p in res["plots"]) == [
        "results_data_loader.png", "results_peak_ratio.png", "results_volume_inference.png"]
    assert all(os.path.getsize(p) > 1000 for p in res["plots"])
