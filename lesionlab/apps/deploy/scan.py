"""Config entries of a bundle that execute code outside the trusted namespaces (``_target_`` and ``$`` expressions,
``scripts/``, ``logging.conf``); :func:`scan_config_code` lists them before anything from the bundle runs."""

from __future__ import annotations

import ast
import contextlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from lesionlab.apps.deploy.archive import list_files
from lesionlab.apps.deploy.config import load_json
from lesionlab.errors import DataError

__all__ = ["SAFE_TARGET_PREFIXES", "CodeFinding", "scan_config_code"]

#: ``_target_`` prefixes that are trusted (dotless names are MONAI's own short names)
SAFE_TARGET_PREFIXES = ("monai.", "torch.", "lesionlab.", "numpy.", "ignite.")


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
            findings.append(CodeFinding(os.path.basename(path), f"line {n}", line.strip(),
                                        "handler class outside logging"))
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
    for name in list_files(configs):  # relative paths, sub-folders (variants/...) included
        path = os.path.join(configs, name)
        if name.endswith(".conf"):
            findings += _logging_conf_findings(path)
            continue
        if name.endswith(".json"):
            try:
                cfg = load_json(path)
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
        for rel in list_files(scripts):
            if rel.endswith(".py"):
                findings.append(CodeFinding(f"scripts/{rel}", "", "", "Python module run when the bundle is used"))
    return findings

