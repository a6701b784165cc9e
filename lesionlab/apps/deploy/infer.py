"""``lesionlab infer``: run a bundle's own inference config, from an archive or a folder, on hospital input.

Inputs are NIfTI/NRRD/MHA files, DICOM series, folders or datalists (:func:`lesionlab.data.io.find_cases`); outputs
are NIfTI, 3D Slicer ``.seg.nrrd`` or DICOM SEG plus a JSON report per case and a ``summary.json``. A failing case is
reported and the others still run.

Before anything from the bundle executes, an archive's manifest must match and the config guard
(:mod:`lesionlab.apps.deploy.guard`) must pass (``trust`` runs unlisted expressions, and says so). A failed case is
one line on the console; its traceback goes to ``infer.log`` in the output folder. A case whose output and report
exist is skipped unless ``overwrite``; temporary files of a killed run are removed at the start.

The bundle's inference workflow (network, weights, transforms, evaluator) is built once per run by
:class:`BundlePredictor` and fed one case at a time; it is rebuilt only after a case failed inside it (an Ignite
engine that raised is not safely re-runnable).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from lesionlab import __version__
from lesionlab.apps.deploy.archive import BundleSource, manifest_problems, open_bundle
from lesionlab.apps.deploy.config import bundle_on_path, config_file, load_json, quiet_monai
from lesionlab.apps.deploy.guard import scan_bundle
from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_path, atomic_write_text, remove_stale_temp_files

__all__ = ["OUTPUT_FORMATS", "LOG_NAME", "BundlePredictor", "CaseSegmenter", "check_bundle_before_running",
           "clean_previous_run", "infer_bundle", "failure_reason"]

logger = logging.getLogger(__name__)

#: output formats of :func:`infer_bundle` and the file each writes per case
OUTPUT_FORMATS = {"nifti": "_seg.nii.gz", "nrrd": ".seg.nrrd", "dicom-seg": "_seg.dcm"}
#: the log file of a run (inside the output folder): every failed case's traceback
LOG_NAME = "infer.log"
_trace = logging.getLogger("lesionlab.apps.deploy.infer.trace")


def failure_reason(err: BaseException) -> str:
    """A one-line reason: lesionlab's own message (also when wrapped by MONAI), else the root cause (and the
    transform that raised it).

    MONAI wraps errors several times (``applying transform <LoadImaged ...>``, the failing config expression); the
    first exception of the chain says where, the last one says what.
    """
    if isinstance(err, LesionlabError):
        return str(err).strip()[:500]
    chain: list[BaseException] = []
    e: BaseException | None = err
    while e is not None and e not in chain:
        chain.append(e)
        e = e.__cause__ or e.__context__
    user = next((x for x in chain if isinstance(x, LesionlabError)), None)
    if user is not None:  # a DataError raised inside a transform: its own message names the file
        return str(user).strip()[:500]
    root = chain[-1]
    found = (re.search(r"applying transform <([\w.]+)", str(x)) for x in chain)
    where = next((m.group(1).split(".")[-1] for m in found if m), None)
    lines = [ln.strip() for ln in str(root).strip().splitlines() if ln.strip()]
    text = f"{type(root).__name__}: {lines[0] if lines else ''}".strip()
    return (f"{where}: {text}" if where else text)[:500]


class BundlePredictor:
    """The bundle's inference workflow, built once and run on one NIfTI at a time.

    The workflow's ``dataset`` gets one item per case (``{"image": nifti}``) and its ``SaveImaged`` writes into one
    scratch folder that is emptied before each case, so the single file found there afterwards is the prediction.
    :meth:`run` gives the evaluator's post-processed output instead (any input file the bundle's ``LoadImaged``
    reads, any output: label maps, class probabilities), which the web app uses.

    Args:
        root: bundle root.
        device: torch device of the workflow.
        overrides: config ids of the inference config to override.
        scratch: folder for the workflow's output (created; emptied before every case).
        config: name of the inference config in ``configs/`` (default ``inference``).

    Example::

        with BundlePredictor(root, torch.device("cpu"), {}, tmp) as predictor:
            for nifti in files:
                pred_file = predictor.predict(nifti)
    """

    def __init__(self, root: str, device: Any, overrides: Mapping[str, Any], scratch: str,
                 outputs: tuple[str, ...] = (".nii.gz", ".nii"), config: str = "inference") -> None:
        self.root = root
        self.outputs = outputs  # suffixes of the prediction files the bundle's SaveImaged writes
        self.config = config
        self.device = device
        self.overrides = dict(overrides)
        self.out_dir = scratch
        self._workflow = None
        self._path = contextlib.ExitStack()
        self.builds = 0  # how many times the workflow was built (1 unless a case failed inside it)
        self.record_dir: str | None = None  # where the registration transform writes its record for this case

    def __enter__(self) -> BundlePredictor:
        self._path.enter_context(bundle_on_path(self.root))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._workflow is not None:
                with quiet_monai():
                    self._workflow.finalize()
        finally:
            self._workflow = None
            self._path.close()

    def _build(self):
        """Build and initialise the workflow (instantiates the network and loads the weights)."""
        from monai.bundle import ConfigWorkflow

        cfg = config_file(self.root, self.config)
        if cfg is None:
            raise LesionlabError(f"{self.root}: bundle has no configs/{self.config}.json")
        params = {"bundle_root": self.root, "device": self.device, "dataset#data": [{"image": ""}],
                  "output_dir": self.out_dir, "load_pretrain": True, **self.overrides}
        with quiet_monai():
            wf = ConfigWorkflow(config_file=cfg,
                                meta_file=os.path.join(self.root, "configs", "metadata.json"), logging_file=False,
                                workflow_type="infer", **params)
            wf.initialize()
        self.builds += 1
        return wf

    def parsed(self, config_id: str) -> Any:
        """An object of the built workflow's config (``"network"``...), building the workflow when needed."""
        if self._workflow is None:
            self._workflow = self._build()
        return self._workflow.parser.get_parsed_content(config_id)

    def run(self, path: str) -> dict:
        """Run the workflow on one input file; return the evaluator's post-processed output item (``pred``...)."""
        if self._workflow is None:
            self._workflow = self._build()
        shutil.rmtree(self.out_dir, ignore_errors=True)
        os.makedirs(self.out_dir)
        dataset = self._workflow.parser.get_parsed_content("dataset")
        _set_record_dir(dataset, self.record_dir)
        items = [{"image": path}]
        if hasattr(dataset, "set_data"):  # cached datasets (CacheDataset...) rebuild their cache
            dataset.set_data(items)
        else:
            dataset.data = items
        try:
            with quiet_monai():
                self._workflow.run()
        except BaseException:
            self._workflow = None  # rebuilt for the next case
            raise
        output = self._workflow.parser.get_parsed_content("evaluator").state.output
        item = output[0] if isinstance(output, (list, tuple)) else output
        return item if isinstance(item, dict) else {"pred": item}

    def predict(self, nifti: str) -> str:
        """Run the workflow on ``nifti``; return the prediction file it wrote (valid until the next call)."""
        self.run(nifti)
        written = [os.path.join(d, f) for d, _, files in os.walk(self.out_dir) for f in files
                   if f.endswith(self.outputs)]
        if len(written) != 1:
            raise LesionlabError(f"the bundle's inference wrote {len(written)} {'/'.join(self.outputs)} predictions "
                                 "(expected 1); is SaveImaged in its postprocessing writing to @output_dir?")
        return written[0]


class CaseSegmenter:
    """Segment one case and write its output and report; one instance per :func:`infer_bundle` run.

    Collects each case's report and wall time for the summary. Any error is re-raised as a
    :class:`LesionlabError` with a one-line reason (:func:`failure_reason`), for
    :func:`lesionlab.pipelines.case_runner.run_cases` to record.
    """

    def __init__(self, src: BundleSource, predictor: BundlePredictor, metadata: Mapping, fmt: str, output_dir: str,
                 work: str, spacing: Sequence[float] | None = None, overwrite: bool = False) -> None:
        from lesionlab.data.io import segments_from_metadata

        self.src, self.predictor, self.metadata = src, predictor, metadata
        self.fmt, self.output_dir, self.work = fmt, output_dir, work
        self.spacing, self.overwrite = spacing, overwrite
        self.segments = segments_from_metadata(metadata)
        self.reports: dict[str, dict[str, Any]] = {}
        self.seconds: dict[str, float] = {}
        self.skipped: list[str] = []
        self.log_file: str | None = None

    def _complete(self, case) -> dict[str, Any] | None:
        """The report of a previous run when this case's output and report are both there (written atomically,
        the report last) for the same bundle version and format."""
        path = os.path.join(self.output_dir, f"{case.case_id}_report.json")
        out = os.path.join(self.output_dir, case.case_id + OUTPUT_FORMATS[self.fmt])
        try:
            report = load_json(path)
        except Exception:  # noqa: BLE001 - no usable report: not complete
            return None
        same = (report.get("output") == out and report.get("input") == case.path and report.get("format") == self.fmt
                and report.get("bundle_version") == self.metadata.get("version"))
        return report if same and os.path.isfile(out) else None

    def __call__(self, case) -> None:
        t0 = time.time()
        try:
            previous = None if self.overwrite else self._complete(case)
            if previous is not None:
                self.skipped.append(case.case_id)
                self.reports[case.case_id] = previous
                return
            self.reports[case.case_id] = self.segment(case)
        except Exception as err:
            _trace.error("case %s (%s) failed", case.case_id, case.path, exc_info=True)
            if isinstance(err, LesionlabError):
                raise
            raise LesionlabError(failure_reason(err)) from err
        finally:
            self.seconds[case.case_id] = time.time() - t0

    def segment(self, case) -> dict[str, Any]:
        """Prepare ``case``, predict, write the output in the requested format and the report; return the report."""
        import SimpleITK as sitk

        from lesionlab.data.io import prepare_case

        if self.fmt == "dicom-seg" and case.kind != "dicom":
            raise LesionlabError(f"{case.path}: DICOM SEG needs a DICOM series as input, this is {case.kind}")
        case_dir = os.path.join(self.work, case.case_id)
        os.makedirs(case_dir, exist_ok=True)
        prepared = prepare_case(case, case_dir, self.spacing)
        if self.fmt == "dicom-seg":
            _check_seg_source(prepared.series)  # before inference, not after it
        self.predictor.record_dir = case_dir
        pred_file = self.predictor.predict(prepared.nifti)
        registration = _registration_record(case_dir)
        pred = sitk.ReadImage(pred_file)
        ref = sitk.ReadImage(prepared.nifti)
        if pred.GetSize() != ref.GetSize():
            raise LesionlabError(f"prediction grid {pred.GetSize()} differs from the input grid {ref.GetSize()}")
        out = os.path.join(self.output_dir, case.case_id + OUTPUT_FORMATS[self.fmt])
        self._write_output(pred, pred_file, prepared, out)
        report = self._report(case, prepared, pred, out)
        report["assumptions"] = list(prepared.assumptions)
        report["registration"] = registration
        atomic_write_text(os.path.join(self.output_dir, f"{case.case_id}_report.json"), json.dumps(report, indent=2))
        return report

    def _write_output(self, pred, pred_file: str, prepared, out: str) -> None:
        from lesionlab.data.dicom_seg import write_dicom_seg
        from lesionlab.data.io import write_seg_nrrd

        if self.fmt == "nifti":
            with atomic_path(out, suffix=".nii.gz") as tmp:
                shutil.copyfile(pred_file, tmp)
        elif self.fmt == "nrrd":
            write_seg_nrrd(pred, out, self.segments)
        else:
            write_dicom_seg(pred, prepared.series, out, self.segments, algorithm_name=self.src.name,
                            algorithm_version=str(self.metadata.get("version", "")))

    def _report(self, case, prepared, pred, out: str) -> dict[str, Any]:
        import SimpleITK as sitk

        from lesionlab.data.io import label_volumes_ml

        spacing = [float(s) for s in pred.GetSpacing()]
        voxel_mm3 = float(np.prod(spacing))
        volumes = label_volumes_ml(sitk.GetArrayFromImage(pred), voxel_mm3, self.segments)
        return {
            "case": case.case_id,
            "input": case.path,
            "input_type": case.kind,
            "dicom": prepared.series.info() if prepared.series else None,
            "shape": list(pred.GetSize()),
            "spacing_mm": spacing,
            "origin_lps_mm": list(pred.GetOrigin()),
            "direction": list(pred.GetDirection()),
            "voxel_volume_mm3": voxel_mm3,
            "labels": volumes,
            "lesion_voxels": sum(v["voxels"] for v in volumes.values()),
            "lesion_volume_ml": sum(v["volume_ml"] for v in volumes.values()),
            "output": out,
            "format": self.fmt,
            "bundle": self.src.name,
            "bundle_version": self.metadata.get("version"),
            "lesionlab_version": __version__,
        }


def _check_request(fmt: str, device: str) -> None:
    import torch

    if fmt not in OUTPUT_FORMATS:
        raise LesionlabError(f"--format must be one of {sorted(OUTPUT_FORMATS)}, got {fmt!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LesionlabError(f"--device {device}: no CUDA device is available here; use --device cpu")


def _set_record_dir(dataset, folder: str | None) -> None:
    """Point the registration transforms of the dataset's preprocessing at ``folder`` (the current case's)."""
    from lesionlab.transforms import RegisterToTemplate

    transform = getattr(dataset, "transform", None)
    for t in getattr(transform, "transforms", [transform]):
        register = getattr(t, "register", t)
        if isinstance(register, RegisterToTemplate):
            register.record_dir = folder


def _registration_record(folder: str) -> dict[str, Any] | None:
    """What the registration transform recorded for the case (mode, map, NCC, coverage, seconds), if any."""
    found = [f for f in sorted(os.listdir(folder)) if f.endswith("_registration.json")]
    if not found:
        return None
    record = load_json(os.path.join(folder, found[0]))
    record.pop("native_affine", None)
    record.pop("model_grid_affine", None)
    return record


def _check_seg_source(series) -> None:
    """Refuse, before inference, a DICOM SEG whose source series it cannot reference (a multi-frame source must
    give a plane position for every frame)."""
    import pydicom

    from lesionlab.data.dicom import read_dicom_series
    from lesionlab.data.dicom_seg import frame_slices

    if series is None:
        raise LesionlabError("DICOM SEG needs a DICOM series as input")
    if len(series.files) == 1:
        header = pydicom.dcmread(series.files[0], stop_before_pixels=True)
        if int(header.get("NumberOfFrames", 1) or 1) > 1:
            reference, _ = read_dicom_series(series.folder, series.series_instance_uid)
            frame_slices(header, reference, series.files[0])


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
        fmt: one of :data:`OUTPUT_FORMATS`.
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
