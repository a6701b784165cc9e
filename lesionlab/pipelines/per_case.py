"""A bundle's own inference run, one case at a time: a bad case is listed and the others still run.

MONAI's ``SupervisedEvaluator`` stops at the first case whose loading or transforms raise. :func:`run_each_case`,
used as the ``run`` step of the stroke bundles' ``inference.json``
(``{"_target_": "lesionlab.pipelines.per_case.run_each_case", "evaluator": "@evaluator", "dataset": "@dataset"}``),
runs the evaluator once per datalist item through :func:`lesionlab.pipelines.case_runner.run_cases`, logs one line per
failed case (the file and the reason) and, after the last case, raises one error listing every failure, so the
command's exit status is not 0. MONAI Label never calls ``run`` and is not affected.
"""

from __future__ import annotations

import logging
from typing import Any

from lesionlab.errors import LesionlabError
from lesionlab.pipelines.case_runner import run_cases

__all__ = ["run_each_case"]

logger = logging.getLogger(__name__)


def _item_name(item: Any) -> str:
    image = item.get("image") if isinstance(item, dict) else item
    return str(image[0] if isinstance(image, (list, tuple)) and image else image)


def _fresh_run(evaluator) -> None:
    """Make the next ``evaluator.run()`` a new run over the current data. MONAI's evaluator resets epoch and
    iteration but keeps the epoch length it computed for the whole datalist, so Ignite would repeat the one item
    that many times; and after a failed case Ignite holds the interrupted run's generator, which would end at once."""
    loader = getattr(evaluator, "data_loader", None)
    if loader is not None:
        evaluator.state.epoch_length = len(loader)
    if hasattr(evaluator, "_internal_run_generator"):
        evaluator._internal_run_generator = None


def run_each_case(evaluator, dataset, log: logging.Logger | None = None) -> list[str]:
    """Run ``evaluator`` (whose data loader reads ``dataset``) on every item of ``dataset`` separately.

    Args:
        evaluator: a MONAI evaluator built on a ``DataLoader`` of ``dataset`` (``num_workers`` 0 or any: the loader
            reads the dataset's current ``data`` each run).
        dataset: a MONAI ``Dataset`` (``data`` attribute) or cache dataset (``set_data``).
        log: logger of the per-case lines (default: this module's).

    Returns:
        the names (image paths) of the cases done.

    Raises:
        LesionlabError: after all cases ran, when any failed (with the case's own reason when it was the only one).
    """
    items = list(dataset.data)
    log = log or logger
    errors: dict[str, BaseException] = {}

    def one(item) -> None:
        if hasattr(dataset, "set_data"):
            dataset.set_data([item])
        else:
            dataset.data = [item]
        _fresh_run(evaluator)
        try:
            evaluator.run()
        except Exception as err:
            errors[_item_name(item)] = err
            raise

    try:
        report = run_cases(items, one, log=log, name=_item_name)
    finally:
        if hasattr(dataset, "set_data"):
            dataset.set_data(items)
        else:
            dataset.data = items
    if len(items) == 1 and report.failed:  # one case: its own reason, not a summary
        raise LesionlabError(report.failed[0].reason) from next(iter(errors.values()))
    if report.failed:
        listing = "; ".join(f"{f.case}: {f.reason}" for f in report.failed)
        raise LesionlabError(f"{len(report.failed)} of {len(items)} cases failed (the others were segmented): "
                             f"{listing}")
    return list(report.ok)
