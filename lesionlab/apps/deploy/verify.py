"""``lesionlab verify``: check an archive or bundle folder the way a hospital would before deploying it.

Metadata against the offline schema, ``verify_net_in_out``, weights, TorchScript and ONNX in a fresh process that
cannot import lesionlab (:mod:`lesionlab.apps.deploy.standalone_check`), output parity with PyTorch, manifest hashes,
and the config entries that execute code.

Parity is checked on logits (the networks' raw, pre-activation output), on the one of three seeded inputs (uniform
noise, piecewise-constant blocks, a smooth field) whose logits spread most; the range, spread, largest absolute and
relative differences and both tolerances are printed. Tolerances (``|y - y_ref| <= atol + rtol * |y_ref|``):

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

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from lesionlab.apps.deploy import standalone_check
from lesionlab.apps.deploy.archive import BundleSource, manifest_problems, open_bundle, sha256
from lesionlab.apps.deploy.config import bundle_on_path, config_file, input_shape, load_json, load_network, quiet_monai
from lesionlab.apps.deploy.guard import scan_bundle

__all__ = ["TOLERANCES", "Check", "VerifyReport", "verify_bundle"]

#: (atol, rtol) of the output parity checks; see the module docstring for the reasons
TOLERANCES: dict[str, tuple[float, float]] = {"torchscript": (1e-4, 1e-4), "onnx": (1e-3, 1e-3)}
#: runtime check name -> (key of the standalone check's arguments and result, model file extension)
_RUNTIMES = {"torchscript": "ts", "onnx": "onnx"}


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


def verify_bundle(path: str, timeout: float = 600.0, strict_code: bool = False, trust: bool = False,
                  expected_sha256: str | None = None) -> VerifyReport:
    """Verify a deployment archive or a bundle folder; see :class:`VerifyReport`.

    Checks (each PASS/FAIL, SKIP when it does not apply), in this order; nothing from the bundle is executed before
    ``sha256``, ``manifest`` and ``code`` have passed:

    ``sha256`` (with ``expected_sha256``: the archive file against the published hash), ``files`` (metadata,
    inference config, LICENSE, weights; for an archive also ``model.ts``, ``model.onnx``, ``manifest.json``),
    ``manifest`` (every file's sha256, no unlisted file), ``metadata-schema`` (jsonschema against the schema copy
    shipped with lesionlab, never downloaded), ``monailabel-metadata`` (input ``image``, output ``pred``, labels),
    ``code`` (the allow-list guard of :mod:`lesionlab.apps.deploy.guard`: FAIL on any finding unless ``trust``),
    then ``net-in-out`` (MONAI ``verify_net_in_out`` on the CPU), ``weights`` (``models/model.pt`` loads into
    ``network_def``, strict), ``torchscript`` and ``onnx`` (load and run in a fresh Python process that cannot import
    lesionlab, on inputs chosen for a spread of logits, compared with PyTorch within :data:`TOLERANCES`).

    Args:
        path: ``.zip`` archive, bundle folder or project bundle name.
        timeout: seconds allowed for the standalone subprocess.
        strict_code: refuse guard findings even with ``trust``.
        trust: run a bundle whose configs hold expressions outside the allow-list (the findings are still listed,
            as WARN).
        expected_sha256: published sha256 of the archive file.
    """
    checks: list[Check] = []
    if expected_sha256 is not None:
        checks.append(_check_sha256(path, expected_sha256))
    with open_bundle(path) as src:
        root = src.root
        meta_path = os.path.join(root, "configs", "metadata.json")
        metadata = load_json(meta_path) if os.path.exists(meta_path) else {}
        checks += [_check_files(src), _check_manifest(src), _check_schema(metadata, meta_path),
                   _check_monailabel_metadata(metadata, src.name)]
        code = _check_code(src, trust and not strict_code)
        checks.append(code)
        blocked = [c.name for c in checks if c.status == "FAIL" and c.name in ("sha256", "manifest", "code")]
        if blocked:
            hint = "; --trust runs unlisted expressions" if blocked == ["code"] and not strict_code else ""
            checks.append(Check("execution", "SKIP", f"nothing from the bundle was executed: {', '.join(blocked)} "
                                                     f"failed{hint}"))
        else:
            checks += _check_network(root, metadata, timeout)
    return VerifyReport(src.archive or root, checks)


def _check_sha256(path: str, expected: str) -> Check:
    """The archive file's sha256 against the hash published with it."""
    want = expected.strip().lower()
    if not os.path.isfile(path):
        return Check("sha256", "FAIL", f"{path}: --sha256 checks an archive file; this is not a file")
    got = sha256(path)
    if got != want:
        return Check("sha256", "FAIL", f"archive sha256 {got} differs from the published {want}: not the archive "
                                       "that was published (damaged or altered)")
    return Check("sha256", "PASS", f"archive sha256 {got} matches the published hash")


def _check_files(src: BundleSource) -> Check:
    root = src.root
    required = ["configs/metadata.json", "LICENSE", "models/model.pt"]
    optional = ["models/model.ts", "models/model.onnx"]
    if src.archive is not None or src.manifest is not None:
        required += optional + ["manifest.json"]
    missing = [f for f in required if not os.path.exists(os.path.join(root, f))]
    if config_file(root, "inference") is None:
        missing.append("configs/inference.json")
    if missing:
        return Check("files", "FAIL", f"missing: {', '.join(missing)}")
    present = [os.path.basename(f) for f in optional if os.path.exists(os.path.join(root, f))]
    return Check("files", "PASS", f"configs, LICENSE, model.pt{''.join(', ' + p for p in present)} present")


def _check_manifest(src: BundleSource) -> Check:
    manifest = src.manifest
    if manifest is None:
        return Check("manifest", "SKIP", "no manifest.json (a bundle folder, not an exported archive)")
    problems = manifest_problems(src.root, manifest)
    if problems:
        return Check("manifest", "FAIL", "; ".join(problems))
    packages = manifest.get("packages", {})
    return Check("manifest", "PASS", f"{len(manifest.get('files', {}))} files, sha256 match; lesionlab "
                                     f"{manifest.get('lesionlab_version')}, torch {packages.get('torch')}, monai "
                                     f"{packages.get('monai')}"
                                     + ("; RANDOM WEIGHTS (testing only)" if manifest.get("random_weights") else ""))


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
        jsonschema.validate(metadata, load_json(available[wanted]))
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
    kinds = ("deepedit", "deepgrow", "detection", "segmentation", "classification")
    kind = next((t for t in kinds if t in name.lower()), "segmentation (default)")
    detail = (f"input 'image', output 'pred', labels {labels}, dimension {len(spatial) or 3} "
              f"(spatial_shape {spatial}), infer type {kind}")
    return Check("monailabel-metadata", "FAIL" if problems else "PASS", "; ".join(problems) if problems else detail)


def _check_code(src: BundleSource, trust: bool) -> Check:
    """The allow-list guard over every config item that would execute, before anything from the bundle runs."""
    findings = scan_bundle(src.root)
    origin = "this project's bundles" if src.from_project else "outside this project"
    if not findings:
        return Check("code", "PASS", f"bundle from {origin}: every $ expression, _target_ and class path is on the "
                                     "allow-list")
    listing = "; ".join(f.format() for f in findings[:12]) + ("; ..." if len(findings) > 12 else "")
    values = {"findings": [asdict(f) for f in findings]}
    if trust:
        return Check("code", "WARN", f"bundle from {origin}: {len(findings)} items outside the allow-list, RUN "
                                     f"ANYWAY because of --trust: {listing}", values)
    return Check("code", "FAIL", f"bundle from {origin}: {len(findings)} items outside the allow-list (not run; "
                                 f"--trust to run them): {listing}", values)


def _check_network(root: str, metadata: Mapping, timeout: float) -> list[Check]:
    """``net-in-out``, ``weights``, then ``torchscript`` and ``onnx`` against the PyTorch reference."""
    if config_file(root, "inference") is None or not metadata:
        return [Check("net-in-out", "SKIP", "no inference config or metadata")]
    checks = [_check_net_in_out(root, metadata)]
    pt = os.path.join(root, "models", "model.pt")
    if not os.path.exists(pt):
        missing = Check("weights", "FAIL", "no models/model.pt (train the bundle, or verify an exported archive)")
        return checks + [missing, *_skip_runtimes("no PyTorch reference without weights")]
    try:
        net = load_network(root, pt)
    except Exception as err:  # noqa: BLE001 - the failure is the check's result
        return checks + [Check("weights", "FAIL", str(err)[:400]),
                         *_skip_runtimes("no PyTorch reference without loadable weights")]
    n_params = sum(p.numel() for p in net.parameters())
    checks.append(Check("weights", "PASS", f"models/model.pt loads into network_def (strict, {n_params} parameters, "
                                           "weights only)"))
    models = {kind: os.path.join(root, "models", f"model.{ext}") for kind, ext in _RUNTIMES.items()}
    models = {kind: p for kind, p in models.items() if os.path.exists(p)}
    if not models:
        return checks + [Check(kind, "SKIP", f"no models/model.{ext} (lesionlab export makes it)")
                         for kind, ext in _RUNTIMES.items()]
    return checks + _check_runtimes(net, metadata, models, timeout)


def _skip_runtimes(reason: str) -> list[Check]:
    return [Check(kind, "SKIP", reason) for kind in _RUNTIMES]


def _check_net_in_out(root: str, metadata: Mapping) -> Check:
    from monai.bundle import verify_net_in_out

    try:
        with bundle_on_path(root), quiet_monai():
            verify_net_in_out(net_id="network_def", meta_file=os.path.join(root, "configs", "metadata.json"),
                              config_file=config_file(root, "inference"), device="cpu", bundle_root=root)
    except Exception as err:  # noqa: BLE001 - the failure is the check's result
        return Check("net-in-out", "FAIL", f"{type(err).__name__}: {str(err).splitlines()[0][:300]}")
    return Check("net-in-out", "PASS", f"network_def maps {list(input_shape(metadata))} as the metadata declares "
                                       "(channels, dtype)")


def run_standalone(args: Mapping[str, Any], timeout: float) -> tuple[dict[str, Any], str]:
    """Run :mod:`~lesionlab.apps.deploy.standalone_check` in an isolated interpreter; ``(result, crash reason)``."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    cmd = [sys.executable, "-I", standalone_check.__file__, json.dumps(dict(args))]
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=os.path.dirname(args["x"]),
                           env=env)
    except subprocess.TimeoutExpired:
        return {}, f"subprocess timed out after {timeout:.0f} s"
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if line is None:
        return {}, f"subprocess exited {r.returncode}: {r.stderr.strip()[-400:]}"
    return json.loads(line[len("RESULT "):]), ""


def _check_runtimes(net, metadata: Mapping, models: Mapping[str, str], timeout: float) -> list[Check]:
    """Run the exported models without lesionlab on a batch of 2 and compare their logits with PyTorch's."""
    shape = input_shape(metadata, batch=2)  # batch 2 proves the dynamic batch axis of the ONNX model
    x, ref, source = _spread_input(net, shape)
    with tempfile.TemporaryDirectory(prefix="lesionlab-verify-") as tmp:
        args: dict[str, Any] = {"x": os.path.join(tmp, "x.npy")}
        for kind, key in _RUNTIMES.items():
            args[key] = models.get(kind)
            args[f"{key}_out"] = os.path.join(tmp, f"{key}.npy")
        np.save(args["x"], x)
        res, crash = run_standalone(args, timeout)
        checks = []
        for kind, key in _RUNTIMES.items():
            if args[key] is None:
                checks.append(Check(kind, "SKIP", f"no models/model.{key} (lesionlab export makes it)"))
                continue
            info = res.get(key)
            if not info or not info.get("ok"):
                checks.append(Check(kind, "FAIL", (info or {}).get("error") or crash or "no result"))
                continue
            y = np.load(args[f"{key}_out"])
            check = _runtime_check(kind, y, ref, info, metadata, shape, res.get("lesionlab_imported", False))
            check.values["input"] = source
            checks.append(check)
    return checks


def _spread_input(net, shape: tuple[int, ...]):
    """``(x, logits, name)``: of three seeded inputs in [0, 1] (uniform noise, piecewise-constant blocks, a smooth
    field), the one whose logits spread most (largest standard deviation), so that parity is checked where the
    network's output varies and not on near-constant values."""
    import torch
    import torch.nn.functional as F

    gen = torch.Generator().manual_seed(0)
    spatial = tuple(shape[2:])
    low = (shape[0], shape[1], *[max(2, s // 8) for s in spatial])
    smooth_mode = {1: "linear", 2: "bilinear", 3: "trilinear"}.get(len(spatial), "nearest")
    candidates = {
        "uniform noise": torch.rand(*shape, generator=gen),
        "blocks": F.interpolate(torch.rand(*low, generator=gen), size=spatial, mode="nearest"),
        "smooth field": F.interpolate(torch.rand(*low, generator=gen), size=spatial, mode=smooth_mode,
                                      align_corners=False),
    }
    best = None
    with torch.no_grad():
        for name, x in candidates.items():
            y = net(x).numpy()
            if best is None or float(y.std()) > float(best[1].std()):
                best = (x.numpy().astype(np.float32), y, name)
    return best


def _parity(y: np.ndarray, ref: np.ndarray, kind: str) -> tuple[bool, dict[str, Any]]:
    atol, rtol = TOLERANCES[kind]
    if y.shape != ref.shape:
        return False, {"shape": list(y.shape), "expected_shape": list(ref.shape)}
    diff = np.abs(y.astype(np.float64) - ref.astype(np.float64))
    ok = bool(np.all(diff <= atol + rtol * np.abs(ref)))
    rel = diff / np.maximum(np.abs(ref.astype(np.float64)), 1e-12)
    return ok, {"max_abs_diff": float(diff.max()), "max_rel_diff": float(rel.max()),
                "max_ref_abs": float(np.abs(ref).max()), "ref_min": float(ref.min()), "ref_max": float(ref.max()),
                "ref_std": float(ref.std()), "atol": atol, "rtol": rtol}


def _runtime_check(kind: str, y: np.ndarray, ref: np.ndarray, info: Mapping, metadata: Mapping,
                   shape: tuple[int, ...], leaked: bool) -> Check:
    """PASS when the runtime's output matches PyTorch, its interface is MONAI Label's and lesionlab was not needed."""
    ok, vals = _parity(y, ref, kind)
    vals.update(info)
    if "expected_shape" in vals:
        return Check(kind, "FAIL", f"output shape {vals['shape']} != PyTorch {vals['expected_shape']}", vals)
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
    nan = float("nan")
    detail = (f"runs without lesionlab on a batch of {shape[0]} {list(shape[1:])}; logits (pre-activation) in "
              f"[{vals.get('ref_min', nan):.3g}, {vals.get('ref_max', nan):.3g}], std {vals.get('ref_std', nan):.3g}; "
              f"max |{kind} - PyTorch| = {vals.get('max_abs_diff', nan):.3g} abs, {vals.get('max_rel_diff', nan):.3g} "
              f"rel (tolerance {vals.get('atol')} abs + {vals.get('rtol')} rel){extra}")
    if vals.get("ref_std", 1.0) < 1e-2:
        detail += "; WARNING: logits nearly constant, parity proves little (random weights?)"
    return Check(kind, "PASS" if ok else "FAIL", detail, vals)
