"""The bundle's inference workflow and the segmentation of one case, for ``lesionlab infer`` and the web app.

* :class:`BundlePredictor`: the bundle's inference workflow (network, weights, transforms, evaluator), built once and
  fed one case at a time; it is rebuilt only after a case failed inside it (an Ignite engine that raised is not safely
  re-runnable).
* :class:`CaseSegmenter`: prepares one case, predicts, writes the output in one of :data:`OUTPUT_FORMATS` and the
  case's JSON report.
* :func:`failure_reason`: the one-line reason of a failed case.

The run over all cases (checks of the bundle, logging, the summary) is
:func:`lesionlab.apps.deploy.infer.infer_bundle`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from lesionlab import __version__
from lesionlab.apps.deploy.archive import BundleSource
from lesionlab.apps.deploy.config import bundle_on_path, config_file, load_json, quiet_monai
from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_path, atomic_write_text

__all__ = ["OUTPUT_FORMATS", "BundlePredictor", "CaseSegmenter", "failure_reason"]

#: output formats of :func:`~lesionlab.apps.deploy.infer.infer_bundle` and the file each writes per case
OUTPUT_FORMATS = {"nifti": "_seg.nii.gz", "nrrd": ".seg.nrrd", "dicom-seg": "_seg.dcm"}
#: failed cases' tracebacks, which the run's log file collects (the name of the run's logger kept)
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
    """Segment one case and write its output and report; one instance per
    :func:`~lesionlab.apps.deploy.infer.infer_bundle` run.

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
