"""Hospital deployment of a lesionlab bundle: ``export`` an archive, ``verify`` it, ``infer`` from it alone.

Modules:

* :mod:`~lesionlab.apps.deploy.config`: reading a bundle's configs, overrides, input shape, network and weights.
* :mod:`~lesionlab.apps.deploy.archive`: safe extraction, file listing, sha256 hashes, the manifest.
* :mod:`~lesionlab.apps.deploy.export`: :func:`export_bundle` (TorchScript, ONNX, the archive).
* :mod:`~lesionlab.apps.deploy.guard`: :func:`scan_bundle`, the allow-list check of everything a config executes.
* :mod:`~lesionlab.apps.deploy.verify`: :func:`verify_bundle`; the runtime check runs
  :mod:`~lesionlab.apps.deploy.standalone_check` in an isolated interpreter that cannot import lesionlab.
* :mod:`~lesionlab.apps.deploy.infer`: :func:`infer_bundle` (the workflow is built once per run).
* :mod:`~lesionlab.apps.deploy.predictor`: the bundle's inference workflow (``BundlePredictor``) and the segmentation
  of one case (``CaseSegmenter``), used by :func:`infer_bundle` and the web app.
"""
from __future__ import annotations

from lesionlab.apps.deploy.archive import ARCHIVE_FORMAT, BundleSource, open_bundle
from lesionlab.apps.deploy.config import parse_overrides
from lesionlab.apps.deploy.export import export_bundle
from lesionlab.apps.deploy.guard import Finding, scan_bundle
from lesionlab.apps.deploy.infer import infer_bundle
from lesionlab.apps.deploy.predictor import OUTPUT_FORMATS
from lesionlab.apps.deploy.verify import TOLERANCES, Check, VerifyReport, verify_bundle

__all__ = [
    "ARCHIVE_FORMAT",
    "TOLERANCES",
    "OUTPUT_FORMATS",
    "BundleSource",
    "Check",
    "VerifyReport",
    "Finding",
    "open_bundle",
    "export_bundle",
    "verify_bundle",
    "scan_bundle",
    "infer_bundle",
    "parse_overrides",
]
