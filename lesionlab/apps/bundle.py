"""Run lesionlab's MONAI bundles from Python or the command line (thin layer over ``monai.bundle``)."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from typing import Any

from lesionlab.errors import LesionlabError
from lesionlab.utils import atomic_write_text

__all__ = ["BUNDLES_DIR", "bundle_path", "copy_bundle", "run_bundle", "export_torchscript", "set_config_values"]

BUNDLES_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bundles")

_MODES = {
    "train": (["train"], "training"),
    "evaluate": (["train", "evaluate"], "evaluating"),
    "infer": (["inference"], "evaluating"),
}


def bundle_path(name_or_dir: str) -> str:
    """Resolve a bundle given as a folder or as the name of one of the project's bundles."""
    if os.path.isdir(os.path.join(name_or_dir, "configs")):
        return os.path.abspath(name_or_dir)
    candidate = os.path.join(BUNDLES_DIR, name_or_dir)
    if os.path.isdir(os.path.join(candidate, "configs")):
        return candidate
    known = sorted(os.listdir(BUNDLES_DIR)) if os.path.isdir(BUNDLES_DIR) else []
    raise LesionlabError(f"{name_or_dir}: not a bundle folder (no configs/ inside) nor a known bundle {known}")


def _config(bundle: str, name: str) -> str:
    for ext in ("json", "yaml"):
        path = os.path.join(bundle, "configs", f"{name}.{ext}")
        if os.path.exists(path):
            return path
    raise LesionlabError(f"{bundle}: bundle has no configs/{name}.json")


def copy_bundle(src: str, dst: str) -> str:
    """Copy a bundle's ``configs/``, ``docs/``, ``resources/`` and ``LICENSE`` into ``dst`` (a working bundle root)."""
    src = bundle_path(src)
    os.makedirs(dst, exist_ok=True)
    for item in ("configs", "docs", "resources"):
        if os.path.isdir(os.path.join(src, item)):
            shutil.copytree(os.path.join(src, item), os.path.join(dst, item), dirs_exist_ok=True)
    if os.path.exists(os.path.join(src, "LICENSE")):
        shutil.copy2(os.path.join(src, "LICENSE"), os.path.join(dst, "LICENSE"))
    return os.path.abspath(dst)


def set_config_values(
    bundle: str, values: Mapping[str, Any], configs: tuple[str, ...] = ("train", "inference")
) -> None:
    """Set top-level or ``a#b`` ids in the given config files of a (copied) bundle, keeping them consistent."""
    for name in configs:
        path = _config(bundle, name)
        with open(path) as f:
            cfg = json.load(f)
        for key, value in values.items():
            node = cfg
            parts = key.split("#")
            for p in parts[:-1]:
                node = node[p]
            node[parts[-1]] = value
        atomic_write_text(path, json.dumps(cfg, indent=4))


def run_bundle(bundle: str, mode: str = "train", bundle_root: str | None = None, **overrides: Any) -> None:
    """Run ``train``, ``evaluate`` (train + evaluate configs) or ``infer`` of a bundle with MONAI's ``run``.

    Overrides are config ids (``epochs=2``, ``dataset_dir=...``; use ``**{"a#b": v}`` for nested ids).
    """
    from monai.bundle import run

    if mode not in _MODES:
        raise LesionlabError(f"mode must be one of {sorted(_MODES)}, got {mode!r}")
    bundle = bundle_path(bundle)
    names, run_id = _MODES[mode]
    configs = [_config(bundle, n) for n in names]
    run(
        run_id,
        meta_file=os.path.join(bundle, "configs", "metadata.json"),
        config_file=configs if len(configs) > 1 else configs[0],
        logging_file=os.path.join(bundle, "configs", "logging.conf"),
        bundle_root=bundle_root or bundle,
        **overrides,
    )


def export_torchscript(bundle_root: str, ckpt: str | None = None, out: str | None = None) -> str:
    """``ckpt_export`` of ``network_def`` (inference config) from ``models/model.pt`` to ``models/model.ts``."""
    from monai.bundle import ckpt_export

    ckpt = ckpt or os.path.join(bundle_root, "models", "model.pt")
    out = out or os.path.join(bundle_root, "models", "model.ts")
    if not os.path.exists(ckpt):
        raise LesionlabError(f"{ckpt}: no trained weights to export (train the bundle first)")
    ckpt_export(
        "network_def",
        filepath=out,
        ckpt_file=ckpt,
        meta_file=os.path.join(bundle_root, "configs", "metadata.json"),
        config_file=_config(bundle_root, "inference"),
        bundle_root=bundle_root,
    )
    return out
