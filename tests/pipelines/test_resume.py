"""Resumable training: SIGKILL in the middle of an epoch, resume, and get bitwise the weights of an uninterrupted run.

Also unit checks of the pieces: random-state round trip through ``torch.load(weights_only=True)``, checkpoint
ordering, and the atomic saver's "save first, delete the old file after" order.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

from lesionlab.apps.bundle import copy_bundle
from lesionlab.pipelines.resume import AtomicCheckpointSaver, RNGStateHandler, epoch_seed, find_last_checkpoint

BUNDLE = "brain_mri_dunet_stroke_segmentation"
TINY = {"roi_start": [4, 4], "roi_end": [44, 44], "spatial_size": [32, 32],
        "network_def#features": [8, 16, 16, 32, 32], "num_workers": 0, "cache_rate": 1, "progress": False}
# 5 training volumes x 2 slices, batches of 4 slices -> 3 iterations per epoch; 3 epochs = 9 iterations; a resume
# checkpoint after every iteration (iteration files mid-epoch, epoch files at epoch ends)
RUN = {"epochs": 3, "val_interval": 1, "slices_per_volume": 2, "batch_size": 4, "checkpoint_interval_iterations": 1,
       **TINY}
PAUSE_AT = 5  # second iteration of epoch 2: the newest checkpoint at the kill is iteration 4 (mid-epoch)

HOOK = '''
import os, time
from ignite.engine import Events


class PauseAt:
    """Test hook: at ITERATION_COMPLETED(iteration) (before the resume checkpoint of that iteration) write a marker
    file and hang, so the test can SIGKILL the process at a known point in the middle of an epoch."""

    def __init__(self, iteration, marker):
        self.iteration, self.marker = iteration, marker

    def attach(self, engine):
        engine.add_event_handler(Events.ITERATION_COMPLETED(once=self.iteration), self)

    def __call__(self, engine):
        open(self.marker, "w").close()
        time.sleep(600)
'''


def _cmd(configs: list[str], **extra) -> list[str]:
    args = {**RUN, **extra}
    cli = [a for k, v in args.items() for a in (f"--{k}", json.dumps(v).replace(" ", ""))]
    return [sys.executable, "-m", "monai.bundle", "run", "training", "--meta_file", "configs/metadata.json",
            "--config_file", repr(configs), "--logging_file", "configs/logging.conf", *cli]


def _env(extra_path: str | None = None) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    if extra_path:
        env["PYTHONPATH"] = os.pathsep.join([extra_path, env.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return env


def _weights(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_matches_uninterrupted_run_bitwise(tiny_atlas, tmp_path):
    ref = copy_bundle(BUNDLE, str(tmp_path / "reference" / BUNDLE))
    run = copy_bundle(BUNDLE, str(tmp_path / "killed" / BUNDLE))
    hooks = tmp_path / "hooks"
    hooks.mkdir()
    (hooks / "resume_test_hooks.py").write_text(HOOK)
    marker = str(tmp_path / "paused")
    pause = tmp_path / "pause.json"
    pause.write_text(json.dumps({"+train#handlers": [
        {"_target_": "resume_test_hooks.PauseAt", "iteration": PAUSE_AT, "marker": marker}]}))

    # the uninterrupted reference and the run to be killed, side by side
    p_ref = subprocess.Popen(_cmd(["configs/train.json"], dataset_dir=tiny_atlas), cwd=ref, env=_env(),
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    p_run = subprocess.Popen(_cmd(["configs/train.json", str(pause)], dataset_dir=tiny_atlas), cwd=run,
                             env=_env(str(hooks)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 600
        while not os.path.exists(marker):
            assert p_run.poll() is None, "the run to be killed ended before reaching the kill point"
            assert time.time() < deadline, "the run to be killed never reached the kill point"
            time.sleep(0.2)
        os.kill(p_run.pid, signal.SIGKILL)
        assert p_run.wait(timeout=60) == -signal.SIGKILL
    finally:
        if p_run.poll() is None:
            p_run.kill()
    models = os.path.join(run, "models")
    assert not os.path.exists(os.path.join(models, "model.pt"))  # killed before the end
    assert [os.path.basename(p) for p in find_last_checkpoint(models, epoch_length=3)][0] == \
        f"last_checkpoint_iteration={PAUSE_AT - 1}.pt"

    r = subprocess.run(_cmd(["configs/train.json"], dataset_dir=tiny_atlas, resume=True), cwd=run, env=_env(),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    out_ref, _ = p_ref.communicate(timeout=600)
    assert p_ref.returncode == 0, out_ref[-3000:]

    # continued from the saved iteration: epoch 1 done, iteration 4 = first batch of epoch 2 consumed
    assert f"last_checkpoint_iteration={PAUSE_AT - 1}.pt: epoch 1, iteration {PAUSE_AT - 1} " \
           "(epoch 2 continues after its first 1 batches)" in r.stdout
    assert "replayed batches did not reproduce" not in r.stdout

    # bitwise the same final (and best) weights as the uninterrupted run
    for name in ("model.pt", "model_best.pt"):
        a, b = _weights(os.path.join(ref, "models", name)), _weights(os.path.join(models, name))
        assert a.keys() == b.keys()
        different = [k for k in a if not torch.equal(a[k], b[k])]
        assert not different, f"{name}: {len(different)} tensors differ, e.g. {different[:3]}"

    # history: every epoch present; validation identical; epoch losses identical except the interrupted epoch
    # (its mean loss only covers the iterations run after the resume)
    h_ref = json.load(open(os.path.join(ref, "eval", "history.json")))["epochs"]
    h_run = json.load(open(os.path.join(run, "eval", "history.json")))["epochs"]
    assert [h["epoch"] for h in h_run] == [1, 2, 3]
    assert [h["val_mean_dice"] for h in h_run] == [h["val_mean_dice"] for h in h_ref]
    assert h_run[0]["loss"] == h_ref[0]["loss"] and h_run[2]["loss"] == h_ref[2]["loss"]

    # the stale resume files of the killed run were retired; no temporary files are left
    left = sorted(os.listdir(models))
    assert left == ["last_checkpoint_epoch=3.pt", "last_checkpoint_iteration=8.pt", "model.pt", "model_best.pt",
                    "selection.json"]


def test_rng_state_round_trip_weights_only(tmp_path):
    from monai.data import Dataset
    from monai.transforms import Compose, RandGaussianNoised

    ds = Dataset([{"x": np.zeros((1, 4, 4), np.float32)}], transform=Compose([RandGaussianNoised("x", prob=1.0)]))
    h = RNGStateHandler(seed=3, dataset=ds)
    random.seed(1), np.random.seed(1), torch.manual_seed(1)
    ds.transform.set_random_state(7)
    path = str(tmp_path / "rng.pt")
    torch.save({"rng": h.state_dict()}, path)
    expected = (random.random(), np.random.rand(), torch.rand(1), ds[0]["x"])
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ds.transform.set_random_state(9)
    h.load_state_dict(torch.load(path, weights_only=True)["rng"])
    got = (random.random(), np.random.rand(), torch.rand(1), ds[0]["x"])
    assert got[0] == expected[0] and got[1] == expected[1] and torch.equal(got[2], expected[2])
    assert torch.equal(torch.as_tensor(got[3]), torch.as_tensor(expected[3]))
    assert epoch_seed(0, 1) == epoch_seed(0, 1) != epoch_seed(0, 2)


def test_find_last_checkpoint_order(tmp_path):
    for name in ("last_checkpoint_epoch=2.pt", "last_checkpoint_iteration=7.pt", "last_checkpoint_iteration=5.pt",
                 ".tmp-last_checkpoint_iteration=9.pt-abc", "model.pt"):
        (tmp_path / name).write_bytes(b"x")
    names = [os.path.basename(p) for p in find_last_checkpoint(str(tmp_path), epoch_length=3)]
    assert names == ["last_checkpoint_iteration=7.pt", "last_checkpoint_epoch=2.pt", "last_checkpoint_iteration=5.pt"]
    # an epoch file wins a tie with the iteration file of the same step (it is written after the epoch's handlers)
    (tmp_path / "last_checkpoint_epoch=3.pt").write_bytes(b"x")
    (tmp_path / "last_checkpoint_iteration=9.pt").write_bytes(b"x")
    assert os.path.basename(find_last_checkpoint(str(tmp_path), epoch_length=3)[0]) == "last_checkpoint_epoch=3.pt"


def test_atomic_saver_writes_new_file_before_removing_old(tmp_path, monkeypatch):
    from ignite.engine import Engine

    net = torch.nn.Linear(2, 1)
    engine = Engine(lambda e, b: None)
    saver = AtomicCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net, "engine": engine},
                                  file_prefix="last", save_interval=1, n_saved=1, epoch_level=False,
                                  skip_epoch_ends=True)
    saver.attach(engine)
    seen, real_save = [], torch.save

    def spy(obj, f, *args, **kwargs):
        assert os.path.basename(str(f)).startswith(".tmp-")  # written under a temporary name
        seen.append(sorted(n for n in os.listdir(tmp_path) if not n.startswith(".tmp-")))
        real_save(obj, f, *args, **kwargs)

    monkeypatch.setattr(torch, "save", spy)
    engine.run([0, 1, 2], max_epochs=2)
    # iterations 3 and 6 end an epoch: skipped; while a new file is written the previous one is still there
    assert seen == [[], ["last_checkpoint_iteration=1.pt"], ["last_checkpoint_iteration=2.pt"],
                    ["last_checkpoint_iteration=4.pt"]]
    assert sorted(os.listdir(tmp_path)) == ["last_checkpoint_iteration=5.pt"]
    ckpt = torch.load(tmp_path / "last_checkpoint_iteration=5.pt", weights_only=True)
    assert ckpt["engine"]["iteration"] == 5 and torch.equal(ckpt["model"]["weight"], net.weight)


class _KilledError(Exception):
    pass


def _toy_run(ckpt_dir, resume: bool, stop_at: int | None = None) -> tuple[list, dict]:
    """A tiny ignite trainer with every source of randomness: shuffled MONAI DataLoader, a random transform and
    dropout. ``stop_at`` aborts the run when that iteration starts (its checkpoint is the one before)."""
    from ignite.engine import Engine, Events
    from monai.data import DataLoader, Dataset
    from monai.transforms import Compose, RandGaussianNoised

    from lesionlab.pipelines.resume import ResumeHandler

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    opt = torch.optim.SGD(net.parameters(), lr=0.01)
    data = [{"x": np.full(4, i / 10, np.float32)} for i in range(10)]
    ds = Dataset(data, transform=Compose([RandGaussianNoised("x", prob=1.0)]))
    loader = DataLoader(ds, batch_size=3, shuffle=True, num_workers=0)  # 4 iterations per epoch

    def step(engine, batch):
        opt.zero_grad()
        loss = net(batch["x"]).pow(2).mean()
        loss.backward()
        opt.step()
        return loss.item()

    trainer = Engine(step)
    rng = RNGStateHandler(seed=0, dataset=ds)
    objects = {"model": net, "optimizer": opt, "trainer": trainer, "rng": rng}
    rng.attach(trainer)
    ResumeHandler(str(ckpt_dir), objects, enabled=resume).attach(trainer)
    for epoch_level in (True, False):
        AtomicCheckpointSaver(save_dir=str(ckpt_dir), save_dict=objects, file_prefix="last", save_interval=1,
                              n_saved=1, epoch_level=epoch_level, skip_epoch_ends=True).attach(trainer)
    losses: list = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: losses.append(e.state.output))
    if stop_at:
        def kill(engine):
            raise _KilledError

        trainer.add_event_handler(Events.ITERATION_STARTED(once=stop_at), kill)
    try:
        trainer.run(loader, max_epochs=3)
    except _KilledError:
        pass
    return losses, {k: v.clone() for k, v in net.state_dict().items()}


def test_mid_epoch_resume_in_process_is_exact(tmp_path):
    ref_losses, ref_w = _toy_run(tmp_path / "ref", resume=False)
    part, _ = _toy_run(tmp_path / "run", resume=False, stop_at=7)  # newest checkpoint: iteration 6, mid epoch 2
    assert len(part) == 6
    assert os.path.basename(find_last_checkpoint(str(tmp_path / "run"), epoch_length=4)[0]) == \
        "last_checkpoint_iteration=6.pt"
    rest, w = _toy_run(tmp_path / "run", resume=True)
    assert part + rest == ref_losses  # every loss, bit for bit
    assert all(torch.equal(w[k], ref_w[k]) for k in w)
    # the files of the interrupted run were retired once newer ones existed
    assert sorted(os.listdir(tmp_path / "run")) == ["last_checkpoint_epoch=3.pt", "last_checkpoint_iteration=11.pt"]
    # a run that does not resume starts over and removes the previous run's resume files first
    _toy_run(tmp_path / "run", resume=False, stop_at=2)
    assert sorted(os.listdir(tmp_path / "run")) == ["last_checkpoint_iteration=1.pt"]


def test_resume_without_checkpoint_starts_from_scratch(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="lesionlab.pipelines.resume"):
        losses, _ = _toy_run(tmp_path, resume=True)
    assert len(losses) == 12 and "training starts from scratch" in caplog.text
