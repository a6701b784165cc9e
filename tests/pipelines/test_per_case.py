"""run_each_case: the bundle inference run goes on after a bad case, lists it, and runs each good case once."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset
from monai.engines import SupervisedEvaluator
from monai.transforms import Lambdad

from lesionlab.errors import DataError, LesionlabError
from lesionlab.pipelines.per_case import run_each_case


def _load(name: str) -> torch.Tensor:
    if name.startswith("bad"):
        raise DataError(name, "broken on purpose")
    return torch.full((1, 4, 4), float(len(name)))


def _evaluator(items):
    seen = []
    dataset = Dataset(items, transform=Lambdad(keys="image", func=_load))
    loader = DataLoader(dataset, batch_size=1, num_workers=0)
    evaluator = SupervisedEvaluator(device=torch.device("cpu"), val_data_loader=loader, network=torch.nn.Identity())
    evaluator.add_event_handler(Events.ITERATION_COMPLETED,
                                lambda e: seen.append(float(e.state.output[0]["pred"].mean())))
    return evaluator, dataset, seen


def test_bad_case_is_listed_and_the_others_run():
    evaluator, dataset, seen = _evaluator([{"image": "a"}, {"image": "bad1"}, {"image": "ccc"}, {"image": "bad22"}])
    with pytest.raises(LesionlabError, match=r"2 of 4 cases failed .*bad1: bad1: broken on purpose.*bad22"):
        run_each_case(evaluator, dataset)
    assert seen == [1.0, 3.0]  # each good case once, in order, also the one after a failure
    assert [d["image"] for d in dataset.data] == ["a", "bad1", "ccc", "bad22"]  # the datalist is restored


def test_all_good_and_single_bad():
    evaluator, dataset, seen = _evaluator([{"image": "ab"}, {"image": "abcd"}])
    assert run_each_case(evaluator, dataset) == ["ab", "abcd"] and seen == [2.0, 4.0]
    evaluator, dataset, _ = _evaluator([{"image": "bad"}])
    with pytest.raises(Exception, match="broken on purpose"):  # a single case: its own error, not a summary
        run_each_case(evaluator, dataset)
