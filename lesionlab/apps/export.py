"""Hospital deployment of a lesionlab bundle: ``export`` an archive, ``verify`` it, ``infer`` from it alone.

* :func:`export_bundle` writes a self-contained zip: the bundle's ``configs/``, ``docs/``, ``LICENSE`` (and
  ``scripts/`` when the bundle has custom code), ``models/model.pt`` (plain state dict), ``models/model.ts``
  (TorchScript via MONAI's ``ckpt_export``), ``models/model.onnx`` (input ``image``, output ``pred``, dynamic batch
  axis) and ``manifest.json`` (sha256 of every file, package versions). Everything sits under one top-level folder
  named after the bundle, so unzipping into MONAI Label's ``apps/monaibundle/model/`` gives a servable bundle.
* :func:`verify_bundle` checks an archive or bundle folder the way a hospital would before deploying it (metadata
  against the offline schema, ``verify_net_in_out``, weights, TorchScript and ONNX in a fresh process that cannot
  import lesionlab, output parity with PyTorch, manifest hashes) and lists config entries that execute code.
* :func:`infer_bundle` runs the bundle's own inference config from the archive on NIfTI/NRRD/MHA files, DICOM series,
  folders or datalists, writing NIfTI, 3D Slicer ``.seg.nrrd`` or DICOM SEG plus a JSON report per case and a
  ``summary.json``; a failing case is reported and the others still run.

Parity tolerances of :func:`verify_bundle` (``|y - y_ref| <= atol + rtol * |y_ref|`` on the network's raw output):

* TorchScript vs PyTorch: ``atol = rtol = 1e-4``. The scripted module runs the same ATen CPU kernels as the eager
  network, so outputs are normally identical (0.0 measured for the D-UNet and 3D U-Net bundles on CPU); the margin
  only covers graph-executor fusions that reorder float32 sums, and other CPUs' vector code paths.
* ONNX Runtime vs PyTorch: ``atol = rtol = 1e-3``. ONNX Runtime folds batch norm into the convolutions and uses its
  own (MLAS) kernels, so float32 rounding differs in every layer: about 1e-7 relative per operation, accumulated over
  the network's depth (measured: 4e-8 for D-UNet, 8e-7 for the 3D U-Net with outputs up to 1.8; trained networks
  with larger logits scale it up). 1e-3 leaves a margin of three orders of magnitude, and a logit change of 1e-3
  moves a sigmoid probability by at most 2.5e-4, far below anything that flips the 0.5 threshold of the label map.
"""

from __future__ import annotations

import ast
import contextlib
import datetime
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lesionlab import __version__
from lesionlab.apps.bundle import BUNDLES_DIR, bundle_path, export_torchscript
from lesionlab.errors import DataError, LesionlabError
from lesionlab.utils import atomic_path, atomic_write_text

__all__ = [
    "ARCHIVE_FORMAT",
    "TOLERANCES",
    "SAFE_TARGET_PREFIXES",
    "OUTPUT_FORMATS",
    "BundleSource",
    "Check",
    "VerifyReport",
    "CodeFinding",
    "open_bundle",
    "export_bundle",
    "verify_bundle",
    "scan_config_code",
    "infer_bundle",
    "parse_overrides",
]

logger = logging.getLogger(__name__)

ARCHIVE_FORMAT = "lesionlab-bundle-archive/1"
#: (atol, rtol) of the output parity checks; see the module docstring for the reasons
TOLERANCES: dict[str, tuple[float, float]] = {"torchscript": (1e-4, 1e-4), "onnx": (1e-3, 1e-3)}
#: ``_target_`` prefixes that are trusted (dotless names are MONAI's own short names)
SAFE_TARGET_PREFIXES = ("monai.", "torch.", "lesionlab.", "numpy.", "ignite.")
#: output formats of :func:`infer_bundle` and the file each writes per case
OUTPUT_FORMATS = {"nifti": "_seg.nii.gz", "nrrd": ".seg.nrrd", "dicom-seg": "_seg.dcm"}
#: packages whose versions go into the manifest (PyPI names)
_MANIFEST_PACKAGES = ("lesionlab", "torch", "monai", "numpy", "onnx", "onnxscript", "onnxruntime", "pytorch-ignite",
                      "nibabel", "SimpleITK", "pydicom", "highdicom", "pynrrd", "jsonschema")
_BUNDLE_ITEMS = ("configs", "docs", "scripts", "LICENSE")
_IGNORED = shutil.ignore_patterns("__pycache__", "*.pyc", ".*")
_MAX_ARCHIVE_BYTES = 8 * 1024**3  # refuse to extract more than this (zip bombs)


# ----------------------------------------------------------------------------------------------------------- helpers
def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _package_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {}
    for name in _MANIFEST_PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = None
    return out


def _config_file(root: str, name: str) -> str | None:
    for ext in ("json", "yaml"):
        path = os.path.join(root, "configs", f"{name}.{ext}")
        if os.path.exists(path):
            return path
    return None


def _load_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(path, f"not readable JSON ({err})") from err


def _list_files(root: str) -> list[str]:
    out = []
    for folder, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        out += [os.path.relpath(os.path.join(folder, f), root).replace(os.sep, "/") for f in sorted(files)
                if not f.endswith(".pyc")]
    return sorted(out)


@contextlib.contextmanager
def _bundle_on_path(root: str) -> Iterator[None]:
    """Put the bundle root on ``sys.path`` (its ``scripts`` package) and unload a previous ``scripts`` package."""
    for name in [m for m in sys.modules if m == "scripts" or m.startswith("scripts.")]:
        del sys.modules[name]
    sys.path.insert(0, root)
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(root)


@contextlib.contextmanager
def _quiet_monai() -> Iterator[None]:
    """Silence MONAI's per-workflow notices (security banner, 'skipping logging') while a workflow is built."""
    names = ("monai.bundle.workflows", "monai.bundle.config_parser", "monai.bundle.scripts", "monai.apps.utils")
    loggers = [logging.getLogger(n) for n in names]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def parse_overrides(items: Sequence[str] | None) -> dict[str, Any]:
    """``["ID=VALUE", ...]`` (values as Python literals when they parse, else strings) -> ``{ID: VALUE}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise LesionlabError(f"--set expects ID=VALUE, got {item!r}")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value
    return out


def _input_shape(metadata: Mapping, batch: int = 1) -> tuple[int, ...]:
    """``(batch, num_channels, *spatial_shape)`` of ``inputs.image``; string sizes are evaluated with n = p = 1."""
    fmt = metadata.get("network_data_format", {}).get("inputs", {})
    spec = fmt.get("image") or next(iter(fmt.values()), None)
    if not spec:
        raise LesionlabError("metadata has no network_data_format.inputs entry")
    spatial = []
    for s in spec.get("spatial_shape", []):
        if isinstance(s, int):
            spatial.append(s)
        elif str(s).strip() == "*":
            spatial.append(64)
        else:
            spatial.append(int(_eval_size(str(s))))
    return (batch, int(spec.get("num_channels", 1)), *spatial)


def _eval_size(text: str, n: int = 1, p: int = 1) -> int:
    """Evaluate a metadata size expression such as ``16*n`` or ``2**p`` without ``eval``."""
    ops: dict[type, Callable[[int, int], int]] = {
        ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b, ast.Mult: lambda a, b: a * b,
        ast.Pow: lambda a, b: a**b, ast.FloorDiv: lambda a, b: a // b,
    }

    def ev(node: ast.AST) -> int:
        if isinstance(node, ast.Expression):
            return ev(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id in ("n", "p"):
            return n if node.id == "n" else p
        if isinstance(node, ast.BinOp) and type(node.op) in ops:
            return ops[type(node.op)](ev(node.left), ev(node.right))
        raise LesionlabError(f"unsupported spatial_shape expression {text!r}")

    return ev(ast.parse(text, mode="eval"))


def _build_network(root: str, overrides: Mapping[str, Any] | None = None):
    """``network_def`` of the bundle's inference config, built on the CPU in eval mode."""
    from monai.bundle import ConfigParser

    cfg = _config_file(root, "inference")
    if cfg is None:
        raise LesionlabError(f"{root}: bundle has no configs/inference.json")
    parser = ConfigParser()
    parser.read_config(cfg)
    parser.read_meta(os.path.join(root, "configs", "metadata.json"))
    parser["bundle_root"] = root
    for k, v in (overrides or {}).items():
        parser[k] = v
    with _bundle_on_path(root):
        net = parser.get_parsed_content("network_def", instantiate=True)
    return net.to("cpu").eval()


def _load_state_dict(path: str) -> dict:
    """Weights of a checkpoint: a plain state dict, or the ``model`` entry of a nested one (weights only)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any load failure means the file is not a weights-only checkpoint
        raise DataError(path, f"not a weights-only PyTorch checkpoint ({type(err).__name__}: {err})") from err
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, Mapping) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise DataError(path, "checkpoint is not a state dict of tensors (nor has one under 'model')")
    return dict(ckpt)


def _load_weights(net, state: Mapping, path: str) -> None:
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()][:4]
        raise LesionlabError(
            f"{path}: weights do not match network_def of configs/inference.json ({' '.join(lines)[:600]}). If the "
            "model was trained with config overrides (e.g. network_def#features), write them into the bundle's "
            "configs or pass them with --set"
        ) from err


def _set_config_ids(root: str, overrides: Mapping[str, Any]) -> list[str]:
    """Write ``a#b`` overrides into every JSON config of ``root`` that defines the top-level id ``a``."""
    changed, applied = [], set()
    for name in sorted(os.listdir(os.path.join(root, "configs"))):
        path = os.path.join(root, "configs", name)
        if not name.endswith(".json") or name == "metadata.json":
            continue
        cfg = _load_json(path)
        touched = False
        for key, value in overrides.items():
            parts = key.replace("::", "#").split("#")
            node = cfg
            for part in parts[:-1]:
                node = node.get(part) if isinstance(node, dict) else None
                if node is None:
                    break
            if isinstance(node, dict) and (parts[-1] in node or len(parts) > 1):
                node[parts[-1]] = value
                touched = True
                applied.add(key)
        if touched:
            atomic_write_text(path, json.dumps(cfg, indent=4) + "\n")
            changed.append(f"configs/{name}")
    unknown = sorted(set(overrides) - applied)
    if unknown:
        raise LesionlabError(f"--set: no config of the bundle defines {unknown}")
    return changed


# ------------------------------------------------------------------------------------------------- opening a bundle
@dataclass
class BundleSource:
    """A bundle ready to read: its root folder (extracted when it came as an archive).

    Attributes:
        root: bundle root (has ``configs/``).
        name: bundle name (the root folder's name).
        archive: the zip it was extracted from, if any.
        manifest: parsed ``manifest.json``, if present.
        from_project: True when the bundle is one of this project's own bundles (``bundles/``).
    """

    root: str
    name: str
    archive: str | None
    manifest: dict | None
    from_project: bool


def _safe_extract(archive: str, dest: str) -> None:
    try:
        zf = zipfile.ZipFile(archive)
    except (OSError, zipfile.BadZipFile) as err:
        raise DataError(archive, f"not a readable zip archive ({err})") from err
    with zf:
        total = 0
        for info in zf.infolist():
            name = info.filename
            parts = name.replace("\\", "/").split("/")
            if name.startswith(("/", "\\")) or ".." in parts or re.match(r"^[A-Za-z]:", name):
                raise DataError(archive, f"unsafe path in archive: {name!r}")
            if (info.external_attr >> 16) & 0o170000 == 0o120000:
                raise DataError(archive, f"symbolic link in archive: {name!r}")
            total += info.file_size
        if total > _MAX_ARCHIVE_BYTES:
            raise DataError(archive, f"archive expands to {total / 1024**3:.1f} GiB; refusing to extract")
        zf.extractall(dest)


@contextlib.contextmanager
def open_bundle(path: str) -> Iterator[BundleSource]:
    """Yield a :class:`BundleSource` for a bundle folder, a project bundle name, or an exported ``.zip``.

    An archive is extracted (safely: no absolute paths, ``..`` or links) into a temporary folder that is removed on
    exit; a folder is used in place.

    Raises:
        DataError: for a missing path, an unreadable or unsafe archive, or an archive without a bundle inside.
    """
    if os.path.isfile(path):
        with tempfile.TemporaryDirectory(prefix="lesionlab-bundle-") as tmp:
            _safe_extract(path, tmp)
            if os.path.isdir(os.path.join(tmp, "configs")):
                root = tmp
            else:
                tops = [d for d in os.listdir(tmp) if os.path.isdir(os.path.join(tmp, d, "configs"))]
                if len(tops) != 1:
                    raise DataError(path, "archive holds no bundle (expected one top-level folder with configs/)")
                root = os.path.join(tmp, tops[0])
            manifest_path = os.path.join(root, "manifest.json")
            manifest = _load_json(manifest_path) if os.path.exists(manifest_path) else None
            name = (manifest or {}).get("bundle_name") or os.path.basename(root)
            yield BundleSource(root, name, os.path.abspath(path), manifest, False)
        return
    if not os.path.exists(path) and not os.path.isdir(os.path.join(BUNDLES_DIR, path)):
        raise DataError(path, "no such bundle folder or archive")
    try:
        root = bundle_path(path)
    except LesionlabError as err:
        raise DataError(path, "not a bundle folder (no configs/ inside) nor a .zip archive") from err
    manifest_path = os.path.join(root, "manifest.json")
    manifest = _load_json(manifest_path) if os.path.exists(manifest_path) else None
    project = os.path.realpath(BUNDLES_DIR)
    from_project = os.path.realpath(root).startswith(project + os.sep)
    yield BundleSource(root, os.path.basename(root), None, manifest, from_project)


# ------------------------------------------------------------------------------------------------------------ export
def _export_onnx(net, shape: tuple[int, ...], out: str) -> dict[str, Any]:
    """ONNX export with a dynamic batch axis: the dynamo exporter first, the legacy one if that fails.

    The graph is written as one file (weights inside, ``external_data=False``) so that the archive has no
    ``.onnx.data`` companion whose name could go stale. The example input has batch 2 so that the exporter does not
    specialise the batch axis to 1.
    """
    import onnx
    import torch

    example = torch.rand(2, *shape[1:])
    errors = []
    for dynamo in (True, False):
        try:
            with atomic_path(out, suffix=".onnx") as tmp, contextlib.redirect_stdout(sys.stderr):
                if dynamo:
                    batch = torch.export.Dim("batch", min=1, max=4096)
                    torch.onnx.export(net, (example,), tmp, input_names=["image"], output_names=["pred"],
                                      dynamic_shapes=({0: batch},), dynamo=True, external_data=False, verbose=False)
                else:
                    torch.onnx.export(net, (example,), tmp, input_names=["image"], output_names=["pred"],
                                      dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}}, dynamo=False)
                model = onnx.load(tmp)
                onnx.checker.check_model(model)
            opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
            return {"exporter": "dynamo" if dynamo else "torchscript-legacy", "opset": opset,
                    "input_names": ["image"], "output_names": ["pred"], "dynamic_axes": {"image": [0], "pred": [0]},
                    "fallback_reason": errors[0] if errors else None}
        except Exception as err:  # noqa: BLE001 - try the next exporter, report both if both fail
            errors.append(f"{'dynamo' if dynamo else 'legacy'}: {type(err).__name__}: {str(err).splitlines()[0][:300]}")
            logger.warning("ONNX export (%s) failed: %s", "dynamo" if dynamo else "legacy", errors[-1])
    raise LesionlabError("ONNX export failed with both exporters: " + " | ".join(errors))


def _export_ts(root: str, shape: tuple[int, ...]) -> dict[str, Any]:
    """``ckpt_export`` (script); trace with the metadata input shape when the network cannot be scripted."""
    from monai.bundle import ckpt_export

    try:
        with _bundle_on_path(root), _quiet_monai():
            export_torchscript(root)
        return {"method": "script"}
    except Exception as err:  # noqa: BLE001 - fall back to tracing, as model-zoo documents for such networks
        reason = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
        logger.warning("torch.jit.script failed (%s); tracing instead", reason)
    with _bundle_on_path(root), _quiet_monai():
        ckpt_export("network_def", filepath=os.path.join(root, "models", "model.ts"),
                    ckpt_file=os.path.join(root, "models", "model.pt"),
                    meta_file=os.path.join(root, "configs", "metadata.json"),
                    config_file=_config_file(root, "inference"), bundle_root=root, use_trace=True,
                    input_shape=list(shape))
    return {"method": "trace", "script_error": reason}


def export_bundle(
    bundle: str,
    out: str,
    ckpt: str | None = None,
    random_weights: bool = False,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Write a self-contained deployment archive of ``bundle`` to ``out`` (a ``.zip``, written atomically).

    Args:
        bundle: bundle folder or project bundle name (or an archive, to re-export it).
        out: archive to write.
        ckpt: trained weights (default: the bundle's ``models/model.pt``); a state dict or a checkpoint with a
            ``model`` entry.
        random_weights: without trained weights, export a randomly initialised network (for tests only; recorded in
            the manifest as ``"random_weights": true``).
        overrides: config ids written into the archived JSON configs (e.g. ``{"network_def#features": [...]}`` when
            the model was trained with that override); recorded in the manifest.
        seed: seed of the random weights.

    Returns:
        the manifest written into the archive.

    Raises:
        LesionlabError: no trained weights (and no ``random_weights``), weights that do not match ``network_def``,
            missing configs, or a failed export.
    """
    import torch

    overrides = dict(overrides or {})
    with open_bundle(bundle) as src, tempfile.TemporaryDirectory(prefix="lesionlab-export-") as tmp:
        for required in ("configs/metadata.json",):
            if not os.path.exists(os.path.join(src.root, required)):
                raise LesionlabError(f"{src.root}: bundle has no {required}")
        if _config_file(src.root, "inference") is None:
            raise LesionlabError(f"{src.root}: bundle has no configs/inference.json (MONAI Label and infer need it)")
        root = os.path.join(tmp, src.name)
        os.makedirs(os.path.join(root, "models"))
        for item in _BUNDLE_ITEMS:
            s = os.path.join(src.root, item)
            if os.path.isdir(s):
                shutil.copytree(s, os.path.join(root, item), ignore=_IGNORED)
            elif os.path.isfile(s):
                shutil.copy2(s, os.path.join(root, item))
        if not os.path.exists(os.path.join(root, "LICENSE")):
            logger.warning("%s has no LICENSE file; model-zoo and hospitals expect one", src.root)
        changed = _set_config_ids(root, overrides) if overrides else []
        metadata = _load_json(os.path.join(root, "configs", "metadata.json"))
        shape = _input_shape(metadata)
        ckpt_path = ckpt or os.path.join(src.root, "models", "model.pt")
        trained = os.path.exists(ckpt_path)
        torch.manual_seed(seed)  # only matters for random weights
        net = _build_network(root)
        source: dict[str, Any]
        if trained:
            state = _load_state_dict(ckpt_path)
            _load_weights(net, state, ckpt_path)
            source = {"file": os.path.basename(ckpt_path), "sha256": _sha256(ckpt_path)}
        elif random_weights:
            source = {"file": None, "random_seed": seed}
            logger.warning("exporting RANDOM weights (testing only): the archive's model predicts nothing useful")
        else:
            raise LesionlabError(
                f"{ckpt_path}: no trained weights. Train the bundle first (lesionlab run train {src.name} ...), "
                "give a checkpoint with --ckpt, or pass --random-weights to export an untrained model for testing"
            )
        torch.save(net.state_dict(), os.path.join(root, "models", "model.pt"))
        t0 = time.time()
        ts_info = _export_ts(root, shape)
        onnx_info = _export_onnx(net, shape, os.path.join(root, "models", "model.onnx"))
        logger.info("TorchScript and ONNX exports took %.1f s", time.time() - t0)
        manifest = {
            "format": ARCHIVE_FORMAT,
            "bundle_name": src.name,
            "bundle_version": metadata.get("version"),
            "lesionlab_version": __version__,
            "created_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "random_weights": not trained,
            "weights_source": source,
            "config_overrides": overrides,
            "configs_changed_by_overrides": changed,
            "input_shape_example": list(shape),
            "torchscript": ts_info,
            "onnx": onnx_info,
            "python": platform.python_version(),
            "platform": platform.platform(),
            "packages": _package_versions(),
            "files": {rel: {"sha256": _sha256(os.path.join(root, rel)), "bytes": os.path.getsize(os.path.join(root, rel))}
                      for rel in _list_files(root)},
        }
        atomic_write_text(os.path.join(root, "manifest.json"), json.dumps(manifest, indent=2) + "\n")
        with atomic_path(out, suffix=".zip") as tmp_zip:
            with zipfile.ZipFile(tmp_zip, "w", compression=zipfile.ZIP_DEFLATED) as zf:
                for rel in _list_files(root):
                    zf.write(os.path.join(root, rel), f"{src.name}/{rel}")
    return manifest


# ------------------------------------------------------------------------------------------------------ code safety
@dataclass
class CodeFinding:
    """A config entry that executes code outside the trusted namespaces."""

    file: str
    id: str
    text: str
    reason: str


_SAFE_BUILTINS = {
    "list", "dict", "tuple", "set", "frozenset", "sorted", "len", "range", "min", "max", "sum", "abs", "round",
    "int", "float", "str", "bool", "zip", "enumerate", "isinstance", "any", "all", "map", "filter", "reversed",
    "print", "None", "True", "False",
}
#: modules a config may import, and stdlib call prefixes that only read (paths, globbing, maths)
_SAFE_IMPORTS = {"monai", "torch", "numpy", "lesionlab", "ignite", "glob", "os", "math"}
_SAFE_STDLIB = ("glob.glob", "glob.iglob", "os.path.", "os.sep", "math.")
#: trusted namespaces' entries that download, compile or load arbitrary code
_DENIED = ("torch.hub", "torch.utils.cpp_extension", "torch.ops.load_library", "torch.classes.load_library",
           "monai.bundle.download", "monai.bundle.load", "monai.apps.download", "monai.apps.utils.download",
           "numpy.ctypeslib", "torch.load", "numpy.load")
_REF = re.compile(r"@[A-Za-z0-9_#:]+")


def _dotted(node: ast.AST) -> str | None:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


def _untrusted(path: str) -> str | None:
    """Why the dotted ``path`` is not trusted, or ``None`` when it is."""
    for denied in _DENIED:
        if path == denied or path.startswith(denied + ".") or path.startswith(denied + "_"):
            return f"uses {path} (loads, downloads or compiles code or pickles)"
    if path.startswith(SAFE_TARGET_PREFIXES) or (path + ".").startswith(_SAFE_STDLIB) or path in _SAFE_IMPORTS:
        return None
    return f"uses {path} (outside monai/torch/numpy/lesionlab)"


def _expression_problems(expr: str, aliases: dict[str, str]) -> list[str]:
    """Why a ``$`` expression is not trusted (empty list: only trusted namespaces, references and safe builtins)."""
    code = _REF.sub("_cfg_ref_", expr)
    try:
        tree = ast.parse(code, mode="exec")
    except SyntaxError:
        return ["not a parseable Python expression"]
    problems: list[str] = []
    local = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}
    local |= {a.arg for n in ast.walk(tree) if isinstance(n, ast.Lambda) for a in n.args.args}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            problems += [f"imports {a.name}" for a in node.names if a.name.split(".")[0] not in _SAFE_IMPORTS]
        elif isinstance(node, ast.ImportFrom):
            for a in node.names:
                full = f"{node.module or ''}.{a.name}"
                if (node.module or "").split(".")[0] not in _SAFE_IMPORTS or _untrusted(full):
                    problems.append(f"imports {full}")
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__"):
            problems.append(f"uses dunder attribute {node.attr}")
    attr_roots: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and not isinstance(getattr(node, "_parent", None), ast.Attribute):
            path = _dotted(node)
            if path is None:
                continue
            root = path.split(".")[0]
            for sub in ast.walk(node):
                if isinstance(sub, ast.Name):
                    attr_roots.add(id(sub))
            if root in local or root == "_cfg_ref_":
                continue
            resolved = aliases.get(root, root if root in ("np",) + tuple(_SAFE_IMPORTS) else None)
            if resolved is None:
                problems.append(f"calls {path} (unknown name {root})")
                continue
            resolved_path = ("numpy" if resolved == "np" else resolved) + path[len(root):]
            problem = _untrusted(resolved_path)
            if problem:
                problems.append(problem)
        for child in ast.iter_child_nodes(node):
            child._parent = node  # type: ignore[attr-defined]
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load) and id(node) not in attr_roots:
            if node.id in local or node.id == "_cfg_ref_" or node.id in _SAFE_BUILTINS:
                continue
            if node.id in aliases:  # a name bound by an import entry: what it names must be trusted
                problem = _untrusted(aliases[node.id])
                if problem:
                    problems.append(problem)
                continue
            if node.id in _SAFE_IMPORTS or node.id == "np":
                continue
            problems.append(f"uses {node.id}")
    return sorted(set(problems))


def _walk_config(node: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(node, Mapping):
        for k, v in node.items():
            yield from _walk_config(v, f"{prefix}#{k}" if prefix else str(k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _walk_config(v, f"{prefix}#{i}" if prefix else str(i))
    yield prefix, node


def _logging_conf_findings(path: str) -> list[CodeFinding]:
    """``logging.conf`` lines that older MONAI (``fileConfig``) would ``eval``: non-stdlib classes, non-literal args."""
    findings = []
    try:
        lines = open(path, encoding="utf-8").read().splitlines()
    except OSError:
        return []
    for n, line in enumerate(lines, start=1):
        key, _, value = line.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "class" and not re.fullmatch(r"(logging\.(handlers\.)?)?[A-Za-z]+(Handler|Formatter)", value):
            findings.append(CodeFinding(os.path.basename(path), f"line {n}", line.strip(), "handler class outside logging"))
        if key in ("args", "kwargs"):
            try:
                ast.literal_eval(value.replace("sys.stdout", "None").replace("sys.stderr", "None"))
            except (ValueError, SyntaxError):
                findings.append(CodeFinding(os.path.basename(path), f"line {n}", line.strip(),
                                            "non-literal handler arguments (evaluated as code by logging.fileConfig)"))
    return findings


def scan_config_code(root: str) -> list[CodeFinding]:
    """Config entries of a bundle that execute code outside the trusted namespaces (issue 5).

    Every ``_target_`` must be a MONAI short name or start with one of :data:`SAFE_TARGET_PREFIXES`; every ``$``
    expression may only use those namespaces (after ``$import`` of ``monai``, ``torch``, ``numpy``, ``lesionlab``,
    ``ignite``, ``glob``, ``os`` or ``math``), read-only stdlib helpers (``glob.glob``, ``os.path.*``), config
    references (``@id``), its own loop variables and harmless builtins. Downloads and code loading inside trusted
    namespaces (``torch.hub``, ``torch.load``...) and dunder attributes are reported too, as are custom ``scripts``
    and ``logging.conf`` lines that ``logging.fileConfig`` would evaluate. YAML configs are read when PyYAML is
    installed.
    """
    findings: list[CodeFinding] = []
    configs = os.path.join(root, "configs")
    if not os.path.isdir(configs):
        return findings
    for name in _list_files(configs):  # relative paths, sub-folders (variants/...) included
        path = os.path.join(configs, name)
        if name.endswith(".conf"):
            findings += _logging_conf_findings(path)
            continue
        if name.endswith(".json"):
            try:
                cfg = _load_json(path)
            except DataError as err:
                findings.append(CodeFinding(name, "", "", f"unreadable: {err.problem}"))
                continue
        elif name.endswith((".yaml", ".yml")):
            try:
                import yaml

                with open(path) as f:
                    cfg = yaml.safe_load(f)
            except Exception as err:  # noqa: BLE001 - a config that cannot be read cannot be checked
                findings.append(CodeFinding(name, "", "", f"unreadable: {err}"))
                continue
        else:
            continue
        if name == "metadata.json":
            continue
        aliases: dict[str, str] = {}
        entries = list(_walk_config(cfg))
        for _, value in entries:  # imports first, wherever they appear
            if isinstance(value, str) and value.startswith("$") and re.match(r"^\$\s*(import|from)\s", value):
                with contextlib.suppress(SyntaxError):
                    for node in ast.walk(ast.parse(value[1:])):
                        if isinstance(node, ast.Import):
                            for a in node.names:
                                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
                        elif isinstance(node, ast.ImportFrom) and node.module:
                            for a in node.names:
                                aliases[a.asname or a.name] = f"{node.module}.{a.name}"
        for cid, value in entries:
            if isinstance(value, str) and value.startswith("$"):
                for problem in _expression_problems(value[1:], aliases):
                    findings.append(CodeFinding(name, cid, value[:160], problem))
            elif isinstance(value, Mapping) and isinstance(value.get("_target_"), str):
                target = value["_target_"].strip()
                if target.startswith("$"):
                    continue  # an expression target: checked as an expression above
                if target.startswith("scripts."):
                    findings.append(CodeFinding(name, cid, target, "custom code shipped in the bundle's scripts/"))
                elif "." in target and _untrusted(target):
                    findings.append(CodeFinding(name, cid, target, "_target_ " + str(_untrusted(target))))
    scripts = os.path.join(root, "scripts")
    if os.path.isdir(scripts):
        for rel in _list_files(scripts):
            if rel.endswith(".py"):
                findings.append(CodeFinding(f"scripts/{rel}", "", "", "Python module run when the bundle is used"))
    return findings


# ------------------------------------------------------------------------------------------------------------ verify
@dataclass
class Check:
    """One verification step: ``status`` is ``PASS``, ``FAIL``, ``WARN`` or ``SKIP``."""

    name: str
    status: str
    detail: str
    values: dict[str, Any] = field(default_factory=dict)


@dataclass
class VerifyReport:
    """All checks of :func:`verify_bundle`; ``ok`` when none failed."""

    bundle: str
    checks: list[Check]

    @property
    def ok(self) -> bool:
        return not any(c.status == "FAIL" for c in self.checks)

    @property
    def failures(self) -> list[str]:
        return [c.name for c in self.checks if c.status == "FAIL"]

    def as_dict(self) -> dict[str, Any]:
        return {"bundle": self.bundle, "ok": self.ok, "failures": self.failures,
                "checks": [asdict(c) for c in self.checks]}

    def format(self) -> str:
        width = max(len(c.name) for c in self.checks) if self.checks else 10
        lines = [f"{c.status:<4}  {c.name:<{width}}  {c.detail}" for c in self.checks]
        n_pass = sum(c.status == "PASS" for c in self.checks)
        lines.append(f"verify {self.bundle}: {n_pass} passed, {len(self.failures)} failed"
                     + (f" ({', '.join(self.failures)})" if self.failures else ""))
        return "\n".join(lines)


_STANDALONE = r"""
import importlib.abc, json, sys
BLOCKED = {"lesionlab", "scripts"}
class _Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked: a deployed model must run without it")
sys.meta_path.insert(0, _Block())
import numpy as np
args = json.loads(sys.argv[1])
x = np.load(args["x"])
res = {}
if args.get("ts"):
    try:
        import torch
        extra = {"metadata.json": ""}
        m = torch.jit.load(args["ts"], map_location="cpu", _extra_files=extra)
        m.eval()
        with torch.no_grad():
            y = m(torch.from_numpy(x))
        np.save(args["ts_out"], y.detach().numpy())
        meta = json.loads(extra["metadata.json"]) if extra["metadata.json"] else {}
        res["ts"] = {"ok": True, "shape": list(y.shape), "metadata_version": meta.get("version")}
    except Exception as e:
        res["ts"] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:800]}
if args.get("onnx"):
    try:
        import onnx, onnxruntime as ort
        onnx.checker.check_model(onnx.load(args["onnx"]))
        s = ort.InferenceSession(args["onnx"], providers=["CPUExecutionProvider"])
        ins, outs = [i.name for i in s.get_inputs()], [o.name for o in s.get_outputs()]
        res["onnx"] = {"inputs": ins, "outputs": outs, "input_shape": [str(d) for d in s.get_inputs()[0].shape]}
        y = s.run([outs[0]], {ins[0]: x})[0]
        np.save(args["onnx_out"], y)
        res["onnx"].update(ok=True, shape=list(y.shape))
    except Exception as e:
        res.setdefault("onnx", {}).update(ok=False, error=f"{type(e).__name__}: {e}"[:800])
res["lesionlab_imported"] = any(k.split(".")[0] == "lesionlab" for k in sys.modules)
print("RESULT " + json.dumps(res))
"""


def _parity(y: np.ndarray, ref: np.ndarray, kind: str) -> tuple[bool, dict[str, Any]]:
    atol, rtol = TOLERANCES[kind]
    if y.shape != ref.shape:
        return False, {"shape": list(y.shape), "expected_shape": list(ref.shape)}
    diff = np.abs(y.astype(np.float64) - ref.astype(np.float64))
    ok = bool(np.all(diff <= atol + rtol * np.abs(ref)))
    return ok, {"max_abs_diff": float(diff.max()), "max_ref_abs": float(np.abs(ref).max()), "atol": atol, "rtol": rtol}


def verify_bundle(path: str, timeout: float = 600.0, strict_code: bool = False) -> VerifyReport:
    """Verify a deployment archive or a bundle folder; see :class:`VerifyReport`.

    Checks (each PASS/FAIL, SKIP when it does not apply):

    ``files`` (metadata, inference config, LICENSE, weights; for an archive also ``model.ts``, ``model.onnx``,
    ``manifest.json``), ``manifest`` (every file's sha256, no unlisted file), ``metadata-schema`` (jsonschema against
    the schema copy shipped with lesionlab, never downloaded), ``monailabel-metadata`` (input ``image``, output
    ``pred``, labels), ``code`` (entries that execute code outside trusted namespaces: WARN, FAIL with
    ``strict_code``; listed before anything from the bundle is executed), ``net-in-out`` (MONAI ``verify_net_in_out``
    on the CPU), ``weights`` (``models/model.pt`` loads into ``network_def``, strict), ``torchscript`` and ``onnx``
    (load and run in a fresh Python process that cannot import lesionlab, on a random batch of 2, compared with
    PyTorch within :data:`TOLERANCES`).

    Args:
        path: ``.zip`` archive, bundle folder or project bundle name.
        timeout: seconds allowed for the standalone subprocess.
        strict_code: report code findings as FAIL instead of WARN.
    """
    import torch

    checks: list[Check] = []
    with open_bundle(path) as src:
        root = src.root
        is_archive = src.archive is not None or src.manifest is not None
        # files
        required = ["configs/metadata.json", "LICENSE", "models/model.pt"]
        optional = ["models/model.ts", "models/model.onnx"]
        if is_archive:
            required += optional + ["manifest.json"]
        missing = [f for f in required if not os.path.exists(os.path.join(root, f))]
        if _config_file(root, "inference") is None:
            missing.append("configs/inference.json")
        present = [f for f in optional if os.path.exists(os.path.join(root, f))]
        checks.append(Check("files", "FAIL" if missing else "PASS",
                            f"missing: {', '.join(missing)}" if missing else
                            f"configs, LICENSE, model.pt{''.join(', ' + os.path.basename(p) for p in present)} present"))
        # manifest
        if src.manifest is not None:
            listed = src.manifest.get("files", {})
            bad = [rel for rel, info in listed.items()
                   if not os.path.exists(os.path.join(root, rel)) or _sha256(os.path.join(root, rel)) != info.get("sha256")]
            extra = [rel for rel in _list_files(root) if rel != "manifest.json" and rel not in listed]
            ok = not bad and not extra and src.manifest.get("format") == ARCHIVE_FORMAT
            detail = (f"{len(listed)} files, sha256 match; lesionlab {src.manifest.get('lesionlab_version')}, "
                      f"torch {src.manifest.get('packages', {}).get('torch')}, "
                      f"monai {src.manifest.get('packages', {}).get('monai')}"
                      + ("; RANDOM WEIGHTS (testing only)" if src.manifest.get("random_weights") else ""))
            if not ok:
                detail = "; ".join(x for x in (f"hash mismatch or missing: {bad}" if bad else "",
                                               f"not in manifest: {extra}" if extra else "",
                                               "" if src.manifest.get("format") == ARCHIVE_FORMAT else
                                               f"unknown format {src.manifest.get('format')!r}") if x)
            checks.append(Check("manifest", "PASS" if ok else "FAIL", detail))
        else:
            checks.append(Check("manifest", "SKIP", "no manifest.json (a bundle folder, not an exported archive)"))
        meta_path = os.path.join(root, "configs", "metadata.json")
        metadata = _load_json(meta_path) if os.path.exists(meta_path) else {}
        # metadata schema (offline)
        checks.append(_check_schema(metadata, meta_path))
        checks.append(_check_monailabel_metadata(metadata, src.name))
        # code that the config executes, before running any of it
        findings = scan_config_code(root)
        origin = "this project's bundles" if src.from_project else "outside this project"
        if findings:
            status = "FAIL" if strict_code else "WARN"
            listing = "; ".join(f"{f.file}:{f.id} {f.reason}" for f in findings[:12])
            checks.append(Check("code", status, f"bundle from {origin}: {len(findings)} entries execute code outside "
                                                f"monai/torch/numpy/lesionlab: {listing}",
                                {"findings": [asdict(f) for f in findings]}))
        else:
            checks.append(Check("code", "PASS", f"bundle from {origin}: every _target_ and $ expression stays in "
                                                "monai/torch/numpy/lesionlab (and read-only glob/os.path)"))
        if strict_code and findings:
            checks.append(Check("execution", "SKIP", "not executing a bundle with untrusted code (strict)"))
            return VerifyReport(src.archive or root, checks)
        checks += _check_network(root, metadata, timeout, torch)
    return VerifyReport(src.archive or root, checks)


def _check_schema(metadata: Mapping, meta_path: str) -> Check:
    import jsonschema

    from lesionlab.resources import META_SCHEMA_PATH

    if not metadata:
        return Check("metadata-schema", "FAIL", f"{meta_path}: missing or empty")
    wanted = os.path.basename(str(metadata.get("schema", "")))
    available = {os.path.basename(p): p for p in [META_SCHEMA_PATH]}
    schema_dir = os.path.dirname(META_SCHEMA_PATH)
    available.update({f: os.path.join(schema_dir, f) for f in os.listdir(schema_dir) if f.startswith("meta_schema")})
    if wanted not in available:
        return Check("metadata-schema", "FAIL", f"metadata names schema {wanted or '(none)'}; available offline: "
                                                f"{sorted(available)} (nothing is downloaded)")
    try:
        jsonschema.validate(metadata, _load_json(available[wanted]))
    except jsonschema.ValidationError as err:
        where = "/".join(str(p) for p in err.absolute_path) or "(top level)"
        return Check("metadata-schema", "FAIL", f"{where}: {err.message[:300]}")
    return Check("metadata-schema", "PASS", f"valid against {wanted} (offline copy)")


def _check_monailabel_metadata(metadata: Mapping, name: str) -> Check:
    fmt = metadata.get("network_data_format", {})
    inputs, outputs = fmt.get("inputs", {}), fmt.get("outputs", {})
    problems = []
    if next(iter(inputs), None) != "image":
        problems.append(f"first input is {next(iter(inputs), None)!r}, MONAI Label reads 'image'")
    if next(iter(outputs), None) != "pred":
        problems.append(f"first output is {next(iter(outputs), None)!r}, MONAI Label writes 'pred'")
    pred = next(iter(outputs.values()), {}) if outputs else {}
    labels = {str(v).lower(): int(k) for k, v in pred.get("channel_def", {}).items()
              if str(v).lower() != "background" and str(k).isdigit()}
    if not labels:
        problems.append("no non-background label in outputs.pred.channel_def")
    spatial = next(iter(inputs.values()), {}).get("spatial_shape", []) if inputs else []
    kind = next((t for t in ("deepedit", "deepgrow", "detection", "segmentation", "classification") if t in name.lower()),
                "segmentation (default)")
    detail = (f"input 'image', output 'pred', labels {labels}, dimension {len(spatial) or 3} "
              f"(spatial_shape {spatial}), infer type {kind}")
    return Check("monailabel-metadata", "FAIL" if problems else "PASS", "; ".join(problems) if problems else detail)


def _check_network(root: str, metadata: Mapping, timeout: float, torch) -> list[Check]:
    from monai.bundle import verify_net_in_out

    checks: list[Check] = []
    cfg = _config_file(root, "inference")
    meta_path = os.path.join(root, "configs", "metadata.json")
    if cfg is None or not metadata:
        return [Check("net-in-out", "SKIP", "no inference config or metadata")]
    try:
        with _bundle_on_path(root), _quiet_monai():
            verify_net_in_out(net_id="network_def", meta_file=meta_path, config_file=cfg, device="cpu",
                              bundle_root=root)
        checks.append(Check("net-in-out", "PASS", f"network_def maps {list(_input_shape(metadata))} as the metadata "
                                                  "declares (channels, dtype)"))
    except Exception as err:  # noqa: BLE001 - the failure is the check's result
        checks.append(Check("net-in-out", "FAIL", f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"))
    pt = os.path.join(root, "models", "model.pt")
    if not os.path.exists(pt):
        skipped = "no PyTorch reference without weights"
        return checks + [Check("weights", "FAIL", "no models/model.pt (train the bundle, or verify an exported archive)")
                         ] + [Check(k, "SKIP", skipped) for k in ("torchscript", "onnx")]
    try:
        net = _build_network(root)
        _load_weights(net, _load_state_dict(pt), pt)
        n_params = sum(p.numel() for p in net.parameters())
        checks.append(Check("weights", "PASS", f"models/model.pt loads into network_def (strict, {n_params} "
                                               "parameters, weights only)"))
    except Exception as err:  # noqa: BLE001
        checks.append(Check("weights", "FAIL", str(err)[:400]))
        skipped = "no PyTorch reference without loadable weights"
        return checks + [Check(k, "SKIP", skipped) for k in ("torchscript", "onnx")]
    ts = os.path.join(root, "models", "model.ts")
    onnx_path = os.path.join(root, "models", "model.onnx")
    if not os.path.exists(ts) and not os.path.exists(onnx_path):
        return checks + [Check(k, "SKIP", f"no models/model.{e} (lesionlab export makes it)")
                         for k, e in (("torchscript", "ts"), ("onnx", "onnx"))]
    shape = _input_shape(metadata, batch=2)  # batch 2 proves the dynamic batch axis of the ONNX model
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(*shape, generator=gen)
    with torch.no_grad():
        ref = net(x).numpy()
    with tempfile.TemporaryDirectory(prefix="lesionlab-verify-") as tmp:
        args = {"x": os.path.join(tmp, "x.npy"), "ts": ts if os.path.exists(ts) else None,
                "onnx": onnx_path if os.path.exists(onnx_path) else None,
                "ts_out": os.path.join(tmp, "ts.npy"), "onnx_out": os.path.join(tmp, "onnx.npy")}
        np.save(args["x"], x.numpy())
        env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        try:
            r = subprocess.run([sys.executable, "-I", "-c", _STANDALONE, json.dumps(args)], capture_output=True,
                               text=True, timeout=timeout, cwd=tmp, env=env)
            line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
            res = json.loads(line[7:]) if line else {}
            crash = "" if line else f"subprocess exited {r.returncode}: {r.stderr.strip()[-400:]}"
        except subprocess.TimeoutExpired:
            res, crash = {}, f"subprocess timed out after {timeout:.0f} s"
        leaked = res.get("lesionlab_imported", False)
        for kind, key, out in (("torchscript", "ts", args["ts_out"]), ("onnx", "onnx", args["onnx_out"])):
            if args[key] is None:
                checks.append(Check(kind, "SKIP", f"no models/model.{key} (lesionlab export makes it)"))
                continue
            info = res.get(key)
            if not info or not info.get("ok"):
                checks.append(Check(kind, "FAIL", (info or {}).get("error") or crash or "no result"))
                continue
            ok, vals = _parity(np.load(out), ref, kind)
            vals.update(info)
            extra = ""
            if kind == "onnx":
                names_ok = info.get("inputs", [None])[0] == "image" and info.get("outputs", [None])[0] == "pred"
                ok = ok and names_ok
                extra = (f"; input {info.get('inputs')} {info.get('input_shape')}, output {info.get('outputs')}"
                         + ("" if names_ok else " (expected 'image' -> 'pred')"))
            elif info.get("metadata_version") not in (None, metadata.get("version")):
                ok = False
                extra = f"; embedded metadata version {info.get('metadata_version')} != {metadata.get('version')}"
            if leaked:
                ok, extra = False, extra + "; lesionlab was imported"
            detail = (f"runs without lesionlab on a batch of {shape[0]} {list(shape[1:])}; max |{kind} - PyTorch| = "
                      f"{vals.get('max_abs_diff', float('nan')):.3g} (tolerance {vals.get('atol')} abs + "
                      f"{vals.get('rtol')} rel, max |PyTorch| {vals.get('max_ref_abs', float('nan')):.3g}){extra}")
            if "expected_shape" in vals:
                detail = f"output shape {vals['shape']} != PyTorch {vals['expected_shape']}"
            checks.append(Check(kind, "PASS" if ok else "FAIL", detail, vals))
    return checks


# ------------------------------------------------------------------------------------------------------------- infer
def _failure_reason(err: BaseException) -> str:
    """A one-line reason: lesionlab's own message, else the root cause (and the transform that raised it).

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
    root = chain[-1]
    found = (re.search(r"applying transform <([\w.]+)", str(x)) for x in chain)
    where = next((m.group(1).split(".")[-1] for m in found if m), None)
    lines = [ln.strip() for ln in str(root).strip().splitlines() if ln.strip()]
    text = f"{type(root).__name__}: {lines[0] if lines else ''}".strip()
    return (f"{where}: {text}" if where else text)[:500]


def _predict(root: str, nifti: str, out_dir: str, device: Any, overrides: Mapping[str, Any]) -> str:
    """Run the bundle's inference workflow on one NIfTI; return the prediction file it wrote."""
    from monai.bundle import ConfigWorkflow

    cfg = _config_file(root, "inference")
    os.makedirs(out_dir, exist_ok=True)
    params = {"bundle_root": root, "device": device, "dataset#data": [{"image": nifti}], "output_dir": out_dir,
              "load_pretrain": True, **overrides}
    with _bundle_on_path(root), _quiet_monai():
        wf = ConfigWorkflow(config_file=cfg, meta_file=os.path.join(root, "configs", "metadata.json"),
                            logging_file=False, workflow_type="infer", **params)
        wf.initialize()
        wf.run()
        wf.finalize()
    written = [os.path.join(d, f) for d, _, files in os.walk(out_dir) for f in files
               if f.endswith((".nii.gz", ".nii"))]
    if len(written) != 1:
        raise LesionlabError(f"the bundle's inference wrote {len(written)} NIfTI predictions (expected 1); is "
                             "SaveImaged in its postprocessing writing to @output_dir?")
    return written[0]


def infer_bundle(
    bundle: str,
    inputs: str,
    output_dir: str,
    fmt: str = "nifti",
    device: str = "cpu",
    overrides: Mapping[str, Any] | None = None,
    series_uid: str | None = None,
) -> dict[str, Any]:
    """Segment every case of ``inputs`` with the bundle (archive or folder) and write outputs to ``output_dir``.

    For each case: ``<case>_seg.nii.gz`` (``nifti``; the bundle's ``SaveImaged`` output), ``<case>.seg.nrrd``
    (``nrrd``) or ``<case>_seg.dcm`` (``dicom-seg``; DICOM inputs only), plus ``<case>_report.json`` (input,
    geometry, per-label voxel count and volume in mL). ``summary.json`` lists every case with its status and, for
    failed cases, the reason; ``exit_code`` in it is 0 only when every case succeeded.

    Args:
        bundle: ``.zip`` from :func:`export_bundle`, a bundle folder or a project bundle name; weights come from its
            ``models/model.pt``.
        inputs: image file, DICOM series folder, folder of inputs or datalist JSON (see
            :func:`lesionlab.data.io.find_cases`).
        output_dir: folder for the outputs (created).
        fmt: one of :data:`OUTPUT_FORMATS`.
        device: ``cpu`` or a CUDA device such as ``cuda`` or ``cuda:N``.
        overrides: config ids of the inference config to override (``{"roi_start": [4, 4]}``).
        series_uid: series to read from DICOM folders holding several.

    Returns:
        the summary (also written to ``output_dir/summary.json``).

    Raises:
        LesionlabError: for an unknown format or device, a bundle without weights, DICOM SEG requested while no input
            is DICOM, or no input found. Failures of single cases are reported in the summary instead.
    """
    import SimpleITK as sitk  # noqa: N813 - the library's usual alias
    import torch

    from lesionlab.data.dicom import write_dicom_seg
    from lesionlab.data.io import find_cases, label_volumes_ml, prepare_case, segments_from_metadata, write_seg_nrrd
    from lesionlab.pipelines.batch import run_cases

    if fmt not in OUTPUT_FORMATS:
        raise LesionlabError(f"--format must be one of {sorted(OUTPUT_FORMATS)}, got {fmt!r}")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise LesionlabError(f"--device {device}: no CUDA device is available here; use --device cpu")
    torch_device = torch.device(device)
    overrides = dict(overrides or {})
    output_dir = os.path.abspath(output_dir)
    cases = find_cases(inputs, series_uid=series_uid)
    if fmt == "dicom-seg" and not any(c.kind == "dicom" for c in cases):
        raise LesionlabError(f"{inputs}: DICOM SEG output needs DICOM input (a series folder): a SEG must reference "
                             "the source images. Use --format nifti or --format nrrd for NIfTI/NRRD/MHA inputs")
    os.makedirs(output_dir, exist_ok=True)
    with open_bundle(bundle) as src, tempfile.TemporaryDirectory(prefix="lesionlab-infer-") as work:
        if not os.path.exists(os.path.join(src.root, "models", "model.pt")):
            raise LesionlabError(f"{src.archive or src.root}: no models/model.pt; export a trained bundle first")
        findings = scan_config_code(src.root)
        if findings and not src.from_project:
            for f in findings:
                logger.warning("bundle config %s:%s executes code outside trusted namespaces (%s): %s", f.file, f.id,
                               f.reason, f.text)
        metadata = _load_json(os.path.join(src.root, "configs", "metadata.json"))
        segments = segments_from_metadata(metadata)

        def one(case) -> dict[str, Any]:
            if fmt == "dicom-seg" and case.kind != "dicom":
                raise LesionlabError(f"{case.path}: DICOM SEG needs a DICOM series as input, this is {case.kind}")
            case_dir = os.path.join(work, case.case_id)
            os.makedirs(case_dir, exist_ok=True)
            prepared = prepare_case(case, case_dir)
            pred_file = _predict(src.root, prepared.nifti, os.path.join(case_dir, "pred"), torch_device, overrides)
            pred = sitk.ReadImage(pred_file)
            ref = sitk.ReadImage(prepared.nifti)
            if pred.GetSize() != ref.GetSize():
                raise LesionlabError(f"prediction grid {pred.GetSize()} differs from the input grid {ref.GetSize()}")
            label = sitk.GetArrayFromImage(pred)
            spacing = [float(s) for s in pred.GetSpacing()]
            voxel_mm3 = float(np.prod(spacing))
            out = os.path.join(output_dir, case.case_id + OUTPUT_FORMATS[fmt])
            if fmt == "nifti":
                with atomic_path(out, suffix=".nii.gz") as tmp:
                    shutil.copyfile(pred_file, tmp)
            elif fmt == "nrrd":
                write_seg_nrrd(pred, out, segments)
            else:
                write_dicom_seg(pred, prepared.series, out, segments, algorithm_name=src.name,
                                algorithm_version=str(metadata.get("version", "")))
            volumes = label_volumes_ml(label, voxel_mm3, segments)
            report = {
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
                "format": fmt,
                "bundle": src.name,
                "bundle_version": metadata.get("version"),
                "lesionlab_version": __version__,
            }
            atomic_write_text(os.path.join(output_dir, f"{case.case_id}_report.json"), json.dumps(report, indent=2))
            return report

        reports: dict[str, dict[str, Any]] = {}
        seconds: dict[str, float] = {}

        def guarded(case) -> None:
            t0 = time.time()
            try:
                reports[case.case_id] = one(case)
            except LesionlabError:
                raise
            except Exception as err:  # noqa: BLE001 - re-raised with a readable one-line reason
                raise LesionlabError(_failure_reason(err)) from err
            finally:
                seconds[case.case_id] = time.time() - t0

        batch = run_cases(cases, guarded, log=logger, name=lambda c: c.case_id)
        reasons = {f.case: f.reason for f in batch.failed}
        summary = {
            "bundle": src.name,
            "bundle_version": metadata.get("version"),
            "source": src.archive or src.root,
            "random_weights": bool((src.manifest or {}).get("random_weights", False)),
            "format": fmt,
            "device": device,
            "overrides": overrides,
            "n_cases": len(cases),
            "n_ok": len(batch.ok),
            "n_failed": len(batch.failed),
            "exit_code": batch.exit_code,
            "seconds": round(batch.seconds, 2),
            "cases": [{"case": c.case_id, "input": c.path, "status": "failed" if c.case_id in reasons else "ok",
                       "error": reasons.get(c.case_id), "seconds": round(seconds.get(c.case_id, 0.0), 2),
                       "output": reports.get(c.case_id, {}).get("output"),
                       "lesion_volume_ml": reports.get(c.case_id, {}).get("lesion_volume_ml")} for c in cases],
        }
    atomic_write_text(os.path.join(output_dir, "summary.json"), json.dumps(summary, indent=2))
    return summary
