"""The two 2.5D training protocols: every slice once per epoch (the thesis) and the sampled fast mode, batched by
slices; model selection; the protocol numbers the experiments tables print."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from monai.data import DataLoader

from lesionlab.pipelines.handlers import ModelSelectionHandler
from lesionlab.pipelines.slices import Slice25DDataset, Slice25DSampler, describe_protocol
from lesionlab.transforms import NeighbourSliceStack


def _volumes(depths=(189, 189), lesion_slices=((40, 41, 42), (100,))) -> list[dict]:
    rng = np.random.default_rng(0)
    out = []
    for v, (d, pos) in enumerate(zip(depths, lesion_slices)):
        image = torch.as_tensor(rng.random((1, 8, 8, d), dtype=np.float32))
        label = torch.zeros((1, 8, 8, d))
        for i in pos:
            label[0, 2:4, 2:4, i] = 1
        out.append({"image": image, "label": label, "subject": f"s{v}"})
    return out


def test_dataset_serves_every_slice_stack():
    vols = _volumes(depths=(5, 7), lesion_slices=((1,), (0, 6)))
    ds = Slice25DDataset(vols)
    assert len(ds) == 12 and ds.depths == [5, 7] and ds.positive == [[1], [0, 6]]
    assert ds.locate(0) == (0, 0) and ds.locate(4) == (0, 4) and ds.locate(5) == (1, 0) and ds.locate(11) == (1, 6)
    item = ds[6]
    assert item["subject"] == "s1" and item["slice_index"] == 1
    torch.testing.assert_close(item["image"], torch.as_tensor(NeighbourSliceStack()(vols[1]["image"], index=1)))
    torch.testing.assert_close(item["label"], vols[1]["label"][..., 1])
    with pytest.raises(IndexError):
        ds[12]


def test_all_protocol_is_every_slice_once_shuffled_in_batches_of_16():
    ds = Slice25DDataset(_volumes())
    sampler = Slice25DSampler(ds, "all")
    torch.manual_seed(0)
    order = list(sampler)
    assert sorted(order) == list(range(378)) and order != list(range(378))
    torch.manual_seed(0)
    assert list(sampler) == order  # the epoch's order is a function of torch's generator state
    loader = DataLoader(ds, batch_size=16, sampler=sampler)
    sizes = [len(b["slice_index"]) for b in loader]
    assert len(loader) == 24 and sizes == [16] * 23 + [10]  # 378 = 23 x 16 + 10


def test_sampled_protocol_draws_without_replacement_and_batches_slices():
    ds = Slice25DDataset(_volumes())
    torch.manual_seed(1)
    picked = list(Slice25DSampler(ds, "sampled", slices_per_volume=8, pos_fraction=0.5))
    assert len(picked) == 16
    per_volume = [[k - 189 * v for k in picked if ds.locate(k)[0] == v] for v in range(2)]
    assert [len(p) for p in per_volume] == [8, 8] and all(len(set(p)) == 8 for p in per_volume)
    # pos_fraction 1: the lesion slices first (volume 0 has 3, volume 1 has 1), then other slices
    torch.manual_seed(2)
    picked = list(Slice25DSampler(ds, "sampled", slices_per_volume=4, pos_fraction=1.0))
    assert {40, 41, 42} <= {ds.locate(k)[1] for k in picked if ds.locate(k)[0] == 0}
    assert 100 in {ds.locate(k)[1] for k in picked if ds.locate(k)[0] == 1}
    # the old trap: 189 samples per 189-slice volume drew with replacement in batches of 378; now every slice once,
    # and batches of 16 slices
    sampler = Slice25DSampler(ds, "sampled", slices_per_volume=189, pos_fraction=0.5)
    assert sorted(sampler) == list(range(378)) and len(sampler) == 378
    assert len(DataLoader(ds, batch_size=16, sampler=sampler)) == 24
    with pytest.raises(ValueError, match="sampling must be one of"):
        Slice25DSampler(ds, "every")


def test_describe_protocol_reproduces_the_thesis_counts():
    thesis = describe_protocol({"sampling": "all", "batch_size": 16, "epochs": 150}, n_volumes=183, n_slices=189)
    assert thesis["samples_per_epoch"] == 34_587 and thesis["updates_per_epoch"] == 2_162
    assert thesis["updates"] == 324_300
    fast = describe_protocol({"sampling": "sampled", "slices_per_volume": 8, "batch_size": 16, "epochs": 150},
                             n_volumes=183)
    assert fast["samples_per_epoch"] == 1_464 and fast["updates_per_epoch"] == 92 and fast["updates"] == 13_800
    assert "8 of 189 slices per volume" in fast["text"]


def _engines(epoch: int = 6):
    validator = SimpleNamespace(state=SimpleNamespace(key_metric_name="val_mean_dice", metrics={}, epoch=0),
                                add_event_handler=lambda *a: None)
    trainer = SimpleNamespace(state=SimpleNamespace(epoch=epoch), add_event_handler=lambda *a: None)
    return trainer, validator


def _validate(handler, validator, epoch, dice):
    validator.state.epoch, validator.state.metrics = epoch, {"val_mean_dice": dice}
    handler._validated(validator)


@pytest.mark.parametrize("selection", ["best", "final"])
def test_model_selection_ships_the_best_validated_epoch(tmp_path, selection):
    trainer, validator = _engines()
    (tmp_path / "model.pt").write_bytes(b"final epoch")
    (tmp_path / "model_best.pt").write_bytes(b"epoch 2")
    h = ModelSelectionHandler(str(tmp_path), selection, validator)
    for epoch, dice in ((2, 0.45), (4, 0.08), (6, 0.07)):  # the collapse the issue reports: 0.45, then 0.08
        _validate(h, validator, epoch, dice)
    h._completed(trainer)
    record = json.load(open(tmp_path / "selection.json"))
    assert [v["metric"] for v in record["validated"]] == [0.45, 0.08, 0.07]
    if selection == "best":
        assert (tmp_path / "model.pt").read_bytes() == b"epoch 2" and record["chosen_epoch"] == 2
    else:
        assert (tmp_path / "model.pt").read_bytes() == b"final epoch" and record["chosen_epoch"] == 6


def test_model_selection_sanity_floor_and_arguments(tmp_path):
    trainer, validator = _engines()
    (tmp_path / "model.pt").write_bytes(b"final epoch")
    (tmp_path / "model_best.pt").write_bytes(b"epoch 2")
    h = ModelSelectionHandler(str(tmp_path), "best", validator, min_metric=0.05)
    _validate(h, validator, 2, 0.01)  # nothing learned: keep the final weights, record why
    h._completed(trainer)
    assert (tmp_path / "model.pt").read_bytes() == b"final epoch"
    assert json.load(open(os.path.join(tmp_path, "selection.json")))["chosen_epoch"] == 6
    with pytest.raises(ValueError, match="'final' or 'best'"):
        ModelSelectionHandler(str(tmp_path), "last")
    with pytest.raises(ValueError, match="needs the validator"):
        ModelSelectionHandler(str(tmp_path), "best")
    h.load_state_dict(h.state_dict())
    assert h.scores == [(2, 0.01)]
