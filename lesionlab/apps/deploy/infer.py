"""``lesionlab infer``: run a bundle's own inference config, from an archive or a folder, on hospital input.

Inputs are NIfTI/NRRD/MHA files, DICOM series, folders or datalists (:func:`lesionlab.data.io.find_cases`); outputs
are NIfTI, 3D Slicer ``.seg.nrrd`` or DICOM SEG plus a JSON report per case and a ``summary.json``. A failing case is
reported and the others still run.

Before anything from the bundle executes, an archive's manifest must match and the config guard
(:mod:`lesionlab.apps.deploy.guard`) must pass (``trust`` runs unlisted expressions, and says so). A failed case is
one line on the console; its traceback goes to ``infer.log`` in the output folder. A case whose output and report
exist is skipped unless ``overwrite``; temporary files of a killed run are removed at the start.

The bundle's inference workflow (network, weights, transforms, evaluator) is built once per run by
:class:`~lesionlab.apps.deploy.predictor.BundlePredictor` and fed one case at a time; it is rebuilt only after a case
failed inside it (an Ignite engine that raised is not safely re-runnable). Each case is segmented by
:class:`~lesionlab.apps.deploy.predictor.CaseSegmenter`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from lesionlab.apps.deploy.archive import BundleSource, manifest_problems, open_bundle
from lesionlab.apps.deploy.config import load_json
from lesionlab.apps.deploy.guard import scan_bundle
from lesionlab.apps.deploy.predictor import OUTPUT_FORMATS, BundlePredictor, CaseSegmenter
from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_write_text, remove_stale_temp_files

__all__ = ["LOG_NAME", "check_bundle_before_running", "clean_previous_run", "infer_bundle"]

logger = logging.getLogger(__name__)

#: the log file of a run (inside the output folder): every failed case's traceback
LOG_NAME = "infer.log"


def _check_request(fmt: str, device: str) -> None:
    import torch

    if fmt not in OUTPUT_FORMATS:
        raise LesionlabError(f"--format must be one of {sorted(OUTPUT_FORMATS)}, got {fmt!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LesionlabError(f"--device {device}: no CUDA device is available here; use --device cpu")


def check_bundle_before_running(src: BundleSource, trust: bool = False) -> list[str]:
    """Refuse to run a bundle whose manifest does not match or whose configs fail the guard (unless ``trust``).

    Returns the guard findings that ``trust`` let through (logged as warnings).

    Raises:
        LesionlabError: naming the archive or folder and every problem.
    """
    where = src.archive or src.root
    if src.manifest is not None:
        problems = manifest_problems(src.root, src.manifest)
        if problems:
            raise LesionlabError(f"{where}: manifest check failed, nothing was run: {'; '.join(problems)[:600]}")
    findings = [f.format() for f in scan_bundle(src.root)]
    if findings and not trust:
        raise LesionlabError(f"{where}: {len(findings)} config items outside the allow-list, nothing was run (pass "
                             f"--trust to run them anyway): {'; '.join(findings[:6])[:800]}")
    for f in findings:
        logger.warning("running a config item outside the allow-list because of --trust: %s", f)
    return findings


@contextlib.contextmanager
def _log_to_file(path: str):
    """Send every log record of the run (tracebacks included) to ``path`` instead of the console."""
    handler = logging.FileHandler(path, encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    level = root.level
    root.addHandler(handler)
    root.setLevel(min(level or logging.WARNING, logging.INFO))
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


def clean_previous_run(output_dir: str) -> None:
    """Remove what a killed run left in ``output_dir``: temporary files and work folders of dead processes.

    Only while no other process writes there (it would delete their temporary files): a sharded run calls it on rank 0
    before the ranks start (see :mod:`lesionlab.apps.deploy.shard`)."""
    for path in remove_stale_temp_files(output_dir):
        logger.info("removed %s, left by an interrupted run", path)
    for name in os.listdir(output_dir):
        if name.startswith(".work-") and name[6:].isdigit() and not _alive(int(name[6:])):
            shutil.rmtree(os.path.join(output_dir, name), ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _status(case_id: str, reasons: Mapping[str, str], skipped: list[str]) -> str:
    return "failed" if case_id in reasons else "skipped" if case_id in skipped else "ok"


def _case_row(case, reasons: Mapping[str, str], segmenter: CaseSegmenter) -> dict[str, Any]:
    """A case's line in the summary: status, the reason of a failure, output and lesion volume from its report."""
    report = segmenter.reports.get(case.case_id, {})
    return {"case": case.case_id, "input": case.path, "status": _status(case.case_id, reasons, segmenter.skipped),
            "error": reasons.get(case.case_id), "seconds": round(segmenter.seconds.get(case.case_id, 0.0), 2),
            "output": report.get("output"), "lesion_volume_ml": report.get("lesion_volume_ml")}


def _summary(src: BundleSource, metadata: Mapping, cases: list, batch, segmenter: CaseSegmenter, fmt: str,
             device: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    reasons = {f.case: f.reason for f in batch.failed}
    return {
        "bundle": src.name,
        "bundle_version": metadata.get("version"),
        "source": src.archive or src.root,
        "random_weights": bool((src.manifest or {}).get("random_weights", False)),
        "format": fmt,
        "device": device,
        "overrides": dict(overrides),
        "n_cases": len(cases),
        "n_ok": len(batch.ok),
        "n_failed": len(batch.failed),
        "n_skipped_complete": len(segmenter.skipped),
        "log": segmenter.log_file,
        "exit_code": batch.exit_code,
        "seconds": round(batch.seconds, 2),
        "cases": [_case_row(c, reasons, segmenter) for c in cases],
    }


def infer_bundle(
    bundle: str,
    inputs: str,
    output_dir: str,
    fmt: str = "nifti",
    device: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    series_uid: str | None = None,
    trust: bool = False,
    overwrite: bool = False,
    space: str | None = None,
    spacing: Sequence[float] | None = None,
    select: Callable[[list], list] | None = None,
    summary_name: str = "summary.json",
    log_name: str = LOG_NAME,
    work_dir: str | None = None,
    clean: bool = True,
    on_case: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Segment every case of ``inputs`` with the bundle (archive or folder) and write outputs to ``output_dir``.

    For each case: ``<case>_seg.nii.gz`` (``nifti``; the bundle's ``SaveImaged`` output), ``<case>.seg.nrrd``
    (``nrrd``) or ``<case>_seg.dcm`` (``dicom-seg``; DICOM inputs only), plus ``<case>_report.json`` (input,
    geometry, per-label voxel count and volume in mL). ``summary.json`` lists every case with its status and, for
    failed cases, the reason; ``exit_code`` in it is 0 only when every case succeeded.

    Args:
        bundle: ``.zip`` from :func:`~lesionlab.apps.deploy.export.export_bundle`, a bundle folder or a project
            bundle name; weights come from its ``models/model.pt``.
        inputs: image file, DICOM series folder, folder of inputs or datalist JSON (see
            :func:`lesionlab.data.io.find_cases`).
        output_dir: folder for the outputs (created).
        fmt: one of :data:`~lesionlab.apps.deploy.predictor.OUTPUT_FORMATS`.
        device: ``cpu`` or a CUDA device such as ``cuda`` or ``cuda:N``.
        overrides: config ids of the inference config to override (``{"roi_start": [4, 4]}``).
        series_uid: series to read from DICOM folders holding several.
        trust: run a bundle whose configs hold items outside the guard's allow-list (refused otherwise).
        overwrite: segment cases whose output and report already exist (skipped otherwise).
        space: ``"native"`` (register every input to MNI152), ``"mni"`` (inputs are already registered) or ``None``
            (the bundle's default, ``"auto"``: register unless the input is on the model grid).
        spacing: voxel spacing (mm) to use for inputs whose headers have no geometry (refused otherwise); the
            assumption goes into the case's report.
        select: keeps a subset of the cases found (e.g. one rank's shard, see
            :mod:`lesionlab.apps.deploy.shard`); an empty subset is not an error.
        summary_name: file name of the summary in ``output_dir``.
        log_name: file name of the run's log (tracebacks of failed cases) in ``output_dir``.
        work_dir: scratch folder of this process (removed at the end); default ``output_dir/.work-<pid>``.
        clean: first remove what a killed run left in ``output_dir`` (:func:`clean_previous_run`); False when other
            processes write to ``output_dir`` at the same time.
        on_case: called after every case with its line of the summary (as soon as the case is done or failed).

    Returns:
        the summary (also written to ``output_dir/<summary_name>``).

    Raises:
        LesionlabError: for an unknown format or device, a bundle without weights, DICOM SEG requested while no input
            is DICOM, or no input found. Failures of single cases are reported in the summary instead.
    """
    import torch

    from lesionlab.apps.deploy.slides import find_slides, infer_slides
    from lesionlab.apps.deploy.tiles import infer_tiles, is_tile_input
    from lesionlab.data.io import find_cases
    from lesionlab.pipelines.case_runner import run_cases

    slides = find_slides(inputs)
    if slides:  # whole-slide images: streaming inference (OME-TIFF mask, RLE, GeoJSON), bounded memory
        return infer_slides(bundle, slides, output_dir, fmt=fmt, device=device, overrides=overrides, trust=trust)
    if is_tile_input(inputs):  # 2D colour tiles (PNG/TIFF/JPEG): class maps as PNG
        return infer_tiles(bundle, inputs, output_dir, fmt=fmt, device=device, overrides=overrides)
    _check_request(fmt, device)
    if space not in (None, "auto", "native", "mni"):
        raise LesionlabError(f"--space must be native, mni or auto, got {space!r}")
    overrides = dict(overrides or {})
    if space is not None:
        overrides.setdefault("space", space)
    output_dir = os.path.abspath(output_dir)
    cases = find_cases(inputs, series_uid=series_uid)
    if fmt == "dicom-seg" and not any(c.kind == "dicom" for c in cases):
        raise LesionlabError(f"{inputs}: DICOM SEG output needs DICOM input (a series folder): a SEG must reference "
                             "the source images. Use --format nifti or --format nrrd for NIfTI/NRRD/MHA inputs")
    if select is not None:
        cases = select(cases)
    os.makedirs(output_dir, exist_ok=True)
    if clean:
        clean_previous_run(output_dir)
    log_file = os.path.join(output_dir, log_name)
    work = work_dir or os.path.join(output_dir, f".work-{os.getpid()}")
    with open_bundle(bundle) as src, _log_to_file(log_file):
        if not os.path.exists(os.path.join(src.root, "models", "model.pt")):
            raise LesionlabError(f"{src.archive or src.root}: no models/model.pt; export a trained bundle first")
        check_bundle_before_running(src, trust)
        metadata = load_json(os.path.join(src.root, "configs", "metadata.json"))
        scratch = os.path.join(work, ".prediction")
        try:
            with BundlePredictor(src.root, torch.device(device), overrides, scratch) as predictor:
                segmenter = CaseSegmenter(src, predictor, metadata, fmt, output_dir, work, spacing, overwrite)
                segmenter.log_file = log_file
                def done(case, failure) -> None:
                    if on_case is not None:
                        on_case(_case_row(case, {case.case_id: failure.reason} if failure else {}, segmenter))

                batch = run_cases(cases, segmenter, log=logger, name=lambda c: c.case_id, on_done=done)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        summary = _summary(src, metadata, cases, batch, segmenter, fmt, device, overrides)
    atomic_write_text(os.path.join(output_dir, summary_name), json.dumps(summary, indent=2))
    return summary
