"""Run one function over many cases without letting one bad case stop the others (folder/datalist inference).

Example::

    report = run_cases(paths, lambda p: segment(p, out_dir))
    report.write_json(os.path.join(out_dir, "cases_report.json"))
    sys.exit(report.exit_code)
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_write_text

__all__ = ["CaseFailure", "CaseReport", "case_name", "run_cases"]

logger = logging.getLogger(__name__)


@dataclass
class CaseFailure:
    """One case that failed: its name, the exception type and the reason (the exception message)."""

    case: str
    error: str
    reason: str


@dataclass
class CaseReport:
    """Outcome of :func:`run_cases`.

    Attributes:
        ok: names of the cases that succeeded, in input order.
        failed: the cases that failed, in input order.
        seconds: wall time of the whole run.
    """

    ok: list[str] = field(default_factory=list)
    failed: list[CaseFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def exit_code(self) -> int:
        """0 when every case succeeded (or there was none), 1 when at least one failed."""
        return 1 if self.failed else 0

    def to_dict(self) -> dict:
        """JSON-ready summary: counts, the ok cases, and every failure with its reason."""
        return {
            "n_cases": len(self.ok) + len(self.failed),
            "n_ok": len(self.ok),
            "n_failed": len(self.failed),
            "exit_code": self.exit_code,
            "seconds": round(self.seconds, 3),
            "ok": list(self.ok),
            "failed": [vars(f).copy() for f in self.failed],
        }

    def write_json(self, path: str | os.PathLike) -> str:
        """Write :meth:`to_dict` to ``path`` atomically; returns the path."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return os.fspath(path)


def case_name(case: Any) -> str:
    """A readable name for a case: a path, the ``"image"`` (or ``"subject"``) of a datalist item, or ``str(case)``."""
    if isinstance(case, Mapping):
        for key in ("subject", "image", "name"):
            value = case.get(key)
            if isinstance(value, (str, os.PathLike)):
                return os.fspath(value)
    if isinstance(case, os.PathLike):
        return os.fspath(case)
    return str(case)


def _user_error(err: BaseException) -> BaseException:
    """The :class:`LesionlabError` behind ``err`` when there is one (MONAI wraps transform errors in a
    ``RuntimeError("applying transform ...")``), else ``err`` itself."""
    seen: set[int] = set()
    cur: BaseException | None = err
    while cur is not None and id(cur) not in seen:
        if isinstance(cur, LesionlabError):
            return cur
        seen.add(id(cur))
        cur = cur.__cause__ or cur.__context__
    return err


def run_cases(
    cases: Iterable[Any],
    fn: Callable[[Any], Any],
    log: logging.Logger = logger,
    name: Callable[[Any], str] = case_name,
    on_done: Callable[[Any, CaseFailure | None], None] | None = None,
) -> CaseReport:
    """Call ``fn(case)`` for every case; a case that raises is logged and recorded, and the loop continues.

    Any ``Exception`` counts as a failure of that case. A :class:`~lesionlab.errors.LesionlabError` (e.g. a
    ``DataError`` from :mod:`lesionlab.data.validation`, also when MONAI wrapped it in a ``RuntimeError``) is
    reported with its own message; any other error with its message, and its traceback at DEBUG level.
    ``KeyboardInterrupt`` and ``SystemExit`` still stop the run.

    Args:
        cases: paths, datalist items or anything ``fn`` accepts.
        fn: the work for one case; its return value is ignored.
        log: logger for progress and failures. Defaults to this module's logger.
        name: how a case is named in the log and the report. Defaults to :func:`case_name`.
        on_done: called after every case with the case and its :class:`CaseFailure` (None when it succeeded), e.g. to
            record progress as it happens.

    Returns:
        A :class:`CaseReport`; its ``exit_code`` is 1 when any case failed.
    """
    report = CaseReport()
    t0 = time.time()
    cases = list(cases)
    for i, case in enumerate(cases, 1):
        label = name(case)
        try:
            fn(case)
        except Exception as exc:  # one bad case must not stop the others
            err = _user_error(exc)
            reason = str(err) or type(err).__name__
            report.failed.append(CaseFailure(case=label, error=type(err).__name__, reason=reason))
            log.error("case %d/%d %s failed: %s", i, len(cases), label, reason)
            if not isinstance(err, LesionlabError):
                log.debug("traceback of %s", label, exc_info=True)
            if on_done is not None:
                on_done(case, report.failed[-1])
            continue
        report.ok.append(label)
        log.info("case %d/%d %s done", i, len(cases), label)
        if on_done is not None:
            on_done(case, None)
    report.seconds = time.time() - t0
    if not cases:
        log.warning("no cases to process")
    (log.warning if report.failed else log.info)(
        "%d of %d cases done, %d failed%s", len(report.ok), len(cases), len(report.failed),
        "".join(f"\n  {f.case}: {f.reason}" for f in report.failed))
    return report
