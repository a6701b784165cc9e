"""Distributed data-parallel (DDP) glue for the bundles' ``multi_gpu_train.json`` overrides, launched by ``torchrun``.

The overrides follow MONAI model-zoo's convention (the network wrapped in ``DistributedDataParallel``,
``DistributedSampler`` for the training and validation loaders, rank-0-only logs, validation metrics gathered across
ranks by MONAI's metric handlers); this module holds the few pieces a JSON config cannot express cleanly:

* :func:`init_distributed` -- ``torch.distributed.init_process_group`` from the ``torchrun`` environment, backend
  ``"nccl"`` on CUDA and ``"gloo"`` on the CPU unless the config names one;
* :func:`local_device` -- ``cuda:<LOCAL_RANK>`` when CUDA is available (and selected), else the CPU;
* :func:`rank_handlers` -- the handler list of an engine with the writers (console/TensorBoard statistics, history
  file, progress bar) removed on ranks other than 0; checkpoint savers stay (they write on rank 0 only, see
  :mod:`lesionlab.pipelines.resume`), validation stays (its metric is a collective operation);
* :class:`WeightSyncCheck` -- at the end of training every rank hashes its weights, the hashes are gathered and
  compared: DDP keeps replicas identical, so a difference means a desynchronised run and raises; rank 0 writes the
  hashes and every rank's loss of its last iteration to a JSON file;
* :func:`state_digest` -- the SHA-256 of a ``state_dict`` (also used to compare a checkpoint file with a rank).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from monai.handlers import StatsHandler, TensorBoardStatsHandler
from monai.utils import min_version, optional_import

from lesionlab.errors import LesionlabError
from lesionlab.pipelines.handlers import HistoryHandler, ProgressBarHandler
from lesionlab.utils import atomic_write_text

Events, _ = optional_import("ignite.engine", "0.4.11", min_version, "Events")
if TYPE_CHECKING:
    from ignite.engine import Engine
else:
    Engine, _ = optional_import("ignite.engine", "0.4.11", min_version, "Engine")

__all__ = ["WeightSyncCheck", "init_distributed", "local_device", "rank", "rank_handlers", "state_digest",
           "world_size"]

logger = logging.getLogger(__name__)

#: handler types that only write logs/files for people: attached on rank 0 only.
RANK_ZERO_ONLY: tuple[type, ...] = (StatsHandler, TensorBoardStatsHandler, HistoryHandler, ProgressBarHandler)


def rank() -> int:
    """This process's global rank (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else int(os.environ.get("RANK", 0))


def world_size() -> int:
    """Number of processes (1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return int(os.environ.get("WORLD_SIZE", 1))


def local_device(device: str | None = None) -> torch.device:
    """The device of this process: ``cuda:<LOCAL_RANK>`` if CUDA is available (or ``device`` asks for ``"cuda"``),
    ``"cpu"`` if ``device`` is ``"cpu"`` or CUDA is absent. Sets the current CUDA device."""
    want_cuda = torch.cuda.is_available() if device is None else str(device).startswith("cuda")
    if not want_cuda:
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise LesionlabError(f"device {device!r} asked for, but CUDA is not available on this machine")
    dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    torch.cuda.set_device(dev)
    return dev


def ddp_device_ids(device: torch.device | str) -> list[torch.device] | None:
    """``device_ids`` for ``DistributedDataParallel``: the process's GPU, or None on the CPU (gloo)."""
    device = torch.device(device)
    return [device] if device.type == "cuda" else None


def init_distributed(backend: str | None = None, device: torch.device | str | None = None) -> bool:
    """Initialise the default process group from the ``torchrun`` environment (idempotent).

    Args:
        backend: ``"gloo"``, ``"nccl"``... Defaults to ``"nccl"`` when ``device`` is CUDA (or, without ``device``, when
            CUDA is available) and ``"gloo"`` otherwise.
        device: the training device, to choose the default backend.

    Returns:
        True if a process group is initialised after the call.

    Raises:
        LesionlabError: when the ``torchrun`` environment (``RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``) is missing.
    """
    if dist.is_initialized():
        return True
    missing = [k for k in ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise LesionlabError(f"distributed run without the launcher's environment ({', '.join(missing)} unset): start "
                             "it with `torchrun --nproc_per_node=N ...` (see README, 'Distributed training')")
    if backend is None:
        cuda = torch.device(device).type == "cuda" if device is not None else torch.cuda.is_available()
        backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend=backend)
    logger.info("process group: backend %s, rank %d of %d", backend, dist.get_rank(), dist.get_world_size())
    return True


def destroy_distributed() -> None:
    """Tear the default process group down (no-op when none).

    A barrier first: every rank has finished its last collective before any rank destroys the group (gloo aborts a
    process whose peer tears the connection down under it: "terminate called without an active exception").
    """
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def rank_handlers(handlers: Sequence[Any] | None, rank_zero_only: Iterable[type] = RANK_ZERO_ONLY) -> list[Any]:
    """``handlers`` unchanged on rank 0; without the instances of ``rank_zero_only`` types on other ranks."""
    handlers = list(handlers or [])
    if rank() == 0:
        return handlers
    types = tuple(rank_zero_only)
    return [h for h in handlers if not isinstance(h, types)]


def _unwrap(module: torch.nn.Module) -> torch.nn.Module:
    return getattr(module, "module", module)


def state_digest(state: torch.nn.Module | Mapping[str, torch.Tensor]) -> str:
    """SHA-256 over the names, dtypes, shapes and bytes of a module's (unwrapped from DDP) or a mapping's tensors."""
    if isinstance(state, torch.nn.Module):
        state = _unwrap(state).state_dict()
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        t = t.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


class WeightSyncCheck:
    """Check at the end of training (and optionally every ``every_epochs`` epochs) that all ranks hold the same weights.

    Every rank hashes its network (:func:`state_digest`), the hashes and the ranks' last-iteration losses are gathered
    (``all_gather_object``); rank 0 writes ``{"world_size", "epoch", "iteration", "digests": [...], "losses": [...]}``
    to ``path`` (atomically) and every rank raises a :class:`~lesionlab.errors.LesionlabError` when the hashes differ.
    Without a process group it records the single rank's hash and loss.

    Args:
        network: the (DDP-wrapped) network.
        path: JSON file written by rank 0; None writes nothing.
        every_epochs: also check after every this many epochs (0: only at completion).
    """

    def __init__(self, network: torch.nn.Module, path: str | None = None, every_epochs: int = 0) -> None:
        self.network, self.path, self.every_epochs = network, path, int(every_epochs)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.COMPLETED, self)
        if self.every_epochs > 0:
            engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.every_epochs), self)

    def __call__(self, engine: Engine) -> list[str]:
        mine = (state_digest(self.network), _last_loss(engine))
        gathered: list[Any] = [mine]
        if dist.is_available() and dist.is_initialized():
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, mine)
        digests = [d for d, _ in gathered]
        if self.path and rank() == 0:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            atomic_write_text(self.path, json.dumps({
                "world_size": len(digests), "epoch": engine.state.epoch, "iteration": engine.state.iteration,
                "digests": digests, "losses": [loss for _, loss in gathered]}, indent=2))
        if len(set(digests)) != 1:
            raise LesionlabError(f"the ranks' weights differ after iteration {engine.state.iteration}: {digests}")
        logger.info("weights identical on all %d ranks (sha256 %s)", len(digests), mine[0][:12])
        return digests


def _last_loss(engine: Engine) -> float | None:
    """The loss of the engine's last iteration on this rank (MONAI trainers' ``output[i]["loss"]``), else None."""
    out = getattr(engine.state, "output", None)
    if isinstance(out, (list, tuple)) and out and isinstance(out[0], Mapping):
        out = out[0]
    loss = out.get("loss") if isinstance(out, Mapping) else None
    return float(loss) if isinstance(loss, (torch.Tensor, float, int)) else None  # NaN/inf kept: json writes them
