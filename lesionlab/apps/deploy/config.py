"""Reading a bundle's configs for deployment: config files, overrides, the declared input shape, the network and its
weights. Shared by :mod:`~lesionlab.apps.deploy.export`, :mod:`~lesionlab.apps.deploy.verify` and
:mod:`~lesionlab.apps.deploy.infer`."""

from __future__ import annotations

import ast
import contextlib
import json
import logging
import operator
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from lesionlab.errors import DataError, LesionlabError
from lesionlab.utils import atomic_write_text

__all__ = [
    "config_file",
    "load_json",
    "bundle_on_path",
    "quiet_monai",
    "parse_overrides",
    "input_shape",
    "eval_size",
    "build_network",
    "load_state_dict",
    "load_weights",
    "load_network",
    "set_config_ids",
]

#: operators allowed in metadata size expressions such as ``16*n``
_SIZE_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Pow: operator.pow,
             ast.FloorDiv: operator.floordiv}


def config_file(root: str, name: str) -> str | None:
    """``configs/<name>.json`` (or ``.yaml``) of the bundle at ``root``, ``None`` when it has neither."""
    for ext in ("json", "yaml"):
        path = os.path.join(root, "configs", f"{name}.{ext}")
        if os.path.exists(path):
            return path
    return None


def load_json(path: str) -> Any:
    """Parsed JSON of ``path``; :class:`DataError` naming the file when it cannot be read."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as err:
        raise DataError(path, f"not readable JSON ({err})") from err


@contextlib.contextmanager
def bundle_on_path(root: str) -> Iterator[None]:
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
def quiet_monai() -> Iterator[None]:
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


def input_shape(metadata: Mapping, batch: int = 1) -> tuple[int, ...]:
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
            spatial.append(int(eval_size(str(s))))
    return (batch, int(spec.get("num_channels", 1)), *spatial)


def eval_size(text: str, n: int = 1, p: int = 1) -> int:
    """Evaluate a metadata size expression such as ``16*n`` or ``2**p`` without ``eval``."""
    return _eval_size_node(ast.parse(text, mode="eval").body, text, {"n": n, "p": p})


def _eval_size_node(node: ast.AST, text: str, names: Mapping[str, int]) -> int:
    if isinstance(node, ast.Constant) and isinstance(node.value, int):
        return node.value
    if isinstance(node, ast.Name) and node.id in names:
        return names[node.id]
    if isinstance(node, ast.BinOp) and type(node.op) in _SIZE_OPS:
        left, right = _eval_size_node(node.left, text, names), _eval_size_node(node.right, text, names)
        return _SIZE_OPS[type(node.op)](left, right)
    raise LesionlabError(f"unsupported spatial_shape expression {text!r}")


def build_network(root: str, overrides: Mapping[str, Any] | None = None):
    """``network_def`` of the bundle's inference config, built on the CPU in eval mode."""
    from monai.bundle import ConfigParser

    cfg = config_file(root, "inference")
    if cfg is None:
        raise LesionlabError(f"{root}: bundle has no configs/inference.json")
    parser = ConfigParser()
    parser.read_config(cfg)
    parser.read_meta(os.path.join(root, "configs", "metadata.json"))
    parser["bundle_root"] = root
    for k, v in (overrides or {}).items():
        parser[k] = v
    with bundle_on_path(root):
        net = parser.get_parsed_content("network_def", instantiate=True)
    return net.to("cpu").eval()


def load_state_dict(path: str) -> dict:
    """Weights of a checkpoint: a plain state dict, or the ``model`` entry of a nested one (weights only)."""
    import torch

    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any load failure means the file is not a weights-only checkpoint
        raise DataError(path, f"not a weights-only PyTorch checkpoint ({type(err).__name__}: {err})") from err
    if isinstance(ckpt, Mapping) and isinstance(ckpt.get("model"), Mapping):
        ckpt = ckpt["model"]
    if not isinstance(ckpt, Mapping) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise DataError(path, "checkpoint is not a state dict of tensors (nor has one under 'model')")
    return dict(ckpt)


def load_weights(net, state: Mapping, path: str) -> None:
    """``net.load_state_dict(state, strict=True)`` with an error that says what to do when the keys do not match."""
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()][:4]
        raise LesionlabError(
            f"{path}: weights do not match network_def of configs/inference.json ({' '.join(lines)[:600]}). If the "
            "model was trained with config overrides (e.g. network_def#features), write them into the bundle's "
            "configs or pass them with --set"
        ) from err


def load_network(root: str, ckpt: str):
    """:func:`build_network` with the weights of ``ckpt`` loaded (strict, weights only)."""
    net = build_network(root)
    load_weights(net, load_state_dict(ckpt), ckpt)
    return net


def set_config_ids(root: str, overrides: Mapping[str, Any]) -> list[str]:
    """Write ``a#b`` overrides into every JSON config of ``root`` that defines the top-level id ``a``."""
    changed, applied = [], set()
    for name in sorted(os.listdir(os.path.join(root, "configs"))):
        path = os.path.join(root, "configs", name)
        if not name.endswith(".json") or name == "metadata.json":
            continue
        cfg = load_json(path)
        touched = False
        for key, value in overrides.items():
            if _set_id(cfg, key, value):
                touched = True
                applied.add(key)
        if touched:
            atomic_write_text(path, json.dumps(cfg, indent=4) + "\n")
            changed.append(f"configs/{name}")
    unknown = sorted(set(overrides) - applied)
    if unknown:
        raise LesionlabError(f"--set: no config of the bundle defines {unknown}")
    return changed


def _set_id(cfg: Any, key: str, value: Any) -> bool:
    """Set ``key`` (``a#b`` or ``a::b``) in the parsed config ``cfg``; False when the config has no such parent."""
    parts = key.replace("::", "#").split("#")
    node = cfg
    for part in parts[:-1]:
        node = node.get(part) if isinstance(node, dict) else None
        if node is None:
            return False
    if isinstance(node, dict) and (parts[-1] in node or len(parts) > 1):
        node[parts[-1]] = value
        return True
    return False
