"""DDP training under a real ``torchrun`` (gloo, 2 processes on the CPU) with a bundle's multi_gpu_train.json, and
the pieces of :mod:`lesionlab.pipelines.distributed` on their own."""

from __future__ import annotations

import glob
import json
import math
import os
import re
import socket
import subprocess
import sys
from types import SimpleNamespace

import pytest
import torch
from monai.handlers import StatsHandler

from lesionlab.apps.bundle import BUNDLES_DIR, copy_bundle
from lesionlab.errors import LesionlabError
from lesionlab.pipelines.distributed import WeightSyncCheck, destroy_distributed, rank_handlers, state_digest
from lesionlab.pipelines.handlers import HistoryHandler
from tests.conftest import write_tiny_atlas

BUNDLE = "brain_mri_dunet_stroke_segmentation"
TINY = ["--roi_start", "[4,4]", "--roi_end", "[44,44]", "--spatial_size", "[32,32]",
        "--network_def#features", "[8,16,16,32,32]", "--slices_per_volume", "2", "--val_interval", "1",
        "--progress", "False", "--cache_rate", "0.0"]


def test_state_digest_sees_every_value_and_ignores_the_ddp_wrapper():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    assert state_digest(a) == state_digest(b) == state_digest(a.state_dict())
    with torch.no_grad():
        b.bias[1] += 1e-7
    assert state_digest(a) != state_digest(b)
    wrapped = torch.nn.Module()
    wrapped.module = a  # what DistributedDataParallel looks like from outside
    assert state_digest(wrapped) == state_digest(a)


def test_rank_handlers_drops_writers_off_rank_zero(monkeypatch):
    hs = [StatsHandler(), HistoryHandler(path="h.json"), "other"]
    assert rank_handlers(hs) == hs
    monkeypatch.setenv("RANK", "1")
    assert rank_handlers(hs) == ["other"]


def test_weight_sync_check_single_process(tmp_path):
    engine = SimpleNamespace(state=SimpleNamespace(epoch=1, iteration=3))

    path = tmp_path / "w.json"
    digests = WeightSyncCheck(torch.nn.Linear(2, 2), str(path))(engine)
    assert json.loads(path.read_text())["digests"] == digests and len(digests) == 1
    assert json.loads(path.read_text())["losses"] == [None]  # no output yet
    engine.state.output = [{"loss": torch.tensor(0.25), "pred": None}, {"loss": torch.tensor(0.25)}]  # decollated
    WeightSyncCheck(torch.nn.Linear(2, 2), str(path))(engine)
    assert json.loads(path.read_text())["losses"] == [0.25]


def test_weight_sync_check_raises_on_different_digests(monkeypatch):
    import lesionlab.pipelines.distributed as d

    monkeypatch.setattr(d.dist, "is_initialized", lambda: True)
    monkeypatch.setattr(d.dist, "get_world_size", lambda: 2)
    monkeypatch.setattr(d.dist, "get_rank", lambda: 0)
    monkeypatch.setattr(d.dist, "all_gather_object",
                        lambda out, obj: out.__setitem__(slice(None), [obj, ("x" * 64, 0.5)]))

    engine = SimpleNamespace(state=SimpleNamespace(epoch=1, iteration=3))

    with pytest.raises(LesionlabError, match="differ"):
        WeightSyncCheck(torch.nn.Linear(2, 2))(engine)


TRAINING_BUNDLES = sorted(d for d in os.listdir(BUNDLES_DIR) if os.path.isfile(os.path.join(BUNDLES_DIR, d, "configs",
                                                                                               "train.json")))
DDP_SAMPLERS = ("DistributedSampler", "ignite.distributed.auto.DistributedProxySampler")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_every_training_bundle_has_a_multi_gpu_override():
    assert len(TRAINING_BUNDLES) == 8, TRAINING_BUNDLES
    missing = [b for b in TRAINING_BUNDLES
               if not os.path.isfile(os.path.join(BUNDLES_DIR, b, "configs", "multi_gpu_train.json"))]
    assert missing == []


@pytest.mark.parametrize("name", TRAINING_BUNDLES)
def test_multi_gpu_override_merges_and_resolves(name, monkeypatch):
    """The override of every bundle, merged over its train.json: every reference exists, the model-zoo pieces are
    there (DDP, distributed samplers, rank-0 writers, weight check before the run, process group set up and torn down),
    no step of the single-process run is lost, and the DDP network and samplers resolve in a one-process gloo group
    (a 1 x 1 convolution standing in for the network, a list of 10 items for the datasets, a sequential sampler for
    the stroke bundles' slice samplers)."""
    from monai.bundle import ConfigParser

    cfg = os.path.join(BUNDLES_DIR, name, "configs")
    single = json.load(open(os.path.join(cfg, "train.json")))
    override = json.load(open(os.path.join(cfg, "multi_gpu_train.json")))
    parser = ConfigParser()
    parser.read_config([os.path.join(cfg, "train.json"), os.path.join(cfg, "multi_gpu_train.json")])
    refs = set(re.findall(r"@([A-Za-z_][\w#]*)", json.dumps(override)))
    assert sorted(r for r in refs if r not in parser) == []
    assert set(single["imports"]) <= set(override["imports"])  # a merged list replaces the single-process one
    assert parser["network"]["_target_"] == "torch.nn.parallel.DistributedDataParallel"
    for part in ("train", "validate"):
        sampler = parser[f"{part}#dataloader#sampler"]
        assert parser[sampler[1:]]["_target_"] in DDP_SAMPLERS, (part, sampler)
        assert not parser.get(f"{part}#dataloader#shuffle", False)
    assert "rank_handlers(@train#handlers)" in parser["train#trainer#train_handlers"]
    assert "rank_handlers(@validate#handlers)" in parser["validate#evaluator#val_handlers"]
    run = parser["run"]
    assert run.index("$@weight_sync_check.attach(@train#trainer)") < run.index("$@train#trainer.run()")
    for step in single["run"]:  # kept as is, or behind a rank-0 guard
        assert step in run or f"rank() == 0 and {step[1:]}" in " ".join(run), step
    assert "init_distributed(@dist_backend, @device)" in parser["initialize"][0]
    assert parser["finalize"] == ["$lesionlab.pipelines.distributed.destroy_distributed()"]
    # training overrides (variants, ablations, the binary stage) merge before it without a shared key
    for f in glob.glob(os.path.join(cfg, "*", "*.json")) + glob.glob(os.path.join(cfg, "binary.json")):
        assert set(json.load(open(f))) & set(override) == set(), f

    for k, v in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "1", "MASTER_ADDR": "127.0.0.1",
                 "MASTER_PORT": str(_free_port())}.items():
        monkeypatch.setenv(k, v)
    parser["network_def"] = {"_target_": "torch.nn.Conv2d", "in_channels": 1, "out_channels": 1, "kernel_size": 1}
    parser["train#dataset"] = parser["validate#dataset"] = "$list(range(10))"
    if "sampler" in single["train"] and "num_samples" not in single["train"]["sampler"]:  # the stroke slice samplers
        parser["train#sampler"] = {"_target_": "torch.utils.data.SequentialSampler", "data_source": "@train#dataset"}
    parser["dist_backend"] = "gloo"
    parser.parse(True)
    try:
        parser.get_parsed_content("initialize")
        net = parser.get_parsed_content("network")
        assert isinstance(net, torch.nn.parallel.DistributedDataParallel) and net.device_ids is None  # CPU: no ids
        assert parser.get_parsed_content("device") == torch.device("cpu")
        val = list(parser.get_parsed_content("validate#dataloader#sampler"))
        assert val == list(range(10))  # one rank, not shuffled, not padded
        train = list(parser.get_parsed_content("train#dataloader#sampler"))
        # epoch-based bundles: each of the 10 items once; the iteration-based PSPNet bundle: batch x iterations
        per_epoch = (parser.get_parsed_content("val_interval_iterations") * parser.get_parsed_content("batch_size")
                     if "val_interval_iterations" in parser else 10)
        assert len(train) == per_epoch and set(train) <= set(range(10))
    finally:
        destroy_distributed()


def _torchrun(root: str, data: str, *extra: str) -> subprocess.CompletedProcess:
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "-m", "monai.bundle", "run", "--meta_file", "configs/metadata.json",
           "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
           "--logging_file", "configs/logging.conf", "--dataset_dir", data, "--dist_backend", "gloo", *TINY, *extra]
    return subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)


@pytest.mark.slow
def test_torchrun_two_ranks_train_then_resume(tmp_path):
    """One epoch on 2 gloo ranks, then a resumed second epoch; 65-105 s on 2 cores at load average ~8 (mostly the
    start-up of two torchrun launches)."""
    data = write_tiny_atlas(str(tmp_path / "data"), n=10)  # 8 training volumes (4 per rank), 2 validation
    root = copy_bundle(BUNDLE, str(tmp_path / BUNDLE))
    r = _torchrun(root, data, "--epochs", "1")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    # both ranks ran to the end: every rank took part in the digest gather, rank 0 wrote what it gathered
    sync = json.load(open(os.path.join(root, "eval", "ddp_weights.json")))
    assert sync["world_size"] == 2 and sync["epoch"] == 1
    # the bundle's slice sampler (2 slices x 8 volumes = 16 stacks) shared out over 2 ranks: 8 each, one batch of 16
    assert sync["iteration"] == 1
    assert sync["digests"][0] == sync["digests"][1]
    assert len(sync["losses"]) == 2 and all(math.isfinite(x) for x in sync["losses"])  # each rank's last batch
    final = os.path.join(root, "models", "model.pt")
    assert state_digest(torch.load(final, map_location="cpu", weights_only=True)) == sync["digests"][0]
    history = json.load(open(os.path.join(root, "eval", "history.json")))["epochs"]  # rank 0's mean loss
    assert len(history) == 1 and math.isfinite(history[0]["loss"])
    assert glob.glob(os.path.join(root, "models", "last_checkpoint_*.pt"))
    # resume under torchrun: a second epoch continues from the checkpoint
    r = _torchrun(root, data, "--epochs", "2", "--resume", "True")
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-4000:]
    assert log.count("resumed from") == 2  # both ranks
    sync2 = json.load(open(os.path.join(root, "eval", "ddp_weights.json")))
    assert sync2["epoch"] == 2 and sync2["iteration"] == 2 and sync2["digests"][0] == sync2["digests"][1]
    assert sync2["digests"][0] != sync["digests"][0]


def test_checkpoint_files_are_written_by_rank_zero_only(tmp_path, monkeypatch, caplog):
    """Every rank runs the checkpoint handlers of a distributed trainer; only rank 0 writes or deletes a file, and
    only rank 0 logs that it saved one."""
    import logging

    from ignite.engine import Engine

    import lesionlab.pipelines.resume as resume

    def run_saver(folder):
        engine = Engine(lambda e, b: None)
        resume.AtomicCheckpointSaver(str(folder), {"model": torch.nn.Linear(2, 2)}, save_final=True,
                                     save_interval=1, final_filename="model.pt").attach(engine)
        with caplog.at_level(logging.INFO):
            engine.run([0, 1], max_epochs=2)
        return sorted(os.listdir(folder)) if folder.exists() else []  # rank 1 does not even create it

    monkeypatch.setattr(resume.idist, "get_rank", lambda: 1)
    caplog.clear()
    assert run_saver(tmp_path / "rank1") == [] and "checkpoint" not in caplog.text
    monkeypatch.setattr(resume.idist, "get_rank", lambda: 0)
    caplog.clear()
    assert run_saver(tmp_path / "rank0") == ["model.pt", "model_epoch=1.pt", "model_epoch=2.pt"]
    assert "saved final checkpoint" in caplog.text

    monkeypatch.setattr(resume.idist, "get_rank", lambda: 1)  # the disk saver on its own: no delete either
    tmp_path = tmp_path / "disk"
    tmp_path.mkdir()
    saver = resume._AtomicDiskSaver(str(tmp_path))
    (tmp_path / "old.pt").write_bytes(b"x")
    saver.remove("old.pt")
    saver({"w": torch.ones(2)}, "new.pt")
    assert sorted(os.listdir(tmp_path)) == ["old.pt"]
    monkeypatch.setattr(resume.idist, "get_rank", lambda: 0)
    saver.remove("old.pt")
    saver({"w": torch.ones(2)}, "new.pt")
    assert sorted(os.listdir(tmp_path)) == ["new.pt"]
    assert torch.equal(torch.load(tmp_path / "new.pt", weights_only=True)["w"], torch.ones(2))


@pytest.mark.slow
def test_torchrun_two_ranks_classification_bundle(tmp_path):
    """A bundle with another sampler, loss and metric (SE-ResNet glomerulus classification, ignite's Accuracy reduced
    over the ranks) for one epoch on 2 gloo ranks; per-rank logs kept by torchrun (--redirects 3). ~38 s on 2 cores
    at load average ~8 (synthetic crops and one torchrun launch)."""
    from lesionlab.data.glomeruli import make_glomeruli_datalist
    from lesionlab.data.synthetic.glomeruli_cls import synth_glomeruli_cls

    name = "kidney_pathology_seresnet_glomerulus_classification"
    r = synth_glomeruli_cls(tmp_path / "data", n_slides=8, crops_per_slide=4, size=64, seed=0)
    datalist = os.path.join(r["out_dir"], "datalist.json")
    make_glomeruli_datalist(r["out_dir"], r["labels"], datalist, seed=0)
    n_train = len(json.load(open(datalist))["training"])
    root = copy_bundle(name, str(tmp_path / name))
    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join([repo, os.environ.get("PYTHONPATH", "")]))
    logs = tmp_path / "logs"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--log-dir", str(logs),
           "--redirects", "3", "-m", "monai.bundle", "run", "training", "--meta_file", "configs/metadata.json",
           "--config_file", "['configs/train.json','configs/multi_gpu_train.json']",
           "--logging_file", "configs/logging.conf", "--dataset_dir", r["out_dir"], "--dist_backend", "gloo",
           "--progress", "false", "--epochs", "1", "--batch_size", "4", "--spatial_size", "[64,64]",
           "--network_def#layers", "[1,1,1,1]", "--network_def#channels", "[16,32,64,128]",
           "--network_def#stem_channels", "16"]
    p = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300, env=env)
    out = {int(os.path.basename(os.path.dirname(f))): open(f).read()
           for f in glob.glob(str(logs / "*" / "attempt_0" / "*" / "stdout.log"))}
    assert p.returncode == 0, (p.stderr[-3000:], out)
    sync = json.load(open(os.path.join(root, "eval", "ddp_weights.json")))
    # n_train crops shared out (padded to even) over 2 ranks, batches of 4 on each
    assert sync["world_size"] == 2 and sync["iteration"] == math.ceil(math.ceil(n_train / 2) / 4)
    assert sync["digests"][0] == sync["digests"][1] and all(math.isfinite(x) for x in sync["losses"])
    assert state_digest(torch.load(os.path.join(root, "models", "model.pt"), weights_only=True)) == sync["digests"][0]
    assert sorted(os.listdir(os.path.join(root, "models", "stain_targets"))) == ["HE.png", "PAS.png"]  # rank 0 copied
    assert sorted(out) == [0, 1]
    assert all(f"weights identical on all 2 ranks (sha256 {sync['digests'][0][:12]})" in t for t in out.values())
    assert "Epoch[1] Metrics" in out[0] and "Metrics" not in out[1]  # rank 0 logs, rank 1 computes silently
    assert "saved final checkpoint" in out[0] and "checkpoint" not in out[1]
