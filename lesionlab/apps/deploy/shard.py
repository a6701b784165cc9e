"""Archive inference sharded over the processes of ``torchrun`` (one or many machines), resumable.

``lesionlab infer BUNDLE --input ARCHIVE --output OUT --distributed`` started by ``torchrun --nproc_per_node=N``:

* rank 0 first removes what a killed run left in ``OUT`` (temporary files, work folders), then all ranks start
  (a barrier): a cleaner on every rank would delete the temporary files another rank is writing;
* every rank lists the same cases (:func:`lesionlab.data.io.find_cases` sorts them) and takes case ``i`` when
  ``i % world_size == rank``; it segments its share with :func:`lesionlab.apps.deploy.infer.infer_bundle`: each
  output and then ``<case>_report.json`` written atomically, a failing case recorded, not fatal; its scratch folder
  ``OUT/.manifest/work-rank<R>`` and log ``OUT/.manifest/rank<R>.log`` are its own (no two processes share a file,
  also across machines on a shared file system);
* as soon as a case is done or failed, its rank appends its line to ``OUT/.manifest/rank<R>.jsonl`` (``case``,
  ``input``, ``status`` ``ok``/``skipped``/``failed``, ``error``, ``output``, ``seconds``, ``lesion_volume_ml``,
  ``rank``); after a barrier rank 0 merges the rank files into ``OUT/manifest.jsonl`` (a case's line of this run
  replaces that of an earlier run) and ``OUT/summary.json``; the rank files of an earlier (possibly killed) run are
  folded into ``manifest.jsonl`` before a run starts;
* a rerun (any number of ranks, any number of machines) resumes: a case whose output and report exist for the same
  bundle version and format is skipped (``status == "skipped"``; the report is written last, so a run killed in the
  middle of a case redoes that case only); failed and missing cases are segmented again.
"""

from __future__ import annotations

import glob
import json
import logging
import os
import shutil
from collections.abc import Mapping
from typing import Any

from lesionlab.apps.deploy.infer import clean_previous_run, infer_bundle
from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_write_text

__all__ = ["infer_sharded", "merge_manifests", "shard"]

logger = logging.getLogger(__name__)

MANIFEST_DIR = ".manifest"


def shard(items: list, rank: int, world_size: int) -> list:
    """The items of ``rank``: every ``world_size``-th item starting at index ``rank``."""
    if world_size < 1 or not 0 <= rank < world_size:
        raise ValueError(f"rank {rank} is not in a world of {world_size} processes")
    return [x for i, x in enumerate(items) if i % world_size == rank]


def _read_lines(path: str) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:  # a line cut by a kill: the case is simply not marked done
                logger.warning("%s: skipping an unreadable manifest line", path)
    return rows


def _manifest_rows(output_dir: str) -> list[dict]:
    files = _rank_files(output_dir)
    merged = os.path.join(output_dir, "manifest.jsonl")
    return (_read_lines(merged) if os.path.exists(merged) else []) + [r for f in files for r in _read_lines(f)]


def merge_manifests(output_dir: str) -> dict[str, Any]:
    """Merge the rank manifests into ``manifest.jsonl`` and ``summary.json`` (latest line per case); return it."""
    latest: dict[str, dict] = {}
    for row in _manifest_rows(output_dir):
        latest[row["case"]] = row
    rows = [latest[c] for c in sorted(latest)]
    atomic_write_text(os.path.join(output_dir, "manifest.jsonl"), "".join(json.dumps(r) + "\n" for r in rows))
    failed = [r for r in rows if r.get("status") not in ("ok", "skipped")]
    summary = {"n_cases": len(rows), "n_ok": len(rows) - len(failed), "n_failed": len(failed),
               "exit_code": 1 if failed else 0, "cases": rows}
    atomic_write_text(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=2))
    return summary


def _rank_files(output_dir: str) -> list[str]:
    return sorted(glob.glob(os.path.join(glob.escape(os.path.join(output_dir, MANIFEST_DIR)), "rank*.jsonl")))


def _fold_rank_manifests(output_dir: str) -> None:
    """Fold the rank files of earlier runs into ``manifest.jsonl`` and delete them, so that in the rank files of this
    run every case has one line (a rerun may give a case to another rank: order between rank files means nothing)."""
    files = _rank_files(output_dir)
    if files:
        merge_manifests(output_dir)
        for f in files:
            os.remove(f)


def _append(path: str, row: Mapping[str, Any]) -> None:
    """Append one line and flush it to disk (a kill leaves at most one cut line, which the readers skip)."""
    with open(path, "a") as f:
        f.write(json.dumps(dict(row)) + "\n")
        f.flush()
        os.fsync(f.fileno())


def _barrier() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def infer_sharded(bundle: str, inputs: str, output_dir: str, device: str = "cpu", rank: int | None = None,
                  world_size: int | None = None, **kwargs: Any) -> dict[str, Any]:
    """Segment this rank's share of ``inputs`` (see the module docstring); rank 0 returns the merged summary.

    Args:
        bundle, inputs, output_dir, kwargs: as :func:`lesionlab.apps.deploy.infer.infer_bundle` (``fmt``,
            ``overrides``, ``series_uid``, ``overwrite``...).
        device: ``cpu`` or ``cuda``; with CUDA each process uses ``cuda:<LOCAL_RANK>``.
        rank, world_size: default to the launcher's ``RANK`` and ``WORLD_SIZE`` (0 and 1 without a launcher). When
            a process group can be formed (``torchrun``), the ranks wait for each other before they start and before
            rank 0 merges.

    Returns:
        rank 0: the merged summary (``OUT/summary.json``); other ranks: their own summary
        (``OUT/.manifest/summary_rank<R>.json``).

    Raises:
        LesionlabError: for a folder of 2D tiles (not sharded); as :func:`lesionlab.apps.deploy.infer.infer_bundle`.
    """
    import torch.distributed as dist

    from lesionlab.apps.deploy.tiles import is_tile_input
    from lesionlab.pipelines.distributed import destroy_distributed, init_distributed

    if is_tile_input(inputs):
        raise LesionlabError(f"{inputs}: sharded (--distributed) inference takes volumes (NIfTI/NRRD/MHA/DICOM "
                             "series); run tile folders without --distributed")
    rank = int(os.environ.get("RANK", 0)) if rank is None else rank
    world_size = int(os.environ.get("WORLD_SIZE", 1)) if world_size is None else world_size
    output_dir = os.path.abspath(output_dir)
    manifest_dir = os.path.join(output_dir, MANIFEST_DIR)
    if device.startswith("cuda") and ":" not in device:  # ok: reads the user's device string
        device = f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}"
    own_group = world_size > 1 and "MASTER_ADDR" in os.environ and not dist.is_initialized()
    if own_group:
        init_distributed("gloo")  # only barriers: gloo also when the network runs on CUDA
    if rank == 0:  # before any rank writes
        os.makedirs(manifest_dir, exist_ok=True)
        clean_previous_run(output_dir)
        for stale in glob.glob(os.path.join(glob.escape(manifest_dir), "work-rank*")):
            shutil.rmtree(stale, ignore_errors=True)
        _fold_rank_manifests(output_dir)
    _barrier()

    def select(cases: list) -> list:
        mine = shard(cases, rank, world_size)
        logger.info("rank %d of %d: %d of %d cases", rank, world_size, len(mine), len(cases))
        return mine

    os.makedirs(manifest_dir, exist_ok=True)
    rank_file = os.path.join(manifest_dir, f"rank{rank}.jsonl")
    summary = infer_bundle(bundle, inputs, output_dir, device=device, select=select, clean=False,
                           summary_name=os.path.join(MANIFEST_DIR, f"summary_rank{rank}.json"),
                           log_name=os.path.join(MANIFEST_DIR, f"rank{rank}.log"),
                           work_dir=os.path.join(manifest_dir, f"work-rank{rank}"),
                           on_case=lambda row: _append(rank_file, {**row, "rank": rank}), **kwargs)
    _barrier()
    if rank == 0:
        summary = merge_manifests(output_dir)
    if own_group:
        destroy_distributed()
    return summary
