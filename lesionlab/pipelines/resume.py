"""Resumable training: atomic checkpoints, random-state capture and mid-epoch resume for ignite/MONAI trainers.

Three pieces, all wired in a bundle's ``train.json`` by ``_target_`` (see the D-UNet bundle):

* :class:`AtomicCheckpointSaver` -- MONAI's ``CheckpointSaver`` whose files are written to a hidden temporary file and
  renamed (MONAI 1.4-1.6 hard-code ignite's ``DiskSaver(atomic=False)``, so a kill while saving truncates
  ``model.pt``), and whose old checkpoint is deleted only *after* the new one is complete (ignite deletes first).
* :class:`RNGStateHandler` -- reseeds python ``random``, NumPy, torch (CPU and CUDA) and the dataset's MONAI transforms
  at the start of every epoch from ``(seed, epoch)``, so the epoch's data order (DataLoader shuffling), its
  augmentation (e.g. ``RandSlice25Dd``) and its dropout masks depend on the seed and the epoch only; it is also the
  ``"rng"`` entry of the checkpoint (``state_dict``/``load_state_dict`` of every random state).
* :class:`ResumeHandler` -- at ``STARTED`` loads the newest ``last_checkpoint_*.pt`` (``weights_only=True``) into
  the network, optimizer, LR scheduler, trainer state, best-model tracker and random states. A checkpoint written in
  the middle of epoch ``e`` (iteration ``i``, ``k = i % epoch_length`` batches consumed) is resumed exactly: ignite
  continues the epoch at batch ``k + 1``, the epoch's data loader is replayed through its first ``k`` batches (the
  same order and the same augmentation draws, because the epoch was reseeded the same way) and then the random states
  saved at iteration ``i`` are put back. On the CPU a resumed run ends with bitwise the same weights as an
  uninterrupted one (``tests/pipelines/test_resume.py``).
"""

from __future__ import annotations

import glob
import logging
import os
import random
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.handlers import CheckpointSaver
from monai.transforms import Randomizable, Transform
from monai.utils import min_version, optional_import

from lesionlab.data.writers import make_readable
from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_path

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
Checkpoint, _ = optional_import("ignite.handlers", "0.4.11", min_version, "Checkpoint")
CheckpointEvents, _ = optional_import("ignite.handlers.checkpoint", "0.4.11", min_version, "CheckpointEvents")
DiskSaver, _ = optional_import("ignite.handlers", "0.4.11", min_version, "DiskSaver")
idist, _ = optional_import("ignite.distributed", "0.4.11", min_version)
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["AtomicCheckpointSaver", "RNGStateHandler", "ResumeHandler", "epoch_seed", "find_last_checkpoint"]

logger = logging.getLogger(__name__)

_CKPT_NAME = r"^{prefix}_(?P<kind>epoch|iteration)=(?P<step>\d+)\.pt$"


class _AtomicDiskSaver(DiskSaver):
    """ignite ``DiskSaver`` that writes through :func:`lesionlab.utils.atomic_path` and defers deletions.

    ignite's ``Checkpoint`` calls ``remove(old)`` *before* saving the new file; here the old file is deleted only once
    the new one has been renamed into place, so a kill in between leaves two complete checkpoints, never none.

    Args:
        dirname: output folder.
        filename: fixed file name used instead of the one ignite proposes (MONAI's ``final_filename`` and
            ``key_metric_filename``).
    """

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None) -> None:
        super().__init__(dirname=dirname, atomic=True, create_dir=True, require_empty=False)
        self.filename = filename
        self._pending: list[str] = []

    def _path(self, filename: str) -> str:
        return os.path.join(os.fspath(self.dirname), self.filename or filename)

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if idist.get_rank() != getattr(self, "save_on_rank", 0):
            return
        path = self._path(filename)
        with atomic_path(path) as tmp:
            torch.save(checkpoint, tmp)
            make_readable(tmp)
        for old in self._pending:
            if old != path and os.path.exists(old):
                os.remove(old)
        self._pending = []

    def remove(self, filename: str) -> None:
        if idist.get_rank() == getattr(self, "save_on_rank", 0):
            self._pending.append(self._path(filename))


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` with crash-safe files; a drop-in ``_target_`` replacement.

    Every file (interval, final and key-metric checkpoints) is written to ``.tmp-<name>-<random>`` in ``save_dir``,
    flushed to disk and renamed onto ``<name>``: a kill at any moment leaves the previous file or the new one, never a
    truncated one (at most one orphan ``.tmp-*`` file, which :class:`ResumeHandler` removes). With ``n_saved`` the old
    checkpoint is removed only after the new one is in place.

    Args:
        args: positional arguments of ``monai.handlers.CheckpointSaver`` (``save_dir``, ``save_dict``, ...).
        skip_epoch_ends: with ``epoch_level=False``, do not save at iterations that end an epoch. An epoch-level saver
            attached after the validation and LR-scheduler handlers saves those (after the epoch's handlers have
            run); an iteration checkpoint taken before them would be resumed without the epoch's LR step.
            Defaults to False.
        kwargs: keyword arguments of ``monai.handlers.CheckpointSaver``.

    The key-metric tracker (which checkpoint is the best so far) is exposed as ``state_dict``/``load_state_dict`` so
    that a resumed run does not overwrite ``model_best.pt`` with a worse model: put the saver in the resume
    checkpoint's ``save_dict``.
    """

    def __init__(self, *args: Any, skip_epoch_ends: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.skip_epoch_ends = skip_epoch_ends
        for ckpt in (self._final_checkpoint, self._key_metric_checkpoint, self._interval_checkpoint):
            if ckpt is not None:
                old = ckpt.save_handler
                ckpt.save_handler = _AtomicDiskSaver(old.dirname, getattr(old, "filename", None))

    def attach(self, engine: Engine) -> None:
        """As MONAI's; on ranks other than 0 (which write nothing) the "saved checkpoint" lines are not logged."""
        super().attach(engine)
        if idist.get_rank() != 0:
            self.logger = logging.getLogger(f"{__name__}.rank{idist.get_rank()}")
            self.logger.setLevel(logging.WARNING)

    def interval_completed(self, engine: Engine) -> None:
        """Save the interval checkpoint, except at epoch ends when ``skip_epoch_ends`` (iteration level)."""
        length = engine.state.epoch_length
        if self.skip_epoch_ends and not self.epoch_level and length and engine.state.iteration % length == 0:
            return
        super().interval_completed(engine)

    def state_dict(self) -> dict:
        """The key-metric tracker's state (``{"saved": [(score, filename), ...]}``), empty without one."""
        return self._key_metric_checkpoint.state_dict() if self._key_metric_checkpoint is not None else {}

    def load_state_dict(self, state_dict: dict) -> None:
        """Restore the key-metric tracker (no-op for an empty state)."""
        if state_dict:
            super().load_state_dict(state_dict)


def epoch_seed(seed: int, epoch: int) -> int:
    """The 32-bit seed of ``epoch`` derived from the run's ``seed`` (NumPy ``SeedSequence``, platform independent)."""
    return int(np.random.SeedSequence([int(seed), int(epoch)]).generate_state(1, dtype=np.uint32)[0])


def _np_state(r: np.random.RandomState) -> dict:
    _, keys, pos, has_gauss, cached = r.get_state()
    return {"keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)), "pos": int(pos),
            "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}


def _set_np_state(r: np.random.RandomState, s: Mapping) -> None:
    r.set_state(("MT19937", s["keys"].cpu().numpy().astype(np.uint32), s["pos"], s["has_gauss"], s["cached_gaussian"]))


def _transform_random_states(obj: Any, max_depth: int = 6) -> list[np.random.RandomState]:
    """The distinct ``RandomState`` objects of the MONAI ``Randomizable`` objects reachable from ``obj``, in order."""
    found: list[np.random.RandomState] = []
    seen: set[int] = set()

    def visit(o: Any, depth: int) -> None:
        if depth > max_depth or id(o) in seen or isinstance(o, (torch.Tensor, np.ndarray, str, bytes)):
            return
        seen.add(id(o))
        if isinstance(o, (list, tuple)):
            for x in o:
                visit(x, depth + 1)
            return
        if isinstance(o, Randomizable) and isinstance(o.R, np.random.RandomState) and id(o.R) not in seen:
            seen.add(id(o.R))
            found.append(o.R)
        if isinstance(o, (Transform, Randomizable)):  # transforms may hold random sub-transforms (samplers)
            for v in vars(o).values():
                visit(v, depth + 1)

    visit(obj, 0)
    return found


class RNGStateHandler:
    """Reseed every random number generator at each epoch start, and checkpoint all random states.

    At ``EPOCH_STARTED`` python ``random``, NumPy's global generator, torch's CPU and CUDA generators and the random
    transforms of ``dataset`` (MONAI ``set_rnd``, as MONAI's ``DataLoader`` does once at construction) are seeded
    with :func:`epoch_seed` ``(seed, epoch)``. The DataLoader draws its shuffling seed and its workers' seeds from
    torch's generator when the epoch's iterator is created, so the order, the augmentation and the dropout of an
    epoch depend on ``(seed, epoch)`` and on the position in the epoch only -- which is what lets
    :class:`ResumeHandler` replay the consumed part of an epoch. Put this object in the checkpoint's ``save_dict``
    (it has ``state_dict``/``load_state_dict``).

    Args:
        seed: the run's seed (``None``: no reseeding; a resumed run is then not reproducible).
        dataset: the training dataset whose transforms are reseeded and whose transform states are checkpointed
            (main-process copies; with ``num_workers > 0`` the workers are seeded from torch's generator instead).
    """

    def __init__(self, seed: int | None = 0, dataset: Any = None) -> None:
        self.seed, self.dataset = seed, dataset
        self._loaded: Mapping | None = None

    def attach(self, engine: Engine) -> None:
        """Reseed at every ``EPOCH_STARTED`` of ``engine`` (attach after the trainer's own handlers)."""
        if self.seed is not None:
            engine.add_event_handler(Events.EPOCH_STARTED, self.reseed)

    def reseed(self, engine: Engine) -> None:
        """Seed all generators from ``(seed, engine.state.epoch)``."""
        from monai.data.utils import set_rnd

        s = epoch_seed(int(self.seed), engine.state.epoch)  # type: ignore[arg-type]
        random.seed(s)
        np.random.seed(s)
        torch.manual_seed(s)  # CPU and every CUDA device
        if self.dataset is not None:
            set_rnd(self.dataset, s)

    def _transforms(self) -> list[np.random.RandomState]:
        transform = getattr(self.dataset, "transform", None)
        return _transform_random_states(transform) if transform is not None else []

    def state_dict(self) -> dict:
        """Every random state, as tensors and numbers only (loadable with ``torch.load(weights_only=True)``)."""
        version, internal, gauss = random.getstate()
        return {
            "python": {"version": version, "internal": torch.tensor(internal, dtype=torch.int64), "gauss": gauss},
            "numpy": _np_state(np.random.mtrand._rand),
            "torch": torch.get_rng_state(),
            "cuda_rng_states": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "transforms": [_np_state(r) for r in self._transforms()],
        }

    def load_state_dict(self, state_dict: Mapping) -> None:
        """Set every random state from ``state_dict`` (and keep it for :meth:`restore`)."""
        self._loaded = state_dict
        self.restore()

    def restore(self) -> bool:
        """Put back the last loaded states; returns False when the transforms' current states differed from them.

        :class:`ResumeHandler` calls this after replaying the consumed batches of an epoch: with ``num_workers=0``
        the replay must have brought the transforms to exactly the saved states, so False means the data or the
        pipeline changed since the checkpoint (a warning is logged).
        """
        s = self._loaded
        if s is None:
            return True
        py = s["python"]
        random.setstate((py["version"], tuple(int(v) for v in py["internal"].tolist()), py["gauss"]))
        _set_np_state(np.random.mtrand._rand, s["numpy"])
        torch.set_rng_state(s["torch"].cpu())
        cuda = list(s.get("cuda_rng_states", []))
        if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all([c.cpu() for c in cuda])
        elif cuda:
            logger.warning("checkpoint holds %d CUDA random states but %d devices are visible: not restored",
                           len(cuda), torch.cuda.device_count() if torch.cuda.is_available() else 0)
        states, saved = self._transforms(), list(s.get("transforms", []))
        if len(states) != len(saved):
            logger.warning("checkpoint holds %d transform random states but the pipeline has %d: not restored",
                           len(saved), len(states))
            return False
        same = all(_np_state(r)["keys"].equal(v["keys"].cpu()) and _np_state(r)["pos"] == v["pos"]
                   for r, v in zip(states, saved))
        for r, v in zip(states, saved):
            _set_np_state(r, v)
        return same


def find_last_checkpoint(ckpt_dir: str, prefix: str = "last_checkpoint", epoch_length: int | None = None) -> list[str]:
    """``<prefix>_epoch=N.pt`` / ``<prefix>_iteration=N.pt`` files of ``ckpt_dir``, newest first.

    "Newest" is the largest trainer iteration: ``N`` for iteration files, ``N * epoch_length`` for epoch files (an
    epoch file wins a tie: it is written after the epoch's handlers). Without ``epoch_length`` the modification time
    decides. Hidden ``.tmp-*`` files (interrupted saves) never match.
    """
    pattern = re.compile(_CKPT_NAME.format(prefix=re.escape(prefix)))
    found = []
    for path in glob.glob(os.path.join(glob.escape(ckpt_dir), f"{prefix}_*.pt")):
        m = pattern.match(os.path.basename(path))
        if m is None:
            continue
        step, is_epoch = int(m["step"]), m["kind"] == "epoch"
        if epoch_length:
            key: tuple = (step * epoch_length if is_epoch else step, is_epoch)
        else:
            key = (os.path.getmtime(path), is_epoch)
        found.append((key, path))
    return [p for _, p in sorted(found, reverse=True)]


def _remove(path: str) -> None:
    """Delete ``path`` on rank 0 only (every rank runs the handlers of a distributed trainer)."""
    if idist.get_rank() == 0:
        try:
            os.remove(path)
        except FileNotFoundError:
            pass


class _ReplayLoader:
    """Iterable standing in for a data loader for one epoch: its iterator has consumed ``skip`` batches already."""

    def __init__(self, loader: Iterable, skip: int, done: Callable[[], None]) -> None:
        self.loader, self.skip, self.done = loader, skip, done

    def __len__(self) -> int:
        return len(self.loader)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        it = iter(self.loader)
        for i in range(self.skip):
            try:
                next(it)
            except StopIteration:
                raise LesionlabError(
                    f"cannot resume: the data loader gave only {i} batches, the checkpoint needs {self.skip}"
                ) from None
        self.done()
        return it


class ResumeHandler:
    """Resume a trainer from the newest ``<prefix>_*.pt`` checkpoint in ``ckpt_dir`` when ``enabled``.

    Attach it to the trainer before ``run()``; it works at ``Events.STARTED`` like MONAI's ``CheckpointLoader``
    (``torch.load(..., weights_only=True)``, then ignite's ``Checkpoint.load_objects``). The configured ``max_epochs``
    is kept, so a finished run can be extended. When the checkpoint ends in the middle of an epoch, the epoch's data
    loader is replayed through the consumed batches and the random states saved at that iteration are restored (see
    the module docstring); this needs a :class:`RNGStateHandler` in ``load_dict`` for an exact resume.

    Files: leftover ``.tmp-*`` files of interrupted saves in ``ckpt_dir`` are deleted when resuming, and the
    checkpoints found at start are deleted once the resumed run has saved a newer one (the savers' ``n_saved``
    bookkeeping does not know them). When ``enabled`` is False the run starts over and a previous run's
    ``<prefix>_*.pt`` files are deleted (with a warning), so that a later resume cannot pick them up. Only rank 0
    deletes files in distributed runs. Without any
    checkpoint a warning is logged and training starts from scratch; a checkpoint that cannot be read is skipped in
    favour of the next newest one, and if none can be read a :class:`~lesionlab.errors.LesionlabError` is raised.

    Args:
        ckpt_dir: folder of the checkpoints.
        load_dict: the objects to restore, with the keys used when saving (``model``, ``optimizer``,
            ``lr_scheduler``, ``trainer``, ``rng``...).
        enabled: resume only when True (the bundles' ``resume`` id). Defaults to True.
        prefix: checkpoint file prefix (``file_prefix`` of the saver + ``"_checkpoint"``). Defaults to
            ``"last_checkpoint"``.
        map_location: ``torch.load`` map location. Defaults to ``"cpu"``.
    """

    def __init__(
        self,
        ckpt_dir: str,
        load_dict: Mapping[str, Any],
        enabled: bool = True,
        prefix: str = "last_checkpoint",
        map_location: Any = "cpu",
    ) -> None:
        if not load_dict:
            raise ValueError("load_dict must name at least one object to restore.")
        self.ckpt_dir, self.load_dict, self.enabled = ckpt_dir, dict(load_dict), bool(enabled)
        self.prefix, self.map_location = prefix, map_location
        self.resumed_from: str | None = None
        self.resumed_iteration: int | None = None
        self._stale: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self)

    def _discard_previous(self, engine: Engine) -> None:
        """A run that does not resume starts over: a previous run's resume files would be resumed by mistake later."""
        for path in find_last_checkpoint(self.ckpt_dir, self.prefix):
            logger.warning("not resuming (resume=False): removing %s of a previous run", path)
            _remove(path)

    def _retire_stale(self, engine: Engine) -> None:
        """Once this run has saved a newer resume checkpoint, delete the ones that were there when it started.

        The savers of the new run do not know those files (their ``n_saved`` bookkeeping starts empty).
        """
        newest = find_last_checkpoint(self.ckpt_dir, self.prefix, engine.state.epoch_length)
        if not newest or newest[0] in self._stale:
            return
        for path, mtime in self._stale.items():
            if os.path.exists(path) and os.path.getmtime(path) == mtime:
                _remove(path)
        self._stale = {}
        engine.remove_event_handler(self._retire_stale, CheckpointEvents.SAVED_CHECKPOINT)

    def _remove_stale_temps(self) -> None:
        for path in glob.glob(os.path.join(glob.escape(self.ckpt_dir), ".tmp-*")):
            logger.info("removing %s (left by an interrupted save)", path)
            _remove(path)

    def _load(self, engine: Engine) -> tuple[str, dict] | None:
        candidates = find_last_checkpoint(self.ckpt_dir, self.prefix, engine.state.epoch_length)
        for path in candidates:
            try:
                return path, torch.load(path, map_location=self.map_location, weights_only=True)
            except Exception as err:  # noqa: BLE001 - a damaged file: fall back to the previous checkpoint
                logger.warning("cannot read checkpoint %s (%s); trying an older one", path, err)
        if candidates:
            raise LesionlabError(f"{self.ckpt_dir}: none of the checkpoints {candidates} can be read; cannot resume")
        return None

    def __call__(self, engine: Engine) -> None:
        if not self.enabled:
            self._discard_previous(engine)
            return
        self._remove_stale_temps()
        self._stale = {p: os.path.getmtime(p) for p in find_last_checkpoint(self.ckpt_dir, self.prefix)}
        loaded = self._load(engine)
        if loaded is None:
            logger.warning("resume requested but %s holds no %s_*.pt: training starts from scratch",
                           self.ckpt_dir, self.prefix)
            return
        if not engine.has_registered_events(CheckpointEvents.SAVED_CHECKPOINT):
            engine.register_events(*CheckpointEvents)
        engine.add_event_handler(CheckpointEvents.SAVED_CHECKPOINT, self._retire_stale)
        path, checkpoint = loaded
        length, max_epochs = engine.state.epoch_length, engine.state.max_epochs
        saved_length = checkpoint.get("trainer", {}).get("epoch_length")
        if saved_length is not None and length is not None and saved_length != length:
            raise LesionlabError(
                f"{path}: written with {saved_length} iterations per epoch but the data now gives {length}; "
                "the training data or batch size changed, so this run cannot be resumed"
            )
        Checkpoint.load_objects(to_load=self.load_dict, checkpoint=checkpoint)
        if max_epochs is not None:
            if engine.state.epoch > max_epochs:
                raise LesionlabError(f"{path}: checkpoint is at epoch {engine.state.epoch}, beyond max_epochs "
                                     f"{max_epochs}")
            engine.state.max_epochs = max_epochs
        self.resumed_from, self.resumed_iteration = path, engine.state.iteration
        skip = engine.state.iteration % length if length else 0
        logger.info("resumed from %s: epoch %d, iteration %d%s", path, engine.state.epoch, engine.state.iteration,
                    f" (epoch {engine.state.epoch + 1} continues after its first {skip} batches)" if skip else "")
        if not skip:
            return
        rng = next((o for o in self.load_dict.values() if isinstance(o, RNGStateHandler)), None)

        def replayed() -> None:
            if rng is not None and not rng.restore():
                logger.warning("the replayed batches did not reproduce the saved transform random states: the data "
                               "or the pipeline changed since the checkpoint; the resumed run is not exact")

        original = engine.state.dataloader
        engine.state.dataloader = _ReplayLoader(original, skip, replayed)
        engine.add_event_handler(Events.EPOCH_COMPLETED(once=engine.state.epoch + 1),
                                 lambda e: setattr(e.state, "dataloader", original))
